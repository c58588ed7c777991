"""tp-relay: run a relay (`python -m tp_node.relay_cli` works too)."""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence

import trio

from tp_net.transport_ws import WebSocketDialer, WebSocketListener
from tp_node.cli_common import add_common_arguments, host_port, run_role
from tp_node.launch import announce, load_identity, new_onion_keys
from tp_node.relay import Relay


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tp-relay",
        description="Run a token.place relay: accept links, create and extend circuits, forward onion cells.",
    )
    parser.add_argument(
        "--listen",
        type=host_port,
        default=("127.0.0.1", 7000),
        help="HOST:PORT to accept links on (default 127.0.0.1:7000; port 0 picks a free one)",
    )
    add_common_arguments(parser, "relay")
    return run_role(_relay, parser.parse_args(argv))


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


if __name__ == "__main__":
    sys.exit(main())
