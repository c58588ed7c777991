"""What one onion layer costs per 1,024-byte cell body, in this process: the hot path of every hop.

    .venv/bin/python -m benchmarks.onion_layer [--cells 20000] [--rounds 5]

Prints the median over `rounds` of CPU microseconds per cell to add a layer (`wrap`: the client forward, a
hop backward) and to remove one (`unwrap`: a hop forward, the client backward). With a tree from before
the wide-block layers (a single XOR `crypt`), both rows time `crypt`, so the same command compares the two
(put either tree first on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable

from tp_crypto.onion import OnionDirection
from tp_net.protocol.frames import CELL_BODY_BYTES


def _per_cell_us(step: Callable[[bytes], bytes], cells: int, body: bytes) -> float:
    start = time.process_time()
    for _ in range(cells):
        step(body)
    return (time.process_time() - start) / cells * 1e6


def _step(direction: OnionDirection, name: str) -> Callable[[bytes], bytes]:
    step: Callable[[bytes], bytes] = getattr(direction, name, None) or direction.crypt  # type: ignore[attr-defined]
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(1)
    body = rng.randbytes(CELL_BODY_BYTES)
    result: dict[str, float] = {}
    for name in ("wrap", "unwrap"):
        times = []
        for _ in range(args.rounds):
            direction = OnionDirection(rng.randbytes(32), rng.randbytes(32))
            times.append(_per_cell_us(_step(direction, name), args.cells, body))
        result[f"{name}_us_per_cell"] = round(statistics.median(times), 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
