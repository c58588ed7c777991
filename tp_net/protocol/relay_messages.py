"""Relay messages: what travels inside the onion layers of a RELAY cell, end to end between the client and
one hop. Frozen dataclasses; `tp_net.protocol.codec` encodes them (tags 32+, a namespace apart from link
frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tp_crypto.errors import RemoteProtocolError
from tp_crypto.identity import NODE_ID_BYTES
from tp_net.protocol.frames import Frame

STREAM_ID_MAX = 2**16 - 1
CIRCUIT_STREAM_ID = 0  # a SENDME for stream 0 acknowledges circuit-level cells
SERVICE_NAME_BYTES_MAX = 64
ADDRESS_BYTES_MAX = 256
HOP_HANDSHAKE_BYTES_MAX = 256
SENDME_DIGEST_BYTES = 16
END_REASON_MAX = 255


def _check_stream_id(stream_id: int, *, allow_circuit: bool = False) -> None:
    low = CIRCUIT_STREAM_ID if allow_circuit else 1
    if not low <= stream_id <= STREAM_ID_MAX:
        raise RemoteProtocolError(f"stream id {stream_id} is outside {low}..{STREAM_ID_MAX}")


@dataclass(frozen=True, slots=True)
class RelayExtend(Frame):
    """Ask the last hop to extend the circuit to `node_id` (dialing `address` if it has no link to it)."""

    TAG: ClassVar[int] = 32
    node_id: bytes
    address: str | None
    handshake: bytes

    def check(self) -> None:
        if len(self.node_id) != NODE_ID_BYTES:
            raise RemoteProtocolError("EXTEND names a node id of the wrong length")
        if self.address is not None and len(self.address) > ADDRESS_BYTES_MAX:
            raise RemoteProtocolError("EXTEND address is too long")
        if len(self.handshake) > HOP_HANDSHAKE_BYTES_MAX:
            raise RemoteProtocolError("EXTEND handshake is too long")


@dataclass(frozen=True, slots=True)
class RelayExtended(Frame):
    """The new hop's handshake reply, relayed back by the hop that extended."""

    TAG: ClassVar[int] = 33
    handshake: bytes

    def check(self) -> None:
        if len(self.handshake) > HOP_HANDSHAKE_BYTES_MAX:
            raise RemoteProtocolError("EXTENDED handshake is too long")


@dataclass(frozen=True, slots=True)
class RelayBegin(Frame):
    """Open stream `stream_id` to a service of the last hop (data may follow at once)."""

    TAG: ClassVar[int] = 34
    stream_id: int
    service: str

    def check(self) -> None:
        _check_stream_id(self.stream_id)
        if not 0 < len(self.service) <= SERVICE_NAME_BYTES_MAX:
            raise RemoteProtocolError("BEGIN service name is empty or too long")


@dataclass(frozen=True, slots=True)
class RelayData(Frame):
    TAG: ClassVar[int] = 35
    stream_id: int
    data: bytes

    def check(self) -> None:
        _check_stream_id(self.stream_id)
        if not self.data:
            raise RemoteProtocolError("DATA carries no bytes")


@dataclass(frozen=True, slots=True)
class RelayEnd(Frame):
    """The sender is done with the stream: `reason` 0 closes its direction; any other aborts the stream."""

    TAG: ClassVar[int] = 36
    stream_id: int
    reason: int

    def check(self) -> None:
        _check_stream_id(self.stream_id)
        if not 0 <= self.reason <= END_REASON_MAX:
            raise RemoteProtocolError("END reason is out of range")


@dataclass(frozen=True, slots=True)
class RelaySendme(Frame):
    """Flow-control ack. For the circuit (stream 0) `digest` proves the acked cells were received."""

    TAG: ClassVar[int] = 37
    stream_id: int
    digest: bytes

    def check(self) -> None:
        _check_stream_id(self.stream_id, allow_circuit=True)
        if len(self.digest) not in (0, SENDME_DIGEST_BYTES):
            raise RemoteProtocolError("SENDME digest has the wrong length")


@dataclass(frozen=True, slots=True)
class RelayDrop(Frame):
    """Long-range padding: the hop it is addressed to discards it (keeps idle circuits alive)."""

    TAG: ClassVar[int] = 38


RELAY_MESSAGE_TYPES: tuple[type[Frame], ...] = (
    RelayExtend,
    RelayExtended,
    RelayBegin,
    RelayData,
    RelayEnd,
    RelaySendme,
    RelayDrop,
)
