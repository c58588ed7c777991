"""What recording a circuit's work (circuit-table eviction, PROTOCOL.md 5.6) costs a relay per backward cell.

    .venv/bin/python -m benchmarks.eviction_cost [--cells 2000] [--rounds 45] [--step-s 0.001]

A relay's HopCore (a guard, and a GPU node behind it, on the sans-IO test wire) takes backward cells of one
circuit from the node, `--step-s` apart in its clock. Three variants of `HopCore._worked`, interleaved in
rotating order each round, CPU time of this thread per cell, medians: G, recorded at most every
WORK_RESOLUTION_S (as built); U, recorded on every cell; N, nothing recorded (before eviction).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from tests.tp_net.circuit_harness import Wire
from tp_net.protocol import circuit_hop
from tp_net.protocol.cells import relay_cell
from tp_net.protocol.frames import CELL_BODY_BYTES
from tp_net.protocol.hop_states import HopCircuit

Worked = Callable[[circuit_hop.HopCore, HopCircuit, float], None]


def _nothing(core: circuit_hop.HopCore, circuit: HopCircuit, now: float) -> None:
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=45)
    parser.add_argument("--step-s", type=float, default=0.001)
    args = parser.parse_args()
    wire = Wire(1)
    assert wire.open_circuit(wire.add_path(1)).built
    relay = wire.hops["r0"].core
    link = wire.link_between("r0", "node")
    (circuit,) = relay._circuits.values()
    assert circuit.next is not None
    cell = relay_cell(circuit.next[1], bytes(CELL_BODY_BYTES))
    variants: dict[str, Worked] = {
        "G": circuit_hop.HopCore._worked,
        "U": circuit_hop.HopCore._record_work,
        "N": _nothing,
    }
    names = list(variants)
    per_cell: dict[str, list[float]] = {name: [] for name in names}
    now = 0.0
    try:
        for round_ in range(args.rounds):
            for name in names[round_ % 3 :] + names[: round_ % 3]:
                setattr(circuit_hop.HopCore, "_worked", variants[name])  # noqa: B010 (a method swapped)
                started = time.thread_time()
                for i in range(args.cells):
                    relay.receive_cell(link, cell, now + i * args.step_s)
                per_cell[name].append((time.thread_time() - started) / args.cells * 1e6)
                now += args.cells * args.step_s
    finally:
        setattr(circuit_hop.HopCore, "_worked", variants["G"])  # noqa: B010
    medians = {name: statistics.median(values) for name, values in per_cell.items()}
    print(
        f"step {args.step_s} s: "
        + ", ".join(f"{name} {value:.2f} us" for name, value in medians.items())
        + f"; G/N {medians['G'] / medians['N']:.4f}, U/N {medians['U'] / medians['N']:.4f}"
        + f" ({args.cells} cells x {args.rounds} rounds)"
    )


if __name__ == "__main__":
    main()
