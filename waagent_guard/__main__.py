"""`python -m waagent_guard` runs the command line."""

import sys

from waagent_guard.cli import main

sys.exit(main())
