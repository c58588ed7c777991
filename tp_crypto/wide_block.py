"""A tweakable wide-block cipher over a whole cell body: LIONESS (Anderson and Biham, 1996) with a tweak.

The body is split into a left part L (`WIDE_BLOCK_LEFT_BYTES`, one AES block) and the right part R (the
rest), and four unbalanced Feistel rounds run over them, each with its own keys:

    encipher:  R ^= S1(t, L);  L ^= H1(t, R);  R ^= S2(t, L);  L ^= H2(t, R)
    decipher:  the same rounds in reverse order (each round is its own inverse).

- `S(t, L)` is a stream keyed by all of (t, L): AES-256 in counter mode whose first counter block is GHASH
  of (t || L), which is what AES-GCM does with a nonce longer than 12 bytes (its tag, computed over the
  output, is dropped). GHASH under the secret hash key is a universal hash, so different (t, L) give
  unrelated keystreams except with probability ~ 2^-120 per pair of cells.
- `H(t, R)` is hash-then-encipher: AES-256 (a second key) of GHASH(t || R) masked by a constant, i.e. the
  tag of AES-GCM over (t || R) as associated data under a fixed nonce. A universal hash followed by a
  pseudorandom permutation is a pseudorandom function (up to the birthday bound in the 128-bit block); it
  costs two AES passes where a keyed BLAKE2b over ~1 KB costs about three times as much.

LIONESS is a strong pseudorandom permutation when S and H are pseudorandom functions: changing any bit of
its input (enciphering) or of its output (deciphering) gives a result unrelated to the original, in every
byte, and nobody without the keys can make a change on one side that becomes a chosen change on the other.
The tweak t (the cell's position, here) is an input of every round: one permutation per position.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

WIDE_BLOCK_LEFT_BYTES = 16  # one AES block
WIDE_BLOCK_KEY_BYTES = 32
_GCM_TAG_BYTES = 16
_FIXED_NONCE = bytes(12)  # the hash rounds' GCM nonce: H needs only GCM's tag as a masked GHASH
_ROUND_LABELS = (b"stream 1", b"hash 1", b"mix 1", b"stream 2", b"hash 2", b"mix 2")


def _round_key(key: bytes, label: bytes) -> bytes:
    return hashlib.blake2b(label, key=key, digest_size=WIDE_BLOCK_KEY_BYTES).digest()


class _Hash:
    """H(t, R) = AES_mix(GCM tag over t || R): a pseudorandom function to one block."""

    __slots__ = ("_ghash", "_mix")

    def __init__(self, hash_key: bytes, mix_key: bytes) -> None:
        self._ghash = AESGCM(hash_key)
        self._mix: CipherContext = Cipher(algorithms.AES(mix_key), modes.ECB()).encryptor()

    def mixed(self, tweak: bytes, left: bytes, right: bytes) -> bytes:
        """left XOR H(tweak || right)."""
        block = self._mix.update(self._ghash.encrypt(_FIXED_NONCE, b"", tweak + right))
        mixed = int.from_bytes(left, "little") ^ int.from_bytes(block, "little")
        return mixed.to_bytes(WIDE_BLOCK_LEFT_BYTES, "little")


class WideBlockCipher:
    """One key's tweakable permutation of byte strings longer than WIDE_BLOCK_LEFT_BYTES."""

    __slots__ = ("_hash1", "_hash2", "_stream1", "_stream2")

    def __init__(self, key: bytes) -> None:
        # One object per round key, made once: AES-GCM takes a nonce per call and ECB any number of blocks.
        stream1, hash1, mix1, stream2, hash2, mix2 = (_round_key(key, label) for label in _ROUND_LABELS)
        self._stream1 = AESGCM(stream1)
        self._stream2 = AESGCM(stream2)
        self._hash1 = _Hash(hash1, mix1)
        self._hash2 = _Hash(hash2, mix2)

    def encipher(self, tweak: bytes, block: bytes) -> bytes:
        left, right = block[:WIDE_BLOCK_LEFT_BYTES], block[WIDE_BLOCK_LEFT_BYTES:]
        right = self._stream1.encrypt(tweak + left, right, None)[:-_GCM_TAG_BYTES]
        left = self._hash1.mixed(tweak, left, right)
        right = self._stream2.encrypt(tweak + left, right, None)[:-_GCM_TAG_BYTES]
        left = self._hash2.mixed(tweak, left, right)
        return left + right

    def decipher(self, tweak: bytes, block: bytes) -> bytes:
        left, right = block[:WIDE_BLOCK_LEFT_BYTES], block[WIDE_BLOCK_LEFT_BYTES:]
        left = self._hash2.mixed(tweak, left, right)
        right = self._stream2.encrypt(tweak + left, right, None)[:-_GCM_TAG_BYTES]
        left = self._hash1.mixed(tweak, left, right)
        right = self._stream1.encrypt(tweak + left, right, None)[:-_GCM_TAG_BYTES]
        return left + right
