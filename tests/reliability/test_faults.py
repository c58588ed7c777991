"""Fault injection with real processes: SIGKILL a relay mid-stream, then the GPU node, then an authority.

A gateway in front of a network of five relays (three of them the authorities, the last the node's home
relay) and a fake-engine node that paces its tokens, so that a stream lasts seconds. For each kill, during a
streamed chat completion that has delivered its first chunk: the stream either completes (the killed process
was not on its circuit) or ends with an error event within 5 s; nothing hangs. A request sent while it is
down succeeds on another circuit (a relay or an authority) or fails at once (the only node: 502/503). Then
the killed process is started again with its own command line (same data directory, same port) and new
requests succeed. At the end the gateway has no more file descriptors or threads than it had before the
first kill (plus a little slack for links to different relays), and no child processes are left.
`make slow` runs four rounds.

The node killed mid-stream with no restart is tests/integration/test_gateway_processes.py.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import trio

from tests.integration.gateway_network import running_gateway
from tests.reliability import proc
from tp_node.local_network import LOCAL_PERIOD_S
from tp_node.processes import StartedProcess, python_process

TOKEN_DELAY_MS = 10
STREAM_TOKENS = 500  # ~5 s of tokens
ERROR_AFTER_KILL_S_MAX = 5.0
STREAM_TIMEOUT_S = 30.0
HEAL_TIMEOUT_S = 40.0
HEAL_REQUESTS = 3
FD_SLACK = 8
DIRECTORY_SETTLE_S = 3 * LOCAL_PERIOD_S
MESSAGES = [{"role": "user", "content": "Tell me a long story."}]


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, object] | str]:
    """The data of each server-sent event: a JSON object, or the string "[DONE]"."""
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            yield data if data == "[DONE]" else json.loads(data)


async def stream_and_kill(http: httpx.AsyncClient, pid: int) -> tuple[str, float]:
    """Stream a long answer, SIGKILL `pid` after the first chunk; how it ended and how long after the kill."""
    body = {"model": "fake", "messages": MESSAGES, "max_tokens": STREAM_TOKENS, "stream": True}
    killed_at = None
    outcome = "cut off"  # the connection ended without [DONE] or an error event
    with trio.fail_after(STREAM_TIMEOUT_S):
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            async for event in sse_events(response):
                if killed_at is None:
                    os.kill(pid, signal.SIGKILL)
                    killed_at = time.monotonic()
                if event == "[DONE]":
                    outcome = "completed"
                elif isinstance(event, dict) and "error" in event:
                    outcome = "error"
    assert killed_at is not None
    return outcome, time.monotonic() - killed_at


async def wait_until_requests_succeed(http: httpx.AsyncClient) -> float:
    """Seconds until HEAL_REQUESTS chat completions in a row succeed."""
    started = time.monotonic()
    body = {"model": "fake", "messages": MESSAGES, "max_tokens": 4}
    successes = 0
    with trio.fail_after(HEAL_TIMEOUT_S):
        while successes < HEAL_REQUESTS:
            response = await http.post("/v1/chat/completions", json=body)
            successes = successes + 1 if response.status_code == 200 else 0
            if response.status_code != 200:
                # 404: a restarted node is missing from the directory until it has published again.
                assert response.status_code in (404, 502, 503), response.text
                await trio.sleep(0.5)
    return time.monotonic() - started


async def request_status(http: httpx.AsyncClient) -> tuple[int, str]:
    """The status of one chat completion, with the error body when there is one."""
    body = {"model": "fake", "messages": MESSAGES, "max_tokens": 4}
    response = await http.post("/v1/chat/completions", json=body)
    return response.status_code, "" if response.status_code == 200 else response.text


async def restart(stack: AsyncExitStack, killed: StartedProcess, command: list[str]) -> StartedProcess:
    """Start the killed process again with its command line, on the port it had."""
    await killed.process.wait()
    args = command[2:]  # after "python -m"
    if "--listen" in args:
        listen = args.index("--listen") + 1
        args[listen] = killed.announcement["address"].removeprefix("ws://").rstrip("/")
    return await stack.enter_async_context(python_process(args))


def gateway_relay(gateway_pid: int, relays: list[StartedProcess], candidates: list[int]) -> int:
    """One of `candidates` (relay indices) that the gateway has a link to, if any; else the first."""
    peer_ports = proc.tcp_peer_ports(gateway_pid)
    for index in candidates:
        address = relays[index].announcement["address"]
        if int(address.rsplit(":", 1)[1].rstrip("/")) in peer_ports:
            return index
    return candidates[0]


class Faults:
    """Kills processes of one running gateway network mid-stream and restarts them; records what happened."""

    def __init__(self, http: httpx.AsyncClient, stack: AsyncExitStack) -> None:
        self.http = http
        self.stack = stack
        self.outcomes: dict[str, object] = {}

    async def kill_and_restart(
        self, name: str, victim: StartedProcess, statuses_down: tuple[int, ...]
    ) -> StartedProcess:
        command = proc.command_line(victim.process.pid)
        outcome, seconds = await stream_and_kill(self.http, victim.process.pid)
        self.outcomes[name] = (outcome, round(seconds, 2))
        assert outcome in ("completed", "error"), self.outcomes
        assert outcome == "completed" or seconds <= ERROR_AFTER_KILL_S_MAX, self.outcomes
        status, error = await request_status(self.http)
        self.outcomes[f"{name} down: status"] = status
        assert status in statuses_down, (error, json.dumps(self.outcomes))
        replacement = await restart(self.stack, victim, command)
        self.outcomes[f"{name} healed in s"] = round(await wait_until_requests_succeed(self.http), 2)
        return replacement


@pytest.mark.parametrize("rounds", [1, pytest.param(4, marks=pytest.mark.slow)])
async def test_kill_a_relay_then_the_node_then_an_authority_mid_stream(tmp_path: Path, rounds: int) -> None:
    node_args = ["--fake-token-delay-ms", str(TOKEN_DELAY_MS)]
    async with (
        running_gateway(tmp_path, node_args=node_args, relay_count=5) as running,
        AsyncExitStack() as restarted,
        httpx.AsyncClient(base_url=running.root_url, timeout=STREAM_TIMEOUT_S) as http,
    ):
        gateway_pid = running.gateway.process.pid
        await wait_until_requests_succeed(http)
        fds_before, threads_before = proc.fd_count(gateway_pid), proc.thread_count(gateway_pid)
        faults = Faults(http, restarted)
        relays, node = list(running.network.relays), running.node
        for round_number in range(rounds):
            # A relay that is neither an authority nor the home relay, on the gateway's path if it can be.
            index = gateway_relay(gateway_pid, relays, [3, 0, 1, 2])
            # Before the first token a dead relay costs a retry on another circuit; a dead node has none.
            relays[index] = await faults.kill_and_restart(f"relay {round_number}", relays[index], (200,))
            node = await faults.kill_and_restart(f"node {round_number}", node, (502, 503))
            authority = next(i for i in range(3) if i != index)
            relays[authority] = await faults.kill_and_restart(
                f"authority {round_number}", relays[authority], (200,)
            )
            if round_number < rounds - 1:
                # A restarted process has a new onion key (they are not kept on disk): circuits through it
                # fail until the directory carries the new key, so the next round waits for that.
                await trio.sleep(DIRECTORY_SETTLE_S)
        print(json.dumps(faults.outcomes))
        assert proc.fd_count(gateway_pid) <= fds_before + FD_SLACK, faults.outcomes
        assert proc.thread_count(gateway_pid) <= threads_before, faults.outcomes
        assert proc.children(gateway_pid) == []
    assert proc.children(os.getpid()) == []  # every process stopped
