r"""Create a new token.place network: authority identity keys and the bootstrap file that trusts them.

    python -m bootstrap.new_network --name my-net --threshold 2 \
        --authority ws://a1.example:7000/ --authority ws://a2.example:7000/ \
        --authority ws://a3.example:7000/ --out ./my-net

writes ./my-net/authority-1/identity.key ... (mode 0600: give each authority-N folder to its operator, who
runs `tp-relay --authority --data-dir my-net/authority-N --bootstrap my-net/bootstrap.json`; the authority
listens where its --authority entry says) and ./my-net/bootstrap.json (public: give it to every relay, node
and gateway of the network).

Paths avoid two relays of one IPv4 /16 (IPv6 /32): a network whose authorities all share one (e.g. all on
127.0.0.1, to try it on one host) could never build a path, so it is marked `local` (that rule is off).
The directory is signed once per --period-s (default 300 s); a new network's first document comes as soon
as --threshold authorities are up.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tp_crypto.errors import TokenPlaceError
from tp_crypto.identity import create_key_file
from tp_net.protocol.bootstrap_config import (
    PERIOD_S_DEFAULT,
    PERIOD_S_MIN,
    Bootstrap,
    BootstrapAuthority,
    write_bootstrap,
)
from tp_net.protocol.path_selection import subnet_key

BOOTSTRAP_FILE_NAME = "bootstrap.json"


def create_network(
    out: Path, name: str, addresses: Sequence[str], threshold: int, *, period_s: int, local: bool | None
) -> Bootstrap:
    """`local`: whether paths may use relays of one /16; None decides by the authorities' addresses (all in
    one /16: local, as a one-host network could never build a path otherwise)."""
    if not 1 <= threshold <= len(addresses):
        raise ValueError(f"threshold must be in 1..{len(addresses)}")
    authorities = []
    for index, address in enumerate(addresses, start=1):
        identity = create_key_file(out / f"authority-{index}" / "identity.key")
        authorities.append(BootstrapAuthority(identity.node_id, address))
    if local is None:
        local = one_subnet(addresses) is not None
    bootstrap = Bootstrap(name, threshold, period_s, tuple(authorities), local)
    write_bootstrap(out / BOOTSTRAP_FILE_NAME, bootstrap)
    return bootstrap


def one_subnet(addresses: Sequence[str]) -> str | None:
    """The one IPv4 /16 (IPv6 /32, host name) every authority is in, or None when they differ."""
    subnets = {subnet_key(address) for address in addresses}
    return subnets.pop() if len(subnets) == 1 else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bootstrap.new_network",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--name", required=True, help="the network's name (clients refuse other networks)")
    parser.add_argument(
        "--authority",
        action="append",
        required=True,
        metavar="ws://HOST:PORT/",
        help="address of an authority (repeat for each)",
    )
    parser.add_argument("--threshold", type=int, required=True, help="signatures a document needs")
    parser.add_argument("--period-s", type=int, default=PERIOD_S_DEFAULT, help="seconds per directory period")
    parser.add_argument(
        "--local",
        action="store_true",
        help="relays may share a /16 (tests, demos); implied when every authority is in one /16",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="directory to write keys and bootstrap.json to"
    )
    args = parser.parse_args(argv)
    if args.period_s < PERIOD_S_MIN:
        parser.error(f"--period-s must be at least {PERIOD_S_MIN}")
    if not all(address.startswith("ws://") for address in args.authority):
        parser.error("every --authority must be a ws:// URL")
    try:
        local = True if args.local else None
        bootstrap = create_network(
            args.out, args.name, args.authority, args.threshold, period_s=args.period_s, local=local
        )
    except (ValueError, TokenPlaceError) as exc:
        parser.error(str(exc))
    print(
        f"created network {bootstrap.network!r}: {len(bootstrap.authorities)} authorities, "
        f"threshold {bootstrap.threshold}, period {bootstrap.period_s} s; "
        f"bootstrap file {(args.out / BOOTSTRAP_FILE_NAME).absolute()}"
    )
    subnet = one_subnet(args.authority)
    if subnet is not None and not args.local:
        print(f"every authority is in {subnet}: marked local (paths may use relays of one /16)")
    bootstrap_file = (args.out / BOOTSTRAP_FILE_NAME).absolute()
    for index, authority in enumerate(bootstrap.authorities, start=1):
        data_dir = (args.out / f"authority-{index}").absolute()
        print(
            f"authority {index}: tp-relay --authority --data-dir {data_dir} --bootstrap {bootstrap_file}"
            f"  # listens on {authority.address}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
