"""The client side in trio: a link to a guard relay, circuits over it, streams on circuits.

Used by the gateway, the simulator and the in-process client. All protocol logic is in ClientCircuit
(sans-IO); this module moves cells and turns circuit events into awaitable stream operations with
backpressure.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any

import trio

from tp_crypto.errors import LocalProtocolError, RemoteProtocolError
from tp_net.protocol.cells import DestroyReason, new_circuit_id
from tp_net.protocol.circuit_client import CircuitBuilt, CircuitClosed, CircuitState, ClientCircuit, HopInfo
from tp_net.protocol.errors import TokenPlaceError
from tp_net.protocol.frames import Cell, Frame
from tp_net.protocol.messages import MessageReader, encode_message, encode_request
from tp_net.protocol.streams import STREAM_SEND_BUFFER_BYTES, EndReason, StreamData, StreamEnded
from tp_net.protocol.traffic_shaping import is_pad
from tp_net.trio.link_pump import LinkPump
from tp_net.trio.link_trio import dial_link
from tp_net.trio.transport import Dialer
from tp_net.trio.trio_util import background_nursery

CIRCUIT_BUILD_TIMEOUT_S = 10.0
# Bytes one response may carry in all: far more than a directory document or the longest answer a model
# gives; a node that sends more (or a malformed message) loses its circuit.
RESPONSE_BYTES_MAX = 64 * 1024 * 1024


class CircuitError(TokenPlaceError):
    """The circuit failed to build or was torn down."""

    def __init__(self, message: str, reason: DestroyReason) -> None:
        super().__init__(message)
        self.reason = reason


class StreamError(TokenPlaceError):
    """The stream was aborted by the other end (or its circuit died)."""

    def __init__(self, message: str, reason: int) -> None:
        super().__init__(message)
        self.reason = reason


class ClientLink:
    """An anonymous link to a guard relay carrying any number of this client's circuits."""

    def __init__(self, pump: LinkPump, guard: HopInfo, rng: random.Random) -> None:
        self.guard = guard
        self._pump = pump
        self._rng = rng
        self._circuits: dict[int, Circuit] = {}
        self.closed = False
        self.lost = trio.Event()

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, dialer: Dialer, guard: HopInfo, *, rng: random.Random | None = None
    ) -> AsyncIterator[ClientLink]:
        if guard.address is None:
            raise LocalProtocolError("the guard needs an address")
        link = await dial_link(dialer, guard.address, expected_peer_id=guard.node_id)
        client_link = cls(LinkPump(link, 0), guard, rng or random.Random())
        try:
            async with background_nursery() as nursery:
                nursery.start_soon(client_link._pump.run_writer)
                nursery.start_soon(client_link._read)
                yield client_link
        finally:
            client_link._lost()
            await client_link._pump.aclose()

    @property
    def circuit_count(self) -> int:
        return len(self._circuits)

    async def build_circuit(
        self, path: Sequence[HopInfo], *, timeout_s: float = CIRCUIT_BUILD_TIMEOUT_S
    ) -> Circuit:
        """Build a circuit through `path` (whose first hop is this link's guard)."""
        if not path or path[0].node_id != self.guard.node_id:
            raise LocalProtocolError("a circuit's first hop must be the link's guard")
        if self.closed:
            raise CircuitError("the link to the guard is closed", DestroyReason.LINK_CLOSED)
        circuit_id = new_circuit_id(self._rng, link_dialer=True, in_use=self._circuits)
        circuit = Circuit(self, ClientCircuit(path, circuit_id))
        self._circuits[circuit_id] = circuit
        circuit.flush()
        started = trio.current_time()
        with trio.move_on_after(timeout_s):
            await circuit.wait_built()
            circuit.built_in_s = trio.current_time() - started
            return circuit
        circuit.destroy(DestroyReason.TIMEOUT)
        raise CircuitError(f"circuit build timed out after {timeout_s} s", DestroyReason.TIMEOUT)

    def send_cells(self, cells: list[Cell]) -> None:
        for cell in cells:
            self._pump.enqueue(cell)

    def forget(self, circuit_id: int) -> None:
        self._circuits.pop(circuit_id, None)

    async def _read(self) -> None:
        await self._pump.run_reader(self._on_frames)
        self._lost()

    def _on_frames(self, frames: list[Frame]) -> None:
        for frame in frames:
            if isinstance(frame, Cell):
                circuit = self._circuits.get(frame.circuit_id)
                if circuit is not None:
                    circuit.receive(frame)

    def _lost(self) -> None:
        self.closed = True
        self.lost.set()
        for circuit in list(self._circuits.values()):
            circuit.link_lost()


class Circuit:
    def __init__(self, link: ClientLink, core: ClientCircuit) -> None:
        self._link = link
        self.core = core
        self._streams: dict[int, Stream] = {}
        self._changed = trio.Event()
        # How long the build took (set by ClientLink.build_circuit): the path's round trips, measured.
        self.built_in_s: float | None = None

    @property
    def is_open(self) -> bool:
        return self.core.state is CircuitState.OPEN

    @property
    def close_reason(self) -> DestroyReason | None:
        return self.core.close_reason

    async def wait_built(self) -> None:
        while self.core.state is CircuitState.BUILDING:
            await self.wait_changed()
        self.raise_if_closed()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def raise_if_closed(self) -> None:
        if self.core.state is CircuitState.CLOSED:
            reason = self.core.close_reason or DestroyReason.NONE
            raise CircuitError(f"circuit closed ({reason.name})", reason)

    async def open_stream(self, service: str) -> Stream:
        self.raise_if_closed()
        await trio.lowlevel.checkpoint()
        stream = Stream(self, self.core.edge.open_stream(service))
        self._streams[stream.stream_id] = stream
        self.flush()
        return stream

    async def request(self, service: str, document: Any) -> AsyncGenerator[Any, None]:
        """Send one request message on a new stream and yield the response messages."""
        message = encode_request(document)
        stream = await self.open_stream(service)
        finished = False
        try:
            await stream.send(message)
            stream.end()
            async with aclosing(stream.messages()) as messages:
                async for message in messages:
                    yield message
            finished = True
        finally:
            if not finished:
                stream.cancel()

    def send_drop(self) -> None:
        self.core.send_drop()
        self.flush()

    def destroy(self, reason: DestroyReason = DestroyReason.REQUESTED) -> None:
        self._dispatch(self.core.destroy(reason))
        self.flush()

    def flush(self) -> None:
        self._link.send_cells(self.core.outgoing_cells())

    def receive(self, cell: Cell) -> None:
        self._dispatch(self.core.receive_cell(cell, trio.current_time()))
        self.flush()

    def link_lost(self) -> None:
        self._dispatch(self.core.link_lost())

    def forget_stream(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)

    def _dispatch(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, StreamData | StreamEnded):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.on_event(event)
            elif isinstance(event, CircuitClosed):
                self._link.forget(self.core.circuit_id)
            elif not isinstance(event, CircuitBuilt):
                raise LocalProtocolError(f"unexpected circuit event {event!r}")
        self._changed.set()
        self._changed = trio.Event()


class Stream:
    """One stream: send bytes or messages, end, receive until the other side ends."""

    def __init__(self, circuit: Circuit, stream_id: int) -> None:
        self.circuit = circuit
        self.stream_id = stream_id
        self._chunks: deque[bytes] = deque()
        self._end_reason: int | None = None

    def on_event(self, event: StreamData | StreamEnded) -> None:
        if isinstance(event, StreamData):
            self._chunks.append(event.data)
        else:
            self._end_reason = event.reason
            if event.reason != EndReason.DONE:
                self._chunks.clear()

    async def send(self, data: bytes) -> None:
        """Queue data; waits while more than STREAM_SEND_BUFFER_BYTES wait for the window."""
        self._raise_if_aborted()
        self.circuit.core.edge.send(self.stream_id, data)
        self.circuit.flush()
        while self.circuit.core.edge.queued_bytes(self.stream_id) > STREAM_SEND_BUFFER_BYTES:
            await self.circuit.wait_changed()
            self._raise_if_aborted()

    async def send_message(self, document: Any) -> None:
        await self.send(encode_message(document))

    def end(self) -> None:
        """No more data from this side (the other side may go on sending)."""
        self.circuit.core.edge.end(self.stream_id, EndReason.DONE)
        self.circuit.flush()

    def cancel(self) -> None:
        """Abort the stream both ways (the service stops working on it)."""
        if self.circuit.core.edge.is_open(self.stream_id):
            self.circuit.core.edge.end(self.stream_id, EndReason.CANCELLED)
            self.circuit.flush()
        self.circuit.forget_stream(self.stream_id)

    async def receive_data(self) -> bytes:
        """The next chunk of data; b"" once the other side ended its direction. StreamError if aborted."""
        while not self._chunks and self._end_reason is None:
            self.circuit.raise_if_closed()
            await self.circuit.wait_changed()
        if self._chunks:
            data = self._chunks.popleft()
            self.circuit.core.edge.consumed(self.stream_id)
            self.circuit.flush()
            return data
        self._raise_if_aborted()
        self.circuit.forget_stream(self.stream_id)
        return b""

    async def messages(self, *, response_bytes_max: int = RESPONSE_BYTES_MAX) -> AsyncGenerator[Any, None]:
        """Messages until the other side ends; StreamError if it aborts or stops mid-message, or sends more
        than `response_bytes_max` or a malformed message (which also tears the circuit down)."""
        reader = MessageReader(stream_bytes_max=response_bytes_max)
        while data := await self.receive_data():
            try:
                messages = reader.feed(data)
            except RemoteProtocolError:
                self.circuit.destroy(DestroyReason.PROTOCOL)
                raise StreamError("the response broke the protocol", EndReason.BAD_REQUEST) from None
            for message in messages:
                if not is_pad(message):  # a dummy from a shaping node (tp_net.protocol.traffic_shaping)
                    yield message
        if reader.pending_bytes:
            raise StreamError("stream ended in the middle of a message", EndReason.BAD_REQUEST)

    def _raise_if_aborted(self) -> None:
        if self._end_reason not in (None, EndReason.DONE):
            assert self._end_reason is not None
            raise StreamError(f"stream aborted ({_reason_name(self._end_reason)})", self._end_reason)


def _reason_name(reason: int) -> str:
    try:
        return EndReason(reason).name
    except ValueError:
        return str(reason)
