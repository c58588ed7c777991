"""tp-node: run a GPU node (`python -m tp_node.node_cli` works too)."""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path

import trio

from tp_cli.common import (
    add_bootstrap_argument,
    add_common_arguments,
    add_metrics_argument,
    resolve_settings,
    run_role,
)
from tp_cli.launch import announce, load_identity, software_version
from tp_crypto.identity import NODE_ID_BYTES
from tp_net.protocol.bootstrap_config import load_bootstrap
from tp_net.protocol.sealed import SealingKey
from tp_net.protocol.traffic_shaping import RESPONSE_SHAPING_DEFAULT, RESPONSE_SHAPING_OFF, ResponseShaping
from tp_net.trio.transport_ws import WebSocketDialer
from tp_node.engine import ServingEngine
from tp_node.engine_cli import add_engine_arguments, open_engine
from tp_node.gpu_node import HomeRelay
from tp_node.init_cli import init_main
from tp_node.onion_keys import ONION_KEY_FILE, SEALING_KEY_FILE, OnionKeyRing
from tp_node.operator import start_operator_services
from tp_node.roles import open_node
from tp_node.status_cli import status_main
from tp_node.vitals import Vitals


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tp-node",
        description="Run a token.place GPU node: keep links to home relays, serve inference over circuits.",
        epilog="Subcommands: `tp-node models` (pull, list), `tp-node init` (key and config file), "
        "`tp-node status`, `tp-node doctor` (GPU, memory, network, key files); each takes --help.",
    )
    parser.add_argument(
        "--home-relay",
        type=home_relay,
        action="append",
        metavar="NODE_ID@ws://HOST:PORT/",
        help="a relay to keep a link to (repeat for several); default: relays chosen from the directory",
    )
    parser.add_argument(
        "--invitation", type=Path, help="file holding an invitation token (networks whose authorities invite)"
    )
    parser.add_argument(
        "--family",
        default="",
        help="operator family (as your relays'): no relay of it is on a circuit to this node",
    )
    parser.add_argument(
        "--response-shaping",
        choices=("on", "off"),
        default="on",
        help="send answers on a fixed cadence, padded to length buckets (docs/PROTOCOL.md 5.8; default on: "
        "off lets anyone on the path tell answers apart by their cells and timing)",
    )
    parser.add_argument(
        "--first-token",
        choices=("on-tick", "at-once"),
        default="on-tick",
        help="with shaping on, when the first token's cell leaves: on the next tick (default), or at once "
        "with the ticks counted from it (up to one tick sooner, but its time tells the path the prompt's"
        " size and the model's speed: docs/BENCHMARKS.md, 'Traffic analysis')",
    )
    add_engine_arguments(parser)
    add_bootstrap_argument(parser)
    add_metrics_argument(parser)
    add_common_arguments(parser, "node")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["models"]:
        from tp_node.models_cli import main as models_main

        return models_main(argv[1:])
    if argv[:1] == ["init"]:
        return init_main("node", build_parser, argv[1:])
    if argv[:1] == ["status"]:
        return status_main("node", build_parser, argv[1:])
    if argv[:1] == ["doctor"]:
        from tp_node.doctor import doctor_main

        return doctor_main(build_parser, argv[1:])
    return run_role(run_node, resolve_settings(build_parser(), "node", argv))


def _shaping(args: argparse.Namespace) -> ResponseShaping:
    if args.response_shaping == "off":
        return RESPONSE_SHAPING_OFF
    return replace(RESPONSE_SHAPING_DEFAULT, first_at_once=args.first_token == "at-once")


EngineOpener = Callable[[argparse.Namespace], AbstractAsyncContextManager[ServingEngine]]


async def run_node(
    args: argparse.Namespace, nursery: trio.Nursery, engines: EngineOpener = open_engine
) -> None:
    """The tp-node role; `engines` opens the engine the flags ask for (the traffic harness passes its own
    fake, benchmarks/traffic/planned_node.py)."""
    identity = load_identity(args.data_dir)
    bootstrap = load_bootstrap(args.bootstrap)
    # Nodes keep their ring across restarts too; a due rotation happens at the next start.
    ring = OnionKeyRing.load_or_create(args.data_dir / ONION_KEY_FILE, time.time())
    onion_keys, onion_public = ring.private_keys(), ring.public_keys()[0]
    sealing = OnionKeyRing.load_or_create(args.data_dir / SEALING_KEY_FILE, time.time())
    sealing_keys = [
        SealingKey(*pair) for pair in zip(sealing.private_keys(), sealing.public_keys(), strict=True)
    ]
    engine = await nursery.start(_serve_engine, args, engines)
    opening = open_node(
        identity,
        bootstrap,
        onion_keys=onion_keys,
        onion_public_keys=lambda: (onion_public,),
        home_relays=args.home_relay or (),  # none given: chosen from the directory (open_node)
        engine=engine,
        dialer=WebSocketDialer(nursery),
        rng=random.Random(),
        version=software_version(),
        invitation=args.invitation.read_bytes() if args.invitation else None,
        withdraw_on_stop=True,
        family=args.family,
        shaping=_shaping(args),
        sealing_keys=lambda: sealing_keys,
        sealing_public_keys=sealing.public_keys,
    )
    async with opening as role:
        metrics_url = await start_operator_services(nursery, args, Vitals("node", role.node, engine))
        await role.wait_linked()
        announce(
            {
                "role": "node",
                "node_id": identity.node_id.hex(),
                "onion_key": onion_public.hex(),
                "metrics": metrics_url,
            }
        )
        await trio.sleep_forever()


async def _serve_engine(
    args: argparse.Namespace,
    engines: EngineOpener,
    *,
    task_status: trio.TaskStatus[ServingEngine] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keeps the engine (its model slots) open until the node stops."""
    async with engines(args) as engine:
        task_status.started(engine)
        await trio.sleep_forever()


if __name__ == "__main__":
    sys.exit(main())
