"""Pieces shared by the console scripts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_NOT_IMPLEMENTED = 2


def pending_command(prog: str, description: str, pending_work: str, argv: Sequence[str] | None) -> int:
    """Parse `argv` (so that --help works) and report that the role is not built yet."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.parse_args(argv)
    print(f"{prog}: not implemented yet ({pending_work})", file=sys.stderr)
    return EXIT_NOT_IMPLEMENTED
