"""`python -m tp_node.node_main` runs tp-node (for environments without the console script)."""

import sys

from tp_node.cli import node_main

sys.exit(node_main())
