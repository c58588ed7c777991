"""The processes a suite phase measures: a local network (5 relays, the first 3 its authorities, and one
tp-node with the fake engine homed on the last relay), a tp-gateway, and the direct server with the same
engine. Every process is stopped by its PID when the context exits, also on errors."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from benchmarks.openai_http import wait_for_model
from tp_dev.local_network import LocalNetwork, local_network
from tp_dev.processes import StartedProcess, python_process
from tp_net.protocol.circuit_client import HopInfo

RELAY_COUNT = 5
PATH_RELAY_INDEXES = (3, 2, RELAY_COUNT - 1)  # guard (a plain relay), middle (an authority), the node's home
LOG_LEVEL = "error"  # the authorities warn while a new network gathers votes
# A real network's directory period is 300 s by default; the tests' 4 s keeps three authorities voting and
# signing all the time (~90 ms of CPU a second each), load the latency rows would otherwise charge to the
# overlay.
# 12 s still brings the first document within the readiness timeout.
BENCH_PERIOD_S = int(os.environ.get("TP_BENCH_PERIOD_S", "12"))


@dataclass
class BenchNetwork:
    network: LocalNetwork
    gateway: StartedProcess
    gateway_url: str
    direct_url: str
    model: str
    state_dir: Path
    token_delay_ms: float  # the fake engine's pace, on the node and the direct server
    direct: StartedProcess

    def relay_path(self) -> list[HopInfo]:
        """guard (a plain relay), middle (an authority), the node's home relay: three relay hops."""
        return [self.network.relay_hop(index) for index in PATH_RELAY_INDEXES]

    def node_path(self) -> list[HopInfo]:
        return [*self.relay_path(), self.network.node_hop()]

    def relay_pids(self) -> list[int]:
        """The PIDs of the relays on `relay_path`, in path order."""
        return [self.network.relays[index].process.pid for index in PATH_RELAY_INDEXES]


@asynccontextmanager
async def bench_network(
    state_dir: Path, *, token_delay_ms: float = 0.0, response_shaping: str = "on"
) -> AsyncIterator[BenchNetwork]:
    """`response_shaping` ("on", the default, or "off") is the node's --response-shaping."""
    delay = ["--fake-token-delay-ms", str(token_delay_ms)]
    node_args = [*delay, "--response-shaping", response_shaping]
    started = trio.current_time()
    async with local_network(
        state_dir, relay_count=RELAY_COUNT, node_args=node_args, log_level=LOG_LEVEL, period_s=BENCH_PERIOD_S
    ) as network:
        gateway_args = ["tp_gateway.cli", "--listen", "127.0.0.1:0", "--log-level", LOG_LEVEL]
        gateway_args += ["--bootstrap", str(network.bootstrap_file), "--data-dir", str(state_dir / "gateway")]
        direct_args = ["benchmarks.direct_server", "--listen", "127.0.0.1:0", *delay]
        _progress(f"network started in {trio.current_time() - started:.1f} s")
        async with python_process(gateway_args) as gateway, python_process(direct_args) as direct:
            _progress(f"gateway started at {trio.current_time() - started:.1f} s")
            gateway_url = gateway.announcement["base_url"]
            direct_url = direct.announcement["base_url"]
            with httpx.Client(timeout=30) as client:
                model = await trio.to_thread.run_sync(wait_for_model, client, gateway_url)
                direct_model = await trio.to_thread.run_sync(
                    lambda: wait_for_model(client, direct_url, warm_circuit=False)
                )
            if direct_model != model:
                raise RuntimeError(f"the direct server serves {direct_model!r}, the node {model!r}")
            _progress(f"gateway has a warm circuit at {trio.current_time() - started:.1f} s")
            roles = [f"relay{index}={relay.process.pid}" for index, relay in enumerate(network.relays)]
            roles += [f"node={network.node.process.pid}", f"gateway={gateway.process.pid}"]
            _progress(f"processes {' '.join(roles)} direct={direct.process.pid}")
            yield BenchNetwork(
                network, gateway, gateway_url, direct_url, model, state_dir, token_delay_ms, direct
            )


def _progress(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)
