"""Crypto misuse: whatever an attacker replays, reorders, moves, truncates, re-encrypts or downgrades is
rejected. This file fills the gaps; the cases tested elsewhere are:

- replayed, dropped or reordered cells on every link and direction:
  tests/tp_net/test_circuits.py::test_dropped_duplicated_or_reordered_cells_end_in_integrity_failure,
  tests/tp_crypto/test_onion.py::test_replayed_cell_fails_at_every_hop, ::test_reordered_cells_fail,
  ::test_mac_counter_rejects_replay_and_reorder_even_with_the_right_keystream;
- replayed, reordered or foreign link messages: tests/tp_net/test_link.py::test_replayed_message_is_rejected,
  ::test_reordered_messages_are_rejected, ::test_messages_from_another_link_are_rejected;
  Noise itself: tests/tp_crypto/test_noise.py::test_transport_replay_and_reorder_fail;
- a cell moved to another circuit of the same link:
  tests/tp_net/test_circuits.py::test_a_cell_moved_to_another_circuit_is_caught;
- any flipped bit: tests/tp_net/test_circuit_fuzz.py::test_any_single_bit_flip_anywhere_is_caught;
- truncated Noise handshakes: tests/tp_crypto/test_noise.py::test_truncated_handshake_messages_fail;
  a CREATE whose length field lies:
  tests/tp_net/test_circuits.py::test_a_create_with_a_bad_handshake_length_is_refused;
- link version downgrade: tests/tp_net/test_link.py::test_version_mismatch_is_rejected and
  ::test_tampered_handshake_message_is_rejected (the hello is covered by the handshake hash);
- wrong onion key: tests/tp_net/test_circuits.py::test_a_hop_that_does_not_hold_the_onion_key_fails_the_build,
  tests/tp_crypto/test_noise.py::test_nk_with_wrong_responder_key_fails;
- expired or not yet valid directory documents and descriptors:
  tests/tp_net/test_directory.py::test_document_validity_window,
  ::test_document_listing_an_invalid_descriptor_is_refused,
  tests/tp_net/test_descriptors.py::test_expired_descriptor_is_refused;
- signatures moved across domains:
  tests/tp_net/test_descriptors.py::test_signature_under_another_domain_is_refused.
"""

from __future__ import annotations

import pytest

from tests.tp_net.circuit_harness import CLIENT, CircuitHandle, Delivery, Wire
from tp_crypto.errors import RemoteProtocolError
from tp_crypto.identity import Identity
from tp_crypto.noise import generate_keypair
from tp_crypto.onion import HopKey
from tp_net.protocol.cells import (
    CellCommand,
    DestroyReason,
    destroy_reason,
    handshake_cell,
    handshake_message,
)
from tp_net.protocol.circuit_client import CircuitClosed
from tp_net.protocol.frames import Cell, Padding
from tp_net.protocol.link import LinkHandshake, LinkSession
from tp_net.protocol.streams import StreamOpened

SERVICE = "inference"
RELAY = Identity.generate()


def node_wire(seed: int) -> Wire:
    wire = Wire(seed)
    wire.add_hop("node", can_extend=False, services=[SERVICE], address=None)
    return wire


def send_request(wire: Wire, handle: CircuitHandle, data: bytes) -> None:
    stream_id = handle.circuit.edge.open_stream(SERVICE)
    handle.circuit.edge.send(stream_id, data)
    handle.circuit.edge.end(stream_id)
    wire.run()


def client_cells(wire: Wire, link: int) -> list[Cell]:
    return [d.cell for d in wire.trace if d.src == CLIENT and d.link == link]


def cells_to_client(wire: Wire, link: int) -> list[Cell]:
    return [d.cell for d in wire.trace if d.dst == CLIENT and d.link == link]


# --- replayed circuits -------------------------------------------------------------------------------


def test_a_recorded_circuit_replayed_on_a_new_link_is_never_served() -> None:
    """CREATE and the request cells, recorded and replayed: the hop answers the CREATE with a fresh
    ephemeral key, so the replayed cells decrypt under other keys and are never recognized."""
    wire = node_wire(100)
    victim = wire.client_link("node")
    handle = wire.open_circuit(["node"], link=victim)
    assert handle.built
    send_request(wire, handle, b"the victim's prompt")
    recorded = client_cells(wire, victim)
    served = list(wire.hops["node"].events)
    assert any(isinstance(e.event, StreamOpened) for e in served)

    attacker = wire.client_link("node")
    for cell in recorded:
        wire.send(CLIENT, attacker, cell)
    wire.run()
    assert wire.hops["node"].events == served  # nothing new reached the service
    answers = cells_to_client(wire, attacker)
    assert answers[0].command == CellCommand.CREATED
    assert handshake_message(answers[0]) != handshake_message(cells_to_client(wire, victim)[0])
    destroyed = [destroy_reason(c) for c in answers if c.command == CellCommand.DESTROY]
    assert destroyed == [DestroyReason.INTEGRITY]


def test_a_cell_sent_with_another_links_circuit_id_is_ignored() -> None:
    """Circuit ids belong to a link: a copy of a victim's cell on another link reaches no circuit, and the
    victim's circuit keeps working."""
    wire = node_wire(101)
    victim = wire.client_link("node")
    handle = wire.open_circuit(["node"], link=victim)
    send_request(wire, handle, b"first")
    relay_cell = next(c for c in client_cells(wire, victim) if c.command == CellCommand.RELAY)
    attacker = wire.client_link("node")
    before = len(wire.hops["node"].events)
    wire.send(CLIENT, attacker, relay_cell)
    wire.run()
    assert len(wire.hops["node"].events) == before
    assert cells_to_client(wire, attacker) == []
    send_request(wire, handle, b"second")
    assert handle.closed == [] and len(wire.hops["node"].events) > before


# --- truncated handshakes --------------------------------------------------------------------------


def test_a_create_carrying_a_truncated_handshake_fails_the_handshake() -> None:
    wire = node_wire(102)
    link = wire.client_link("node")
    handle = wire.open_circuit(["node"], link=link, run=False)
    (create,) = handle.circuit.outgoing_cells()
    message = handshake_message(create)
    wire.send(CLIENT, link, handshake_cell(create.circuit_id, CellCommand.CREATE, message[:-1]))
    wire.run()
    (answer,) = cells_to_client(wire, link)
    assert answer.command == CellCommand.DESTROY
    assert destroy_reason(answer) == DestroyReason.HANDSHAKE_FAILED
    assert wire.hops["node"].core.circuit_count == 0


def test_a_truncated_created_closes_the_clients_circuit() -> None:
    wire = node_wire(103)
    link = wire.client_link("node")

    def truncate(delivery: Delivery) -> list[Cell]:
        cell = delivery.cell
        if cell.command != CellCommand.CREATED:
            return [cell]
        return [handshake_cell(cell.circuit_id, CellCommand.CREATED, handshake_message(cell)[:-1])]

    wire.tap(truncate)
    handle = wire.open_circuit(["node"], link=link)
    assert not handle.built
    assert handle.closed == [CircuitClosed(DestroyReason.PROTOCOL)]


def link_messages(dialer_identity: Identity | None = None) -> tuple[bytes, bytes, bytes]:
    dialer = LinkHandshake(dialer=True, identity=dialer_identity, expected_peer_id=RELAY.node_id)
    listener = LinkHandshake(dialer=False, identity=RELAY)
    first = dialer.first_message()
    second = listener.receive(first)
    assert second is not None
    third = dialer.receive(second)
    assert third is not None
    listener.receive(third)
    return first, second, third


@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("keep", [0, 1, 16, -1])
def test_a_truncated_link_handshake_message_is_rejected(index: int, keep: int) -> None:
    """Message `index` of a live handshake arrives cut to `keep` bytes: its receiver refuses it."""
    dialer = LinkHandshake(dialer=True, identity=Identity.generate(), expected_peer_id=RELAY.node_id)
    listener = LinkHandshake(dialer=False, identity=RELAY)
    first = dialer.first_message()
    if index == 0:
        with pytest.raises(RemoteProtocolError):
            listener.receive(first[:keep])
        return
    second = listener.receive(first)
    assert second is not None
    if index == 1:
        with pytest.raises(RemoteProtocolError):
            dialer.receive(second[:keep])
        return
    third = dialer.receive(second)
    assert third is not None
    with pytest.raises(RemoteProtocolError):
        listener.receive(third[:keep])
    assert not listener.complete


def test_a_replayed_link_handshake_opens_no_session() -> None:
    """A dialer's recorded messages 1 and 3, replayed to the relay: its fresh ephemeral key in message 2
    makes the recorded message 3 fail."""
    first, _, third = link_messages(Identity.generate())
    listener = LinkHandshake(dialer=False, identity=RELAY)
    assert listener.receive(first) is not None
    with pytest.raises(RemoteProtocolError):
        listener.receive(third)
    assert not listener.complete


# --- nonces ----------------------------------------------------------------------------------------


def sessions() -> tuple[LinkSession, LinkSession]:
    dialer = LinkHandshake(dialer=True, identity=None, expected_peer_id=RELAY.node_id, rekey_after_messages=8)
    listener = LinkHandshake(dialer=False, identity=RELAY, rekey_after_messages=8)
    second = listener.receive(dialer.first_message())
    assert second is not None
    third = dialer.receive(second)
    assert third is not None
    listener.receive(third)
    return dialer.session(), listener.session()


def test_a_session_never_seals_two_messages_under_one_nonce() -> None:
    dialer, listener = sessions()
    ciphertexts = [dialer.seal([Padding(b"same")])[0] for _ in range(40)]  # five rekeys on the way
    assert len(set(ciphertexts)) == len(ciphertexts)
    assert [f for message in ciphertexts for f in listener.open(message)] == [Padding(b"same")] * 40


def test_a_message_sealed_again_under_a_used_nonce_is_rejected() -> None:
    """A sender forced back to a nonce it used (a cloned state, a bug): the receiver has moved on."""
    dialer, listener = sessions()
    listener.open(dialer.seal([Padding(b"first")])[0])
    dialer._send_cipher.set_nonce(0)
    with pytest.raises(RemoteProtocolError):
        listener.open(dialer.seal([Padding(b"second")])[0])


# --- downgrades and keys ---------------------------------------------------------------------------


def test_a_create_downgraded_to_the_identity_key_fails_the_build() -> None:
    """A man in the middle rewrites the key byte of a CREATE (onion key -> identity key): the hop answers
    with the identity key, which the client did not ask for, so the handshake fails."""
    wire = node_wire(104)
    link = wire.client_link("node")

    def downgrade(delivery: Delivery) -> list[Cell]:
        cell = delivery.cell
        if cell.command != CellCommand.CREATE:
            return [cell]
        message = handshake_message(cell)
        assert message[0] == HopKey.ONION
        return [handshake_cell(cell.circuit_id, CellCommand.CREATE, bytes([HopKey.IDENTITY]) + message[1:])]

    wire.tap(downgrade)
    handle = wire.open_circuit(["node"], link=link)
    assert not handle.built
    assert handle.closed == [CircuitClosed(DestroyReason.HANDSHAKE_FAILED)]


def test_a_retired_onion_key_is_refused() -> None:
    """Once a hop has rotated a key out (after its grace period), handshakes made against it fail."""
    wire = node_wire(105)
    node = wire.hops["node"]
    stale = node.info()
    assert wire.open_circuit([stale]).built
    fresh_private, _ = generate_keypair()
    node.core.onion_keys = [fresh_private]
    handle = wire.open_circuit([stale])
    assert not handle.built
    assert handle.closed == [CircuitClosed(DestroyReason.HANDSHAKE_FAILED)]
