"""The streams of a hop's local services (a GPU node's "inference"), sans-IO: the façade they talk to.

A circuit's streams live in its CircuitEdge, made when the client opens the first one. The local service
sends, ends and acknowledges through `HopStreams`, naming the circuit by its CircuitRef; each call returns
the cells to send (the edge's messages packed into relay payloads under this hop's backward layer). Whether
a stream message is accepted at all is the circuit state table's decision (tp_net.protocol.hop_states).
"""

from __future__ import annotations

from collections.abc import Mapping

from tp_crypto.errors import RemoteProtocolError
from tp_net.protocol import codec
from tp_net.protocol.cells import RELAY_DATA_BYTES_MAX, RELAY_PAYLOAD_BYTES, relay_cell
from tp_net.protocol.frames import Frame
from tp_net.protocol.hop_outputs import CircuitRef, HopOutput, SendCell, ServiceEvent
from tp_net.protocol.hop_states import HopCircuit
from tp_net.protocol.streams import CircuitEdge, EndReason, StreamOpened


def originate(circuit: HopCircuit, payload: bytes) -> list[HopOutput]:
    """A relay payload from this hop to the client, under this hop's backward layer."""
    body = circuit.layer.backward.wrap(circuit.layer.backward.seal(payload))
    return [SendCell(circuit.prev[0], relay_cell(circuit.prev[1], body))]


class HopStreams:
    """The local services' streams on every circuit that ends at this hop."""

    def __init__(self, circuits: Mapping[CircuitRef, HopCircuit], services: frozenset[str]) -> None:
        """`circuits`: the hop's live circuits (HopCore's table, read only here)."""
        self._circuits = circuits
        self.services = services

    def receive(self, circuit: HopCircuit, message: Frame) -> list[HopOutput]:
        """A stream message from the client for this hop's services."""
        if not self.services:
            raise RemoteProtocolError(f"{type(message).__name__} is not accepted at this hop")
        if circuit.edge is None:
            circuit.edge = CircuitEdge(accepts_streams=True, data_bytes_max=RELAY_DATA_BYTES_MAX)
        outputs: list[HopOutput] = []
        for event in circuit.edge.receive(message):
            if isinstance(event, StreamOpened) and event.service not in self.services:
                circuit.edge.end(event.stream_id, EndReason.NO_SUCH_SERVICE)
                continue
            outputs.append(ServiceEvent(circuit.prev, event))
        return outputs + self.flush_circuit(circuit)

    def send(self, ref: CircuitRef, stream_id: int, data: bytes, *, flush: bool = True) -> list[HopOutput]:
        """Queue data on a local stream; with flush=False it waits for `flush` (or any later flush) so
        that messages produced while the link is busy share cells."""
        circuit = self._circuits.get(ref)
        if circuit is None or circuit.edge is None or not circuit.edge.is_open(stream_id):
            return []
        circuit.edge.send(stream_id, data)
        return self.flush_circuit(circuit) if flush else []

    def flush(self, ref: CircuitRef) -> list[HopOutput]:
        """Cells for whatever the circuit's local streams have queued (as far as the windows allow)."""
        circuit = self._circuits.get(ref)
        return self.flush_circuit(circuit) if circuit is not None else []

    def end(self, ref: CircuitRef, stream_id: int, reason: EndReason) -> list[HopOutput]:
        circuit = self._circuits.get(ref)
        if circuit is None or circuit.edge is None:
            return []
        circuit.edge.end(stream_id, reason)
        return self.flush_circuit(circuit)

    def consumed(self, ref: CircuitRef, stream_id: int, cells: int = 1) -> list[HopOutput]:
        circuit = self._circuits.get(ref)
        if circuit is None or circuit.edge is None:
            return []
        circuit.edge.consumed(stream_id, cells)
        return self.flush_circuit(circuit)

    def queued_bytes(self, ref: CircuitRef, stream_id: int) -> int | None:
        """Bytes waiting for the window on a stream; None once the stream or circuit is gone."""
        circuit = self._circuits.get(ref)
        if circuit is None or circuit.edge is None or not circuit.edge.is_open(stream_id):
            return None
        return circuit.edge.queued_bytes(stream_id)

    def flush_circuit(self, circuit: HopCircuit) -> list[HopOutput]:
        if circuit.edge is None:
            return []
        outputs: list[HopOutput] = []
        for payload in codec.pack_relay_payloads(circuit.edge.pending_messages(), RELAY_PAYLOAD_BYTES):
            outputs += originate(circuit, payload)
        return outputs

    @staticmethod
    def close(circuit: HopCircuit) -> list[HopOutput]:
        """The circuit is gone: its local streams end."""
        if circuit.edge is None:
            return []
        return [ServiceEvent(circuit.prev, event) for event in circuit.edge.close_all()]
