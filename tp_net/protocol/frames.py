"""Link-level frames: the messages two machines exchange inside an encrypted link.

Frames are frozen dataclasses; `tp_net.protocol.codec` is the only module that turns them into bytes. Each
class has a one-byte wire tag and a `check()` that enforces its field bounds after decoding (types are checked
generically by the codec from the annotations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tp_crypto.errors import RemoteProtocolError
from tp_crypto.identity import NODE_ID_BYTES

LINK_PROTOCOL_VERSION = 1
CIRCUIT_ID_MIN = 2**31
CIRCUIT_ID_MAX = 2**32 - 1
CELL_COMMAND_MAX = 15
# Fixed body size of every cell, chosen by measurement (docs/PROTOCOL.md, "Cell size").
CELL_BODY_BYTES = 1024
PING_TOKEN_MAX = 2**64 - 1
CLOSE_REASON_MAX = 255


class Frame:
    """Base of every frame; subclasses are frozen dataclasses with a unique TAG."""

    TAG: ClassVar[int]

    def check(self) -> None:
        """Raise RemoteProtocolError when a field is out of its bounds."""


def _check_range(name: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise RemoteProtocolError(f"{name} {value} is outside 0..{maximum}")


@dataclass(frozen=True, slots=True)
class LinkHello(Frame):
    """Handshake payload: the protocol version and, unless the sender stays anonymous, its node id."""

    TAG: ClassVar[int] = 1
    version: int
    node_id: bytes | None

    def check(self) -> None:
        _check_range("link version", self.version, 2**16 - 1)
        if self.node_id is not None and len(self.node_id) != NODE_ID_BYTES:
            raise RemoteProtocolError(f"node id must be {NODE_ID_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class Ping(Frame):
    """Liveness probe; the peer answers with a Pong carrying the same token."""

    TAG: ClassVar[int] = 2
    token: int

    def check(self) -> None:
        _check_range("ping token", self.token, PING_TOKEN_MAX)


@dataclass(frozen=True, slots=True)
class Pong(Frame):
    TAG: ClassVar[int] = 3
    token: int

    def check(self) -> None:
        _check_range("pong token", self.token, PING_TOKEN_MAX)


@dataclass(frozen=True, slots=True)
class Cell(Frame):
    """One circuit cell on this link. Every cell has the same size: ids have the top bit set (so they
    always encode in 5 bytes) and bodies are exactly CELL_BODY_BYTES."""

    TAG: ClassVar[int] = 4
    circuit_id: int
    command: int
    body: bytes

    def check(self) -> None:
        if not CIRCUIT_ID_MIN <= self.circuit_id <= CIRCUIT_ID_MAX:
            raise RemoteProtocolError(
                f"circuit id {self.circuit_id} is outside {CIRCUIT_ID_MIN}..{CIRCUIT_ID_MAX}"
            )
        _check_range("cell command", self.command, CELL_COMMAND_MAX)
        if len(self.body) != CELL_BODY_BYTES:
            raise RemoteProtocolError(f"cell body of {len(self.body)} bytes, expected {CELL_BODY_BYTES}")


@dataclass(frozen=True, slots=True)
class LinkClose(Frame):
    """The sender is closing the link on purpose, for `reason` (see tp_net.protocol.link.CloseReason)."""

    TAG: ClassVar[int] = 5
    reason: int

    def check(self) -> None:
        _check_range("close reason", self.reason, CLOSE_REASON_MAX)


@dataclass(frozen=True, slots=True)
class Padding(Frame):
    """Link padding: the receiver discards it (cover traffic; the link benchmark's payloads)."""

    TAG: ClassVar[int] = 6
    data: bytes


LINK_FRAME_TYPES: tuple[type[Frame], ...] = (LinkHello, Ping, Pong, Cell, LinkClose, Padding)
