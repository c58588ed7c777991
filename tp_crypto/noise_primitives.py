"""Crypto of `Noise_*_25519_ChaChaPoly_BLAKE2b` (Noise spec rev 34, sections 4, 5.1 and 5.2).

X25519 comes from pynacl: one C call per DH, about 2x faster here than building `cryptography`
key objects per call. ChaCha20-Poly1305 comes from `cryptography` (lowest per-call overhead at cell
sizes), BLAKE2b and HMAC from hashlib/hmac. What the peer controls fails as RemoteProtocolError.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from tp_crypto.errors import LocalProtocolError, RemoteProtocolError

NOISE_MAX_MESSAGE_BYTES = 65535  # spec section 3: every Noise message, handshake or transport
DH_BYTES = 32  # DHLEN of 25519
HASH_BYTES = 64  # HASHLEN of BLAKE2b
CIPHER_KEY_BYTES = 32
TAG_BYTES = 16
NONCE_MAX = 2**64 - 1  # reserved by the spec: never used to encrypt a message, only by REKEY

# ChaChaPoly nonce (spec section 12.3): 32 zero bits, then n as a 64-bit little-endian integer.
_NONCE_FORMAT = struct.Struct("<4xQ")
_ALL_ZERO_DH = bytes(DH_BYTES)
# X25519 u-coordinates of small order (0, 1, the two of order 8, p-1, and the non-canonical p
# and p+1), top bit cleared: every DH with them is all-zero. Checked on receipt so that a bad key
# fails the read that carried it, not a later write.
_LOW_ORDER_POINTS = frozenset(
    bytes.fromhex(point)
    for point in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
)
_REKEY_PLAINTEXT = bytes(CIPHER_KEY_BYTES)
# HMAC-BLAKE2b by hand (RFC 2104): a HASHLEN key zero-padded to BLOCKLEN, XORed with the pads.
_HASH_BLOCK_BYTES = 128  # BLOCKLEN of BLAKE2b
_HMAC_KEY_PADDING = bytes(_HASH_BLOCK_BYTES - HASH_BYTES)
_HMAC_INNER_PAD = bytes(byte ^ 0x36 for byte in range(256))  # bytes.translate tables
_HMAC_OUTER_PAD = bytes(byte ^ 0x5C for byte in range(256))


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as (private32, public32)."""
    private = os.urandom(DH_BYTES)
    return private, x25519_public(private)


def x25519_public(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key."""
    if len(private) != DH_BYTES:
        raise LocalProtocolError(f"an X25519 private key is {DH_BYTES} bytes, got {len(private)}")
    return nacl.bindings.crypto_scalarmult_base(private)


def check_remote_public(public: bytes) -> bytes:
    """The peer's public key, or RemoteProtocolError if every DH with it would be all-zero."""
    if public[:-1] + bytes([public[-1] & 0x7F]) in _LOW_ORDER_POINTS:
        raise RemoteProtocolError("peer public key is a low-order point")
    return public


def dh(private: bytes, remote_public: bytes) -> bytes:
    """X25519(private, remote_public); all-zero (a low-order remote key) is the peer's fault."""
    try:
        shared = nacl.bindings.crypto_scalarmult(private, remote_public)
    except nacl.exceptions.RuntimeError:
        # libsodium refuses small-order points and all-zero results with an error code.
        shared = _ALL_ZERO_DH
    if hmac.compare_digest(shared, _ALL_ZERO_DH):
        raise RemoteProtocolError("peer public key is a low-order point (all-zero DH result)")
    return shared


def blake2b(data: bytes) -> bytes:
    """HASH() of the spec: BLAKE2b with a 64-byte digest."""
    return hashlib.blake2b(data).digest()


def hmac_blake2b(key: bytes, data: bytes) -> bytes:
    """HMAC-BLAKE2b (RFC 2104 with BLOCKLEN 128), spec section 4.3."""
    return hmac.digest(key, data, hashlib.blake2b)


def hkdf(chaining_key: bytes, input_key_material: bytes, outputs: int) -> tuple[bytes, ...]:
    """HKDF() of spec section 4.3: two or three HASHLEN outputs chained from one HMAC key.

    The outputs' HMACs share their key (temp_key), so its inner and outer pads are hashed once and each
    output copies those states: HMAC (RFC 2104) by hand, as `hmac` does it, in fewer Python calls (hmac's
    fallback for a hashlib constructor builds and pads both states on every call). A/B in
    docs/BENCHMARKS.md (issue 22)."""
    temp_key = hmac_blake2b(chaining_key, input_key_material) + _HMAC_KEY_PADDING
    inner = hashlib.blake2b(temp_key.translate(_HMAC_INNER_PAD))
    outer = hashlib.blake2b(temp_key.translate(_HMAC_OUTER_PAD))
    results: list[bytes] = []
    previous = b""
    for counter in range(1, outputs + 1):
        step = inner.copy()
        step.update(previous + bytes((counter,)))
        mac = outer.copy()
        mac.update(step.digest())
        previous = mac.digest()
        results.append(previous)
    return tuple(results)


class CipherState:
    """A ChaCha20-Poly1305 key and the 64-bit counter that is its nonce (spec section 5.1).

    Without a key (early in a handshake) encryption is the identity, as the spec requires.
    """

    __slots__ = ("_aead", "_nonce")

    def __init__(self, key: bytes | None = None, nonce: int = 0) -> None:
        if key is not None and len(key) != CIPHER_KEY_BYTES:
            raise LocalProtocolError(f"a cipher key is {CIPHER_KEY_BYTES} bytes, got {len(key)}")
        # One AEAD object per key: building it per message would dominate the cost at cell sizes.
        self._aead = ChaCha20Poly1305(key) if key is not None else None
        self._nonce = nonce

    @property
    def has_key(self) -> bool:
        return self._aead is not None

    @property
    def nonce(self) -> int:
        """The counter the next encrypt or decrypt uses."""
        return self._nonce

    def set_nonce(self, nonce: int) -> None:
        """SetNonce() of the spec; for out-of-order transports and for tests of nonce exhaustion."""
        if not 0 <= nonce <= NONCE_MAX:
            raise LocalProtocolError("a Noise nonce is an unsigned 64-bit integer")
        self._nonce = nonce

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """ENCRYPT(k, n++, ad, plaintext), or plaintext while there is no key yet."""
        if len(plaintext) + (TAG_BYTES if self._aead else 0) > NOISE_MAX_MESSAGE_BYTES:
            raise LocalProtocolError(f"plaintext of {len(plaintext)} bytes exceeds a Noise message")
        if self._aead is None:
            return plaintext
        if self._nonce >= NONCE_MAX:
            raise LocalProtocolError("nonce exhausted: rekey is not enough, start a new handshake")
        ciphertext = self._aead.encrypt(_NONCE_FORMAT.pack(self._nonce), plaintext, ad)
        self._nonce += 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """DECRYPT(k, n++, ad, ciphertext); on any failure n stays where it was."""
        if len(ciphertext) > NOISE_MAX_MESSAGE_BYTES:
            raise RemoteProtocolError(f"Noise message of {len(ciphertext)} bytes is too long")
        if self._aead is None:
            return ciphertext
        if len(ciphertext) < TAG_BYTES:
            raise RemoteProtocolError(f"Noise ciphertext of {len(ciphertext)} bytes lacks a tag")
        if self._nonce >= NONCE_MAX:
            # The peer could not have encrypted this under a valid nonce: it broke the protocol.
            raise RemoteProtocolError("peer sent a message past the last nonce")
        try:
            plaintext = self._aead.decrypt(_NONCE_FORMAT.pack(self._nonce), ciphertext, ad)
        except InvalidTag:
            raise RemoteProtocolError("Noise message failed authentication") from None
        self._nonce += 1
        return plaintext

    def rekey(self) -> None:
        """REKEY() of spec section 4.2: k = ENCRYPT(k, 2^64-1, "", zeros)[:32]; n is kept."""
        if self._aead is None:
            raise LocalProtocolError("cannot rekey a CipherState that has no key")
        stream = self._aead.encrypt(_NONCE_FORMAT.pack(NONCE_MAX), _REKEY_PLAINTEXT, b"")
        self._aead = ChaCha20Poly1305(stream[:CIPHER_KEY_BYTES])


class SymmetricState:
    """The SymmetricState object of spec section 5.2: chaining key, handshake hash, cipher."""

    __slots__ = ("cipher", "ck", "h")

    def __init__(self, protocol_name: bytes) -> None:
        if len(protocol_name) <= HASH_BYTES:
            self.h = protocol_name.ljust(HASH_BYTES, b"\0")
        else:
            self.h = blake2b(protocol_name)
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, input_key_material: bytes) -> None:
        self.ck, temp_key = hkdf(self.ck, input_key_material, 2)
        # HASHLEN is 64, so the cipher key is truncated to its 32 bytes (spec section 5.2).
        self.cipher = CipherState(temp_key[:CIPHER_KEY_BYTES])

    def mix_hash(self, data: bytes) -> None:
        self.h = blake2b(self.h + data)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split_secrets(self) -> tuple[bytes, bytes]:
        """(initiator -> responder, responder -> initiator) secrets of Split(); the cipher keys are their
        first 32 bytes."""
        initiator_secret, responder_secret = hkdf(self.ck, b"", 2)
        return initiator_secret, responder_secret
