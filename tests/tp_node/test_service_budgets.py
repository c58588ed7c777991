"""The service host's request budgets, checked as data arrives (before it is kept): one message per
request, REQUEST_BYTES_MAX per stream, REQUEST_BUFFER_BYTES_PER_CIRCUIT_MAX per circuit,
REQUEST_BUFFER_BYTES_MAX in all.

The host runs against a recording fake of the circuit layer (StreamPort), as HopRuntime would drive it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import trio

from tp_net.protocol.hop_outputs import CircuitRef, ServiceEvent
from tp_net.protocol.messages import REQUEST_BYTES_MAX, encode_message
from tp_net.protocol.streams import EndReason, StreamData, StreamEnded, StreamOpened
from tp_net.trio.services import (
    REQUEST_BUFFER_BYTES_MAX,
    REQUEST_BUFFER_BYTES_PER_CIRCUIT_MAX,
    ServiceHost,
    StreamPort,
)

CHUNK_BYTES = 64 * 1024


class RecordingPort:
    def __init__(self) -> None:
        self.sent: list[tuple[CircuitRef, int, bytes]] = []
        self.ends: list[tuple[CircuitRef, int, EndReason]] = []
        self.destroyed: list[CircuitRef] = []
        self.consumed_cells = 0
        self.progress = trio.Event()

    def port(self) -> StreamPort:
        return StreamPort(
            send=lambda ref, sid, data: self.sent.append((ref, sid, data)),
            end=lambda ref, sid, reason: self.ends.append((ref, sid, reason)),
            destroy=self.destroyed.append,
            consumed=self._consumed,
            queued_bytes=lambda ref, sid: 0,
            wait_for_progress=self.progress.wait,
            drop=lambda ref: True,
        )

    def _consumed(self, ref: CircuitRef, sid: int) -> None:
        self.consumed_cells += 1


async def echo_size(request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
    await trio.lowlevel.checkpoint()
    yield {"bytes": len(request.get("prompt", ""))}


def _host() -> tuple[ServiceHost, RecordingPort]:
    recorder = RecordingPort()
    return ServiceHost({"echo": echo_size}, recorder.port()), recorder


def _open(host: ServiceHost, ref: CircuitRef, sid: int) -> None:
    host.on_event(ServiceEvent(ref, StreamOpened(sid, "echo")))


def _data(host: ServiceHost, ref: CircuitRef, sid: int, data: bytes) -> None:
    for start in range(0, len(data), CHUNK_BYTES):
        host.on_event(ServiceEvent(ref, StreamData(sid, data[start : start + CHUNK_BYTES])))


def _max_request() -> bytes:
    """A message announcing a request of REQUEST_BYTES_MAX, not yet sent whole (the stream stays open)."""
    return REQUEST_BYTES_MAX.to_bytes(4, "big") + b"\xa0" * (REQUEST_BYTES_MAX - 1)


def test_a_second_message_on_a_request_stream_loses_the_circuit() -> None:
    host, port = _host()
    ref = (1, 7)
    _open(host, ref, 1)
    _data(host, ref, 1, encode_message({"prompt": "a"}) + encode_message({"prompt": "b"}))
    assert port.destroyed == [ref]
    assert host.buffered_bytes == 0


def test_a_stream_over_the_request_limit_loses_the_circuit_before_the_excess_is_kept() -> None:
    host, port = _host()
    ref = (1, 7)
    _open(host, ref, 1)
    _data(host, ref, 1, (REQUEST_BYTES_MAX + 1).to_bytes(4, "big") + b"\xa0" * 100)
    assert port.destroyed == [ref]
    assert host.buffered_bytes == 0


def test_a_circuits_unfinished_requests_are_bounded_and_the_stream_past_it_is_refused() -> None:
    host, port = _host()
    ref = (1, 7)
    streams = REQUEST_BUFFER_BYTES_PER_CIRCUIT_MAX // len(_max_request())
    for sid in range(1, streams + 2):
        _open(host, ref, sid)
        _data(host, ref, sid, _max_request())
    assert host.buffered_bytes <= REQUEST_BUFFER_BYTES_PER_CIRCUIT_MAX
    assert port.ends == [(ref, streams + 1, EndReason.OVERLOADED)]
    assert port.destroyed == []
    # Another circuit is not affected by this one's bound.
    _open(host, (2, 9), 1)
    _data(host, (2, 9), 1, _max_request())
    assert len(port.ends) == 1


def test_all_unfinished_requests_are_bounded_and_the_largest_is_refused_first() -> None:
    host, port = _host()
    request_bytes = len(_max_request())
    per_circuit = REQUEST_BUFFER_BYTES_PER_CIRCUIT_MAX // request_bytes
    circuits = REQUEST_BUFFER_BYTES_MAX // (per_circuit * request_bytes) + 1  # one circuit too many
    for link in range(circuits):
        for sid in range(1, per_circuit + 1):
            _open(host, (link, 1), sid)
            _data(host, (link, 1), sid, _max_request())
    assert host.buffered_bytes <= REQUEST_BUFFER_BYTES_MAX
    refused = [end for end in port.ends if end[2] == EndReason.OVERLOADED]
    assert refused  # the attacker's streams were the largest
    # A small honest request on a new circuit still gets in, and is answered... once its stream ends.
    honest = (1000, 1)
    _open(host, honest, 1)
    _data(host, honest, 1, encode_message({"prompt": "hello"}))
    assert (honest, 1, EndReason.OVERLOADED) not in port.ends
    assert host.buffered_bytes <= REQUEST_BUFFER_BYTES_MAX


async def test_a_request_is_decoded_only_once_its_stream_ends_and_its_bytes_are_let_go() -> None:
    host, port = _host()
    ref = (1, 7)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(host.run)
        await trio.testing.wait_all_tasks_blocked()
        # 512 KiB of empty maps: not decoded (nor refused) while the stream is open...
        maps = b"\xdd" + (512 * 1024).to_bytes(4, "big") + b"\x80" * (512 * 1024)
        _open(host, ref, 1)
        _data(host, ref, 1, len(maps).to_bytes(4, "big") + maps)
        assert host.buffered_bytes == len(maps) + 4 and port.ends == []
        # ...refused when it ends, without decoding it.
        host.on_event(ServiceEvent(ref, StreamEnded(1, EndReason.DONE)))
        assert port.ends == [(ref, 1, EndReason.BAD_REQUEST)]
        assert host.buffered_bytes == 0
        # An honest request is answered, and holds nothing afterwards.
        _open(host, ref, 2)
        _data(host, ref, 2, encode_message({"prompt": "hello"}))
        host.on_event(ServiceEvent(ref, StreamEnded(2, EndReason.DONE)))
        assert host.buffered_bytes == 0
        await trio.testing.wait_all_tasks_blocked()
        assert port.sent == [(ref, 2, encode_message({"bytes": 5}))]
        assert port.ends[-1] == (ref, 2, EndReason.DONE)
        nursery.cancel_scope.cancel()


def test_a_closed_circuit_lets_go_of_its_unfinished_requests() -> None:
    host, _port = _host()
    ref = (1, 7)
    _open(host, ref, 1)
    _data(host, ref, 1, _max_request())
    assert host.buffered_bytes == REQUEST_BYTES_MAX + 3
    host.on_event(ServiceEvent(ref, StreamEnded(1, EndReason.CIRCUIT_CLOSED)))
    assert host.buffered_bytes == 0
