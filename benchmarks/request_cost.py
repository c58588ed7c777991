"""Where a short request's CPU goes: sequential streamed 16-token chat completions through the gateway (the
suite's fast network), and the CPU milliseconds each process used per request, next to what it uses idle.

    .venv/bin/python -m benchmarks.request_cost [--requests 200] [--idle-seconds 8]

Idle CPU is measured first over --idle-seconds with no requests (the local network's authorities vote
every few seconds); "net" is a process's CPU per request less its idle share of the same time.

`request_cpu_row` is the suite's row of the same measure: blocks of BLOCK_REQUESTS requests through the
gateway and to the direct server (the same HTTP app and FakeEngine, no overlay) interleaved A B B A; the row
is the overlay's added CPU per request (the net CPU per request of the gateway, the 5 relays and the node,
less the direct server's), each process's net CPU per request in `details`; a process's idle rate
is what it used during the other arm's blocks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import trio

from benchmarks.gateway import HTTP_TIMEOUT_S, SHORT_MAX_TOKENS, WARMUP_REQUESTS
from benchmarks.network import BenchNetwork, bench_network
from benchmarks.openai_http import Timing, chat_body, stream_chat
from benchmarks.results import Row, measured
from benchmarks.saturation import network_pids
from benchmarks.stream_cost import cpu_seconds

BLOCK_REQUESTS = 10


def _requests(url: str, body: dict[str, object], count: int) -> list[Timing]:
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
        return [stream_chat(client, url, body) for _ in range(count)]


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as state:
        async with bench_network(Path(state)) as bench:
            pids = {
                f"relay {index + 1}": relay.process.pid for index, relay in enumerate(bench.network.relays)
            }
            pids |= {"node": bench.network.node.process.pid, "gateway": bench.gateway.process.pid}
            pids["client"] = os.getpid()
            body = chat_body(bench.model, SHORT_MAX_TOKENS, stream=True)
            await trio.to_thread.run_sync(_requests, bench.gateway_url, body, WARMUP_REQUESTS)
            idle_start = {role: cpu_seconds(pid) for role, pid in pids.items()}
            await trio.sleep(args.idle_seconds)
            before = {role: cpu_seconds(pid) for role, pid in pids.items()}
            idle = {role: (before[role] - idle_start[role]) / args.idle_seconds for role in pids}
            start = time.perf_counter()
            timings = await trio.to_thread.run_sync(_requests, bench.gateway_url, body, args.requests)
            elapsed = time.perf_counter() - start
            used = {role: cpu_seconds(pid) - before[role] for role, pid in pids.items()}
    first = statistics.median(timing.first_token_ms for timing in timings)
    total = statistics.median(timing.total_ms for timing in timings)
    print(
        f"{args.requests} requests in {elapsed:.1f} s; medians: first token {first:.1f}, all {total:.1f} ms"
    )
    print(f"  {'process':10} {'CPU ms/request':>14} {'idle ms/s':>10} {'net ms/request':>15}")
    for role, seconds in used.items():
        net = (seconds - idle[role] * elapsed) / args.requests * 1000
        print(f"  {role:10} {seconds / args.requests * 1000:14.2f} {idle[role] * 1000:10.1f} {net:15.2f}")
    print(f"  {'all':10} {sum(used.values()) / args.requests * 1000:14.2f}")


Arms = dict[str, dict[str, float]]


def _blocks(bench: BenchNetwork, requests: int, pids: dict[str, int]) -> tuple[Arms, dict[str, float]]:
    """CPU seconds of every process during each arm ("overlay", "direct") and the arms' wall seconds, over
    `requests` of each, in blocks of BLOCK_REQUESTS, A B B A."""
    body = chat_body(bench.model, SHORT_MAX_TOKENS, stream=True)
    used = {arm: dict.fromkeys(pids, 0.0) for arm in ("overlay", "direct")}
    wall = {"overlay": 0.0, "direct": 0.0}
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
        for block in range(0, requests, BLOCK_REQUESTS):
            arms = ("overlay", "direct") if block // BLOCK_REQUESTS % 2 == 0 else ("direct", "overlay")
            for arm in arms:
                url = bench.gateway_url if arm == "overlay" else bench.direct_url
                before = {role: cpu_seconds(pid) for role, pid in pids.items()}
                start = time.perf_counter()
                for _ in range(min(BLOCK_REQUESTS, requests - block)):
                    stream_chat(client, url, body)
                wall[arm] += time.perf_counter() - start
                for role, pid in pids.items():
                    used[arm][role] += cpu_seconds(pid) - before[role]
    return used, wall


async def request_cpu_row(bench: BenchNetwork, requests: int) -> Row:
    """The overlay's added CPU per streamed 16-token request, per process and in all. A process's net CPU
    per request is its CPU during its own arm's blocks less its rate during the other arm's blocks (its idle
    rate, measured interleaved, under the same load) times its own arm's wall time."""
    pids = network_pids(bench) | {"direct": bench.direct.process.pid}
    used, wall = await trio.to_thread.run_sync(_blocks, bench, requests, pids)
    net, idle = {}, {}
    for role in pids:
        own, other = ("direct", "overlay") if role == "direct" else ("overlay", "direct")
        idle[role] = used[other][role] / wall[other]
        net[role] = (used[own][role] - idle[role] * wall[own]) / requests * 1000
    direct = net.pop("direct")
    overlay = sum(net.values())  # every relay: the gateway picks its circuits' paths itself
    return measured(
        "request_cpu",
        f"CPU per streamed {SHORT_MAX_TOKENS}-token request added by the overlay (all its processes)",
        "ms",
        [overlay - direct],
        details={
            "requests": requests,
            "overlay_ms_per_request": overlay,
            "direct_ms_per_request": direct,
            **{f"{role}_ms_per_request": value for role, value in net.items()},
            "idle_ms_per_s": {role: rate * 1000 for role, rate in idle.items()},
            "overlay_s": wall["overlay"],
            "direct_s": wall["direct"],
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.request_cost", description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=8.0)
    trio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
