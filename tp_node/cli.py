"""Console scripts of the node roles: tp-relay, tp-node, tp-demo."""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import trio

from tp_crypto.errors import TokenPlaceError
from tp_crypto.identity import NODE_ID_BYTES
from tp_net.transport_ws import WebSocketDialer, WebSocketListener
from tp_node.cli_common import pending_command
from tp_node.engine import FakeEngine
from tp_node.gpu_node import GpuNode, HomeRelay
from tp_node.launch import (
    announce,
    default_data_dir,
    load_identity,
    new_onion_keys,
    run_until_signalled,
    setup_logging,
)
from tp_node.relay import Relay

EXIT_USAGE = 2
EXIT_FAILURE = 1


def _host_port(text: str) -> tuple[str, int]:
    host, separator, port = text.rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (port 0..65535)")
    return host.strip("[]"), int(port)


def _home_relay(text: str) -> HomeRelay:
    node_id_hex, separator, address = text.partition("@")
    try:
        node_id = bytes.fromhex(node_id_hex)
    except ValueError:
        node_id = b""
    if not separator or len(node_id) != NODE_ID_BYTES or not address.startswith("ws://"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not NODE_ID_HEX@ws://HOST:PORT/ (node id: 64 hex digits)"
        )
    return HomeRelay(node_id, address)


def _common_arguments(parser: argparse.ArgumentParser, role: str) -> None:
    parser.add_argument(
        "--data-dir", type=Path, default=default_data_dir(role), help="where keys live (default: %(default)s)"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def relay_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tp-relay",
        description="Run a token.place relay: accept links, create and extend circuits, forward onion cells.",
    )
    parser.add_argument(
        "--listen",
        type=_host_port,
        default=("127.0.0.1", 7000),
        help="HOST:PORT to accept links on (default 127.0.0.1:7000; port 0 picks a free one)",
    )
    _common_arguments(parser, "relay")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    return _run(_relay, args)


async def _relay(args: argparse.Namespace, nursery: trio.Nursery) -> None:
    identity = load_identity(args.data_dir)
    onion_keys, onion_public = new_onion_keys()
    relay = Relay(identity, onion_keys, dialer=WebSocketDialer(nursery), rng=random.Random())
    address = await nursery.start(relay.serve, WebSocketListener(*args.listen))
    announce(
        {
            "role": "relay",
            "address": address,
            "node_id": identity.node_id.hex(),
            "onion_key": onion_public.hex(),
        }
    )


def node_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tp-node",
        description="Run a token.place GPU node: keep links to home relays, serve inference over circuits.",
    )
    parser.add_argument(
        "--home-relay",
        type=_home_relay,
        action="append",
        required=True,
        metavar="NODE_ID@ws://HOST:PORT/",
        help="a relay to keep a link to (repeat for several)",
    )
    parser.add_argument("--engine", choices=["fake"], default="fake", help="inference engine (default: fake)")
    parser.add_argument(
        "--fake-token-delay-ms", type=float, default=0.0, help="fake engine: delay before each token"
    )
    _common_arguments(parser, "node")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    return _run(_node, args)


async def _node(args: argparse.Namespace, nursery: trio.Nursery) -> None:
    identity = load_identity(args.data_dir)
    onion_keys, onion_public = new_onion_keys()
    engine = FakeEngine(token_delay_s=args.fake_token_delay_ms / 1000)
    node = GpuNode(
        identity,
        onion_keys,
        home_relays=args.home_relay,
        engine=engine,
        dialer=WebSocketDialer(nursery),
        rng=random.Random(),
    )
    nursery.start_soon(node.run)
    await node.linked.wait()
    announce({"role": "node", "node_id": identity.node_id.hex(), "onion_key": onion_public.hex()})


def _run(
    role: Callable[[argparse.Namespace, trio.Nursery], Awaitable[None]], args: argparse.Namespace
) -> int:
    async def main(nursery: trio.Nursery) -> None:
        await role(args, nursery)

    try:
        trio.run(run_until_signalled, main)
    except TokenPlaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"error: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def demo_main(argv: Sequence[str] | None = None) -> int:
    return pending_command(
        "tp-demo",
        "Start a small complete token.place network and gateway on 127.0.0.1.",
        "the demo network lands with the gateway issue",
        argv,
    )
