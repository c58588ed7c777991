"""ClientCircuit.prepare_next_hop: the next hop's handshake made while a reply is in flight (issue 22), played
against real hop handshakes (tp_crypto.onion), sans-IO."""

from __future__ import annotations

from tp_crypto.identity import Identity
from tp_crypto.noise import generate_keypair
from tp_crypto.onion import HopLayer, answer_hop_handshake
from tp_net.protocol import codec
from tp_net.protocol.cells import RELAY_PAYLOAD_BYTES, CellCommand, handshake_cell, handshake_message
from tp_net.protocol.circuit_client import CircuitBuilt, CircuitState, ClientCircuit, HopInfo
from tp_net.protocol.frames import Cell
from tp_net.protocol.relay_messages import RelayExtend, RelayExtended

CIRCUIT_ID = 0x8000_0001


def _hops(count: int) -> tuple[list[HopInfo], list[bytes]]:
    infos, privates = [], []
    for index in range(count):
        private, public = generate_keypair()
        infos.append(HopInfo(Identity.generate().node_id, public, f"mem://hop{index}"))
        privates.append(private)
    return infos, privates


def _extend_at(layers: list[HopLayer], cell: Cell) -> RelayExtend:
    """What the last of `layers` reads in a forward cell (each earlier hop peels its layer first)."""
    assert cell.command == CellCommand.RELAY_EARLY
    body = cell.body
    for layer in layers:
        body = layer.forward.unwrap(body)
    payload = layers[-1].forward.open(body)
    assert payload is not None
    (message,) = codec.decode_relay_messages(payload)
    assert isinstance(message, RelayExtend)
    return message


def _extended_from(layers: list[HopLayer], reply: bytes) -> Cell:
    """The last of `layers` answers with EXTENDED; every hop adds its layer on the way back."""
    payload = codec.encode_relay_payload(RelayExtended(reply), RELAY_PAYLOAD_BYTES)
    body = layers[-1].backward.seal(payload)
    for layer in reversed(layers):
        body = layer.backward.wrap(body)
    return Cell(CIRCUIT_ID, CellCommand.RELAY, body)


def test_the_extend_carries_the_prepared_message_and_the_circuit_builds() -> None:
    path, privates = _hops(3)
    circuit = ClientCircuit(path, CIRCUIT_ID)
    (create,) = circuit.outgoing_cells()
    reply, guard = answer_hop_handshake(privates[0], handshake_message(create))

    circuit.prepare_next_hop()  # while CREATED is in flight
    prepared = circuit._prepared
    assert prepared is not None and prepared[0] == 1
    circuit.prepare_next_hop()  # made once: a second call keeps it
    assert circuit._prepared is prepared

    circuit.receive_cell(handshake_cell(CIRCUIT_ID, CellCommand.CREATED, reply))
    (cell,) = circuit.outgoing_cells()
    extend = _extend_at([guard], cell)
    assert extend.node_id == path[1].node_id
    assert extend.handshake == prepared[2]
    assert circuit._prepared is None  # used by this EXTEND only

    circuit.prepare_next_hop()  # for the third hop, while EXTENDED from the second is in flight
    second = circuit._prepared
    assert second is not None and second[0] == 2 and second[2] != prepared[2]
    reply, middle = answer_hop_handshake(privates[1], extend.handshake)
    circuit.receive_cell(_extended_from([guard], reply))
    (cell,) = circuit.outgoing_cells()
    extend = _extend_at([guard, middle], cell)
    assert extend.handshake == second[2]

    reply, _ = answer_hop_handshake(privates[2], extend.handshake)  # the prepared state finishes it
    assert circuit.receive_cell(_extended_from([guard, middle], reply)) == [CircuitBuilt()]
    assert circuit.state is CircuitState.OPEN


def test_nothing_is_prepared_past_the_last_hop_or_once_built() -> None:
    path, privates = _hops(1)
    circuit = ClientCircuit(path, CIRCUIT_ID)
    (create,) = circuit.outgoing_cells()
    circuit.prepare_next_hop()
    assert circuit._prepared is None
    reply, _ = answer_hop_handshake(privates[0], handshake_message(create))
    circuit.receive_cell(handshake_cell(CIRCUIT_ID, CellCommand.CREATED, reply))
    circuit.prepare_next_hop()
    assert circuit.state is CircuitState.OPEN and circuit._prepared is None


def test_without_preparing_the_build_is_unchanged() -> None:
    path, privates = _hops(2)
    circuit = ClientCircuit(path, CIRCUIT_ID)
    (create,) = circuit.outgoing_cells()
    reply, guard = answer_hop_handshake(privates[0], handshake_message(create))
    circuit.receive_cell(handshake_cell(CIRCUIT_ID, CellCommand.CREATED, reply))
    extend = _extend_at([guard], circuit.outgoing_cells()[0])
    reply, _ = answer_hop_handshake(privates[1], extend.handshake)
    assert circuit.receive_cell(_extended_from([guard], reply)) == [CircuitBuilt()]
