"""`python -m fusion_cli`: the `fusion` command from a checkout, without the installed script."""

import sys

from fusion_cli.main import main

sys.exit(main())
