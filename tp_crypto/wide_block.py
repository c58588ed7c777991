"""A tweakable wide-block cipher over a whole cell body: LIONESS (Anderson and Biham, 1996) with a tweak.

The body is split into a left part L (`WIDE_BLOCK_LEFT_BYTES`) and the right part R (the rest), and four
unbalanced Feistel rounds run over them, each with its own key:

    encipher:  R ^= S(K1, tweak, L);  L ^= H(K2, tweak, R);  R ^= S(K3, tweak, L);  L ^= H(K4, tweak, R)
    decipher:  the same rounds in reverse order (each round is its own inverse).

- `S` is a stream keyed by (key, tweak, all of L): AES-256 in counter mode whose first counter block is
  GHASH of (tweak || L), which is what AES-GCM does with a nonce longer than 12 bytes (its tag, computed
  over the output, is dropped). GHASH under the secret hash key is a universal hash, so different
  (tweak, L) give unrelated keystreams, except with probability ~ 2^-120 per pair of cells.
- `H` is keyed BLAKE2b-256 of (tweak || R).

LIONESS is a strong pseudorandom permutation when S and H are pseudorandom functions: changing any bit of
its input (enciphering) or of its output (deciphering) gives a result unrelated to the original, in every
byte, and nobody without the keys can make a change on one side that becomes a chosen change on the other.
A tweak (a counter here) makes the permutation different for every cell position.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

WIDE_BLOCK_LEFT_BYTES = 32
WIDE_BLOCK_KEY_BYTES = 32
_GCM_TAG_BYTES = 16
_ROUND_LABELS = (b"stream 1", b"hash 1", b"stream 2", b"hash 2")


def _round_key(key: bytes, label: bytes) -> bytes:
    return hashlib.blake2b(label, key=key, digest_size=WIDE_BLOCK_KEY_BYTES).digest()


class WideBlockCipher:
    """One key's tweakable permutation of byte strings longer than WIDE_BLOCK_LEFT_BYTES."""

    __slots__ = ("_hash1", "_hash2", "_stream1", "_stream2")

    def __init__(self, key: bytes) -> None:
        # One object per round key, made once: AES-GCM takes a fresh nonce per call, and a keyed BLAKE2b
        # is copied per call rather than keyed again.
        stream1, hash1, stream2, hash2 = (_round_key(key, label) for label in _ROUND_LABELS)
        self._stream1 = AESGCM(stream1)
        self._stream2 = AESGCM(stream2)
        self._hash1 = hashlib.blake2b(key=hash1, digest_size=WIDE_BLOCK_LEFT_BYTES)
        self._hash2 = hashlib.blake2b(key=hash2, digest_size=WIDE_BLOCK_LEFT_BYTES)

    def encipher(self, tweak: bytes, block: bytes) -> bytes:
        left, right = block[:WIDE_BLOCK_LEFT_BYTES], block[WIDE_BLOCK_LEFT_BYTES:]
        right = self._stream(self._stream1, tweak, left, right)
        left = self._hashed(self._hash1, tweak, left, right)
        right = self._stream(self._stream2, tweak, left, right)
        left = self._hashed(self._hash2, tweak, left, right)
        return left + right

    def decipher(self, tweak: bytes, block: bytes) -> bytes:
        left, right = block[:WIDE_BLOCK_LEFT_BYTES], block[WIDE_BLOCK_LEFT_BYTES:]
        left = self._hashed(self._hash2, tweak, left, right)
        right = self._stream(self._stream2, tweak, left, right)
        left = self._hashed(self._hash1, tweak, left, right)
        right = self._stream(self._stream1, tweak, left, right)
        return left + right

    @staticmethod
    def _stream(stream: AESGCM, tweak: bytes, left: bytes, right: bytes) -> bytes:
        """right XOR the keystream of (tweak, left)."""
        return stream.encrypt(tweak + left, right, None)[:-_GCM_TAG_BYTES]

    @staticmethod
    def _hashed(keyed: hashlib.blake2b, tweak: bytes, left: bytes, right: bytes) -> bytes:
        """left XOR H(tweak || right)."""
        digest = keyed.copy()
        digest.update(tweak)
        digest.update(right)
        mixed = int.from_bytes(left, "little") ^ int.from_bytes(digest.digest(), "little")
        return mixed.to_bytes(WIDE_BLOCK_LEFT_BYTES, "little")
