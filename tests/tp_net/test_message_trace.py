"""The opt-in latency tracer (tp_net.trio.message_trace): off by default and then recording nothing; on, one
record per WebSocket message each way, which the two ends' records line up by ports and sequence, and never
any content."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tp_net.trio import message_trace, transport_ws
from tp_net.trio.transport import Channel
from tp_net.trio.transport_ws import WebSocketDialer, WebSocketListener

SECRET = b"a prompt nobody may log " * 4


@pytest.fixture
def fresh_ring() -> Iterator[None]:
    message_trace.clear()
    yield
    message_trace.clear()


async def _echo_twice(channel: Channel) -> None:
    for _ in range(2):
        await channel.send_message(await channel.receive_message())


async def _two_round_trips(nursery: trio.Nursery) -> None:
    address = await nursery.start(WebSocketListener("127.0.0.1", 0).serve, _echo_twice)
    channel = await WebSocketDialer().dial(address)
    for _ in range(2):
        await channel.send_message(SECRET)
        assert await channel.receive_message() == SECRET
    await channel.aclose()


def test_the_tracer_is_off_unless_the_environment_names_a_directory() -> None:
    assert not message_trace.ENABLED  # the test run sets no TP_TRACE_DIR
    assert not transport_ws._TRACING


async def test_off_it_records_nothing(nursery: trio.Nursery, fresh_ring: None) -> None:
    await _two_round_trips(nursery)
    message_trace.mark("gw_http_in")
    assert message_trace.records() == []


async def test_on_each_message_is_recorded_at_both_ends_and_they_line_up(
    nursery: trio.Nursery, fresh_ring: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(transport_ws, "_TRACING", True)
    await _two_round_trips(nursery)
    records = message_trace.records()
    sent = {(r[2], r[3], r[4], r[5]) for r in records if r[1] == "send"}
    received = {(r[3], r[2], r[4], r[5]) for r in records if r[1] == "recv"}  # seen from the sender
    starts = {(r[2], r[3], r[4], r[5]) for r in records if r[1] == "send0"}
    assert len(sent) == 4  # two messages each way, on one connection
    assert sent == received == starts
    assert {r[4] for r in records if r[1] == "send"} == {1, 2}
    assert all(r[5] == len(SECRET) for r in records)
    path = message_trace.dump(str(tmp_path))
    text = path.read_text()
    assert json.loads(text)["records"]
    assert "prompt" not in text  # sizes and ports, never content
