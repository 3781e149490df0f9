"""`python -m proxy` runs muxproxy."""

import sys

from proxy.cli import main

sys.exit(main())
