"""Noise XX and NK: the official (cacophony) test vectors, tampering, misuse and rekey."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from tp_crypto.errors import LocalProtocolError, RemoteProtocolError
from tp_crypto.noise import (
    NK,
    NOISE_MAX_MESSAGE_BYTES,
    XX,
    CipherState,
    HandshakePattern,
    HandshakeState,
    Token,
    generate_keypair,
    x25519_public,
)
from tp_crypto.noise_primitives import (
    _LOW_ORDER_POINTS,
    NONCE_MAX,
    SymmetricState,
    blake2b,
    check_remote_public,
)

VECTORS_PATH = pathlib.Path(__file__).parent / "vectors" / "noise_25519_chachapoly_blake2b.json"
_E, _S, _EE, _ES, _SE, _SS = Token.E, Token.S, Token.EE, Token.ES, Token.SE, Token.SS
# The rest of the file's patterns (spec section 7), as data for the same state machine: replaying their
# vectors also checks tokens and pre-messages the product's two patterns do not use (ss, se, an initiator's
# pre-message, one-way patterns).
OTHER_PATTERNS = [
    HandshakePattern("NN", (), (), ((_E,), (_E, _EE))),
    HandshakePattern("KK", (_S,), (_S,), ((_E, _ES, _SS), (_E, _EE, _SE))),
    HandshakePattern("NX", (), (), ((_E,), (_E, _EE, _S, _ES))),
    HandshakePattern("XK", (), (_S,), ((_E, _ES), (_E, _EE), (_S, _SE))),
    HandshakePattern("IK", (), (_S,), ((_E, _ES, _S, _SS), (_E, _EE, _SE))),
    HandshakePattern("N", (), (_S,), ((_E, _ES),)),
    HandshakePattern("K", (_S,), (_S,), ((_E, _ES, _SS),)),
    HandshakePattern("X", (), (_S,), ((_E, _ES, _S, _SS),)),
]
USED_PATTERNS = {p.protocol_name.decode(): p for p in (XX, NK)}
SUPPORTED_PATTERNS = {**USED_PATTERNS, **{p.protocol_name.decode(): p for p in OTHER_PATTERNS}}
# Fields of the test-vector format this implementation understands (no PSKs: the code has no psk modifier).
KNOWN_FIELDS = {
    "protocol_name", "init_prologue", "init_static", "init_ephemeral", "init_remote_static",
    "resp_prologue", "resp_static", "resp_ephemeral", "resp_remote_static", "handshake_hash",
    "messages",
}  # fmt: skip

Vector = dict[str, Any]
Mutation = Callable[[bytes], bytes]


def _load_vectors() -> list[Vector]:
    document = json.loads(VECTORS_PATH.read_text())
    vectors: list[Vector] = document["vectors"]
    return vectors


def _optional_hex(vector: Vector, field: str) -> bytes | None:
    value = vector.get(field)
    return bytes.fromhex(value) if value is not None else None


def _sides_from_vector(vector: Vector) -> tuple[HandshakeState, HandshakeState]:
    pattern = SUPPORTED_PATTERNS[vector["protocol_name"]]
    initiator = HandshakeState(
        pattern,
        initiator=True,
        prologue=bytes.fromhex(vector["init_prologue"]),
        static_private=_optional_hex(vector, "init_static"),
        remote_static=_optional_hex(vector, "init_remote_static"),
        ephemeral_private=_optional_hex(vector, "init_ephemeral"),
    )
    responder = HandshakeState(
        pattern,
        initiator=False,
        prologue=bytes.fromhex(vector["resp_prologue"]),
        static_private=_optional_hex(vector, "resp_static"),
        remote_static=_optional_hex(vector, "resp_remote_static"),
        ephemeral_private=_optional_hex(vector, "resp_ephemeral"),
    )
    return initiator, responder


VECTORS = _load_vectors()


def test_every_vector_of_the_file_is_replayed() -> None:
    # No vector is left out: every one in the file (all of cacophony's 25519_ChaChaPoly_BLAKE2b vectors
    # without PSKs, among them every XX and NK one) has a pattern here and only known fields.
    names = [v["protocol_name"] for v in VECTORS]
    assert set(names) == set(SUPPORTED_PATTERNS)
    assert {name for name in names if name in USED_PATTERNS} == set(USED_PATTERNS)
    assert all(set(v) <= KNOWN_FIELDS for v in VECTORS)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["protocol_name"] for v in VECTORS])
def test_vector(vector: Vector) -> None:
    assert set(vector) <= KNOWN_FIELDS, f"unsupported fields: {sorted(set(vector) - KNOWN_FIELDS)}"
    initiator, responder = _sides_from_vector(vector)
    messages = [(bytes.fromhex(m["payload"]), bytes.fromhex(m["ciphertext"])) for m in vector["messages"]]
    handshake_length = len(SUPPORTED_PATTERNS[vector["protocol_name"]].messages)
    for index, (payload, ciphertext) in enumerate(messages[:handshake_length]):
        writer, reader = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        assert writer.is_my_turn_to_write() and not reader.is_my_turn_to_write()
        assert writer.write_message(payload) == ciphertext
        assert reader.read_message(ciphertext) == payload
    assert initiator.complete and responder.complete
    expected_hash = bytes.fromhex(vector["handshake_hash"])
    assert initiator.handshake_hash == responder.handshake_hash == expected_hash
    # The format keeps alternating after the handshake (even index initiator -> responder), except for
    # one-way patterns, where every message goes initiator -> responder.
    one_way = handshake_length == 1
    initiator_send, initiator_receive = initiator.split()
    responder_send, responder_receive = responder.split()
    for index, (payload, ciphertext) in enumerate(messages):
        if index < handshake_length:
            continue
        send, receive = (
            (initiator_send, responder_receive)
            if one_way or index % 2 == 0
            else (responder_send, initiator_receive)
        )
        assert send.encrypt_with_ad(b"", payload) == ciphertext
        assert receive.decrypt_with_ad(b"", ciphertext) == payload


# --- live handshakes with random keys ----------------------------------------------------------

RESPONDER_PRIVATE, RESPONDER_PUBLIC = generate_keypair()
INITIATOR_PRIVATE, INITIATOR_PUBLIC = generate_keypair()


def _new_pair(
    pattern: HandshakePattern, *, known_responder_key: bytes = RESPONDER_PUBLIC
) -> tuple[HandshakeState, HandshakeState]:
    initiator = HandshakeState(
        pattern,
        initiator=True,
        prologue=b"token.place test",
        static_private=INITIATOR_PRIVATE if pattern is XX else None,
        remote_static=known_responder_key if pattern is NK else None,
    )
    responder = HandshakeState(
        pattern, initiator=False, prologue=b"token.place test", static_private=RESPONDER_PRIVATE
    )
    return initiator, responder


def _step(
    initiator: HandshakeState,
    responder: HandshakeState,
    index: int,
    mutate: tuple[int, Mutation] | None,
) -> bytes:
    """Send handshake message `index`; `mutate` = (message index, change) alters one in flight."""
    writer, reader = (initiator, responder) if index % 2 == 0 else (responder, initiator)
    message = writer.write_message(b"payload %d" % index)
    if mutate is not None and mutate[0] == index:
        message = mutate[1](message)
    return reader.read_message(message)


def _run_handshake(
    pattern: HandshakePattern, mutate: tuple[int, Mutation] | None = None
) -> tuple[HandshakeState, HandshakeState]:
    initiator, responder = _new_pair(pattern)
    for index in range(len(pattern.messages)):
        assert _step(initiator, responder, index, mutate) == b"payload %d" % index
    return initiator, responder


def _failing_read_index(pattern: HandshakePattern, index: int, mutation: Mutation) -> int | None:
    """Index of the first read that raised RemoteProtocolError once message `index` was mutated."""
    initiator, responder = _new_pair(pattern)
    for step in range(len(pattern.messages)):
        try:
            _step(initiator, responder, step, (index, mutation))
        except RemoteProtocolError:
            return step
    return None


def _detecting_index(pattern: HandshakePattern, index: int) -> int:
    # XX message 1 (`-> e`) carries no MAC: its tampering shows when message 2 fails to decrypt.
    return 1 if pattern is XX and index == 0 else index


@pytest.mark.parametrize("pattern", [XX, NK], ids=["XX", "NK"])
def test_handshake_agrees(pattern: HandshakePattern) -> None:
    initiator, responder = _run_handshake(pattern)
    assert initiator.handshake_hash == responder.handshake_hash
    assert initiator.remote_static == RESPONDER_PUBLIC
    assert responder.remote_static == (INITIATOR_PUBLIC if pattern is XX else None)
    initiator_send, initiator_receive = initiator.split()
    responder_send, responder_receive = responder.split()
    to_responder = initiator_send.encrypt_with_ad(b"ad", b"hi")
    assert responder_receive.decrypt_with_ad(b"ad", to_responder) == b"hi"
    to_initiator = responder_send.encrypt_with_ad(b"", b"yo")
    assert initiator_receive.decrypt_with_ad(b"", to_initiator) == b"yo"


@pytest.mark.parametrize("pattern", [XX, NK], ids=["XX", "NK"])
def test_flipping_any_handshake_byte_fails(pattern: HandshakePattern) -> None:
    for index in range(len(pattern.messages)):
        length = len(_run_handshake_message(pattern, index))
        for position in range(length):

            def flip(message: bytes, position: int = position) -> bytes:
                changed = bytearray(message)
                changed[position] ^= 0x01
                return bytes(changed)

            assert _failing_read_index(pattern, index, flip) == _detecting_index(pattern, index)


@pytest.mark.parametrize("pattern", [XX, NK], ids=["XX", "NK"])
def test_truncated_handshake_messages_fail(pattern: HandshakePattern) -> None:
    for index in range(len(pattern.messages)):
        length = len(_run_handshake_message(pattern, index))
        for kept in range(length):
            failed_at = _failing_read_index(pattern, index, _truncation(kept))
            too_short_for_e = kept < 32
            expected = index if too_short_for_e else _detecting_index(pattern, index)
            assert failed_at == expected


def _truncation(kept: int) -> Mutation:
    return lambda message: message[:kept]


def _run_handshake_message(pattern: HandshakePattern, index: int) -> bytes:
    captured: list[bytes] = []

    def capture(message: bytes) -> bytes:
        captured.append(message)
        return message

    _run_handshake(pattern, (index, capture))
    return captured[0]


def test_nk_with_wrong_responder_key_fails() -> None:
    _, wrong_public = generate_keypair()
    initiator, responder = _new_pair(NK, known_responder_key=wrong_public)
    message = initiator.write_message(b"hello")
    with pytest.raises(RemoteProtocolError):
        responder.read_message(message)


def test_xx_prologue_mismatch_fails() -> None:
    initiator, _ = _new_pair(XX)
    responder = HandshakeState(XX, initiator=False, prologue=b"another", static_private=RESPONDER_PRIVATE)
    responder.read_message(initiator.write_message())
    with pytest.raises(RemoteProtocolError):
        initiator.read_message(responder.write_message())


@pytest.mark.parametrize("point", sorted(_LOW_ORDER_POINTS))
def test_low_order_ephemeral_rejected_on_read(point: bytes) -> None:
    _, responder = _new_pair(XX)
    with pytest.raises(RemoteProtocolError, match="low-order"):
        responder.read_message(point + b"payload")


@pytest.mark.parametrize("point", sorted(_LOW_ORDER_POINTS))
def test_low_order_list_gives_all_zero_dh(point: bytes) -> None:
    # Checked against an independent X25519 (OpenSSL), which refuses all-zero results.
    with pytest.raises(ValueError):
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(point))
    with pytest.raises(RemoteProtocolError):
        check_remote_public(point[:-1] + bytes([point[-1] | 0x80]))


def test_handshake_message_too_long() -> None:
    _, responder = _new_pair(XX)
    with pytest.raises(RemoteProtocolError, match="too long"):
        responder.read_message(bytes(NOISE_MAX_MESSAGE_BYTES + 1))
    initiator, _ = _new_pair(XX)
    with pytest.raises(LocalProtocolError):
        initiator.write_message(bytes(NOISE_MAX_MESSAGE_BYTES))


def test_turn_taking_and_split_misuse() -> None:
    initiator, responder = _new_pair(XX)
    with pytest.raises(LocalProtocolError):
        responder.write_message()
    with pytest.raises(LocalProtocolError):
        initiator.read_message(b"")
    with pytest.raises(LocalProtocolError):
        initiator.split()
    initiator, responder = _run_handshake(XX)
    assert not initiator.is_my_turn_to_write() and not responder.is_my_turn_to_write()
    with pytest.raises(LocalProtocolError):
        initiator.write_message()
    initiator.split()
    with pytest.raises(LocalProtocolError):
        initiator.split()


def test_failed_handshake_stays_failed() -> None:
    initiator, responder = _new_pair(NK)
    message = bytearray(initiator.write_message())
    message[-1] ^= 1
    with pytest.raises(RemoteProtocolError):
        responder.read_message(bytes(message))
    with pytest.raises(LocalProtocolError, match="failed"):
        responder.write_message()


def test_missing_keys_fail_at_construction() -> None:
    with pytest.raises(LocalProtocolError):
        HandshakeState(NK, initiator=True)
    with pytest.raises(LocalProtocolError):
        HandshakeState(NK, initiator=False)
    with pytest.raises(LocalProtocolError):
        HandshakeState(XX, initiator=True)
    with pytest.raises(LocalProtocolError):
        HandshakeState(NK, initiator=True, remote_static=b"short")


def test_ephemerals_are_fresh() -> None:
    first, _ = _new_pair(NK)
    second, _ = _new_pair(NK)
    assert first.write_message()[:32] != second.write_message()[:32]


def test_keypair_matches_openssl() -> None:
    private, public = generate_keypair()
    assert public == x25519_public(private)
    openssl_public = X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
    assert public == openssl_public


def test_long_protocol_name_is_hashed() -> None:
    name = b"Noise_" + b"x" * 80
    assert SymmetricState(name).h == blake2b(name)
    assert SymmetricState(b"Noise_NN").h == b"Noise_NN".ljust(64, b"\0")


# --- transport -----------------------------------------------------------------------------------


def _transport_pair() -> tuple[CipherState, CipherState]:
    initiator, responder = _run_handshake(XX)
    initiator_send, _ = initiator.split()
    _, responder_receive = responder.split()
    return initiator_send, responder_receive


def test_transport_tampering_fails_without_advancing_nonce() -> None:
    send, receive = _transport_pair()
    ciphertext = send.encrypt_with_ad(b"ad", b"a transport message")
    for position in range(len(ciphertext)):
        changed = bytearray(ciphertext)
        changed[position] ^= 0x80
        with pytest.raises(RemoteProtocolError):
            receive.decrypt_with_ad(b"ad", bytes(changed))
    for kept in range(len(ciphertext)):
        with pytest.raises(RemoteProtocolError):
            receive.decrypt_with_ad(b"ad", ciphertext[:kept])
    with pytest.raises(RemoteProtocolError):
        receive.decrypt_with_ad(b"other ad", ciphertext)
    assert receive.nonce == 0
    assert receive.decrypt_with_ad(b"ad", ciphertext) == b"a transport message"
    assert receive.nonce == 1


def test_transport_replay_and_reorder_fail() -> None:
    send, receive = _transport_pair()
    first = send.encrypt_with_ad(b"", b"one")
    second = send.encrypt_with_ad(b"", b"two")
    with pytest.raises(RemoteProtocolError):
        receive.decrypt_with_ad(b"", second)
    assert receive.decrypt_with_ad(b"", first) == b"one"
    with pytest.raises(RemoteProtocolError):
        receive.decrypt_with_ad(b"", first)


def test_transport_message_limits() -> None:
    send, receive = _transport_pair()
    send.encrypt_with_ad(b"", bytes(NOISE_MAX_MESSAGE_BYTES - 16))
    with pytest.raises(LocalProtocolError):
        send.encrypt_with_ad(b"", bytes(NOISE_MAX_MESSAGE_BYTES - 15))
    with pytest.raises(RemoteProtocolError, match="too long"):
        receive.decrypt_with_ad(b"", bytes(NOISE_MAX_MESSAGE_BYTES + 1))


def test_rekey_both_sides_keeps_talking() -> None:
    send, receive = _transport_pair()
    assert receive.decrypt_with_ad(b"", send.encrypt_with_ad(b"", b"before")) == b"before"
    send.rekey()
    receive.rekey()
    assert send.nonce == receive.nonce == 1  # rekey keeps n
    assert receive.decrypt_with_ad(b"", send.encrypt_with_ad(b"", b"after")) == b"after"


def test_rekey_one_side_cannot_talk() -> None:
    send, receive = _transport_pair()
    send.rekey()
    ciphertext = send.encrypt_with_ad(b"", b"rekeyed")
    with pytest.raises(RemoteProtocolError):
        receive.decrypt_with_ad(b"", ciphertext)
    receive.rekey()
    assert receive.decrypt_with_ad(b"", ciphertext) == b"rekeyed"


def test_rekey_matches_spec_definition() -> None:
    key = bytes(range(32))
    cipher = CipherState(key)
    # REKEY(k) = ENCRYPT(k, 2^64-1, "", zeros)[:32], via the raw AEAD: CipherState refuses that n.
    expected = ChaCha20Poly1305(key).encrypt(b"\0" * 4 + b"\xff" * 8, bytes(32), b"")[:32]
    cipher.rekey()
    assert cipher.encrypt_with_ad(b"", b"x") == CipherState(expected).encrypt_with_ad(b"", b"x")


def test_nonce_exhaustion() -> None:
    send, receive = _transport_pair()
    send.set_nonce(NONCE_MAX - 1)
    receive.set_nonce(NONCE_MAX - 1)
    last = send.encrypt_with_ad(b"", b"last")
    assert receive.decrypt_with_ad(b"", last) == b"last"
    assert send.nonce == receive.nonce == NONCE_MAX
    with pytest.raises(LocalProtocolError, match="exhausted"):
        send.encrypt_with_ad(b"", b"one too many")
    with pytest.raises(RemoteProtocolError):
        receive.decrypt_with_ad(b"", last)
    with pytest.raises(LocalProtocolError):
        send.set_nonce(NONCE_MAX + 1)
