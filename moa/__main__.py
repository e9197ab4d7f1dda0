"""``python -m moa``: the ``moa`` command."""

import sys

from .cli import main

sys.exit(main())
