"""``citebot`` for the end-to-end tests: the real command line, with a tiny model.

``python -m tests.e2e_citebot run`` is ``citebot run`` (:func:`bot.cli.main`, the console
script's entry point) with the deterministic :class:`~embeddings.HashEncoder` passed through
``main``'s ``encoder`` seam, so a bot process starts in about a second instead of loading torch.
Set ``CITEBOT_E2E_REAL_MODEL=1`` to run the packaged model instead.
"""

from __future__ import annotations

import os
import sys

from embeddings import HashEncoder


def e2e_encoder() -> HashEncoder:
    """The encoder of the end-to-end tests; libraries prepared by a test must use the same one."""
    return HashEncoder(dim=256, max_tokens=64)


def main() -> int:
    """Run the command line as the ``citebot`` script does."""
    from bot.cli import main as citebot

    real = os.environ.get("CITEBOT_E2E_REAL_MODEL", "") not in ("", "0")
    return citebot(sys.argv[1:], encoder=None if real else e2e_encoder())


if __name__ == "__main__":
    sys.exit(main())
