"""Streams and flow control at a circuit's edge (the client, or the hop a stream ends at), sans-IO.

Many streams share a circuit, each with an id. Data is fragmented into RelayData messages. Flow control, per
direction, counts DATA cells:

- circuit level: the sender may have CIRCUIT_WINDOW_CELLS unacknowledged; the receiver acks every
  CIRCUIT_SENDME_CELLS cells it *received* with a SENDME carrying a digest of their data, which the sender
  checks, so a reader cannot ack cells it never took off the wire. This bounds what relays buffer per circuit.
- stream level: the sender may have STREAM_WINDOW_CELLS unacknowledged on a stream; the receiver acks every
  STREAM_SENDME_CELLS cells its application *consumed*, so a slow reader throttles its own stream only.

A sender that exceeds a window, a bad digest, or a message that makes no sense here is a protocol error:
the caller tears the circuit down.
"""

from __future__ import annotations

import enum
import hashlib
from collections import deque
from dataclasses import dataclass, field

from tp_crypto.errors import LocalProtocolError, RemoteProtocolError
from tp_net.protocol.frames import Frame
from tp_net.protocol.relay_messages import (
    CIRCUIT_STREAM_ID,
    SENDME_DIGEST_BYTES,
    SERVICE_NAME_BYTES_MAX,
    STREAM_ID_MAX,
    RelayBegin,
    RelayData,
    RelayDrop,
    RelayEnd,
    RelaySendme,
)

CIRCUIT_WINDOW_CELLS = 256
CIRCUIT_SENDME_CELLS = 64
STREAM_WINDOW_CELLS = 128
STREAM_SENDME_CELLS = 32
STREAMS_PER_CIRCUIT_MAX = 512
# Bytes a stream's sender may queue beyond its window before it waits (the client's send(), a service's
# handler): the window (128 cells) keeps the path busy, so this only bridges the writer's next turn.
STREAM_SEND_BUFFER_BYTES = 32 * 1024


class EndReason(enum.IntEnum):
    DONE = 0  # the sender's direction is finished; the other may go on
    CANCELLED = 1
    NO_SUCH_SERVICE = 2
    OVERLOADED = 3
    INTERNAL = 4
    CIRCUIT_CLOSED = 5
    BAD_REQUEST = 6
    TIMEOUT = 7


@dataclass(frozen=True)
class StreamOpened:
    stream_id: int
    service: str


@dataclass(frozen=True)
class StreamData:
    stream_id: int
    data: bytes


@dataclass(frozen=True)
class StreamEnded:
    """The peer finished its direction (DONE) or aborted the stream (any other reason)."""

    stream_id: int
    reason: int


StreamEvent = StreamOpened | StreamData | StreamEnded


@dataclass
class _Stream:
    stream_id: int
    outbound: bytearray = field(default_factory=bytearray)
    end_pending: bool = False
    end_sent: bool = False
    peer_done: bool = False
    package_window: int = STREAM_WINDOW_CELLS
    deliver_window: int = STREAM_WINDOW_CELLS
    consumed_unacked: int = 0


class _Digest:
    """Running digest of DATA payloads, cut every CIRCUIT_SENDME_CELLS cells."""

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=SENDME_DIGEST_BYTES)
        self._cells = 0

    def add(self, data: bytes) -> bytes | None:
        """Adds one cell's data; returns the group's digest when this cell completes a group."""
        self._hash.update(data)
        self._cells += 1
        if self._cells < CIRCUIT_SENDME_CELLS:
            return None
        digest = self._hash.digest()
        self._hash = hashlib.blake2b(digest_size=SENDME_DIGEST_BYTES)
        self._cells = 0
        return digest


class CircuitEdge:
    """The streams of one circuit at one of its two edges."""

    def __init__(self, *, accepts_streams: bool, data_bytes_max: int) -> None:
        self._accepts_streams = accepts_streams
        self._data_bytes_max = data_bytes_max
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1
        self._control: deque[Frame] = deque()
        self._package_window = CIRCUIT_WINDOW_CELLS
        self._deliver_window = CIRCUIT_WINDOW_CELLS
        self._sent_digest = _Digest()
        self._received_digest = _Digest()
        self._expected_sendmes: deque[bytes] = deque()

    # --- the application side -----------------------------------------------------------------

    def open_stream(self, service: str) -> int:
        """Open a stream to `service` at the other edge; data may be sent at once."""
        if not 0 < len(service) <= SERVICE_NAME_BYTES_MAX:
            raise LocalProtocolError("a service name is 1..64 characters")
        if len(self._streams) >= STREAMS_PER_CIRCUIT_MAX:
            raise LocalProtocolError(f"circuit already has {STREAMS_PER_CIRCUIT_MAX} streams")
        stream_id = self._free_stream_id()
        self._streams[stream_id] = _Stream(stream_id)
        self._control.append(RelayBegin(stream_id, service))
        return stream_id

    def send(self, stream_id: int, data: bytes) -> None:
        stream = self._open_stream_for_sending(stream_id)
        stream.outbound += data

    def end(self, stream_id: int, reason: EndReason = EndReason.DONE) -> None:
        """DONE: send END after the data already queued. Any other reason aborts the stream now (also after
        DONE: the peer may still be sending)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if reason == EndReason.DONE:
            stream.end_pending = True
            return
        del self._streams[stream_id]
        self._control.append(RelayEnd(stream_id, reason))

    def consumed(self, stream_id: int, cells: int = 1) -> None:
        """The application took `cells` delivered DATA cells off this stream: ack them in groups."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream.consumed_unacked += cells
        while stream.consumed_unacked >= STREAM_SENDME_CELLS:
            stream.consumed_unacked -= STREAM_SENDME_CELLS
            stream.deliver_window += STREAM_SENDME_CELLS
            self._control.append(RelaySendme(stream_id, b""))

    def queued_bytes(self, stream_id: int) -> int:
        """Bytes queued on a stream and not yet sent (the application's backpressure signal)."""
        stream = self._streams.get(stream_id)
        return len(stream.outbound) if stream else 0

    def is_open(self, stream_id: int) -> bool:
        return stream_id in self._streams

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def close_all(self) -> list[StreamEvent]:
        """The circuit is gone: every stream ends with CIRCUIT_CLOSED."""
        events: list[StreamEvent] = [StreamEnded(sid, EndReason.CIRCUIT_CLOSED) for sid in self._streams]
        self._streams.clear()
        self._control.clear()
        return events

    # --- the network side ---------------------------------------------------------------------

    def pending_messages(self) -> list[Frame]:
        """Messages to send now: control first, then DATA round-robin as far as the windows allow."""
        messages: list[Frame] = list(self._control)
        self._control.clear()
        progress = True
        while progress and self._package_window > 0:
            progress = False
            for stream in list(self._streams.values()):
                if self._package_window == 0:
                    break
                if stream.outbound and stream.package_window > 0:
                    messages.append(self._take_data(stream))
                    progress = True
        for stream in list(self._streams.values()):
            if stream.end_pending and not stream.end_sent and not stream.outbound:
                stream.end_sent = True
                messages.append(RelayEnd(stream.stream_id, EndReason.DONE))
                self._forget_if_finished(stream)
        return messages

    def receive(self, message: Frame) -> list[StreamEvent]:
        """Process a message from the other edge; RemoteProtocolError when it breaks the rules."""
        if isinstance(message, RelayData):
            return self._receive_data(message)
        if isinstance(message, RelaySendme):
            self._receive_sendme(message)
            return []
        if isinstance(message, RelayBegin):
            return self._receive_begin(message)
        if isinstance(message, RelayEnd):
            return self._receive_end(message)
        if isinstance(message, RelayDrop):
            return []
        raise RemoteProtocolError(f"{type(message).__name__} is not a stream message")

    # --- internals ----------------------------------------------------------------------------

    def _free_stream_id(self) -> int:
        for _ in range(STREAM_ID_MAX):
            candidate = self._next_stream_id
            self._next_stream_id = candidate % STREAM_ID_MAX + 1
            if candidate not in self._streams:
                return candidate
        raise LocalProtocolError("no free stream id")

    def _open_stream_for_sending(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError(f"stream {stream_id} is not open")
        if stream.end_pending:
            raise LocalProtocolError(f"stream {stream_id} was already ended")
        return stream

    def _take_data(self, stream: _Stream) -> RelayData:
        chunk = bytes(stream.outbound[: self._data_bytes_max])
        del stream.outbound[: self._data_bytes_max]
        stream.package_window -= 1
        self._package_window -= 1
        digest = self._sent_digest.add(chunk)
        if digest is not None:
            self._expected_sendmes.append(digest)
        return RelayData(stream.stream_id, chunk)

    def _receive_data(self, message: RelayData) -> list[StreamEvent]:
        if self._deliver_window == 0:
            raise RemoteProtocolError("peer sent DATA beyond the circuit window")
        self._deliver_window -= 1
        digest = self._received_digest.add(message.data)
        if digest is not None:
            self._deliver_window += CIRCUIT_SENDME_CELLS
            self._control.append(RelaySendme(CIRCUIT_STREAM_ID, digest))
        stream = self._streams.get(message.stream_id)
        if stream is None:
            return []  # a stream we aborted; its data in flight still counted for the circuit
        if stream.peer_done:
            raise RemoteProtocolError(f"DATA on stream {message.stream_id} after its END")
        if stream.deliver_window == 0:
            raise RemoteProtocolError(f"peer sent DATA beyond the window of stream {message.stream_id}")
        stream.deliver_window -= 1
        return [StreamData(message.stream_id, message.data)]

    def _receive_sendme(self, message: RelaySendme) -> None:
        if message.stream_id == CIRCUIT_STREAM_ID:
            if not self._expected_sendmes or message.digest != self._expected_sendmes.popleft():
                raise RemoteProtocolError("circuit SENDME does not acknowledge cells we sent")
            self._package_window += CIRCUIT_SENDME_CELLS
            return
        stream = self._streams.get(message.stream_id)
        if stream is None:
            return
        if stream.package_window + STREAM_SENDME_CELLS > STREAM_WINDOW_CELLS:
            raise RemoteProtocolError(f"SENDME on stream {message.stream_id} acknowledges unsent cells")
        stream.package_window += STREAM_SENDME_CELLS

    def _receive_begin(self, message: RelayBegin) -> list[StreamEvent]:
        if not self._accepts_streams:
            raise RemoteProtocolError("BEGIN sent to a client")
        if message.stream_id in self._streams:
            raise RemoteProtocolError(f"BEGIN for stream {message.stream_id}, which is open")
        if len(self._streams) >= STREAMS_PER_CIRCUIT_MAX:
            self._control.append(RelayEnd(message.stream_id, EndReason.OVERLOADED))
            return []
        self._streams[message.stream_id] = _Stream(message.stream_id)
        return [StreamOpened(message.stream_id, message.service)]

    def _receive_end(self, message: RelayEnd) -> list[StreamEvent]:
        stream = self._streams.get(message.stream_id)
        if stream is None:
            return []
        if message.reason != EndReason.DONE:
            del self._streams[message.stream_id]
            return [StreamEnded(message.stream_id, message.reason)]
        if stream.peer_done:
            raise RemoteProtocolError(f"second END on stream {message.stream_id}")
        stream.peer_done = True
        self._forget_if_finished(stream)
        return [StreamEnded(message.stream_id, message.reason)]

    def _forget_if_finished(self, stream: _Stream) -> None:
        if stream.end_sent and stream.peer_done:
            self._streams.pop(stream.stream_id, None)
