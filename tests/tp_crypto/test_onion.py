"""Onion layer crypto: layered round trips, recognition, integrity, replay, and the NK hop handshake."""

from __future__ import annotations

import random

import pytest

from tests.tp_net.circuit_harness import client_layers
from tp_crypto.errors import RemoteProtocolError
from tp_crypto.identity import Identity, node_id_to_x25519
from tp_crypto.noise import NK, HandshakeState, generate_keypair
from tp_crypto.onion import (
    HOP_PROLOGUE,
    ONION_HEADER_BYTES,
    ONION_TAG_BYTES,
    RECOGNIZED,
    HopHandshakeClient,
    HopKey,
    HopLayer,
    OnionDirection,
    answer_hop_handshake,
    layer_from_secrets,
    requested_hop_key,
    tag_of,
)

BODY_BYTES = 1024
PAYLOAD_BYTES = BODY_BYTES - ONION_HEADER_BYTES


def payload(rng: random.Random) -> bytes:
    return rng.randbytes(PAYLOAD_BYTES)


def seal_forward(client: list[HopLayer], target: int, data: bytes) -> bytes:
    """What the client puts on the wire for hop `target`."""
    body = client[target].forward.seal(data)
    for layer in reversed(client[: target + 1]):
        body = layer.forward.wrap(body)
    return body


def pass_forward(hops: list[HopLayer], body: bytes, *, start: int = 0) -> tuple[int, bytes | None]:
    """Hops from `start` on peel their layer; (index of the hop that recognized it, payload)."""
    for index in range(start, len(hops)):
        body = hops[index].forward.unwrap(body)
        opened = hops[index].forward.open(body)
        if opened is not None:
            return index, opened
    return len(hops), None


def seal_backward(hops: list[HopLayer], origin: int, data: bytes) -> bytes:
    """What leaves hop 0 towards the client for a message that hop `origin` sent."""
    body = hops[origin].backward.wrap(hops[origin].backward.seal(data))
    for layer in reversed(hops[:origin]):
        body = layer.backward.wrap(body)
    return body


def peel_backward(client: list[HopLayer], body: bytes) -> tuple[int, bytes | None]:
    for index, layer in enumerate(client):
        body = layer.backward.unwrap(body)
        opened = layer.backward.open(body)
        if opened is not None:
            return index, opened
    return len(client), None


def fixed_layers(hops: int, seed: int) -> tuple[list[HopLayer], list[HopLayer]]:
    """Deterministic (client, hop) layer pairs: the same seed gives identical fresh layers."""
    rng = random.Random(seed)
    secrets = [(rng.randbytes(64), rng.randbytes(64)) for _ in range(hops)]
    return [layer_from_secrets(f, b) for f, b in secrets], [layer_from_secrets(f, b) for f, b in secrets]


def flip(body: bytes, bit: int) -> bytes:
    out = bytearray(body)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("hops", [1, 2, 3, 4, 8])
def test_client_to_each_hop_and_back_through_all_layers(hops: int) -> None:
    rng = random.Random(hops)
    client, hop_side = client_layers(hops)
    for round_ in range(3):
        for target in range(hops):
            data = payload(rng)
            body = seal_forward(client, target, data)
            assert len(body) == BODY_BYTES
            assert data not in body
            assert pass_forward(hop_side, body) == (target, data), (round_, target)
            back = payload(rng)
            wire = seal_backward(hop_side, target, back)
            assert len(wire) == BODY_BYTES
            assert peel_backward(client, wire) == (target, back)


def test_plaintext_at_its_hop_is_recognized_header_plus_tag() -> None:
    client, hop_side = client_layers(2)
    data = bytes(PAYLOAD_BYTES)
    body = seal_forward(client, 1, data)
    at_hop1 = hop_side[1].forward.unwrap(hop_side[0].forward.unwrap(body))
    assert at_hop1[:2] == RECOGNIZED
    assert at_hop1[ONION_HEADER_BYTES:] == data
    assert len(tag_of(at_hop1)) == ONION_TAG_BYTES
    assert tag_of(at_hop1) == at_hop1[2:ONION_HEADER_BYTES]
    assert hop_side[1].forward.open(at_hop1) == data


def test_a_cell_for_a_later_hop_is_not_recognized_earlier() -> None:
    client, hop_side = client_layers(4)
    rng = random.Random(7)
    for _ in range(50):
        body = seal_forward(client, 3, payload(rng))
        for index in range(3):
            body = hop_side[index].forward.unwrap(body)
            assert hop_side[index].forward.open(body) is None
        body = hop_side[3].forward.unwrap(body)
        assert hop_side[3].forward.open(body) is not None


def test_keystreams_of_unrecognized_cells_stay_in_step() -> None:
    """Cells for hop 2 pass hops 0 and 1 (moving their keystreams); cells for hop 0 still open after."""
    client, hop_side = client_layers(3)
    rng = random.Random(3)
    for target in [2, 2, 0, 1, 2, 0, 0, 1]:
        data = payload(rng)
        assert pass_forward(hop_side, seal_forward(client, target, data)) == (target, data)


# --- integrity ------------------------------------------------------------------------------------

# Every bit of the onion header and a spread of payload bits, first and last bytes included.
_HEADER_BITS = list(range(ONION_HEADER_BYTES * 8))
_PAYLOAD_BITS = [ONION_HEADER_BYTES * 8 + i for i in range(0, PAYLOAD_BYTES * 8, 61)] + [BODY_BYTES * 8 - 1]


@pytest.mark.parametrize("target", [1, 3])
def test_a_flipped_bit_before_any_hop_is_never_accepted_forward(target: int) -> None:
    hops = 4
    data = payload(random.Random(target))
    for position in range(target + 1):  # flipped on the link into hop `position`
        for bit in _HEADER_BITS + _PAYLOAD_BITS:
            client, hop_side = fixed_layers(hops, seed=target)
            body = seal_forward(client, target, data)
            for index in range(position):
                body = hop_side[index].forward.unwrap(body)
                assert hop_side[index].forward.open(body) is None
            # Nobody on the rest of the path (up to the last hop, which tears down) accepts it.
            assert pass_forward(hop_side, flip(body, bit), start=position) == (hops, None), (position, bit)


@pytest.mark.parametrize("origin", [0, 2, 3])
def test_a_flipped_bit_on_any_backward_link_is_never_accepted(origin: int) -> None:
    hops = 4
    data = payload(random.Random(origin))
    for position in range(origin + 1):  # flipped on the link out of hop `position` towards the client
        for bit in _HEADER_BITS + _PAYLOAD_BITS:
            client, hop_side = fixed_layers(hops, seed=origin)
            body = hop_side[origin].backward.wrap(hop_side[origin].backward.seal(data))
            for index in range(origin - 1, position - 1, -1):
                body = hop_side[index].backward.wrap(body)
            body = flip(body, bit)
            for index in range(position - 1, -1, -1):
                body = hop_side[index].backward.wrap(body)
            assert peel_backward(client, body) == (hops, None), (position, bit)


def test_unflipped_control_of_the_bit_flip_setup_is_accepted() -> None:
    client, hop_side = fixed_layers(4, seed=3)
    data = payload(random.Random(3))
    assert pass_forward(hop_side, seal_forward(client, 3, data)) == (3, data)


def test_replayed_cell_fails_at_every_hop() -> None:
    client, hop_side = client_layers(3)
    rng = random.Random(1)
    first = seal_forward(client, 2, payload(rng))
    assert pass_forward(hop_side, first)[1] is not None
    assert pass_forward(hop_side, first) == (3, None)
    back = seal_backward(hop_side, 2, payload(rng))
    assert peel_backward(client, back)[1] is not None
    assert peel_backward(client, back) == (3, None)


def test_reordered_cells_fail() -> None:
    client, hop_side = client_layers(2)
    rng = random.Random(2)
    one = seal_forward(client, 1, payload(rng))
    two = seal_forward(client, 1, payload(rng))
    assert pass_forward(hop_side, two) == (2, None)
    assert pass_forward(hop_side, one) == (2, None)


def test_dropped_cell_makes_the_next_one_fail() -> None:
    client, hop_side = client_layers(1)
    rng = random.Random(4)
    seal_forward(client, 0, payload(rng))  # lost on the way
    assert pass_forward(hop_side, seal_forward(client, 0, payload(rng))) == (1, None)


def test_mac_counter_rejects_replay_and_reorder_even_with_the_right_keystream() -> None:
    """Without the cipher: open() binds each tag to its position in the sequence."""
    sender = OnionDirection(bytes(32), b"k" * 32)
    receiver = OnionDirection(bytes(32), b"k" * 32)
    first, second = sender.seal(b"one"), sender.seal(b"two")
    assert receiver.open(second) is None  # reordered: tagged with counter 1, expected 0
    assert receiver.open(first) == b"one"
    assert receiver.open(first) is None  # replayed
    assert receiver.open(second) == b"two"


def test_a_failed_open_does_not_advance_the_counter() -> None:
    sender = OnionDirection(bytes(32), b"m" * 32)
    receiver = OnionDirection(bytes(32), b"m" * 32)
    cell = sender.seal(b"x" * 10)
    assert receiver.open(flip(cell, 8 * 5)) is None
    assert receiver.open(b"\x01" + cell[1:]) is None
    assert receiver.open(cell) == b"x" * 10


def test_forward_and_backward_keys_differ() -> None:
    client, hop_side = client_layers(1)
    data = bytes(PAYLOAD_BYTES)
    forward = client[0].forward.wrap(client[0].forward.seal(data))
    backward = hop_side[0].backward.wrap(hop_side[0].backward.seal(data))
    assert forward != backward
    # A cell the hop sent is not accepted as one the client sent (no reflection).
    assert hop_side[0].forward.open(hop_side[0].forward.unwrap(backward)) is None


# --- the NK hop handshake -------------------------------------------------------------------------


def test_hop_handshake_gives_matching_layers() -> None:
    private, public = generate_keypair()
    handshake = HopHandshakeClient(public)
    reply, hop_layer = answer_hop_handshake(private, handshake.first_message())
    client_layer = handshake.finish(reply)
    data = b"d" * PAYLOAD_BYTES
    assert (
        hop_layer.forward.open(
            hop_layer.forward.unwrap(client_layer.forward.wrap(client_layer.forward.seal(data)))
        )
        == data
    )
    assert (
        client_layer.backward.open(
            client_layer.backward.unwrap(hop_layer.backward.wrap(hop_layer.backward.seal(data)))
        )
        == data
    )


def test_hop_with_a_different_onion_key_cannot_answer() -> None:
    _, public = generate_keypair()
    impostor, _ = generate_keypair()
    handshake = HopHandshakeClient(public)
    with pytest.raises(RemoteProtocolError):
        answer_hop_handshake(impostor, handshake.first_message())


def test_client_refuses_a_reply_that_does_not_belong_to_its_handshake() -> None:
    private, public = generate_keypair()
    handshake = HopHandshakeClient(public)
    other = HopHandshakeClient(public)
    handshake.first_message()
    reply, _ = answer_hop_handshake(private, other.first_message())
    with pytest.raises(RemoteProtocolError):
        handshake.finish(reply)


@pytest.mark.parametrize("reply", [b"", b"\x00" * 10, b"\x01" * 48, b"\x00" * 48, b"\x07" * 300])
def test_garbage_replies_and_messages_are_protocol_errors(reply: bytes) -> None:
    private, public = generate_keypair()
    handshake = HopHandshakeClient(public)
    handshake.first_message()
    with pytest.raises(RemoteProtocolError):
        handshake.finish(reply)
    with pytest.raises(RemoteProtocolError):
        answer_hop_handshake(private, reply)


def test_handshake_payloads_are_refused_both_ways() -> None:
    private, public = generate_keypair()
    sender = HandshakeState(NK, initiator=True, prologue=HOP_PROLOGUE, remote_static=public)
    with pytest.raises(RemoteProtocolError):
        answer_hop_handshake(private, bytes([HopKey.ONION]) + sender.write_message(b"smuggled"))
    client = HopHandshakeClient(public)
    responder = HandshakeState(NK, initiator=False, prologue=HOP_PROLOGUE, static_private=private)
    responder.read_message(client.first_message()[1:])
    with pytest.raises(RemoteProtocolError):
        client.finish(responder.write_message(b"smuggled"))


def test_a_different_prologue_is_refused() -> None:
    private, public = generate_keypair()
    sender = HandshakeState(NK, initiator=True, prologue=b"token.place link", remote_static=public)
    with pytest.raises(RemoteProtocolError):
        answer_hop_handshake(private, bytes([HopKey.ONION]) + sender.write_message(b""))


def test_two_circuits_to_the_same_hop_get_unrelated_keys() -> None:
    private, public = generate_keypair()
    layers: list[tuple[HopLayer, HopLayer]] = []
    messages: list[bytes] = []
    for _ in range(2):
        handshake = HopHandshakeClient(public)
        first = handshake.first_message()
        messages.append(first)
        reply, hop_layer = answer_hop_handshake(private, first)
        layers.append((handshake.finish(reply), hop_layer))
    assert messages[0][1:33] != messages[1][1:33]  # fresh ephemeral keys
    data = bytes(PAYLOAD_BYTES)
    bodies = [client.forward.wrap(client.forward.seal(data)) for client, _ in layers]
    assert bodies[0] != bodies[1]
    # Neither circuit's hop layer opens the other's cell.
    assert layers[1][1].forward.open(layers[1][1].forward.unwrap(bodies[0])) is None
    assert layers[0][1].forward.open(layers[0][1].forward.unwrap(bodies[1])) is None


def test_the_handshake_message_does_not_reveal_the_onion_key() -> None:
    _, public = generate_keypair()
    first = HopHandshakeClient(public).first_message()
    assert public not in first
    assert len(first) == 49  # key kind (1) + e (32) + the empty payload's tag (16)
    assert first[0] == HopKey.ONION


def test_bootstrap_handshake_with_the_identity_key() -> None:
    identity = Identity.generate()
    handshake = HopHandshakeClient(node_id_to_x25519(identity.node_id), key=HopKey.IDENTITY)
    first = handshake.first_message()
    assert requested_hop_key(first) is HopKey.IDENTITY
    reply, hop_layer = answer_hop_handshake(identity.x25519_private, first)
    client_layer = handshake.finish(reply)
    data = b"b" * PAYLOAD_BYTES
    assert (
        hop_layer.forward.open(
            hop_layer.forward.unwrap(client_layer.forward.wrap(client_layer.forward.seal(data)))
        )
        == data
    )


@pytest.mark.parametrize("kind", [b"", b"\x02", b"\xff"])
def test_unknown_hop_key_kinds_are_refused(kind: bytes) -> None:
    private, public = generate_keypair()
    message = kind + HopHandshakeClient(public).first_message()[1:] if kind else b""
    with pytest.raises(RemoteProtocolError):
        requested_hop_key(message)
    with pytest.raises(RemoteProtocolError):
        answer_hop_handshake(private, message)


def test_a_message_for_one_key_is_not_answered_with_another() -> None:
    identity = Identity.generate()
    onion_private, onion_public = generate_keypair()
    to_onion = HopHandshakeClient(onion_public).first_message()
    with pytest.raises(RemoteProtocolError):
        answer_hop_handshake(identity.x25519_private, to_onion)
    to_identity = HopHandshakeClient(node_id_to_x25519(identity.node_id), key=HopKey.IDENTITY).first_message()
    with pytest.raises(RemoteProtocolError):
        answer_hop_handshake(onion_private, to_identity)
