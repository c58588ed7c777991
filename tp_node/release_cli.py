"""`tp-relay verify FILE SIG`: check a release artifact (a file, or a container image digest) against its
signature and the trusted release keys (`--key`, or release_key in the config file). Exit 0 valid, 1 not."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tp_cli.config import ConfigError, resolve
from tp_crypto.errors import TokenPlaceError
from tp_crypto.identity import NODE_ID_BYTES
from tp_crypto.release import decode_signature, file_digest, is_digest, verify_release

EXIT_INVALID = 1
VERIFY_OPTIONS = ("artifact", "signature", "key")


def release_key(text: str) -> bytes:
    """A release public key: 64 hex digits."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != NODE_ID_BYTES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a release public key ({2 * NODE_ID_BYTES} hex digits)"
        )
    return key


def add_release_key_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--release-key",
        type=release_key,
        action="append",
        metavar="HEX",
        help="a trusted release public key for `verify` (repeat for several)",
    )


def verify_main(build_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str]) -> int:
    parser = build_parser()
    parser.prog = "tp-relay verify"
    parser.description = "Verify a release artifact's signature. Exit 0: valid; 1: invalid."
    parser.add_argument("artifact", help="the file, or a container image digest sha256:HEX")
    parser.add_argument("signature", type=Path, help="its signature file")
    parser.add_argument(
        "--key", type=release_key, action="append", metavar="HEX", help="a trusted release key"
    )
    try:
        args = resolve(parser, "relay", argv, exclude=VERIFY_OPTIONS, check_required=False)
    except ConfigError as exc:
        parser.error(str(exc))
    trusted = {*(args.key or ()), *(args.release_key or ())}
    try:
        if not trusted:
            raise ConfigError("no trusted release key: give --key HEX or set release_key in the config file")
        digest = args.artifact if is_digest(args.artifact) else file_digest(Path(args.artifact))
        signature = decode_signature(args.signature.read_text(encoding="utf-8", errors="replace"))
        verify_release(signature, digest, trusted)
    except (TokenPlaceError, OSError) as exc:
        reason = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) else str(exc)
        print(f"INVALID: {args.artifact}: {reason}", file=sys.stderr)
        return EXIT_INVALID
    print(f"OK: {args.artifact} ({digest}) is signed by release key {signature.key.hex()}")
    return 0
