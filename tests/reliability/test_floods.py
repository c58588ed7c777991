"""A flooding client against a relay (real processes on 127.0.0.1): the relay keeps its limits and its memory
bound, and another client's requests through it keep their latency.

The flooder (tests/reliability/flooder.py, its own process at the relays' CPU priority: at the lowest one a
loaded machine starved it, and the test measured no flood at all) attacks the guard of the honest client's
circuit with CREATE floods, frames for no circuit, pings and padding, stream and request floods, oversized
messages, junk handshakes and junk after a handshake, all at once. The test measures only once the flooder
reports that every attack has got going (its "ready" line), however long a loaded machine takes. The honest
client's baseline is measured in the same test, in windows alternating with the flood windows (the flooder
paused with SIGSTOP), so that both see the same load from the rest of the machine. `make slow` alternates
60 windows.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
from collections import Counter
from pathlib import Path

import pytest
import trio

from tests.reliability import proc
from tp_dev.local_network import local_network
from tp_dev.processes import StartedProcess, python_process
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.trio.client import Circuit, ClientLink
from tp_net.trio.transport_ws import WebSocketDialer

FLOOD_SECONDS_MAX = 300.0  # a bound: the flooder stops on SIGTERM once the test has measured
FLOODER_STOP_TIMEOUT_S = 10.0
# Until every attack has got going (flooder.py's "ready" line): long, for a loaded machine.
FLOODER_READY_TIMEOUT_S = 60.0
WARMUP_REQUESTS = 10
WINDOWS = 8  # alternating pairs; p95 of 160 samples per side: a loaded machine is noisy
REQUESTS_PER_WINDOW = 20
SETTLE_S = 0.3  # after SIGCONT, for the flood to resume
# With the flooder stopped, the baseline is measured once the relay is idle again: a loaded machine takes
# longer to work off the backlog than any fixed pause.
IDLE_SAMPLE_S = 0.1
IDLE_CPU_SHARE_MAX = 0.2
IDLE_TIMEOUT_S = 10.0
REQUEST = {"messages": [{"role": "user", "content": "flood"}], "max_tokens": 4}
P95_SLOWDOWN_MAX = 3.0
# The relays, the node and the honest client (this process) run ahead of whatever else loads the machine
# (root may raise priorities; CI runs as root), the flooder at the default: the test measures the relay
# under a flood, not how much CPU other work leaves it or the client.
MEASURED_NICENESS = -10
# The flooder at the same priority (at a lower one, two busy loops starved it: the test waited 60 s for a
# flood that never got going). The flooder and its victim relay share a CPU; the other relays, the node and
# the honest client have the others: in a real network the flood burns the attacker's and the victim's
# machines, not every party's, and on a 2-core test machine a flood that took the CPU the node and the client
# needed measured the machine, not the relay (the honest p95 went to 4-7x its baseline under load).
FLOODER_NICENESS = MEASURED_NICENESS
CPUS = sorted(os.sched_getaffinity(0))
FLOODED_CPUS = set(CPUS[-1:])
MEASURED_CPUS = set(CPUS[:-1]) or FLOODED_CPUS
# p95 latencies below this count as this much: scheduler noise on a shared 2-core VM is of this order.
LATENCY_FLOOR_S = 0.02
RSS_GROWTH_MAX_BYTES = 64 * 1024 * 1024
RSS_SAMPLE_INTERVAL_S = 0.1
FD_SLACK = 4
FD_SETTLE_S = 5.0  # closing handshakes and timeouts of the flooder's last connections


async def fds_settled(pid: int, target: int) -> int:
    """The process's fd count once it is down to `target + FD_SLACK`, or after FD_SETTLE_S."""
    with trio.move_on_after(FD_SETTLE_S):
        while proc.fd_count(pid) > target + FD_SLACK:
            await trio.sleep(0.1)
    return proc.fd_count(pid)


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


async def relay_idle(relay: StartedProcess) -> None:
    """Returns once the relay uses under IDLE_CPU_SHARE_MAX of a core (it has worked off the flood's backlog),
    or after IDLE_TIMEOUT_S."""
    with trio.move_on_after(IDLE_TIMEOUT_S):
        while True:
            before = relay.cpu_seconds
            await trio.sleep(IDLE_SAMPLE_S)
            if relay.cpu_seconds - before < IDLE_CPU_SHARE_MAX * IDLE_SAMPLE_S:
                return


async def paused_and_flooding(
    circuit: Circuit, flooder_pid: int, relay: StartedProcess, windows: int
) -> tuple[list[float], list[float]]:
    """Request latencies with the flooder stopped (SIGSTOP) and running, in alternating windows, so that
    both samples see the same load from everything else on the machine."""
    paused: list[float] = []
    flooding: list[float] = []
    for _ in range(windows):
        os.kill(flooder_pid, signal.SIGSTOP)
        try:
            await relay_idle(relay)  # the relay works off what the flooder had sent
            paused += await request_latencies(circuit, REQUESTS_PER_WINDOW)
        finally:
            os.kill(flooder_pid, signal.SIGCONT)  # a stopped flooder would ignore the SIGTERM at the end
        await trio.sleep(SETTLE_S)
        flooding += await request_latencies(circuit, REQUESTS_PER_WINDOW)
    return paused, flooding


async def flooding_started(flooder: StartedProcess) -> None:
    """Returns once the flooder says every attack has got going; fails with its counters (which attack did
    not get going) if it does not within FLOODER_READY_TIMEOUT_S."""
    with trio.move_on_after(FLOODER_READY_TIMEOUT_S):
        while b'{"ready"' not in flooder.stdout:
            assert not flooder.stdout_closed.is_set(), flooder.stdout
            await trio.sleep(0.05)
        return
    flooder.process.send_signal(signal.SIGTERM)  # it prints its counters and exits
    with trio.move_on_after(FLOODER_STOP_TIMEOUT_S):
        await flooder.stdout_closed.wait()
    raise AssertionError(f"flooder not ready within {FLOODER_READY_TIMEOUT_S} s: {flooder.stdout.decode()}")


async def peak_rss(pid: int, peak: list[int]) -> None:
    while True:
        peak[0] = max(peak[0], proc.rss_bytes(pid))
        await trio.sleep(RSS_SAMPLE_INTERVAL_S)


@pytest.mark.parametrize(
    ("windows", "flood_seconds_max"),
    [(WINDOWS, FLOOD_SECONDS_MAX), pytest.param(60, 900.0, marks=pytest.mark.slow)],
)
async def test_a_flooding_client_gets_limited_and_others_keep_their_latency(
    nursery: trio.Nursery, tmp_path: Path, windows: int, flood_seconds_max: float
) -> None:
    own, own_cpus = os.getpriority(os.PRIO_PROCESS, 0), os.sched_getaffinity(0)
    os.setpriority(os.PRIO_PROCESS, 0, MEASURED_NICENESS)  # this thread: the honest client's requests
    os.sched_setaffinity(0, MEASURED_CPUS)
    try:
        await flood_and_measure(tmp_path, nursery, windows, flood_seconds_max)
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, own)
        os.sched_setaffinity(0, own_cpus)


async def flood_and_measure(
    tmp_path: Path, nursery: trio.Nursery, windows: int, flood_seconds_max: float
) -> None:
    async with local_network(tmp_path, log_level="warning") as network:
        path = network.path()
        victim = network.relays[0]
        for process in [*network.relays, network.node]:
            os.setpriority(os.PRIO_PROCESS, process.process.pid, MEASURED_NICENESS)
            os.sched_setaffinity(process.process.pid, FLOODED_CPUS if process is victim else MEASURED_CPUS)
        dialer = WebSocketDialer(nursery)
        async with ClientLink.connect(dialer, path[0]) as link:
            circuit = await link.build_circuit(path)
            await request_latencies(circuit, WARMUP_REQUESTS)
            rss_before = proc.rss_bytes(victim.process.pid)
            fds_before = proc.fd_count(victim.process.pid)
            flooder_args = ["tests.reliability.flooder", "--address", victim.announcement["address"]]
            flooder_args += ["--node-id", victim.announcement["node_id"], "--seconds", str(flood_seconds_max)]
            async with python_process(flooder_args) as flooder:
                os.setpriority(os.PRIO_PROCESS, flooder.process.pid, FLOODER_NICENESS)
                os.sched_setaffinity(flooder.process.pid, FLOODED_CPUS)
                started = time.monotonic()
                peak = [rss_before]
                async with trio.open_nursery() as sampling:
                    sampling.start_soon(peak_rss, victim.process.pid, peak)
                    await flooding_started(flooder)
                    ready_at = time.monotonic()
                    baseline, during = await paused_and_flooding(
                        circuit, flooder.process.pid, victim, windows
                    )
                    async with ClientLink.connect(dialer, path[0]) as newcomer:
                        await request_latencies(await newcomer.build_circuit(path), 1)
                    sampling.cancel_scope.cancel()
                flooder.process.send_signal(signal.SIGTERM)
                with trio.fail_after(FLOODER_STOP_TIMEOUT_S):
                    await flooder.process.wait()
                    await flooder.stdout_closed.wait()
                last = json.loads(flooder.stdout.decode().strip().splitlines()[-1])
                assert "flooding" not in last and "ready" not in last, flooder.stdout  # its counters
                counts = Counter[str](last)
                ready_s = ready_at - started
            after = await request_latencies(circuit, 5)
            fds_after = await fds_settled(victim.process.pid, fds_before)
        assert victim.process.returncode is None  # the relay survived
    report = {
        "baseline p95 ms": round(p95(baseline) * 1000, 2),
        "flood p95 ms": round(p95(during) * 1000, 2),
        "rss growth MiB": round((peak[0] - rss_before) / 2**20, 1),
        "flood": counts,
        "flooder ready after s": round(ready_s, 2),
        "after ms": [round(x * 1000, 2) for x in after],
        "relay fds before, after": (fds_before, fds_after),
    }
    print(json.dumps(report))
    # The per-link CREATE limit held on every create link (the flooder holds each link's answers against it)
    # and, on links whose CREATEs the relay handled faster than the limit allows, refused (on a loaded
    # machine the relay, reading a flooding link at its fair share, may handle fewer: nothing to refuse).
    assert counts["create links"] > 0 and counts["creates beyond the link limit"] == 0, counts
    if counts["create links pressed past the limit"]:
        assert counts["creates refused"] > 0, counts
    assert counts["directory answers"] > 0 and counts["streams opened"] > 0, counts
    assert counts["junk frames sent"] > 0 and "circuits created by junk" not in counts, counts
    assert p95(during) <= P95_SLOWDOWN_MAX * max(p95(baseline), LATENCY_FLOOR_S), report
    assert peak[0] - rss_before <= RSS_GROWTH_MAX_BYTES, report
    assert fds_after <= fds_before + FD_SLACK, report  # every flooder connection was closed
