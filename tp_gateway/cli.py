"""Console script tp-gateway."""

from __future__ import annotations

from collections.abc import Sequence

from tp_node.cli_common import pending_command


def main(argv: Sequence[str] | None = None) -> int:
    return pending_command(
        "tp-gateway",
        "Run the local OpenAI-compatible gateway into the token.place overlay.",
        "the gateway lands with the gateway issue",
        argv,
    )
