"""Console script tp-demo."""

from __future__ import annotations

from collections.abc import Sequence

from tp_node.cli_common import pending_command


def demo_main(argv: Sequence[str] | None = None) -> int:
    return pending_command(
        "tp-demo",
        "Start a small complete token.place network and gateway on 127.0.0.1.",
        "the demo network lands with the gateway issue",
        argv,
    )
