"""Entry point of ``python -m fmbench.emulator``."""

import sys

from fmbench.emulator.cli import main

sys.exit(main())
