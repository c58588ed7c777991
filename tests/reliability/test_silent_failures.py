"""A relay that goes silent (not killed) mid-request: SIGSTOP stops it answering without closing a socket,
the honest single-host stand-in for a pulled cable (its kernel still ACKs TCP, so only the overlay notices).

A gateway in front of five relays (three of them authorities, the last the node's home relay) and a
fake-engine node that paces its tokens. A relay the gateway has a link to (a guard; not the home relay, the
node's only way in) is stopped after the first chunk of a streamed answer: the answer completes (the relay
was not on its circuit) or ends with an error event within the inter-chunk deadline
(tp_net.protocol.stream_deadlines) plus slack. Requests sent while the relay stays stopped succeed, past the
link silence deadline (tp_net.protocol.liveness). After SIGCONT the relay carries traffic again within 5 s.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import trio

from tests.integration.gateway_network import running_gateway
from tests.reliability import proc
from tests.reliability.test_faults import MESSAGES, request_status, sse_events, wait_until_requests_succeed
from tp_net.protocol.liveness import LINK_SILENCE_DEADLINE_S
from tp_net.protocol.stream_deadlines import stream_deadlines

TOKEN_DELAY_MS = 10
STREAM_TOKENS = 500  # ~5 s of tokens
CIRCUIT_HOPS = 4  # guard, middle, home relay, node
# The inter-chunk deadline of the gateway's circuits, plus slack for a loaded 2-core test machine.
ERROR_AFTER_STOP_S_MAX = stream_deadlines(CIRCUIT_HOPS).chunk_gap_s + 1.5
OUTAGE_REQUESTS = 3
# The relay stays stopped past the link silence deadline, so its links are aborted and re-made.
OUTAGE_S_MIN = LINK_SILENCE_DEADLINE_S + 2
RESUME_S_MAX = 5.0
HTTP_TIMEOUT_S = 60.0


async def stream_and_stop(http: httpx.AsyncClient, pid: int) -> tuple[str, float]:
    """Stream a long answer, SIGSTOP `pid` after the first chunk; how it ended and how long after the stop."""
    body = {"model": "fake", "messages": MESSAGES, "max_tokens": STREAM_TOKENS, "stream": True}
    stopped_at = None
    outcome = "cut off"
    with trio.fail_after(HTTP_TIMEOUT_S):
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            async for event in sse_events(response):
                if stopped_at is None:
                    os.kill(pid, signal.SIGSTOP)
                    stopped_at = time.monotonic()
                if event == "[DONE]":
                    outcome = "completed"
                elif isinstance(event, dict) and "error" in event:
                    outcome = "error"
    assert stopped_at is not None
    return outcome, time.monotonic() - stopped_at


def written_bytes(pid: int) -> int:
    """Bytes the process has written through system calls (its sockets included)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError(f"no wchar for process {pid}")


async def test_a_relay_that_goes_silent_mid_stream(tmp_path: Path) -> None:
    node_args = ["--fake-token-delay-ms", str(TOKEN_DELAY_MS)]
    outcomes: dict[str, object] = {}
    async with (
        running_gateway(tmp_path, node_args=node_args, relay_count=5) as running,
        httpx.AsyncClient(base_url=running.root_url, timeout=HTTP_TIMEOUT_S) as http,
    ):
        gateway_pid = running.gateway.process.pid
        await wait_until_requests_succeed(http)
        relays = list(running.network.relays)
        peer_ports = proc.tcp_peer_ports(gateway_pid)
        linked = [
            i
            for i in (3, 0, 1, 2)
            if int(relays[i].announcement["address"].rsplit(":", 1)[1].rstrip("/")) in peer_ports
        ]
        victim = relays[(linked or [3])[0]].process.pid
        try:
            outcome, seconds = await stream_and_stop(http, victim)
            stopped_at = time.monotonic() - seconds
            outcomes["stream"] = (outcome, round(seconds, 2))
            assert outcome in ("completed", "error"), outcomes
            assert outcome == "completed" or seconds <= ERROR_AFTER_STOP_S_MAX, outcomes
            durations = []
            while len(durations) < OUTAGE_REQUESTS or time.monotonic() - stopped_at < OUTAGE_S_MIN:
                started = time.monotonic()
                status, error = await request_status(http)
                durations.append(round(time.monotonic() - started, 2))
                assert status == 200, (error, outcomes, durations)
                await trio.sleep(0.5)
            outcomes["requests while stopped (s)"] = durations
        finally:
            os.kill(victim, signal.SIGCONT)
        resumed_at = time.monotonic()
        written = written_bytes(victim)
        status, error = await request_status(http)
        assert status == 200, error
        with trio.fail_after(RESUME_S_MAX):
            while written_bytes(victim) == written:
                await trio.sleep(0.1)
        outcomes["relay writes again after (s)"] = round(time.monotonic() - resumed_at, 2)
        print(json.dumps(outcomes))
    assert proc.children(os.getpid()) == []
