"""tp-node: run a GPU node (`python -m tp_node.node_cli` works too)."""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence

import trio

from tp_crypto.identity import NODE_ID_BYTES
from tp_net.transport_ws import WebSocketDialer
from tp_node.cli_common import add_common_arguments, run_role
from tp_node.engine import FakeEngine
from tp_node.gpu_node import GpuNode, HomeRelay
from tp_node.launch import announce, load_identity, new_onion_keys


def home_relay(text: str) -> HomeRelay:
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tp-node",
        description="Run a token.place GPU node: keep links to home relays, serve inference over circuits.",
    )
    parser.add_argument(
        "--home-relay",
        type=home_relay,
        action="append",
        required=True,
        metavar="NODE_ID@ws://HOST:PORT/",
        help="a relay to keep a link to (repeat for several)",
    )
    parser.add_argument("--engine", choices=["fake"], default="fake", help="inference engine (default: fake)")
    parser.add_argument(
        "--fake-token-delay-ms", type=float, default=0.0, help="fake engine: delay before each token"
    )
    add_common_arguments(parser, "node")
    return run_role(_node, parser.parse_args(argv))


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


if __name__ == "__main__":
    sys.exit(main())
