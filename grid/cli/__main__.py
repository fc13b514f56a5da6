"""`python -m gatelab.grid.cli`: the same as the `gatelab` command."""

import sys

from gatelab.grid.cli.main import main

sys.exit(main())
