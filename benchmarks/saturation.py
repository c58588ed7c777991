"""Saturation rows of the suite: the whole network's requests/s and latency as concurrent clients grow.

For each level (the suite's Sizes.client_levels: 1, 2, 4, 8, 16, 32), that many clients (trio tasks with
one httpx.AsyncClient each, in the benchmark process) send streamed 16-token chat completions through the
gateway back to back for `level_s` seconds (fake engine, warm pool). Each level gives a row with the
requests' latency (p50, p95) and, in `details`, requests/s, the time to the first token, and the CPU
seconds the network's processes (gateway, 5 relays, node) and the benchmark client used. The `saturation`
row is the best level's requests per CPU second the network's processes used beyond their idle rate
(measured for `level_s` before the curve: the bench period's votes are not charged to requests), i.e.
requests/s per core of the whole network; the figure with idle included is in `details`.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import trio

from benchmarks.gateway import HTTP_TIMEOUT_S, SHORT_MAX_TOKENS
from benchmarks.network import BenchNetwork
from benchmarks.openai_http import chat_body
from benchmarks.results import Row, measured
from benchmarks.stats import percentile


async def _stream(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> tuple[float, float]:
    """One streamed chat: (ms to the first content, ms in all)."""
    start = time.perf_counter()
    first = 0.0
    async with client.stream("POST", f"{url}/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if first or not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                first = time.perf_counter()
    if not first:
        raise RuntimeError("no content streamed from the gateway")
    return (first - start) * 1000, (time.perf_counter() - start) * 1000


def network_pids(bench: BenchNetwork) -> dict[str, int]:
    """The network's processes by role: gateway, relay 1..5 (1-3 the authorities), node."""
    pids = {"gateway": bench.gateway.process.pid}
    pids |= {f"relay {index + 1}": relay.process.pid for index, relay in enumerate(bench.network.relays)}
    pids["node"] = bench.network.node.process.pid
    return pids


async def idle_cores(bench: BenchNetwork, seconds: float) -> float:
    """CPU cores the network's processes use with no requests (the bench period's votes, keepalives)."""
    from benchmarks.stream_cost import cpu_seconds

    pids = network_pids(bench).values()
    before, started = sum(cpu_seconds(pid) for pid in pids), time.monotonic()
    await trio.sleep(seconds)
    return (sum(cpu_seconds(pid) for pid in pids) - before) / (time.monotonic() - started)


async def level(bench: BenchNetwork, clients: int, level_s: float, idle: float) -> Row:
    """`idle`: the network's idle CPU cores, measured before the curve."""
    from benchmarks.stream_cost import cpu_seconds

    body = chat_body(bench.model, SHORT_MAX_TOKENS, stream=True)
    timings: list[tuple[float, float]] = []
    errors = 0
    pids = network_pids(bench)

    async def client_task(deadline: float) -> None:
        nonlocal errors
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
            await _stream(client, bench.gateway_url, body)  # its connection, unrecorded
            recorded = 0
            while time.monotonic() < deadline or not recorded:  # at least one each, on a slow machine
                recorded += 1
                try:
                    timings.append(await _stream(client, bench.gateway_url, body))
                except (httpx.HTTPError, RuntimeError):
                    errors += 1

    before = {role: cpu_seconds(pid) for role, pid in pids.items()}
    client_before = time.process_time()
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(client_task, started + level_s)
    elapsed = time.monotonic() - started
    used = {role: cpu_seconds(pid) - before[role] for role, pid in pids.items()}
    network_cpu = sum(used.values())
    busy = network_cpu - idle * elapsed  # less what the processes use with no requests
    totals = [total for _, total in timings]
    firsts = [first for first, _ in timings]
    return measured(
        f"saturation_c{clients}",
        f"latency of streamed {SHORT_MAX_TOKENS}-token chats, {clients} concurrent clients, "
        "gateway + 3 relays + node",
        "ms",
        totals,
        details={
            "clients": clients,
            "seconds": round(elapsed, 2),
            "requests_per_s": len(timings) / elapsed,
            "errors": errors,
            "ttft_ms_median": percentile(firsts, 0.5) if firsts else None,
            "ttft_ms_p95": percentile(firsts, 0.95) if firsts else None,
            "network_cpu_cores": network_cpu / elapsed,
            "requests_per_network_cpu_s": len(timings) / network_cpu if network_cpu else None,
            "requests_per_busy_cpu_s": len(timings) / busy if busy > 0 else None,
            "client_cpu_cores": (time.process_time() - client_before) / elapsed,
            "cpu_cores_by_process": {role: seconds / elapsed for role, seconds in used.items()},
        },
    )


async def saturation_rows(bench: BenchNetwork, levels: tuple[int, ...], level_s: float) -> list[Row]:
    """One row per level, then `saturation`: the level with the most requests/s, per network CPU second."""
    idle = await idle_cores(bench, level_s)
    rows = [await level(bench, clients, level_s, idle) for clients in levels]
    best = max(rows, key=lambda row: float(row.details["requests_per_s"]))
    # busy CPU can be <= 0 on a crowded machine (idle measured high): then the rate with idle included
    per_core = best.details["requests_per_busy_cpu_s"] or best.details["requests_per_network_cpu_s"]
    summary = measured(
        "saturation",
        "requests/s at saturation per core of the whole network (gateway + 5 relays + node, fake engine)",
        "requests/s per core",
        [per_core] if per_core else [],
        details={
            "clients": best.details["clients"],
            "requests_per_s": best.details["requests_per_s"],
            "network_cpu_cores": best.details["network_cpu_cores"],
            "network_idle_cpu_cores": idle,
            "requests_per_network_cpu_s": best.details["requests_per_network_cpu_s"],
            "curve_requests_per_s": [row.details["requests_per_s"] for row in rows],
            "curve_clients": list(levels),
        },
    )
    return [summary, *rows]
