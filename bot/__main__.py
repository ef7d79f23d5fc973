"""``python -m bot``: the citebot command line."""

import sys

from .cli import main

sys.exit(main())
