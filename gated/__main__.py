"""``python -m gated`` is the ``gated`` command."""

import sys

from gated.cli import main

sys.exit(main())
