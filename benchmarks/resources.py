"""Relay memory rows of the suite: 200 concurrent streams through one 3-relay path, and an idle relay.

Memory is read from /proc/PID/status: VmRSS (resident now) and VmHWM (the most it was ever resident).
"""

from __future__ import annotations

import time
from pathlib import Path

import trio

from benchmarks.network import LOG_LEVEL, BenchNetwork
from benchmarks.results import Bound, Row, Target, measured
from tp_dev.processes import python_process
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.trio.client import Circuit, ClientLink
from tp_net.trio.transport_ws import WebSocketDialer

KIB_PER_MB = 1024.0
CONCURRENT_CIRCUITS = 10  # the streams are spread over this many circuits, all on the same path
SAMPLE_INTERVAL_S = 0.05
STREAM_TIMEOUT_S = 120.0
IDLE_SAMPLE_INTERVAL_S = 0.5
CONCURRENT_RSS_MB_MAX = 150.0
IDLE_RSS_MB_MAX = 60.0

IDLE_TARGET = Target(f"median <= {IDLE_RSS_MB_MAX:g} MB", (Bound("median", "<=", IDLE_RSS_MB_MAX),))


def memory_mb(pid: int) -> dict[str, float]:
    """{"VmRSS": MB, "VmHWM": MB} of a process."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / KIB_PER_MB
    return values


def _all_finished(row: Row) -> bool:
    return bool(row.details["completed"] == row.details["streams"])


def concurrent_target() -> Target:
    return Target(
        f"all streams complete; each relay's peak RSS (VmHWM) <= {CONCURRENT_RSS_MB_MAX:g} MB",
        (Bound("p95", "<=", CONCURRENT_RSS_MB_MAX),),
        extra=_all_finished,
    )


async def concurrent_row(bench: BenchNetwork, streams: int, tokens: int) -> Row:
    """Row 6: `streams` requests at once over CONCURRENT_CIRCUITS circuits on one path (3 relays + node);
    the row's values are the path relays' peak RSS (VmHWM), one per relay."""
    pids = bench.relay_pids()
    before = [memory_mb(pid)["VmRSS"] for pid in pids]
    sampled = [0.0] * len(pids)
    seconds: list[float] = []
    document = {"messages": [{"role": "user", "content": "many at once"}], "max_tokens": tokens}

    async def sample(stop: trio.Event) -> None:
        while not stop.is_set():
            for index, pid in enumerate(pids):
                sampled[index] = max(sampled[index], memory_mb(pid)["VmRSS"])
            await trio.sleep(SAMPLE_INTERVAL_S)

    async def one(circuit: Circuit) -> None:
        start = time.perf_counter()
        async for chunk in circuit.request(INFERENCE_SERVICE, document):
            error = chunk.get("error") if isinstance(chunk, dict) else None
            if error is not None:
                raise RuntimeError(f"a concurrent stream failed: {error.get('code')}")
        seconds.append(time.perf_counter() - start)

    async with trio.open_nursery() as nursery:
        path = bench.node_path()
        async with ClientLink.connect(WebSocketDialer(nursery), path[0]) as link:
            circuits = [await link.build_circuit(path) for _ in range(CONCURRENT_CIRCUITS)]
            stop = trio.Event()
            nursery.start_soon(sample, stop)
            with trio.move_on_after(STREAM_TIMEOUT_S):
                async with trio.open_nursery() as requests:
                    for index in range(streams):
                        requests.start_soon(one, circuits[index % CONCURRENT_CIRCUITS])
            stop.set()
        nursery.cancel_scope.cancel()
    peaks = [memory_mb(pid)["VmHWM"] for pid in pids]
    return measured(
        "concurrent",
        f"{streams} concurrent {tokens}-token streams through one 3-relay path: relay peak RSS",
        "MB",
        peaks,
        target=concurrent_target(),
        details={
            "streams": streams,
            "completed": len(seconds),
            "circuits": CONCURRENT_CIRCUITS,
            "stream_seconds_median": sorted(seconds)[len(seconds) // 2] if seconds else None,
            "stream_seconds_max": max(seconds, default=None),
            "relay_rss_before_mb": before,
            "relay_rss_sampled_max_mb": sampled,
        },
    )


async def idle_row(bench: BenchNetwork, settle_s: float) -> Row:
    """Row 7: a relay that joined the running network and carries no traffic; RSS sampled for `settle_s`
    after it announced itself."""
    args = ["tp_node.relay_cli", "--listen", "127.0.0.1:0", "--log-level", LOG_LEVEL]
    args += ["--bootstrap", str(bench.network.bootstrap_file), "--data-dir", str(bench.state_dir / "idle")]
    samples: list[float] = []
    async with python_process(args) as relay:
        deadline = trio.current_time() + settle_s
        while trio.current_time() < deadline:
            samples.append(memory_mb(relay.process.pid)["VmRSS"])
            await trio.sleep(IDLE_SAMPLE_INTERVAL_S)
        peak = memory_mb(relay.process.pid)["VmHWM"]
    return measured(
        "idle",
        f"idle relay RSS (joined the network, sampled over {settle_s:g} s)",
        "MB",
        samples,
        target=IDLE_TARGET,
        details={"peak_rss_mb": peak},
    )
