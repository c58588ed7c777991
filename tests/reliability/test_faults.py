"""Fault injection with real processes: SIGKILL a relay, the GPU node and an authority, each mid-stream and
each while it carries the stream.

A gateway in front of a network of five relays (three of them the authorities, the last the node's home
relay) and a fake-engine node that paces its tokens, so that a stream lasts seconds. For each kill, during a
streamed chat completion that has delivered its first chunk, the relays that carry the stream are found
from their control sockets (the three whose cells_sent counters move; the home relay must be one of them).
Every victim carries the stream: first a relay other than the home relay (the one that is no authority when
it is on the path; the gateway reuses its warm circuits, so the test cannot choose the path), then the node,
then an authority on the path (guard and middle are two of relays 0-3, so one of them is an authority). So
every kill must end its stream with an error event within 5 s, never "completed" and never a hang. A
request sent while the killed process is down succeeds on another circuit (a relay or an authority) or fails
at once (the only node: 502/503). Then the killed process is started again with its own command line (same
data directory, same port) and new requests succeed. At the end the gateway has no more file descriptors or
threads than it had before the first kill (plus a little slack for links to different relays), and no child
processes are left. `make slow` runs four rounds.

The node killed mid-stream with no restart is tests/integration/test_gateway_processes.py.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import AsyncExitStack, aclosing
from pathlib import Path

import httpx
import pytest
import trio

from tests.integration.gateway_network import running_gateway
from tests.reliability import proc
from tp_dev.processes import StartedProcess, python_process
from tp_node.control import CONTROL_SOCKET_NAME
from tp_node.control_socket import query

TOKEN_DELAY_MS = 10
STREAM_TOKENS = 500  # ~5 s of tokens
ERROR_AFTER_KILL_S_MAX = 5.0
STREAM_TIMEOUT_S = 30.0
HEAL_TIMEOUT_S = 40.0
HEAL_REQUESTS = 3
FD_SLACK = 8
HOME_RELAY = 4  # local_network homes the node on the last relay
AUTHORITIES = (0, 1, 2)
NODE = 5  # the node's index after the five relays
PATH_RELAYS = 3  # guard, middle, home relay
# cells_sent is sampled CARRY_SAMPLES intervals apart to see which relays carry the stream; each of the
# three on its path must move at least CARRY_MARGIN times as much as any other relay.
CARRY_SAMPLE_S = 0.3
CARRY_SAMPLES = 5  # the smallest move over 5 intervals: bursts (measurer probes, directory fetches) drop out
CARRY_MARGIN = 2.0
MESSAGES = [{"role": "user", "content": "Tell me a long story."}]


async def sse_events(response: httpx.Response) -> AsyncGenerator[dict[str, object] | str, None]:
    """The data of each server-sent event: a JSON object, or the string "[DONE]"."""
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            yield data if data == "[DONE]" else json.loads(data)


def control_socket(process: StartedProcess) -> Path:
    args = proc.command_line(process.process.pid)
    return Path(args[args.index("--data-dir") + 1]) / CONTROL_SOCKET_NAME


async def carrying_relays(sockets: list[Path]) -> set[int]:
    """The indices of the PATH_RELAYS relays whose cells_sent counters move with the stream."""

    async def cells_sent() -> list[int]:
        return [int((await query(path, "status"))["bandwidth"]["cells_sent"]) for path in sockets]

    samples = [await cells_sent()]
    for _ in range(CARRY_SAMPLES):
        await trio.sleep(CARRY_SAMPLE_S)
        samples.append(await cells_sent())
    # Per relay, its smallest move in any interval: the stream's cells flow steadily, other traffic (circuit
    # builds, directory fetches, descriptors) comes in bursts.
    moved = [
        min(after[i] - before[i] for before, after in itertools.pairwise(samples))
        for i in range(len(sockets))
    ]
    ranked = sorted(range(len(sockets)), key=lambda index: moved[index], reverse=True)
    carrying, others = ranked[:PATH_RELAYS], ranked[PATH_RELAYS:]
    assert min(moved[i] for i in carrying) >= CARRY_MARGIN * max(1, *(moved[i] for i in others)), moved
    assert HOME_RELAY in carrying, moved
    return set(carrying)


Pick = Callable[[set[int]], int]  # the carrying relays' indices -> the index of the process to kill


async def stream_and_kill(
    http: httpx.AsyncClient, processes: list[StartedProcess], sockets: list[Path], pick: Pick
) -> tuple[int, str, float]:
    """Stream a long answer, SIGKILL the process `pick` chooses given the relays carrying it: its index, how
    the stream ended and how long after the kill."""
    body = {"model": "fake", "messages": MESSAGES, "max_tokens": STREAM_TOKENS, "stream": True}
    outcome = "cut off"  # the connection ended without [DONE] or an error event
    with trio.fail_after(STREAM_TIMEOUT_S):
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            async with aclosing(sse_events(response)) as events:
                first = await anext(events)
                assert isinstance(first, dict) and "error" not in first, first
                victim = pick(await carrying_relays(sockets))
                os.kill(processes[victim].process.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                async for event in events:
                    if event == "[DONE]":
                        outcome = "completed"
                    elif isinstance(event, dict) and "error" in event:
                        outcome = "error"
    return victim, outcome, time.monotonic() - killed_at


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


class Faults:
    """Kills processes of one running gateway network mid-stream and restarts them; records what happened."""

    def __init__(
        self, http: httpx.AsyncClient, stack: AsyncExitStack, processes: list[StartedProcess]
    ) -> None:
        self.http = http
        self.stack = stack
        self.processes = processes  # the relays, then the node; a restarted process takes its place
        self.sockets = [control_socket(relay) for relay in processes[:NODE]]  # same data dir after a restart
        self.outcomes: dict[str, object] = {}

    async def kill_and_restart(self, name: str, pick: Pick, statuses_down: tuple[int, ...]) -> None:
        """Kill the process `pick` chooses mid-stream: every victim carries the stream, which must end with an
        error event; then a request while it is down, its restart, and requests until they succeed."""
        commands = [proc.command_line(process.process.pid) for process in self.processes]
        victim, outcome, seconds = await stream_and_kill(self.http, self.processes, self.sockets, pick)
        self.outcomes[name] = (victim, outcome, round(seconds, 2))
        assert outcome == "error" and seconds <= ERROR_AFTER_KILL_S_MAX, self.outcomes
        status, error = await request_status(self.http)
        self.outcomes[f"{name} down: status"] = status
        assert status in statuses_down, (error, json.dumps(self.outcomes))
        self.processes[victim] = await restart(self.stack, self.processes[victim], commands[victim])
        self.outcomes[f"{name} healed in s"] = round(await wait_until_requests_succeed(self.http), 2)


def relay_on_path(carrying: set[int]) -> int:
    """A relay carrying the stream other than the home relay: the one that is no authority when it is on the
    path (the gateway reuses its warm circuits, so the test cannot choose the path)."""
    candidates = sorted(carrying - {HOME_RELAY}, key=lambda index: index in AUTHORITIES)
    return candidates[0]


def authority_on_path(carrying: set[int]) -> int:
    """An authority carrying the stream: guard and middle are two of relays 0-3, so one is an authority."""
    return sorted(carrying & set(AUTHORITIES))[0]


@pytest.mark.parametrize("rounds", [1, pytest.param(4, marks=pytest.mark.slow)])
async def test_kill_a_relay_then_the_node_then_an_authority_mid_stream(tmp_path: Path, rounds: int) -> None:
    # The test finds the relays carrying the stream by their cell counters: a traffic analysis, which the
    # node's response shaping defeats by design (another circuit's padding moves as steadily), so it is off.
    node_args = ["--fake-token-delay-ms", str(TOKEN_DELAY_MS), "--response-shaping", "off"]
    async with (
        running_gateway(tmp_path, node_args=node_args, relay_count=5) as running,
        AsyncExitStack() as restarted,
        httpx.AsyncClient(base_url=running.root_url, timeout=STREAM_TIMEOUT_S) as http,
    ):
        gateway_pid = running.gateway.process.pid
        await wait_until_requests_succeed(http)
        fds_before, threads_before = proc.fd_count(gateway_pid), proc.thread_count(gateway_pid)
        faults = Faults(http, restarted, [*running.network.relays, running.node])
        for round_number in range(rounds):
            # Once the relay is down, a request is retried on a circuit around it.
            await faults.kill_and_restart(f"relay {round_number}", relay_on_path, (200,))
            # The node carries every stream; with the only node down, a request fails at once.
            await faults.kill_and_restart(f"node {round_number}", lambda carrying: NODE, (502, 503))
            # An authority dies as a relay mid-stream and as an authority; the other two keep the directory.
            await faults.kill_and_restart(f"authority {round_number}", authority_on_path, (200,))
        print(json.dumps(faults.outcomes))
        assert proc.fd_count(gateway_pid) <= fds_before + FD_SLACK, faults.outcomes
        assert proc.thread_count(gateway_pid) <= threads_before, faults.outcomes
        assert proc.children(gateway_pid) == []
    assert proc.children(os.getpid()) == []  # every process stopped
