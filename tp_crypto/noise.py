"""Noise handshakes (spec revision 34) as sans-IO state machines: bytes in, bytes out.

token.place uses `Noise_XX_25519_ChaChaPoly_BLAKE2b` (links) and `Noise_NK_25519_ChaChaPoly_BLAKE2b`
(circuit hops). Patterns are data (the `PATTERNS` table): the state machine has no per-pattern code.
A `HandshakeState` that raised once is dead: every later call raises `LocalProtocolError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from tp_crypto.errors import LocalProtocolError, RemoteProtocolError
from tp_crypto.noise_primitives import (
    CIPHER_KEY_BYTES,
    DH_BYTES,
    NOISE_MAX_MESSAGE_BYTES,
    TAG_BYTES,
    CipherState,
    SymmetricState,
    check_remote_public,
    dh,
    generate_keypair,
    x25519_public,
)

__all__ = [
    "NK",
    "NOISE_MAX_MESSAGE_BYTES",
    "PATTERNS",
    "XX",
    "CipherState",
    "HandshakePattern",
    "HandshakeState",
    "Token",
    "generate_keypair",
    "x25519_public",
]

_PROTOCOL_SUFFIX = "_25519_ChaChaPoly_BLAKE2b"


class Token(enum.Enum):
    """A handshake token; a DH token's letters name (initiator's key, responder's key)."""

    E = "e"
    S = "s"
    EE = "ee"
    ES = "es"
    SE = "se"
    SS = "ss"


@dataclass(frozen=True)
class HandshakePattern:
    """A handshake pattern (spec section 7): pre-messages, then messages, the initiator's first."""

    name: str
    initiator_pre_message: tuple[Token, ...]
    responder_pre_message: tuple[Token, ...]
    messages: tuple[tuple[Token, ...], ...]

    @property
    def protocol_name(self) -> bytes:
        return f"Noise_{self.name}{_PROTOCOL_SUFFIX}".encode("ascii")


_E, _S, _EE, _ES, _SE, _SS = Token.E, Token.S, Token.EE, Token.ES, Token.SE, Token.SS

# The one table of patterns. Messages alternate, initiator -> responder first.
PATTERNS: dict[str, HandshakePattern] = {
    "XX": HandshakePattern("XX", (), (), ((_E,), (_E, _EE, _S, _ES), (_S, _SE))),
    "NK": HandshakePattern("NK", (), (_S,), ((_E, _ES), (_E, _EE))),
}
XX = PATTERNS["XX"]
NK = PATTERNS["NK"]


class _KeyPair(NamedTuple):
    private: bytes
    public: bytes

    @classmethod
    def from_private(cls, private: bytes) -> _KeyPair:
        return cls(private, x25519_public(private))


class _Reader:
    """Consumes a received handshake message front to back."""

    __slots__ = ("_data", "_offset")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def take(self, count: int) -> bytes:
        end = self._offset + count
        if end > len(self._data):
            raise RemoteProtocolError("handshake message is truncated")
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def rest(self) -> bytes:
        chunk = self._data[self._offset :]
        self._offset = len(self._data)
        return chunk


class HandshakeState:
    """One side of a Noise handshake (spec section 5.3): `write_message`, `read_message` in turn."""

    def __init__(
        self,
        pattern: HandshakePattern,
        *,
        initiator: bool,
        prologue: bytes = b"",
        static_private: bytes | None = None,
        remote_static: bytes | None = None,
        ephemeral_private: bytes | None = None,
    ) -> None:
        self._pattern = pattern
        self._initiator = initiator
        self._s = _KeyPair.from_private(static_private) if static_private is not None else None
        self._e: _KeyPair | None = None
        self._fixed_ephemeral = ephemeral_private  # only test vectors fix it
        self._rs = _checked_public(remote_static) if remote_static is not None else None
        self._re: bytes | None = None
        self._message_index = 0
        self._failed = False
        self._split_done = False
        self._check_keys_present()
        self._symmetric = SymmetricState(pattern.protocol_name)
        self._symmetric.mix_hash(prologue)
        self._mix_pre_messages()

    @property
    def complete(self) -> bool:
        return self._message_index == len(self._pattern.messages)

    @property
    def handshake_hash(self) -> bytes:
        """h: after completion, a unique id of this session (channel binding)."""
        return self._symmetric.h

    @property
    def remote_static(self) -> bytes | None:
        return self._rs

    @property
    def initiator(self) -> bool:
        return self._initiator

    def is_my_turn_to_write(self) -> bool:
        return not self.complete and self._writes_message(self._message_index)

    def write_message(self, payload: bytes = b"") -> bytes:
        self._check_turn(writing=True)
        try:
            message = self._write_tokens(payload)
        except Exception:
            self._failed = True
            raise
        self._message_index += 1
        return message

    def read_message(self, message: bytes) -> bytes:
        """Process the peer's next message and return its payload."""
        self._check_turn(writing=False)
        try:
            payload = self._read_tokens(bytes(message))
        except Exception:
            self._failed = True
            raise
        self._message_index += 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """(send, receive) transport ciphers for this side; once only, so no key is used twice."""
        send, receive = self.split_secrets()
        return CipherState(send[:CIPHER_KEY_BYTES]), CipherState(receive[:CIPHER_KEY_BYTES])

    def split_secrets(self) -> tuple[bytes, bytes]:
        """(send, receive) 64-byte secrets of Split(), for protocols that derive their own keys from them.

        Once only, shared with split(): one handshake yields one set of keys.
        """
        if not self.complete or self._failed:
            raise LocalProtocolError("split() before the handshake completed")
        if self._split_done:
            raise LocalProtocolError("split() was already called")
        self._split_done = True
        to_responder, to_initiator = self._symmetric.split_secrets()
        return (to_responder, to_initiator) if self._initiator else (to_initiator, to_responder)

    # --- the state machine ---------------------------------------------------------------------

    def _writes_message(self, index: int) -> bool:
        return (index % 2 == 0) == self._initiator

    def _check_turn(self, *, writing: bool) -> None:
        if self._failed:
            raise LocalProtocolError("handshake already failed")
        if self.complete:
            raise LocalProtocolError("handshake is already complete")
        if self._writes_message(self._message_index) != writing:
            turn = "the peer's turn to write" if writing else "our turn to write"
            raise LocalProtocolError(f"it is {turn}")

    def _write_tokens(self, payload: bytes) -> bytes:
        parts: list[bytes] = []
        for token in self._pattern.messages[self._message_index]:
            if token is Token.E:
                self._e = self._new_ephemeral()
                self._symmetric.mix_hash(self._e.public)
                parts.append(self._e.public)
            elif token is Token.S:
                parts.append(self._symmetric.encrypt_and_hash(self._own_static().public))
            else:
                self._mix_dh(token)
        parts.append(self._symmetric.encrypt_and_hash(payload))
        message = b"".join(parts)
        if len(message) > NOISE_MAX_MESSAGE_BYTES:
            raise LocalProtocolError(f"handshake message of {len(message)} bytes is too long")
        return message

    def _read_tokens(self, message: bytes) -> bytes:
        if len(message) > NOISE_MAX_MESSAGE_BYTES:
            raise RemoteProtocolError(f"handshake message of {len(message)} bytes is too long")
        reader = _Reader(message)
        for token in self._pattern.messages[self._message_index]:
            if token is Token.E:
                self._re = check_remote_public(reader.take(DH_BYTES))
                self._symmetric.mix_hash(self._re)
            elif token is Token.S:
                key_bytes = DH_BYTES + (TAG_BYTES if self._symmetric.cipher.has_key else 0)
                encrypted_key = reader.take(key_bytes)
                self._rs = check_remote_public(self._symmetric.decrypt_and_hash(encrypted_key))
            else:
                self._mix_dh(token)
        return self._symmetric.decrypt_and_hash(reader.rest())

    def _mix_dh(self, token: Token) -> None:
        initiator_letter, responder_letter = token.value[0], token.value[1]
        own_letter, remote_letter = (
            (initiator_letter, responder_letter) if self._initiator else (responder_letter, initiator_letter)
        )
        own = self._own_static() if own_letter == "s" else self._e
        remote = self._rs if remote_letter == "s" else self._re
        if own is None or remote is None:
            raise LocalProtocolError(f"pattern {self._pattern.name} uses a key before it exists")
        self._symmetric.mix_key(dh(own.private, remote))

    def _new_ephemeral(self) -> _KeyPair:
        if self._fixed_ephemeral is not None:
            return _KeyPair.from_private(self._fixed_ephemeral)
        return _KeyPair(*generate_keypair())

    def _own_static(self) -> _KeyPair:
        if self._s is None:
            raise LocalProtocolError(f"pattern {self._pattern.name} needs our static key")
        return self._s

    def _mix_pre_messages(self) -> None:
        # Both sides hash the initiator's pre-message keys first, then the responder's.
        pre_messages = (self._pattern.initiator_pre_message, self._pattern.responder_pre_message)
        for sender_is_initiator, tokens in zip((True, False), pre_messages, strict=True):
            ours = sender_is_initiator == self._initiator
            for token in tokens:
                if token is not Token.S:
                    raise LocalProtocolError(f"pre-message token {token.value!r} is not supported")
                public = self._own_static().public if ours else self._rs
                if public is None:
                    raise LocalProtocolError(f"Noise {self._pattern.name} needs remote_static")
                self._symmetric.mix_hash(public)

    def _check_keys_present(self) -> None:
        """Fail at construction, not mid-handshake, when a key the pattern needs is missing."""
        pattern = self._pattern
        own_pre, remote_pre = (
            (pattern.initiator_pre_message, pattern.responder_pre_message)
            if self._initiator
            else (pattern.responder_pre_message, pattern.initiator_pre_message)
        )
        sends_static = any(
            Token.S in tokens for index, tokens in enumerate(pattern.messages) if self._writes_message(index)
        )
        if (sends_static or Token.S in own_pre) and self._s is None:
            raise LocalProtocolError(f"Noise {pattern.name} needs static_private on this side")
        if Token.S in remote_pre and self._rs is None:
            raise LocalProtocolError(f"Noise {pattern.name} needs remote_static on this side")


def _checked_public(public: bytes) -> bytes:
    if len(public) != DH_BYTES:
        raise LocalProtocolError(f"an X25519 public key is {DH_BYTES} bytes, got {len(public)}")
    return bytes(public)
