"""Helpers for the real-process attack tests: what /proc says about a victim, and one honest request.

The /proc readers are tests/reliability/proc.py's and the networks those of tp_dev.local_network and
tests/integration/gateway_network.py (`running_gateway`); this module only puts them together the way an
attack test asserts its defence: the victim lives, its memory and fds stay within a bound, and an honest
client is still served. Nothing here attacks: each test file writes its own attack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import trio

from tests.integration.gateway_network import RunningGateway
from tests.reliability.proc import fd_count, rss_bytes
from tp_dev.local_network import LocalNetwork
from tp_dev.processes import StartedProcess
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.trio.client import ClientLink
from tp_net.trio.transport_ws import WebSocketDialer

HONEST_TIMEOUT_S = 30.0
HONEST_MESSAGES = [{"role": "user", "content": "Say hello."}]


@dataclass(frozen=True)
class Vitals:
    """A process's resident memory (VmRSS) and open file descriptors at one moment."""

    rss_bytes: int
    fds: int


def vitals(process: StartedProcess) -> Vitals:
    assert_alive(process)
    pid = process.process.pid
    return Vitals(rss_bytes(pid), fd_count(pid))


def assert_alive(*processes: StartedProcess) -> None:
    for started in processes:
        code = started.process.poll()
        assert code is None, f"process {started.process.pid} exited with {code}"


def assert_bounded(
    process: StartedProcess, before: Vitals, *, rss_growth_bytes_max: int, fd_growth_max: int
) -> Vitals:
    """The process lives and grew by at most the given memory and fds since `before`; returns now."""
    now = vitals(process)
    assert now.rss_bytes - before.rss_bytes <= rss_growth_bytes_max, (
        f"RSS grew by {now.rss_bytes - before.rss_bytes} bytes (bound {rss_growth_bytes_max})"
    )
    grown = now.fds - before.fds
    assert grown <= fd_growth_max, f"fds grew by {grown} (bound {fd_growth_max})"
    return now


async def honest_overlay_request(network: LocalNetwork, request: dict[str, Any] | None = None) -> list[Any]:
    """One inference request as an honest client sends it: over WebSockets to the guard, a circuit through
    `network.path()`, one stream. Returns the chunks (at least one, none an error)."""
    document = request or {"messages": HONEST_MESSAGES, "max_tokens": 4}
    with trio.fail_after(HONEST_TIMEOUT_S):
        async with ClientLink.connect(WebSocketDialer(), network.relay_hop(0)) as link:
            circuit = await link.build_circuit(network.path())
            chunks = [chunk async for chunk in circuit.request(INFERENCE_SERVICE, document)]
    assert chunks, "the node answered nothing"
    assert not any("error" in chunk for chunk in chunks), "the node answered with an error"
    return chunks


async def honest_gateway_request(gateway: RunningGateway, *, api_key: str | None = None) -> str:
    """One chat completion through a running tp-gateway (the first model it lists); returns its text."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key is not None else {}
    body = {"model": gateway.model_ids[0], "messages": HONEST_MESSAGES, "max_tokens": 4}

    def post() -> httpx.Response:
        with httpx.Client(headers=headers, timeout=HONEST_TIMEOUT_S) as client:
            return client.post(f"{gateway.base_url}/chat/completions", json=body)

    response = await trio.to_thread.run_sync(post)
    assert response.status_code == 200, f"honest request got {response.status_code}"
    return str(response.json()["choices"][0]["message"]["content"])
