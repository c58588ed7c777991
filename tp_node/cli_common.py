"""Pieces shared by the console scripts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import trio

from tp_crypto.errors import TokenPlaceError
from tp_net.trio_util import sole_exception
from tp_node.launch import default_data_dir, run_until_signalled, setup_logging

EXIT_NOT_IMPLEMENTED = 2


def pending_command(prog: str, description: str, pending_work: str, argv: Sequence[str] | None) -> int:
    """Parse `argv` (so that --help works) and report that the role is not built yet."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.parse_args(argv)
    print(f"{prog}: not implemented yet ({pending_work})", file=sys.stderr)
    return EXIT_NOT_IMPLEMENTED


EXIT_FAILURE = 1
Role = Callable[[argparse.Namespace, trio.Nursery], Awaitable[None]]


def host_port(text: str) -> tuple[str, int]:
    host, separator, port = text.rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (port 0..65535)")
    return host.strip("[]"), int(port)


def add_common_arguments(parser: argparse.ArgumentParser, role: str) -> None:
    parser.add_argument(
        "--data-dir", type=Path, default=default_data_dir(role), help="where keys live (default: %(default)s)"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def add_bootstrap_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        type=Path,
        default=None,
        help="bootstrap file of the network to join (default: $TP_BOOTSTRAP, else the built-in network)",
    )


def run_role(role: Role, args: argparse.Namespace) -> int:
    """Run a role until SIGINT/SIGTERM; expected failures print one line and exit 1."""

    async def main(nursery: trio.Nursery) -> None:
        await role(args, nursery)

    setup_logging(args.log_level)
    try:
        trio.run(run_until_signalled, main)
    except BaseExceptionGroup as group:
        error = sole_exception(group)
        if not isinstance(error, TokenPlaceError | OSError):
            raise
        return _report(error)
    except (TokenPlaceError, OSError) as error:
        return _report(error)
    return 0


def _report(error: TokenPlaceError | OSError) -> int:
    message = (error.strerror or str(error)) if isinstance(error, OSError) else str(error)
    print(f"error: {message}", file=sys.stderr)
    return EXIT_FAILURE
