"""`python -m benchmarks.traffic.cover`: what the optional cover stream costs on an idle
pooled circuit and what it hides (docs/BENCHMARKS.md, "Cover stream").

The real relay, node and client code runs on the memory transport under trio's MockClock. Per trial one
circuit idles for a simulated hour, looked at every POOL_TICK_S as the gateway pool does (a keepalive DROP
after CIRCUIT_KEEPALIVE_S idle, and the cover stream's cells, tp_net.protocol.traffic_shaping.CoverSchedule),
and one conversation (a synthetic WORKLOAD plan, request padded) starts at a random second. An observer on
the client's link to its guard records (time, direction, bytes) of every message and reports:
- the cost: bytes (link pings included) and cells per idle circuit per hour (the conversation's own
  messages, to 15 s after its END, left out), and the process CPU time of the whole run (every hop runs
  in this process) against the same run without cover;
- silence: the share of 10-second windows of the idle time in which the link carried no cell (the link's
  own pings, every LINK_KEEPALIVE_IDLE_S of quiet, are far smaller than a cell: an observer tells them apart);
- "when did a conversation start": the observer guesses the first second whose messages carry at least
  REQUEST_BUCKET_CELLS_MIN cells (the request's burst), and the guess's error.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from dataclasses import dataclass

import trio
import trio.testing

from benchmarks.traffic.capture import WORKLOAD, PlannedEngine, RecordingDialer, draw_plan, request_document
from tp_gateway.overlay import CIRCUIT_KEEPALIVE_S, POOL_TICK_S
from tp_net.protocol.frames import CELL_BODY_BYTES
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.protocol.traffic_shaping import (
    COVER_CELLS_PER_S_MAX,
    COVER_STREAM_OFF,
    REQUEST_BUCKET_CELLS_MIN,
    CoverSchedule,
    CoverStream,
)
from tp_net.trio.client import ClientLink
from tp_node.testing.memory_network import in_process_network

HOUR_S = 3600.0
SILENCE_WINDOW_S = 10.0


@dataclass
class Trial:
    idle_bytes: int  # both directions, outside the conversation
    idle_cells: int
    silent_windows: float  # share of SILENCE_WINDOW_S windows of idle time with no cell
    start_error_s: float  # |guessed start - real start|; inf: no guess
    cover_cells: int


def _cells(message_bytes: int) -> int:
    """Cells in one transport message as its size shows them (queued cells may share one; a link's own
    ping is far smaller than a cell: 0)."""
    return message_bytes // CELL_BODY_BYTES


async def _trial(cover: CoverStream, seed: int) -> Trial:
    rng = random.Random(seed)
    engine = PlannedEngine()
    records: list[tuple[float, int, int]] = []
    plan = draw_plan(WORKLOAD[seed % len(WORKLOAD)], rng)
    engine.plans[seed] = plan
    document = request_document(plan, seed, pad=True)
    start_at = rng.randrange(600, int(HOUR_S) - 600)  # the conversation's second
    busy: list[float] = []  # [started, ended]
    async with in_process_network(engine=engine, seed=seed) as net:
        hops = net.path()
        async with ClientLink.connect(
            RecordingDialer(net.network.dialer(), records), hops[0], rng=rng
        ) as link:
            circuit = await link.build_circuit(hops)
            origin = trio.current_time()
            records.clear()  # the build is not idle time
            schedule = CoverSchedule(cover, random.Random(f"{seed}:cover"))
            in_flight = False

            async def converse() -> None:
                nonlocal in_flight
                busy.append(trio.current_time() - origin)
                async for _ in circuit.request(INFERENCE_SERVICE, document):
                    pass
                in_flight = False
                busy.append(trio.current_time() - origin)

            async with trio.open_nursery() as nursery:
                last_used = 0.0  # the pool's: a request or a keepalive (the cover does not count)
                for tick in range(int(HOUR_S / POOL_TICK_S)):
                    await trio.sleep_until(origin + tick * POOL_TICK_S)
                    now = tick * POOL_TICK_S
                    if tick * POOL_TICK_S == start_at:
                        in_flight = True
                        nursery.start_soon(converse)
                        await trio.sleep(0)
                    if in_flight:
                        last_used = now
                        continue
                    due = schedule.cells_due(now, idle=True)
                    if now - last_used > CIRCUIT_KEEPALIVE_S:
                        due += 1
                        last_used = now
                    for _ in range(due):
                        circuit.send_drop()
            assert circuit.is_open, "a hop tore the circuit down"
    start, end = busy[0], busy[1] + 15.0  # the node's padding after END (a bucket's tail) is the conversation
    timed = [(t - origin, d, n) for t, d, n in records]
    idle = [r for r in timed if not start <= r[0] <= end]
    windows = [w for w in range(int(HOUR_S / SILENCE_WINDOW_S)) if not start <= w * SILENCE_WINDOW_S <= end]
    heard = {int(t // SILENCE_WINDOW_S) for t, _, n in idle if _cells(n)}
    per_second: dict[int, int] = {}
    for t, _, n in timed:
        per_second[int(t)] = per_second.get(int(t), 0) + _cells(n)
    guesses = [s for s in sorted(per_second) if per_second[s] >= REQUEST_BUCKET_CELLS_MIN]
    return Trial(
        idle_bytes=sum(n for _, _, n in idle),
        idle_cells=sum(_cells(n) for _, _, n in idle),
        silent_windows=sum(1 for w in windows if w not in heard) / len(windows),
        start_error_s=abs(guesses[0] - start) if guesses else math.inf,
        cover_cells=schedule.cells_sent,
    )


def run(cover: CoverStream, seed: int) -> Trial:
    return trio.run(_trial, cover, seed, clock=trio.testing.MockClock(autojump_threshold=0))


def measure(cover: CoverStream, *, trials: int, seed: int) -> dict[str, float]:
    started = time.process_time()
    results = [run(cover, seed + n) for n in range(trials)]
    cpu_s = (time.process_time() - started) / trials
    return {  # each trial is one circuit's simulated hour
        "idle_kib_per_hour": statistics.mean(r.idle_bytes / 1024 for r in results),
        "idle_cells_per_hour": statistics.mean(r.idle_cells for r in results),
        "cover_cells_per_hour": statistics.mean(r.cover_cells for r in results),
        "silent_windows": statistics.mean(r.silent_windows for r in results),
        "start_error_s_median": statistics.median(r.start_error_s for r in results),
        "cpu_s_per_run": cpu_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=5, help="simulated hours per setting")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    settings = {
        "off": COVER_STREAM_OFF,
        f"{COVER_CELLS_PER_S_MAX / 2} cells/s": CoverStream(rate_cells_per_s=COVER_CELLS_PER_S_MAX / 2),
        f"{COVER_CELLS_PER_S_MAX} cells/s": CoverStream(rate_cells_per_s=COVER_CELLS_PER_S_MAX),
    }
    header = ("cover", "KiB/h", "cells/h", "cover/h", "silent 10 s", "start err s", "CPU s/run")
    print("{:16} {:>8} {:>8} {:>8} {:>12} {:>12} {:>10}".format(*header))
    for name, cover in settings.items():
        r = measure(cover, trials=args.trials, seed=args.seed)
        print(
            f"{name:16} {r['idle_kib_per_hour']:8.0f} {r['idle_cells_per_hour']:8.0f} "
            f"{r['cover_cells_per_hour']:8.0f} {r['silent_windows']:12.2f} {r['start_error_s_median']:12.1f} "
            f"{r['cpu_s_per_run']:10.2f}"
        )
    print("(the client's link to its guard, both directions, outside the conversation; CPU: all hops)")


if __name__ == "__main__":
    main()
