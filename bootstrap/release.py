r"""Sign token.place release artifacts with the Ed25519 release key.

    python -m bootstrap.release keygen --out release.key        # once; keep it offline (mode 0600)
    python -m bootstrap.release sign --key release.key dist/token_place-0.1.0-py3-none-any.whl
    python -m bootstrap.release sign --key release.key sha256:<image digest> --out relay-image.sig

`sign` writes FILE.sig next to a file (or --out). Operators check with `tp-relay verify FILE FILE.sig`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tp_crypto.errors import TokenPlaceError
from tp_crypto.identity import create_key_file, load_key_file
from tp_crypto.release import file_digest, is_digest, sign_digest

SIGNATURE_SUFFIX = ".sig"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bootstrap.release",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="create a release key")
    keygen.add_argument("--out", type=Path, required=True, help="key file to create (refuses to overwrite)")
    sign = commands.add_parser("sign", help="sign a file or a container image digest")
    sign.add_argument("--key", type=Path, required=True, help="the release key file")
    sign.add_argument("artifact", help="a file, or a container image digest sha256:HEX")
    sign.add_argument("--out", type=Path, help="signature file (default: FILE.sig)")
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            identity = create_key_file(args.out)
            print(f"release key {args.out}; public key (give it to operators): {identity.node_id.hex()}")
            return 0
        return _sign(parser, args)
    except (TokenPlaceError, OSError) as exc:
        parser.error(str(exc))


def _sign(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    digest_given = is_digest(args.artifact)
    if digest_given and args.out is None:
        parser.error("signing a digest needs --out FILE")
    digest = args.artifact if digest_given else file_digest(Path(args.artifact))
    out: Path = args.out or Path(args.artifact + SIGNATURE_SUFFIX)
    out.write_text(sign_digest(load_key_file(args.key), digest).encode(), encoding="ascii")
    print(f"signed {digest} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
