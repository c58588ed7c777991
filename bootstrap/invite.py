r"""Invite a relay or GPU node into a network whose authorities admit invited nodes only (--admission invite).

    python -m bootstrap.invite --authority-key authority-1/identity.key --bootstrap my-net/bootstrap.json \
        --node-id HEX --days 90 --out node.invitation

HEX is the node id `tp-relay init` / `tp-node init` printed. Give the file to that operator, who sets
`invitation = "/path/node.invitation"` in the config file (or --invitation). Any one authority may invite.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tp_crypto.errors import TokenPlaceError
from tp_crypto.identity import NODE_ID_BYTES, load_key_file
from tp_net.protocol.bootstrap_config import load_bootstrap
from tp_net.protocol.directory import make_invitation

DAY_S = 24 * 3600
DAYS_MAX = 3650


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bootstrap.invite",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--authority-key", type=Path, required=True, help="an authority's identity key file")
    parser.add_argument("--bootstrap", type=Path, required=True, help="the network's bootstrap file")
    parser.add_argument("--node-id", required=True, help="the invited relay's or node's id (64 hex)")
    parser.add_argument("--days", type=int, default=90, help="days until the invitation expires (default 90)")
    parser.add_argument("--out", type=Path, required=True, help="invitation file to write")
    args = parser.parse_args(argv)
    try:
        node_id = bytes.fromhex(args.node_id)
    except ValueError:
        node_id = b""
    if len(node_id) != NODE_ID_BYTES:
        parser.error(f"--node-id {args.node_id!r} is not {2 * NODE_ID_BYTES} hex digits")
    if not 1 <= args.days <= DAYS_MAX:
        parser.error(f"--days {args.days} is not in 1..{DAYS_MAX}")
    try:
        authority = load_key_file(args.authority_key)
        bootstrap = load_bootstrap(args.bootstrap)
        if authority.node_id not in bootstrap.trust().authorities:
            parser.error(f"{args.authority_key} is not an authority of network {bootstrap.network!r}")
        expires = int(time.time()) + args.days * DAY_S
        args.out.write_bytes(make_invitation(authority, node_id, bootstrap.network, expires))
    except (TokenPlaceError, OSError) as exc:
        parser.error(str(exc))
    until = time.strftime("%Y-%m-%d", time.gmtime(expires))
    print(f"invited {args.node_id} to {bootstrap.network!r} until {until}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
