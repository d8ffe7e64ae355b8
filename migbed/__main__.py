"""`python -m migbed`: the same command line as the `migbed` script."""

import sys

from migbed.cli.main import main

sys.exit(main())
