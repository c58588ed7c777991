"""The client side of a circuit, sans-IO: telescoping build, onion layers, streams.

Build: CREATE to the first hop; then, per further hop, an EXTEND (addressed to the current last hop) that
carries the new hop's NK message; the last hop answers with EXTENDED. One round trip per hop; each hop's
keys come from its own handshake (forward secret, authenticated by its onion key).

Feed `receive_cell` every cell of this circuit; send whatever `outgoing_cells` returns after any call.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from tp_crypto.errors import LocalProtocolError, RemoteProtocolError
from tp_crypto.identity import node_id_to_x25519
from tp_crypto.onion import HopHandshakeClient, HopKey, HopLayer
from tp_net.protocol import codec
from tp_net.protocol.cells import (
    RELAY_DATA_BYTES_MAX,
    RELAY_EARLY_CELLS_PER_CIRCUIT_MAX,
    RELAY_PAYLOAD_BYTES,
    CellCommand,
    DestroyReason,
    destroy_cell,
    destroy_reason,
    handshake_cell,
    handshake_message,
    relay_cell,
)
from tp_net.protocol.circuit_hop import DROP_CELLS_PER_CIRCUIT_BURST, DROP_CELLS_PER_CIRCUIT_RATE_PER_S
from tp_net.protocol.frames import Cell, Frame
from tp_net.protocol.rate_limits import TokenBucket
from tp_net.protocol.relay_messages import RelayData, RelayDrop, RelayExtend, RelayExtended
from tp_net.protocol.streams import CircuitEdge, StreamEvent
from tp_net.protocol.traffic_shaping import drop_echoes

# Each hop after the first costs one EXTEND, which only a RELAY_EARLY cell may carry (relays count them).
CIRCUIT_HOPS_MAX = 1 + RELAY_EARLY_CELLS_PER_CIRCUIT_MAX


@dataclass(frozen=True)
class HopInfo:
    """What a client must know of a hop: its id, its onion key, and (for relays) its address."""

    node_id: bytes
    onion_key: bytes | None  # None: use the identity key (bootstrapping, before a directory is known)
    address: str | None = None

    def handshake(self) -> HopHandshakeClient:
        if self.onion_key is None:
            return HopHandshakeClient(node_id_to_x25519(self.node_id), key=HopKey.IDENTITY)
        return HopHandshakeClient(self.onion_key)


class CircuitState(enum.Enum):
    BUILDING = "building"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class CircuitBuilt:
    pass


@dataclass(frozen=True)
class CircuitClosed:
    reason: DestroyReason


CircuitEvent = CircuitBuilt | CircuitClosed | StreamEvent


class ClientCircuit:
    def __init__(self, path: Sequence[HopInfo], circuit_id: int) -> None:
        if not 1 <= len(path) <= CIRCUIT_HOPS_MAX:
            raise LocalProtocolError(f"a circuit has 1..{CIRCUIT_HOPS_MAX} hops, not {len(path)}")
        self.circuit_id = circuit_id
        self.path = tuple(path)
        self.state = CircuitState.BUILDING
        self.close_reason: DestroyReason | None = None
        self._cells_from_node = 0  # DATA and DROP cells from the last hop (drop_echoes counts them)
        # Half the DROP budget the node allows a circuit (the other half stays for keepalives).
        self._echoes = TokenBucket(DROP_CELLS_PER_CIRCUIT_RATE_PER_S / 2, DROP_CELLS_PER_CIRCUIT_BURST // 2)
        self._now = 0.0
        self.edge = CircuitEdge(accepts_streams=False, data_bytes_max=RELAY_DATA_BYTES_MAX)
        self._layers: list[HopLayer] = []
        for hop in self.path[1:]:
            hop.handshake()  # a malformed key fails here, not as an exception out of receive_cell mid-build
        self._pending_hop = path[0].handshake()
        self._outbox: list[Cell] = [
            handshake_cell(circuit_id, CellCommand.CREATE, self._pending_hop.first_message())
        ]

    @property
    def hops_built(self) -> int:
        return len(self._layers)

    def outgoing_cells(self) -> list[Cell]:
        """Cells to send to the first hop now (build steps, stream messages within the windows)."""
        if self.state is CircuitState.OPEN:
            last = len(self._layers) - 1
            for payload in codec.pack_relay_payloads(self.edge.pending_messages(), RELAY_PAYLOAD_BYTES):
                self._outbox.append(self._relay_payload_to(last, payload))
        cells, self._outbox = self._outbox, []
        return cells

    def receive_cell(self, cell: Cell, now: float = 0.0) -> list[CircuitEvent]:
        """`now`: seconds on a monotonic clock (only the drop echoes' budget reads it)."""
        if self.state is CircuitState.CLOSED:
            return []
        self._now = now
        try:
            return self._receive(cell)
        except RemoteProtocolError:
            return self._close(DestroyReason.PROTOCOL, notify_hop=True)

    def send_drop(self, hop_index: int = -1) -> None:
        """Queue a padding message to a hop (the last by default): keeps an idle circuit alive."""
        self._require_open()
        index = hop_index % len(self._layers)
        self._outbox.append(self._relay_to(index, RelayDrop()))

    def destroy(self, reason: DestroyReason = DestroyReason.REQUESTED) -> list[CircuitEvent]:
        """Tear the circuit down from this end (DESTROY goes to the first hop)."""
        if self.state is CircuitState.CLOSED:
            return []
        return self._close(reason, notify_hop=True)

    def link_lost(self) -> list[CircuitEvent]:
        """The link to the first hop is gone."""
        if self.state is CircuitState.CLOSED:
            return []
        return self._close(DestroyReason.LINK_CLOSED, notify_hop=False)

    # --- internals ----------------------------------------------------------------------------

    def _receive(self, cell: Cell) -> list[CircuitEvent]:
        if cell.command == CellCommand.DESTROY:
            return self._close(destroy_reason(cell), notify_hop=False)
        if cell.command == CellCommand.CREATED and not self._layers:
            return self._hop_answered(handshake_message(cell))
        if cell.command != CellCommand.RELAY or not self._layers:
            raise RemoteProtocolError(f"unexpected cell command {cell.command} on a client circuit")
        hop_index, payload = self._peel(cell.body)
        if payload is None:
            return self._close(DestroyReason.INTEGRITY, notify_hop=True)
        events: list[CircuitEvent] = []
        for message in codec.decode_relay_messages(payload):
            if self.state is CircuitState.CLOSED:
                break  # an earlier message in the cell ended the circuit
            events += self._receive_message(hop_index, message)
        return events

    def _receive_message(self, hop_index: int, message: Frame) -> list[CircuitEvent]:
        if hop_index == len(self.path) - 1 and isinstance(message, RelayData | RelayDrop):
            self._cells_from_node += 1
            if isinstance(message, RelayDrop):  # the node's padding (tp_net.protocol.traffic_shaping)
                for _ in range(drop_echoes(self._cells_from_node)):
                    # Within the node's DROP budget, whatever the node sends: past it, no echo.
                    if self._echoes.take(self._now):
                        self._outbox.append(self._relay_to(hop_index, RelayDrop()))
        if hop_index != len(self._layers) - 1:
            if isinstance(message, RelayDrop):
                return []
            raise RemoteProtocolError("a middle hop sent a stream message")
        if self.state is CircuitState.BUILDING:
            if not isinstance(message, RelayExtended):
                raise RemoteProtocolError(f"expected EXTENDED, got {type(message).__name__}")
            return self._hop_answered(message.handshake)
        return list(self.edge.receive(message))

    def _hop_answered(self, reply: bytes) -> list[CircuitEvent]:
        if self.state is not CircuitState.BUILDING:
            raise RemoteProtocolError("hop handshake reply on a built circuit")
        self._layers.append(self._pending_hop.finish(reply))
        if len(self._layers) == len(self.path):
            self.state = CircuitState.OPEN
            return [CircuitBuilt()]
        hop = self.path[len(self._layers)]
        self._pending_hop = hop.handshake()
        extend = RelayExtend(hop.node_id, hop.address, self._pending_hop.first_message())
        self._outbox.append(self._relay_to(len(self._layers) - 1, extend, early=True))
        return []

    def _relay_to(self, hop_index: int, message: Frame, *, early: bool = False) -> Cell:
        payload = codec.encode_relay_payload(message, RELAY_PAYLOAD_BYTES)
        return self._relay_payload_to(hop_index, payload, early=early)

    def _relay_payload_to(self, hop_index: int, payload: bytes, *, early: bool = False) -> Cell:
        """`early`: a RELAY_EARLY cell (it carries an EXTEND; see RELAY_EARLY_CELLS_PER_CIRCUIT_MAX)."""
        body = self._layers[hop_index].forward.seal(payload)
        for layer in reversed(self._layers[: hop_index + 1]):
            body = layer.forward.wrap(body)
        return relay_cell(self.circuit_id, body, early=early)

    def _peel(self, body: bytes) -> tuple[int, bytes | None]:
        for index, layer in enumerate(self._layers):
            body = layer.backward.unwrap(body)
            payload = layer.backward.open(body)
            if payload is not None:
                return index, payload
        return len(self._layers), None

    def _close(self, reason: DestroyReason, *, notify_hop: bool) -> list[CircuitEvent]:
        self.state = CircuitState.CLOSED
        self.close_reason = reason
        self._outbox = [destroy_cell(self.circuit_id, reason)] if notify_hop else []
        return [*self.edge.close_all(), CircuitClosed(reason)]

    def _require_open(self) -> None:
        if self.state is not CircuitState.OPEN:
            raise LocalProtocolError(f"circuit is {self.state.value}")
