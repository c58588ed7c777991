"""Console scripts of the node roles: tp-relay, tp-node, tp-demo."""

from __future__ import annotations

from collections.abc import Sequence

from tp_node.cli_common import pending_command


def relay_main(argv: Sequence[str] | None = None) -> int:
    return pending_command(
        "tp-relay",
        "Run a token.place relay: accept links, forward onion cells, serve the directory.",
        "the relay lands with the circuits issue",
        argv,
    )


def node_main(argv: Sequence[str] | None = None) -> int:
    return pending_command(
        "tp-node",
        "Run a token.place GPU node: serve llama.cpp models over the overlay.",
        "the GPU node lands with the inference issue",
        argv,
    )


def demo_main(argv: Sequence[str] | None = None) -> int:
    return pending_command(
        "tp-demo",
        "Start a small complete token.place network and gateway on 127.0.0.1.",
        "the demo network lands with the gateway issue",
        argv,
    )
