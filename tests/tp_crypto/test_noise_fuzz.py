"""Fuzz: whatever bytes a peer sends, Noise reads either succeed or raise RemoteProtocolError."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tp_crypto.errors import RemoteProtocolError
from tp_crypto.noise import NK, XX, CipherState, HandshakePattern, HandshakeState, generate_keypair
from tp_crypto.noise_primitives import NONCE_MAX

FUZZ = settings(max_examples=int(os.environ.get("TP_FUZZ_EXAMPLES", "1000")), deadline=None)

RESPONDER_PRIVATE, RESPONDER_PUBLIC = generate_keypair()
INITIATOR_PRIVATE, _ = generate_keypair()
# Fixed ephemerals keep the genuine messages, and so every example, reproducible for shrinking.
INITIATOR_EPHEMERAL, _ = generate_keypair()
RESPONDER_EPHEMERAL, _ = generate_keypair()

# (pattern, index of the message being read): every read a handshake has.
READ_POINTS = [(XX, 0), (XX, 1), (XX, 2), (NK, 0), (NK, 1)]


def _reader_at(pattern: HandshakePattern, read_index: int) -> tuple[HandshakeState, bytes]:
    """A fresh handshake just before message `read_index`: (its reader, the genuine message)."""
    initiator = HandshakeState(
        pattern,
        initiator=True,
        static_private=INITIATOR_PRIVATE if pattern is XX else None,
        remote_static=RESPONDER_PUBLIC if pattern is NK else None,
        ephemeral_private=INITIATOR_EPHEMERAL,
    )
    responder = HandshakeState(
        pattern,
        initiator=False,
        static_private=RESPONDER_PRIVATE,
        ephemeral_private=RESPONDER_EPHEMERAL,
    )
    sides = (initiator, responder)
    for index in range(read_index):
        sides[(index + 1) % 2].read_message(sides[index % 2].write_message(b"earlier"))
    genuine = sides[read_index % 2].write_message(b"the payload")
    return sides[(read_index + 1) % 2], genuine


def _xor_at(message: bytes, flips: list[tuple[int, int]]) -> bytes:
    changed = bytearray(message)
    for position, mask in flips:
        changed[position % len(changed)] ^= mask
    return bytes(changed)


def _peer_bytes(genuine: bytes) -> st.SearchStrategy[bytes]:
    """Garbage, and the genuine message flipped, cut, extended or intact."""
    flips = st.lists(st.tuples(st.integers(0, len(genuine) - 1), st.integers(1, 255)), min_size=1)
    return st.one_of(
        st.binary(max_size=2 * len(genuine) + 64),
        flips.map(lambda chosen: _xor_at(genuine, chosen)),
        st.integers(0, len(genuine)).map(lambda kept: genuine[:kept]),
        st.binary(min_size=1, max_size=64).map(lambda extra: genuine + extra),
        st.just(genuine),
    )


@pytest.mark.parametrize(
    ("pattern", "read_index"), READ_POINTS, ids=[f"{p.name}-{i}" for p, i in READ_POINTS]
)
@FUZZ
@given(data=st.data())
def test_read_message_raises_only_remote_errors(
    pattern: HandshakePattern, read_index: int, data: st.DataObject
) -> None:
    reader, genuine = _reader_at(pattern, read_index)
    message = data.draw(_peer_bytes(genuine), label="message")
    try:
        payload = reader.read_message(message)
    except RemoteProtocolError:
        return
    assert isinstance(payload, bytes)


KEY = bytes(range(32))
GENUINE_AD = b"associated"
GENUINE_CIPHERTEXT = CipherState(KEY).encrypt_with_ad(GENUINE_AD, b"a transport message")


@FUZZ
@given(
    nonce=st.one_of(st.just(0), st.integers(0, NONCE_MAX)),
    ad=st.one_of(st.just(GENUINE_AD), st.binary(max_size=32)),
    ciphertext=_peer_bytes(GENUINE_CIPHERTEXT),
)
def test_decrypt_raises_only_remote_errors(nonce: int, ad: bytes, ciphertext: bytes) -> None:
    cipher = CipherState(KEY, nonce=nonce)
    try:
        plaintext = cipher.decrypt_with_ad(ad, ciphertext)
    except RemoteProtocolError:
        assert cipher.nonce == nonce
        return
    assert plaintext == b"a transport message"
    assert cipher.nonce == nonce + 1
