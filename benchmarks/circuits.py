"""Circuit benchmarks with separate processes on 127.0.0.1.

    .venv/bin/python -m benchmarks.circuits [--builds 200] [--megabytes 30]

- circuit build time: a warm link to the guard, then sequential builds of guard -> middle -> home relay
  (3 relay hops) and of the full path to the GPU node (4 hops); median and p95.
- relay forwarding: one tp-relay process pinned to CPU 1 relays a bulk download from a GPU node (in this
  process, pinned to CPU 0) to a client; cells/s per core = cells it forwarded / CPU seconds it used.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import tempfile
import time
from collections.abc import AsyncGenerator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from benchmarks.results import Bound, Row, Target, measured
from benchmarks.stats import summary
from bootstrap.new_network import BOOTSTRAP_FILE_NAME, create_network
from tp_crypto.identity import Identity
from tp_crypto.noise import generate_keypair
from tp_dev.local_network import LOCAL_PERIOD_S, free_ports, local_network
from tp_dev.processes import StartedProcess, python_process
from tp_net.protocol.cells import RELAY_DATA_BYTES_MAX
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.frames import CELL_BODY_BYTES
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.protocol.rate_limits import CLIENT_CREATE_RATE_PER_S
from tp_net.protocol.traffic_shaping import RESPONSE_SHAPING_OFF, ResponseShaping
from tp_net.trio.client import Circuit, ClientLink
from tp_net.trio.transport_ws import WebSocketDialer
from tp_node.gpu_node import GpuNode, HomeRelay

BULK_CHUNK_BYTES = 16 * 1024
PARALLEL_DOWNLOADS = 4


async def build_times(link: ClientLink, hops: list[HopInfo], builds: int) -> list[float]:
    """Milliseconds of `builds` sequential circuit builds over `hops` from a warm link to the guard."""
    times = []
    for _ in range(builds):
        start = time.perf_counter()
        circuit = await link.build_circuit(hops)
        times.append((time.perf_counter() - start) * 1000)
        circuit.destroy()
        await trio.sleep(1 / CLIENT_CREATE_RATE_PER_S)  # the guard's CREATE rate limit
    return times


async def measure_builds(builds: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as data_dir:
        async with local_network(Path(data_dir)) as network, trio.open_nursery() as nursery:
            path = network.path()
            async with ClientLink.connect(WebSocketDialer(nursery), path[0]) as link:
                results = [
                    summary(name, "ms", await build_times(link, hops, builds))
                    for name, hops in (
                        ("circuit build, 3 relay hops", path[:3]),
                        ("circuit build, 3 relays + node", path),
                    )
                ]
            nursery.cancel_scope.cancel()
    return results


class BulkEngine:
    """Answers every request with `total_bytes` of filler in 16 KiB chunks."""

    def __init__(self, total_bytes: int) -> None:
        self.total_bytes = total_bytes

    async def generate(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        for _ in range(self.total_bytes // BULK_CHUNK_BYTES):
            await trio.lowlevel.checkpoint()
            yield {"text": "x" * BULK_CHUNK_BYTES}


@dataclass(frozen=True)
class ForwardWindow:
    """One measured download through the relay: payload bytes, relay CPU seconds, wall seconds."""

    payload_bytes: int
    cpu_s: float
    elapsed_s: float

    @property
    def cells(self) -> float:
        return self.payload_bytes / RELAY_DATA_BYTES_MAX

    @property
    def cells_per_cpu_s(self) -> float:
        return self.cells / self.cpu_s


def offline_bootstrap(directory: Path) -> Path:
    """A bootstrap file naming one local authority that never runs: the relay under test stays off every
    real network and joins no directory (so nothing else builds circuits through it)."""
    address = f"ws://127.0.0.1:{free_ports(1)[0]}/"
    name = f"bench-{secrets.token_hex(4)}"
    create_network(directory, name, [address], 1, period_s=LOCAL_PERIOD_S, local=True)
    return directory / BOOTSTRAP_FILE_NAME


@contextmanager
def pinned_to(cpus: set[int]) -> Iterator[None]:
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


async def forwarding_windows(
    megabytes: float, windows: int, shaping: ResponseShaping = RESPONSE_SHAPING_OFF
) -> list[ForwardWindow]:
    """One tp-relay pinned to CPU 1 relays `windows` downloads of `megabytes` each (over 4 circuits) from a
    GPU node in this process to a client in this process, both pinned to CPU 0. The node's response shaping
    is off by default: its ticks pace a bulk download (~1.3 MB/s here), which left the relay ~7 % busy and
    measured its idle wake-ups more than its forwarding."""
    per_download = int(megabytes * 1_000_000) // PARALLEL_DOWNLOADS
    with tempfile.TemporaryDirectory() as data_dir, pinned_to({0}):
        bootstrap = offline_bootstrap(Path(data_dir) / "network")
        relay_args = ["tp_node.relay_cli", "--listen", "127.0.0.1:0", "--data-dir", data_dir]
        relay_args += ["--bootstrap", str(bootstrap), "--log-level", "error"]
        async with (
            python_process(relay_args, prefix=["taskset", "-c", "1"]) as relay,
            trio.open_nursery() as nursery,
        ):
            announced = relay.announcement
            relay_hop = HopInfo(
                bytes.fromhex(announced["node_id"]),
                bytes.fromhex(announced["onion_key"]),
                announced["address"],
            )
            node_identity = Identity.generate()
            node_private, node_public = generate_keypair()
            dialer = WebSocketDialer(nursery)
            node = GpuNode(
                node_identity,
                [node_private],
                home_relays=[HomeRelay(relay_hop.node_id, announced["address"])],
                engine=BulkEngine(per_download),
                dialer=dialer,
                rng=random.Random(),
                shaping=shaping,
            )
            nursery.start_soon(node.run)
            await node.linked.wait()
            await trio.sleep(0.2)
            path = [relay_hop, HopInfo(node_identity.node_id, node_public)]
            async with ClientLink.connect(dialer, relay_hop) as link:
                circuits = [await link.build_circuit(path) for _ in range(PARALLEL_DOWNLOADS)]
                results = [await _download(relay, circuits) for _ in range(windows)]
            nursery.cancel_scope.cancel()
    return results


async def _download(relay: StartedProcess, circuits: list[Circuit]) -> ForwardWindow:
    received = [0]

    async def download(circuit: Circuit) -> None:
        stream = await circuit.open_stream(INFERENCE_SERVICE)
        await stream.send_message({"messages": []})
        stream.end()
        while data := await stream.receive_data():
            received[0] += len(data)

    cpu_before, start = relay.cpu_seconds, time.perf_counter()
    async with trio.open_nursery() as downloads:
        for circuit in circuits:
            downloads.start_soon(download, circuit)
    return ForwardWindow(received[0], relay.cpu_seconds - cpu_before, time.perf_counter() - start)


async def measure_forwarding(megabytes: int) -> dict[str, Any]:
    (window,) = await forwarding_windows(megabytes, 1)
    return {
        "name": "cells forwarded by one relay per CPU second",
        "unit": "cells/s",
        "median": window.cells_per_cpu_s,
        "p95": None,
        "n": 1,
        "cell_body_bytes": CELL_BODY_BYTES,
        "relay_cpu_share": window.cpu_s / window.elapsed_s,
        "throughput_cells_per_s": window.cells / window.elapsed_s,
        "throughput_mb_per_s": window.payload_bytes / window.elapsed_s / 1e6,
    }


async def run(builds: int, megabytes: int) -> list[dict[str, Any]]:
    results = await measure_builds(builds) if builds else []
    if megabytes:
        results.append(await measure_forwarding(megabytes))
    return results


CIRCUIT_TARGET = Target("median <= 10 ms", (Bound("median", "<=", 10.0),))
FORWARD_CELLS_PER_S_MIN = 20_000.0
FORWARD_TARGET = Target(
    f"median >= {FORWARD_CELLS_PER_S_MIN:,.0f} cells per relay CPU second",
    (Bound("median", ">=", FORWARD_CELLS_PER_S_MIN),),
)


async def circuit_rows(path: list[HopInfo], builds: int) -> list[Row]:
    """Row 4 (3 relay hops, the target) and the 4-hop build to the node (for reference), from a warm link
    to the guard; `path` is guard, middle, home relay, node."""
    async with trio.open_nursery() as nursery:
        async with ClientLink.connect(WebSocketDialer(nursery), path[0]) as link:
            relays = await build_times(link, path[:3], builds)
            full = await build_times(link, path, builds)
        nursery.cancel_scope.cancel()
    return [
        measured(
            "circuit", "3-hop circuit build (guard, middle, home relay)", "ms", relays, target=CIRCUIT_TARGET
        ),
        measured("circuit_node", "4-hop circuit build (3 relays + GPU node)", "ms", full),
    ]


async def forward_row(megabytes: float, windows: int) -> Row:
    """Row 5: cells/s forwarded per relay CPU second, one value per download window."""
    measured_windows = await forwarding_windows(megabytes, windows)
    elapsed = sum(window.elapsed_s for window in measured_windows)
    return measured(
        "forward",
        f"cells forwarded by one relay process per CPU second ({CELL_BODY_BYTES}-byte cells)",
        "cells/s",
        [window.cells_per_cpu_s for window in measured_windows],
        target=FORWARD_TARGET,
        details={
            "megabytes_per_window": megabytes,
            "relay_cpu_share": sum(window.cpu_s for window in measured_windows) / elapsed,
            "throughput_mb_per_s": sum(window.payload_bytes for window in measured_windows) / elapsed / 1e6,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.circuits", description=__doc__)
    parser.add_argument("--builds", type=int, default=200)
    parser.add_argument("--megabytes", type=int, default=30)
    args = parser.parse_args()
    for result in trio.run(run, args.builds, args.megabytes):
        print(json.dumps(result))


if __name__ == "__main__":
    main()
