"""Console script tp-sim."""

from __future__ import annotations

from collections.abc import Sequence

from tp_node.cli_common import pending_command


def main(argv: Sequence[str] | None = None) -> int:
    return pending_command(
        "tp-sim",
        "Simulate a token.place network of thousands of machines under virtual time.",
        "the simulator lands with the simulation issue",
        argv,
    )
