"""A flooding client against a relay (real processes on 127.0.0.1): the relay keeps its limits and its memory
bound, and another client's requests through it keep their latency.

The flooder (tests/reliability/flooder.py, its own process at a lower CPU priority, so that the test measures
the relay and not the two-core machine) attacks the guard of the honest client's circuit with CREATE floods,
stream and request floods, oversized messages, junk handshakes and junk after a handshake, all at once.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import trio

from tp_net.client import Circuit, ClientLink
from tp_net.rate_limits import CLIENT_CREATE_BURST, CLIENT_CREATE_RATE_PER_S
from tp_net.transport_ws import WebSocketDialer
from tp_node.gpu_node import INFERENCE_SERVICE
from tp_node.local_network import local_network
from tp_node.processes import StartedProcess, python_process

FLOOD_SECONDS = 12.0
WARMUP_REQUESTS = 10
MEASURED_REQUESTS = 60
REQUEST = {"messages": [{"role": "user", "content": "flood"}], "max_tokens": 4}
P95_SLOWDOWN_MAX = 3.0
# p95 latencies below this count as this much: scheduler noise on a shared 2-core VM is of this order.
LATENCY_FLOOR_S = 0.015
RSS_GROWTH_MAX_BYTES = 64 * 1024 * 1024
RSS_SAMPLE_INTERVAL_S = 0.1


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1]


async def request_latencies(circuit: Circuit, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        chunks = [chunk async for chunk in circuit.request(INFERENCE_SERVICE, REQUEST)]
        latencies.append(time.perf_counter() - started)
        assert chunks[-1]["finish_reason"] == "length"
    return latencies


async def peak_rss(pid: int, peak: list[int]) -> None:
    while True:
        peak[0] = max(peak[0], rss_bytes(pid))
        await trio.sleep(RSS_SAMPLE_INTERVAL_S)


async def rest_of_output(process: StartedProcess) -> bytes:
    assert process.process.stdout is not None
    output = b""
    while chunk := await process.process.stdout.receive_some(65536):
        output += chunk
    return output


async def test_a_flooding_client_gets_limited_and_others_keep_their_latency(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with local_network(tmp_path, log_level="warning") as network:
        path = network.path()
        victim = network.relays[0]
        dialer = WebSocketDialer(nursery)
        async with ClientLink.connect(dialer, path[0]) as link:
            circuit = await link.build_circuit(path)
            await request_latencies(circuit, WARMUP_REQUESTS)
            baseline = await request_latencies(circuit, MEASURED_REQUESTS)
            rss_before = rss_bytes(victim.process.pid)
            flooder_args = ["tests.reliability.flooder", "--address", victim.announcement["address"]]
            flooder_args += ["--node-id", victim.announcement["node_id"], "--seconds", str(FLOOD_SECONDS)]
            async with python_process(flooder_args, prefix=["nice", "-n", "10"]) as flooder:
                peak = [rss_before]
                async with trio.open_nursery() as sampling:
                    sampling.start_soon(peak_rss, victim.process.pid, peak)
                    await trio.sleep(1.0)  # let every attack get going
                    during = await request_latencies(circuit, MEASURED_REQUESTS)
                    async with ClientLink.connect(dialer, path[0]) as newcomer:
                        await request_latencies(await newcomer.build_circuit(path), 1)
                    sampling.cancel_scope.cancel()
                with trio.fail_after(FLOOD_SECONDS + 10):
                    counts = json.loads((await rest_of_output(flooder)).decode().strip().splitlines()[-1])
                    await flooder.process.wait()
            after = await request_latencies(circuit, 5)
        assert victim.process.returncode is None  # the relay survived
    report = {
        "baseline p95 ms": round(p95(baseline) * 1000, 2),
        "flood p95 ms": round(p95(during) * 1000, 2),
        "rss growth MiB": round((peak[0] - rss_before) / 2**20, 1),
        "flood": counts,
        "after ms": [round(x * 1000, 2) for x in after],
    }
    print(json.dumps(report))
    create_links = sum(n for name, n in counts.items() if name.startswith("create flood"))
    answered_max = create_links * (CLIENT_CREATE_BURST + CLIENT_CREATE_RATE_PER_S * FLOOD_SECONDS)
    assert counts["creates sent"] > 5 * answered_max, counts  # a flood far beyond the limit
    assert counts["creates answered"] <= answered_max, counts
    assert counts["creates refused"] > counts["creates answered"], counts
    assert counts["directory answers"] > 0 and counts["streams opened"] > 0, counts
    assert p95(during) <= P95_SLOWDOWN_MAX * max(p95(baseline), LATENCY_FLOOR_S), report
    assert peak[0] - rss_before <= RSS_GROWTH_MAX_BYTES, report
