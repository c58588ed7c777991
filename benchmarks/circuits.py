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
import tempfile
import time
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any

import trio

from benchmarks.stats import summary
from tp_crypto.identity import Identity
from tp_crypto.noise import generate_keypair
from tp_net.cells import RELAY_DATA_BYTES_MAX
from tp_net.circuit_client import HopInfo
from tp_net.client import ClientLink
from tp_net.frames import CELL_BODY_BYTES
from tp_net.rate_limits import CLIENT_CREATE_RATE_PER_S
from tp_net.transport_ws import WebSocketDialer
from tp_node.gpu_node import INFERENCE_SERVICE, GpuNode, HomeRelay
from tp_node.local_network import local_network
from tp_node.processes import python_process

BULK_CHUNK_BYTES = 16 * 1024
PARALLEL_DOWNLOADS = 4


async def measure_builds(builds: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as data_dir:
        async with local_network(Path(data_dir)) as network, trio.open_nursery() as nursery:
            path = network.path()
            async with ClientLink.connect(WebSocketDialer(nursery), path[0]) as link:
                results = []
                for name, hops in (
                    ("circuit build, 3 relay hops", path[:3]),
                    ("circuit build, 3 relays + node", path),
                ):
                    times = []
                    for _ in range(builds):
                        start = time.perf_counter()
                        circuit = await link.build_circuit(hops)
                        times.append((time.perf_counter() - start) * 1000)
                        circuit.destroy()
                        await trio.sleep(1 / CLIENT_CREATE_RATE_PER_S)  # the guard's CREATE rate limit
                    results.append(summary(name, "ms", times))
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


async def measure_forwarding(megabytes: int) -> dict[str, Any]:
    os.sched_setaffinity(0, {0})
    total_bytes = megabytes * 1_000_000 // PARALLEL_DOWNLOADS
    with tempfile.TemporaryDirectory() as data_dir:
        relay_args = ["tp_node.relay_cli", "--listen", "127.0.0.1:0", "--data-dir", data_dir]
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
                engine=BulkEngine(total_bytes),
                dialer=dialer,
                rng=random.Random(),
            )
            nursery.start_soon(node.run)
            await node.linked.wait()
            await trio.sleep(0.2)
            path = [relay_hop, HopInfo(node_identity.node_id, node_public)]
            async with ClientLink.connect(dialer, relay_hop) as link:
                circuits = [await link.build_circuit(path) for _ in range(PARALLEL_DOWNLOADS)]
                received = [0]

                async def download(index: int) -> None:
                    stream = await circuits[index].open_stream(INFERENCE_SERVICE)
                    await stream.send_message({"messages": []})
                    stream.end()
                    while data := await stream.receive_data():
                        received[0] += len(data)

                cpu_before, start = relay.cpu_seconds, time.perf_counter()
                async with trio.open_nursery() as downloads:
                    for index in range(PARALLEL_DOWNLOADS):
                        downloads.start_soon(download, index)
                elapsed, cpu = time.perf_counter() - start, relay.cpu_seconds - cpu_before
            nursery.cancel_scope.cancel()
    cells = received[0] / RELAY_DATA_BYTES_MAX
    return {
        "name": "cells forwarded by one relay per CPU second",
        "unit": "cells/s",
        "median": cells / cpu,
        "p95": None,
        "n": 1,
        "cell_body_bytes": CELL_BODY_BYTES,
        "relay_cpu_share": cpu / elapsed,
        "throughput_cells_per_s": cells / elapsed,
        "throughput_mb_per_s": received[0] / elapsed / 1e6,
    }


async def run(builds: int, megabytes: int) -> list[dict[str, Any]]:
    results = await measure_builds(builds) if builds else []
    if megabytes:
        results.append(await measure_forwarding(megabytes))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.circuits", description=__doc__)
    parser.add_argument("--builds", type=int, default=200)
    parser.add_argument("--megabytes", type=int, default=30)
    args = parser.parse_args()
    for result in trio.run(run, args.builds, args.megabytes):
        print(json.dumps(result))


if __name__ == "__main__":
    main()
