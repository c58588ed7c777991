"""tp-node: run a GPU node (`python -m tp_node.node_cli` works too)."""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from bootstrap.config import load_bootstrap
from tp_crypto.identity import NODE_ID_BYTES
from tp_net.circuit_client import HopInfo
from tp_net.descriptors import LOAD_MAX, MAX_CONCURRENT_MAX, ModelOffer
from tp_net.sealed import SealingKey
from tp_net.transport_ws import WebSocketDialer
from tp_node.cli_common import (
    add_bootstrap_argument,
    add_common_arguments,
    add_metrics_argument,
    resolve_settings,
    run_role,
)
from tp_node.directory_duties import node_publisher
from tp_node.engine import ModelInfo, ServingEngine
from tp_node.engine_cli import add_engine_arguments, open_engine
from tp_node.gpu_node import GpuNode, HomeRelay
from tp_node.init_cli import init_main
from tp_node.launch import announce, load_identity, software_version
from tp_node.onion_keys import ONION_KEY_FILE, SEALING_KEY_FILE, OnionKeyRing
from tp_node.operator import start_operator_services
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
        "`tp-node status`; each takes --help.",
    )
    parser.add_argument(
        "--home-relay",
        type=home_relay,
        action="append",
        required=True,
        metavar="NODE_ID@ws://HOST:PORT/",
        help="a relay to keep a link to (repeat for several)",
    )
    parser.add_argument(
        "--invitation", type=Path, help="file holding an invitation token (networks whose authorities invite)"
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
    return run_role(_node, resolve_settings(build_parser(), "node", argv))


async def _node(args: argparse.Namespace, nursery: trio.Nursery) -> None:
    identity = load_identity(args.data_dir)
    bootstrap = load_bootstrap(args.bootstrap)
    # Nodes keep their ring across restarts too; a due rotation happens at the next start.
    ring = OnionKeyRing.load_or_create(args.data_dir / ONION_KEY_FILE, time.time())
    onion_keys, onion_public = ring.private_keys(), ring.public_keys()[0]
    sealing = OnionKeyRing.load_or_create(args.data_dir / SEALING_KEY_FILE, time.time())
    sealing_keys = [
        SealingKey(*pair) for pair in zip(sealing.private_keys(), sealing.public_keys(), strict=True)
    ]
    engine = await nursery.start(_serve_engine, args)
    dialer = WebSocketDialer(nursery)
    node = GpuNode(
        identity,
        onion_keys,
        home_relays=args.home_relay,
        engine=engine,
        dialer=dialer,
        rng=random.Random(),
        sealing_keys=lambda: sealing_keys,
    )
    nursery.start_soon(node.run)
    metrics_url = await start_operator_services(nursery, args, Vitals("node", node, engine))
    await node.linked.wait()
    publisher = node_publisher(
        identity,
        bootstrap,
        dialer,
        home_relays=[HopInfo(relay.node_id, None, relay.address) for relay in args.home_relay],
        onion_public_keys=lambda: (onion_public,),
        offers=lambda: model_offers(engine.models()),
        version=software_version(),
        rng=random.Random(),
        invitation=args.invitation.read_bytes() if args.invitation else None,
        sealing_public_keys=sealing.public_keys,
    )
    publisher.withdraw_on_stop = True  # a clean stop leaves the directory at its next document
    nursery.start_soon(publisher.run)
    announce(
        {
            "role": "node",
            "node_id": identity.node_id.hex(),
            "onion_key": onion_public.hex(),
            "metrics": metrics_url,
        }
    )


def model_offers(models: Sequence[ModelInfo]) -> tuple[ModelOffer, ...]:
    """What the descriptor advertises: each model and its current load (requests running or waiting)."""
    return tuple(
        ModelOffer(
            model.model_id,
            bytes.fromhex(model.sha256),
            model.parameter_count,
            model.quantisation,
            model.context_length,
            min(model.max_concurrent, MAX_CONCURRENT_MAX),  # an unlimited fake engine still fits the field
            min(model.active_requests + model.queued_requests, LOAD_MAX),
        )
        for model in models
    )


async def _serve_engine(
    args: argparse.Namespace, *, task_status: trio.TaskStatus[ServingEngine] = trio.TASK_STATUS_IGNORED
) -> None:
    """Keeps the engine (its model slots) open until the node stops."""
    async with open_engine(args) as engine:
        task_status.started(engine)
        await trio.sleep_forever()


if __name__ == "__main__":
    sys.exit(main())
