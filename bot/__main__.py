"""``python -m bot``: the citebot command line; with no arguments, run the Discord bot."""

import sys

from .cli import main

sys.exit(main(sys.argv[1:] or ["run"]))
