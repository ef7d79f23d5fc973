"""Feature cogs, loaded by name from ``Citebot.setup_hook``."""
