"""Starting roles as processes: data directories, keys, announcement, signals and clean shutdown."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import trio

from tp_crypto.identity import Identity, load_or_create_key_file
from tp_crypto.noise import generate_keypair

IDENTITY_FILE = "identity.key"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def software_version() -> str:
    try:
        return version("token-place")
    except PackageNotFoundError:
        return "unknown"


def default_data_dir(role: str) -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "token.place" / role


def load_identity(data_dir: Path) -> Identity:
    """The role's identity key from its data directory, created (mode 0600) on first start."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return load_or_create_key_file(data_dir / IDENTITY_FILE)


def new_onion_keys() -> tuple[list[bytes], bytes]:
    """A fresh onion key pair: ([private], public). Rotation and publication come with the directory."""
    private, public = generate_keypair()
    return [private], public


def announce(fields: dict[str, Any]) -> None:
    """One JSON line on stdout saying who we are and where: read by tp-demo and the tests."""
    print(json.dumps(fields), flush=True)


def setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format=LOG_FORMAT)


async def run_until_signalled(main: Callable[[trio.Nursery], Awaitable[None]]) -> None:
    """Run `main(nursery)` and cancel everything on SIGINT or SIGTERM."""
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            nursery.start_soon(main, nursery)
            async for signum in signals:
                logging.getLogger(__name__).info("received %s, shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
