"""tp-relay: run a relay, optionally as a directory authority (`python -m tp_node.relay_cli` works too)."""

from __future__ import annotations

import argparse
import logging
import random
import resource
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from tp_cli.common import (
    add_bootstrap_argument,
    add_common_arguments,
    add_metrics_argument,
    host_port,
    int_in,
    resolve_settings,
    run_role,
)
from tp_cli.launch import announce, load_identity, software_version
from tp_crypto.identity import Identity
from tp_net.protocol.bootstrap_config import Bootstrap, BootstrapError, bootstrap_path, load_bootstrap
from tp_net.protocol.errors import DialError
from tp_net.protocol.link_limits import (
    LINK_IDLE_TIMEOUT_S,
    LINKS_MAX,
    LINKS_PER_ADDRESS_MAX,
    ConnectionCounter,
    LinkLimits,
    links_max_for_fds,
)
from tp_net.trio.transport_ws import WebSocketDialer, WebSocketListener, parse_ws_address
from tp_node.authority_core import Admission
from tp_node.directory_duties import (
    DescriptorPublisher,
    directory_status,
)
from tp_node.init_cli import init_main
from tp_node.listen_errors import naming_listener
from tp_node.onion_keys import ONION_KEY_FILE, OnionKeyRing
from tp_node.operator import start_operator_services
from tp_node.relay import Relay
from tp_node.release_cli import add_release_key_argument, verify_main
from tp_node.roles import RelayPlan, open_relay, standard_relay
from tp_node.status_cli import status_main
from tp_node.vitals import Vitals

log = logging.getLogger(__name__)

LISTEN_DEFAULT = ("127.0.0.1", 7000)
CAPACITY_DEFAULT = 1000
CAPACITY_MAX = 10**7  # what a relay descriptor allows
KEY_ROTATION_CHECK_S = 600.0
LINK_IDLE_TIMEOUT_MAX_S = 7 * 24 * 3600.0


def ws_address(text: str) -> str:
    try:
        parse_ws_address(text)
    except DialError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def idle_timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= LINK_IDLE_TIMEOUT_MAX_S:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, {LINK_IDLE_TIMEOUT_MAX_S:.0f}] seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tp-relay",
        description="Run a token.place relay: accept links, create and extend circuits, forward onion cells.",
        epilog="Subcommands: `tp-relay init` (key and config file), `tp-relay status`, "
        "`tp-relay verify FILE SIG` (release signatures); each takes --help.",
    )
    parser.add_argument(
        "--listen",
        type=host_port,
        default=None,
        help="HOST:PORT to accept links on (default 127.0.0.1:7000, an authority: its bootstrap entry's; "
        "port 0 picks a free one)",
    )
    parser.add_argument(
        "--advertise",
        type=ws_address,
        metavar="ws://HOST:PORT/",
        help="address published in the descriptor (default: the listen address)",
    )
    parser.add_argument(
        "--capacity",
        type=int_in(1, CAPACITY_MAX),
        default=CAPACITY_DEFAULT,
        help=f"bandwidth weight in KB/s (default {CAPACITY_DEFAULT})",
    )
    parser.add_argument(
        "--family",
        default="",
        help="operator family: relays (and GPU nodes) of one family never share a circuit",
    )
    parser.add_argument(
        "--authority", action="store_true", help="act as a directory authority of the network"
    )
    parser.add_argument(
        "--admission",
        choices=[a.value for a in Admission],
        default=Admission.OPEN.value,
        help="authorities: which nodes the directory admits (default: open)",
    )
    parser.add_argument(
        "--invitation",
        type=Path,
        help="file holding an invitation token (networks whose authorities admit invited relays only)",
    )
    parser.add_argument(
        "--links-per-address-max",
        type=int_in(1, LINKS_MAX),
        default=LINKS_PER_ADDRESS_MAX,
        help=f"accepted connections from one source address at a time (default {LINKS_PER_ADDRESS_MAX})",
    )
    parser.add_argument(
        "--links-max",
        type=int_in(1, LINKS_MAX),
        default=None,
        help=f"accepted connections at a time (default {LINKS_MAX}, lowered to fit the open-file limit)",
    )
    parser.add_argument(
        "--link-idle-timeout",
        type=idle_timeout,
        default=LINK_IDLE_TIMEOUT_S,
        metavar="SECONDS",
        help="close an accepted link with no circuit and no cell for this long, unless its peer is listed "
        f"in the directory (default {LINK_IDLE_TIMEOUT_S:.0f})",
    )
    add_bootstrap_argument(parser)
    add_metrics_argument(parser)
    add_release_key_argument(parser)
    add_common_arguments(parser, "relay")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["init"]:
        return init_main("relay", build_parser, argv[1:])
    if argv[:1] == ["status"]:
        return status_main("relay", build_parser, argv[1:])
    if argv[:1] == ["verify"]:
        return verify_main(build_parser, argv[1:])
    return run_role(_relay, resolve_settings(build_parser(), "relay", argv))


async def _relay(args: argparse.Namespace, nursery: trio.Nursery) -> None:
    identity = load_identity(args.data_dir)
    bootstrap = load_bootstrap(args.bootstrap)
    key_file = args.data_dir / ONION_KEY_FILE
    ring = OnionKeyRing.load_or_create(key_file, time.time())
    dialer = WebSocketDialer(nursery)
    limits = _link_limits(args)
    listen, advertise = listen_and_advertise(args, identity, bootstrap)
    plan = RelayPlan(
        capacity=args.capacity,
        version=software_version(),
        family=args.family,
        advertise=advertise,
        invitation=args.invitation.read_bytes() if args.invitation else None,
        withdraw_on_stop=True,
    )
    make_relay = standard_relay(
        identity, ring.private_keys(), bootstrap, dialer=dialer, rng=random.Random(), link_limits=limits
    )
    async with AsyncExitStack() as stack:
        with naming_listener("links", "--listen", *listen):
            listener = WebSocketListener(*listen, connections=ConnectionCounter(limits))
            opening = open_relay(
                identity,
                bootstrap,
                plan,
                dialer=dialer,
                listener=listener,
                onion_public_keys=ring.public_keys,
                make_relay=make_relay,
                admission=Admission(args.admission) if args.authority else None,
                measurer_rng=random.Random(),
            )
            role = await stack.enter_async_context(opening)
        kind = "authority" if role.authority else "relay"
        vitals = Vitals(
            kind, role.relay, directory=lambda: directory_status(role.directory, bootstrap, time.time())
        )
        metrics_url = await start_operator_services(nursery, args, vitals)
        nursery.start_soon(_rotate_onion_keys, ring, key_file, role.relay, role.publisher)
        announce(
            {
                "role": kind,
                "address": role.address,
                "advertised": role.advertised,  # in the descriptor: --advertise, else where it listens
                "node_id": identity.node_id.hex(),
                "onion_key": ring.public_keys()[0].hex(),
                "metrics": metrics_url,
            }
        )
        await trio.sleep_forever()


def _link_limits(args: argparse.Namespace) -> LinkLimits:
    fds_max = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    fitting = links_max_for_fds(fds_max if fds_max != resource.RLIM_INFINITY else LINKS_MAX * 2)
    links_max = min(args.links_max or LINKS_MAX, fitting)
    if args.links_max and args.links_max > links_max:
        log.warning("--links-max lowered to %d to fit the open-file limit of %d", links_max, fds_max)
    return LinkLimits(args.links_per_address_max, links_max, args.link_idle_timeout)


def listen_and_advertise(
    args: argparse.Namespace, identity: Identity, bootstrap: Bootstrap
) -> tuple[tuple[str, int], str | None]:
    """Where to listen and what to advertise. An authority listens where its bootstrap entry says unless
    --listen moves it (same port: a proxy or 0.0.0.0 may sit in front) and always advertises its entry."""
    entry = bootstrap.entry(identity.node_id) if args.authority else None
    if entry is None:
        return args.listen or LISTEN_DEFAULT, args.advertise
    host, port, _ = parse_ws_address(entry.address)
    where = f"this authority's entry in {bootstrap_path(args.bootstrap)} is {entry.address}"
    if args.advertise is not None and args.advertise != entry.address:
        raise BootstrapError(f"--advertise {args.advertise}: {where}; drop --advertise or make them equal")
    if args.listen is None:
        return (host, port), entry.address
    if args.advertise is None and args.listen[1] != port:
        raise BootstrapError(
            f"--listen {args.listen[0]}:{args.listen[1]}: {where}, which every role dials; drop --listen "
            f"(an authority listens where its entry says) or listen on port {port}"
        )
    return args.listen, entry.address


async def _rotate_onion_keys(
    ring: OnionKeyRing, key_file: Path, relay: Relay, publisher: DescriptorPublisher
) -> None:
    while True:
        await trio.sleep(KEY_ROTATION_CHECK_S)
        if ring.rotate_if_due(time.time()):
            ring.save(key_file)
            log.info("rotated the onion key")
            publisher.publish_soon()
        relay.core.onion_keys = ring.private_keys()


if __name__ == "__main__":
    sys.exit(main())
