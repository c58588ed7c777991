"""`tp-relay status` / `tp-node status`: ask the running role over its control socket."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

import trio

from tp_cli.config import ConfigError, resolve
from tp_node.control import CONTROL_SOCKET_NAME, ControlError
from tp_node.control_socket import query
from tp_node.vitals import describe

EXIT_NOT_RUNNING = 1


def status_main(role: str, build_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str]) -> int:
    """Reads the data directory from the same flags, environment and config file as the role itself."""
    parser = build_parser()
    parser.prog = f"tp-{role} status"
    parser.description = f"Show the running {role}'s links, circuits, bandwidth, models and load."
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    try:
        args = resolve(parser, role, argv, exclude={"json"}, check_required=False)
    except ConfigError as exc:
        parser.error(str(exc))
    path = args.data_dir / CONTROL_SOCKET_NAME
    try:
        status = trio.run(query, path, "status")
    except ControlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    print(json.dumps(status, indent=2) if args.json else describe(status))
    return 0
