"""What a relay spends per forwarded cell in its protocol core, without sockets: the sans-IO floor.

    .venv/bin/python -m benchmarks.relay_forward [--cells 2000] [--rounds 20] [--profile]

A 3-relay circuit on the in-memory wire of the circuit tests (tests/tp_net/circuit_harness.py, a fake
network, not mocks); the middle relay's `HopCore.receive_cell` is then fed `cells` forward cells of random
bodies: each is unwrapped (one wide-block layer), not recognized, and passed on: the per-cell path of a
relay in the middle of a circuit. Rounds alternate between the real layer and the same loop with
`OnionDirection.unwrap` replaced by the identity, so the layer's share is read from one run. `--profile`
prints the cProfile of one round, by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import statistics
import time

from tests.tp_net.circuit_harness import Wire
from tp_crypto.onion import OnionDirection
from tp_net.protocol.cells import relay_cell
from tp_net.protocol.circuit_hop import HopCore
from tp_net.protocol.frames import CELL_BODY_BYTES, Cell


def _middle_relay(cells: int) -> tuple[HopCore, int, list[Cell]]:
    wire = Wire(seed=1)
    handle = wire.open_circuit(wire.add_path(3))
    assert handle.built
    link = wire.link_between("r0", "r1")
    circuit_id = next(d.cell.circuit_id for d in wire.trace if d.link == link and d.dst == "r1")
    rng = random.Random(2)
    return (
        wire.hops["r1"].core,
        link,
        [relay_cell(circuit_id, rng.randbytes(CELL_BODY_BYTES)) for _ in range(cells)],
    )


def _forward_all(core: HopCore, link: int, cells: list[Cell]) -> float:
    start = time.process_time()
    for cell in cells:
        core.receive_cell(link, cell, 0.0)
    return (time.process_time() - start) / len(cells) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--cells", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    core, link, cells = _middle_relay(args.cells)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(_forward_all, core, link, cells)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        return
    real_unwrap = OnionDirection.unwrap
    with_layer: list[float] = []
    without_layer: list[float] = []
    try:
        for _ in range(args.rounds):
            OnionDirection.unwrap = real_unwrap  # type: ignore[method-assign]
            with_layer.append(_forward_all(core, link, cells))
            OnionDirection.unwrap = lambda self, body: body  # type: ignore[method-assign]
            without_layer.append(_forward_all(core, link, cells))
    finally:
        OnionDirection.unwrap = real_unwrap  # type: ignore[method-assign]
    forward, rest = statistics.median(with_layer), statistics.median(without_layer)
    print(json.dumps({"forward_us_per_cell": round(forward, 2), "without_layer_us_per_cell": round(rest, 2)}))


if __name__ == "__main__":
    main()
