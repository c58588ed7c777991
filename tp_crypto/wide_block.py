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
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

WIDE_BLOCK_LEFT_BYTES = 16  # one AES block
WIDE_BLOCK_KEY_BYTES = 32
_GCM_TAG_BYTES = 16
_FIXED_NONCE = bytes(12)  # the hash rounds' GCM nonce: H needs only GCM's tag as a masked GHASH
_ROUND_LABELS = (b"stream 1", b"hash 1", b"mix 1", b"stream 2", b"hash 2", b"mix 2")


def _round_key(key: bytes, label: bytes) -> bytes:
    return hashlib.blake2b(label, key=key, digest_size=WIDE_BLOCK_KEY_BYTES).digest()


class WideBlockCipher:
    """One key's tweakable permutation of byte strings longer than WIDE_BLOCK_LEFT_BYTES.

    Per call it is six C calls into `cryptography` (two AES-GCM streams, two AES-GCM tags, two one-block
    AES-CTR mixes) and a few concatenations: the per-call setup of those C calls is most of its cost
    (docs/BENCHMARKS.md, "onion layers"), so the objects are made once per key and their bound methods kept.
    Not safe to share between threads: a mix is two calls on one CTR context (reset, then update).
    """

    __slots__ = ("_hash1", "_hash2", "_mix1", "_mix2", "_reset1", "_reset2", "_stream1", "_stream2")

    def __init__(self, key: bytes) -> None:
        stream1, hash1, mix1, stream2, hash2, mix2 = (_round_key(key, label) for label in _ROUND_LABELS)
        # S: AES-GCM's encrypt, keystream from GHASH(t || L); its tag is cut off.
        self._stream1 = AESGCM(stream1).encrypt
        self._stream2 = AESGCM(stream2).encrypt
        # H, first half: the GCM tag over (t || R) as associated data under the fixed nonce.
        self._hash1 = AESGCM(hash1).encrypt
        self._hash2 = AESGCM(hash2).encrypt
        # H, second half, and the XOR into L in one C call: AES-CTR whose first counter block is the tag
        # gives L XOR AES_mix(tag) for one block, the same bytes as AES-ECB of the tag XORed into L.
        self._reset1, self._mix1 = _one_block_ctr(mix1)
        self._reset2, self._mix2 = _one_block_ctr(mix2)

    def encipher(self, tweak: bytes, block: bytes) -> bytes:
        left = block[:WIDE_BLOCK_LEFT_BYTES]
        right = self._stream1(tweak + left, block[WIDE_BLOCK_LEFT_BYTES:], None)[:-_GCM_TAG_BYTES]
        self._reset1(self._hash1(_FIXED_NONCE, b"", tweak + right))
        left = self._mix1(left)
        right = self._stream2(tweak + left, right, None)[:-_GCM_TAG_BYTES]
        self._reset2(self._hash2(_FIXED_NONCE, b"", tweak + right))
        return self._mix2(left) + right

    def decipher(self, tweak: bytes, block: bytes) -> bytes:
        right = block[WIDE_BLOCK_LEFT_BYTES:]
        self._reset2(self._hash2(_FIXED_NONCE, b"", tweak + right))
        left = self._mix2(block[:WIDE_BLOCK_LEFT_BYTES])
        right = self._stream2(tweak + left, right, None)[:-_GCM_TAG_BYTES]
        self._reset1(self._hash1(_FIXED_NONCE, b"", tweak + right))
        left = self._mix1(left)
        return left + self._stream1(tweak + left, right, None)[:-_GCM_TAG_BYTES]


def _one_block_ctr(mix_key: bytes) -> tuple[Callable[[bytes], None], Callable[[bytes], bytes]]:
    """(set the counter block, XOR one block of AES_mix(counter block) into the argument)."""
    context = Cipher(algorithms.AES(mix_key), modes.CTR(bytes(WIDE_BLOCK_LEFT_BYTES))).encryptor()
    return context.reset_nonce, context.update
