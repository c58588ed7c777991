"""`python -m tp_node.relay_main` runs tp-relay (for environments without the console script)."""

import sys

from tp_node.cli import relay_main

sys.exit(relay_main())
