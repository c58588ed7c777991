"""What one onion layer costs per 1,024-byte cell body, in this process: the hot path of every hop.

    .venv/bin/python -m benchmarks.onion_layer [--cells 20000] [--rounds 5]
    .venv/bin/python -m benchmarks.onion_layer --against /tmp/old-tree [--batch 1000] [--rounds 60]

Prints the median over `rounds` of CPU microseconds per cell to add a layer (`wrap`: the client forward, a
hop backward) and to remove one (`unwrap`: a hop forward, the client backward). With a tree from before
the wide-block layers (a single XOR `crypt`), both rows time `crypt`, so the same command compares the two
(put either tree first on PYTHONPATH).

`--against TREE` is the A/B form: it loads a second copy of `tp_crypto` from TREE (another checkout, e.g.
`git archive main | tar -x -C /tmp/old-tree`) next to this one, checks that both give the same bytes when
they can (both wide-block), and alternates batches of `batch` cells between the two arms, `rounds` times
each, switching which arm goes first every round: a slow moment of a shared machine hits both arms alike.
It prints each arm's median and quartiles and the ratios (this tree over TREE) of the medians and of the
lower quartiles, the batches least disturbed by other work on a shared machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from tp_crypto.onion import OnionDirection
from tp_crypto.wide_block import WIDE_BLOCK_KEY_BYTES  # the MAC key has the same size
from tp_net.protocol.frames import CELL_BODY_BYTES

_OPERATIONS = ("wrap", "unwrap")


def _per_cell_us(step: Callable[[bytes], bytes], cells: int, body: bytes) -> float:
    start = time.process_time()
    for _ in range(cells):
        step(body)
    return (time.process_time() - start) / cells * 1e6


def _step(direction: Any, name: str) -> Callable[[bytes], bytes]:
    step: Callable[[bytes], bytes] = getattr(direction, name, None) or direction.crypt
    return step


def _direction_class_of(tree: str) -> Any:
    """OnionDirection from `tree`'s own tp_crypto, loaded beside this process's copy (which stays intact)."""
    ours = {name: module for name, module in sys.modules.items() if name.partition(".")[0] == "tp_crypto"}
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, tree)
    try:
        return importlib.import_module("tp_crypto.onion").OnionDirection
    finally:
        sys.path.remove(tree)
        for name in [name for name in sys.modules if name.partition(".")[0] == "tp_crypto"]:
            del sys.modules[name]
        sys.modules.update(ours)


def _alone(cells: int, rounds: int, rng: random.Random, body: bytes) -> dict[str, float]:
    result: dict[str, float] = {}
    for name in _OPERATIONS:
        times = []
        for _ in range(rounds):
            keys = (rng.randbytes(WIDE_BLOCK_KEY_BYTES), rng.randbytes(WIDE_BLOCK_KEY_BYTES))
            direction = OnionDirection(*keys)
            times.append(_per_cell_us(_step(direction, name), cells, body))
        result[f"{name}_us_per_cell"] = round(statistics.median(times), 2)
    return result


def _against(tree: str, batch: int, rounds: int, rng: random.Random, body: bytes) -> dict[str, Any]:
    keys = (rng.randbytes(WIDE_BLOCK_KEY_BYTES), rng.randbytes(WIDE_BLOCK_KEY_BYTES))
    arms = {"this": OnionDirection(*keys), "baseline": _direction_class_of(tree)(*keys)}
    same_bytes = None
    if all(hasattr(direction, "wrap") for direction in arms.values()):
        twins = [OnionDirection(*keys), _direction_class_of(tree)(*keys)]
        same_bytes = all(len({twin.wrap(body) for twin in twins}) == 1 for _ in range(100))
    times: dict[tuple[str, str], list[float]] = {(arm, op): [] for arm in arms for op in _OPERATIONS}
    for index in range(rounds):
        order = list(arms) if index % 2 else list(reversed(arms))
        for op in _OPERATIONS:
            for arm in order:
                times[(arm, op)].append(_per_cell_us(_step(arms[arm], op), batch, body))
    result: dict[str, Any] = {"same_bytes": same_bytes}
    for (arm, op), values in times.items():
        quartiles = statistics.quantiles(values, n=4)
        result[f"{arm}_{op}_us_per_cell"] = {
            "median": round(statistics.median(values), 2),
            "p25": round(quartiles[0], 2),
            "p75": round(quartiles[2], 2),
        }
    for op in _OPERATIONS:
        this, baseline = times[("this", op)], times[("baseline", op)]
        median_ratio = statistics.median(this) / statistics.median(baseline)
        # The lower quartile: the batches the other loads on a shared machine interrupted least.
        p25_ratio = statistics.quantiles(this, n=4)[0] / statistics.quantiles(baseline, n=4)[0]
        ratios = {"median": round(median_ratio, 3), "p25": round(p25_ratio, 3)}
        result[f"{op}_ratio_this_over_baseline"] = ratios
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=None, help="default 5, or 60 with --against")
    parser.add_argument("--against", metavar="TREE", help="a second tree to compare with, interleaved")
    parser.add_argument("--batch", type=int, default=1_000, help="cells per batch with --against")
    args = parser.parse_args()
    rng = random.Random(1)
    body = rng.randbytes(CELL_BODY_BYTES)
    if args.against:
        print(json.dumps(_against(args.against, args.batch, args.rounds or 60, rng, body)))
    else:
        print(json.dumps(_alone(args.cells, args.rounds or 5, rng, body)))


if __name__ == "__main__":
    main()
