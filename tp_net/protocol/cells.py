"""Cells: the fixed-size units of circuits on a link, and their commands.

Every cell is a `Cell(circuit_id, command, body)` frame with a CELL_BODY_BYTES body, whatever the command, so
an observer of a link (or a relay) learns nothing from sizes. CREATE/CREATED bodies hold a length-prefixed
Noise NK message, DESTROY a reason code, RELAY an onion-encrypted body (tp_crypto.onion).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Container

from tp_crypto.errors import LocalProtocolError, RemoteProtocolError
from tp_crypto.onion import ONION_HEADER_BYTES
from tp_net.protocol import codec
from tp_net.protocol.frames import CELL_BODY_BYTES, CIRCUIT_ID_MAX, CIRCUIT_ID_MIN, Cell
from tp_net.protocol.relay_messages import STREAM_ID_MAX, RelayData

# Payload of a RELAY cell once the onion header (recognized + tag) is off.
RELAY_PAYLOAD_BYTES = CELL_BODY_BYTES - ONION_HEADER_BYTES
_PROBE_BYTES = 256
# Largest DATA chunk one cell carries (measured on the encoder: a DATA message with the largest stream id).
RELAY_DATA_BYTES_MAX = (
    RELAY_PAYLOAD_BYTES
    - codec.relay_message_overhead_bytes(RelayData(STREAM_ID_MAX, b"x" * _PROBE_BYTES))
    + _PROBE_BYTES
)
# Circuit ids a link's dialer allocates have this bit set; the listener's have it clear. So both ends of a
# link can create circuits on it without ever choosing the same id.
DIALER_ID_BIT = 1 << 30
_BODY_LENGTH_BYTES = 2
# RELAY_EARLY cells a hop forwards or accepts on one circuit; past it the circuit is destroyed. As only an
# early cell may carry EXTEND, this caps a circuit's length (and a loop r0 -> r1 -> r0 ...) at the relays.
RELAY_EARLY_CELLS_PER_CIRCUIT_MAX = 7


class CellCommand(enum.IntEnum):
    CREATE = 1
    CREATED = 2
    RELAY = 3
    DESTROY = 4
    RELAY_EARLY = 5  # a RELAY cell the client marked early: only these may carry EXTEND (Tor's RELAY_EARLY)


class DestroyReason(enum.IntEnum):
    """Why a circuit was torn down (carried in DESTROY, both directions)."""

    NONE = 0
    PROTOCOL = 1
    INTERNAL = 2
    REQUESTED = 3
    RESOURCE_LIMIT = 4
    CONNECT_FAILED = 5
    TIMEOUT = 6
    INTEGRITY = 7
    LINK_CLOSED = 8
    HANDSHAKE_FAILED = 9
    SHUTDOWN = 10


def handshake_cell(circuit_id: int, command: CellCommand, message: bytes) -> Cell:
    if len(message) > CELL_BODY_BYTES - _BODY_LENGTH_BYTES:
        raise LocalProtocolError("handshake message does not fit in a cell")
    body = len(message).to_bytes(_BODY_LENGTH_BYTES, "big") + message
    return Cell(circuit_id, command, body + bytes(CELL_BODY_BYTES - len(body)))


def handshake_message(cell: Cell) -> bytes:
    length = int.from_bytes(cell.body[:_BODY_LENGTH_BYTES], "big")
    if length > CELL_BODY_BYTES - _BODY_LENGTH_BYTES:
        raise RemoteProtocolError("handshake length exceeds the cell")
    return cell.body[_BODY_LENGTH_BYTES : _BODY_LENGTH_BYTES + length]


def destroy_cell(circuit_id: int, reason: DestroyReason) -> Cell:
    return Cell(circuit_id, CellCommand.DESTROY, bytes([reason]) + bytes(CELL_BODY_BYTES - 1))


def destroy_reason(cell: Cell) -> DestroyReason:
    try:
        return DestroyReason(cell.body[0])
    except ValueError:
        return DestroyReason.NONE


def relay_cell(circuit_id: int, body: bytes, *, early: bool = False) -> Cell:
    return Cell(circuit_id, CellCommand.RELAY_EARLY if early else CellCommand.RELAY, body)


def new_circuit_id(rng: random.Random, *, link_dialer: bool, in_use: Container[int]) -> int:
    """A random unused circuit id from this side's half of the id space of a link."""
    for _ in range(64):
        candidate = rng.randrange(CIRCUIT_ID_MIN, CIRCUIT_ID_MAX + 1)
        candidate = candidate | DIALER_ID_BIT if link_dialer else candidate & ~DIALER_ID_BIT
        if candidate not in in_use:
            return candidate
    raise LocalProtocolError("no free circuit id on this link")
