"""``python -m load_tests``: the load generator (``ragtune-load``; docs/load-testing.md)."""

import sys

from ragtune.loadtest.cli import main

sys.exit(main())
