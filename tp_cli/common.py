"""Pieces shared by the console scripts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import trio

from tp_cli.config import ConfigError, add_config_argument, resolve
from tp_cli.launch import default_data_dir, run_until_signalled
from tp_cli.logs import LOG_FORMATS, setup_logging
from tp_crypto.errors import TokenPlaceError
from tp_net.trio.trio_util import sole_exception

EXIT_NOT_IMPLEMENTED = 2
DEFAULT_METRICS_HOST = "127.0.0.1"  # where --metrics PORT serves, unless it names a host


def pending_command(prog: str, description: str, pending_work: str, argv: Sequence[str] | None) -> int:
    """Parse `argv` (so that --help works) and report that the role is not built yet."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.parse_args(argv)
    print(f"{prog}: not implemented yet ({pending_work})", file=sys.stderr)
    return EXIT_NOT_IMPLEMENTED


EXIT_FAILURE = 1
Role = Callable[[argparse.Namespace, trio.Nursery], Awaitable[None]]


class IntRange:
    """A flag type: an integer in low..high (`expected` says so in config errors)."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self.expected = f"an integer in {low}..{high}"

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = self.low - 1
        if not self.low <= value <= self.high:
            raise argparse.ArgumentTypeError(f"{text!r} is not {self.expected}")
        return value


def int_in(low: int, high: int) -> IntRange:
    return IntRange(low, high)


def host_port(text: str) -> tuple[str, int]:
    host, separator, port = text.rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (port 0..65535)")
    return host.strip("[]"), int(port)


def add_common_arguments(parser: argparse.ArgumentParser, role: str) -> None:
    parser.add_argument(
        "--data-dir", type=Path, default=default_data_dir(role), help="where keys live (default: %(default)s)"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="(default: info)"
    )
    parser.add_argument(
        "--log-format", default="text", choices=LOG_FORMATS, help="json: one object per line (default: text)"
    )
    add_config_argument(parser, role)


def metrics_address(text: str) -> tuple[str, int]:
    """PORT (on loopback) or HOST:PORT."""
    if text.isdigit():
        return host_port(f"{DEFAULT_METRICS_HOST}:{text}")
    return host_port(text)


def add_metrics_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics",
        type=metrics_address,
        metavar="[HOST:]PORT",
        help=f"serve Prometheus /metrics there (host default {DEFAULT_METRICS_HOST}; default: off)",
    )


def resolve_settings(parser: argparse.ArgumentParser, role: str, argv: Sequence[str]) -> argparse.Namespace:
    """Flags over environment over config file over defaults; a bad value exits like a bad flag (2)."""
    try:
        return resolve(parser, role, argv)
    except ConfigError as exc:
        parser.error(str(exc))


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

    setup_logging(args.log_level, getattr(args, "log_format", "text"))
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
