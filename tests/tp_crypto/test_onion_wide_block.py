"""The onion layers' wide-block permutation (tp_crypto.wide_block): inverse, tweak, and no malleability."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tp_crypto.wide_block import _ROUND_LABELS, WIDE_BLOCK_LEFT_BYTES, WideBlockCipher, _round_key
from tp_net.protocol.frames import CELL_BODY_BYTES

TWEAK = (5).to_bytes(8, "little")
# Bits in the left part, at its edge, just after it, in the middle and the last.
BITS = [0, WIDE_BLOCK_LEFT_BYTES * 8 - 1, WIDE_BLOCK_LEFT_BYTES * 8, 4000, CELL_BODY_BYTES * 8 - 1]


def flip(block: bytes, bit: int) -> bytes:
    out = bytearray(block)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def differing_share(a: bytes, b: bytes) -> float:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count() / (len(a) * 8)


def test_decipher_inverts_encipher_both_ways_and_keeps_the_size() -> None:
    rng = random.Random(1)
    cipher = WideBlockCipher(rng.randbytes(32))
    for _ in range(20):
        block = rng.randbytes(CELL_BODY_BYTES)
        enciphered = cipher.encipher(TWEAK, block)
        assert len(enciphered) == CELL_BODY_BYTES
        assert cipher.decipher(TWEAK, enciphered) == block
        assert cipher.encipher(TWEAK, cipher.decipher(TWEAK, block)) == block


def test_the_tweak_and_the_key_each_give_another_permutation() -> None:
    rng = random.Random(2)
    key, block = rng.randbytes(32), rng.randbytes(CELL_BODY_BYTES)
    base = WideBlockCipher(key).encipher(TWEAK, block)
    assert 0.4 < differing_share(base, WideBlockCipher(key).encipher((6).to_bytes(8, "little"), block)) < 0.6
    assert 0.4 < differing_share(base, WideBlockCipher(rng.randbytes(32)).encipher(TWEAK, block)) < 0.6


@pytest.mark.parametrize("bit", BITS)
def test_one_changed_bit_changes_the_whole_output_in_either_direction(bit: int) -> None:
    """The property that defeats tagging: a flipped bit on either side is not a flipped bit on the other."""
    rng = random.Random(bit)
    cipher = WideBlockCipher(rng.randbytes(32))
    block = rng.randbytes(CELL_BODY_BYTES)
    for permute in (cipher.encipher, cipher.decipher):
        out, changed = permute(TWEAK, block), permute(TWEAK, flip(block, bit))
        assert 0.4 < differing_share(out, changed) < 0.6
        # Every part of the body moves, not only the half the bit was in.
        for start in (0, WIDE_BLOCK_LEFT_BYTES, CELL_BODY_BYTES // 2, CELL_BODY_BYTES - 64):
            assert out[start : start + 64] != changed[start : start + 64]


class _SpecCipher:
    """The construction as the module docstring states it, written plainly (AES-ECB and an integer XOR for
    the mix): the optimised WideBlockCipher must give the same bytes for every length, key and tweak."""

    def __init__(self, key: bytes) -> None:
        keys = [_round_key(key, label) for label in _ROUND_LABELS]
        self.streams = [AESGCM(keys[0]), AESGCM(keys[3])]
        self.hashes = [AESGCM(keys[1]), AESGCM(keys[4])]
        self.mixes = [Cipher(algorithms.AES(keys[i]), modes.ECB()).encryptor() for i in (2, 5)]

    def stream(self, i: int, tweak: bytes, left: bytes, right: bytes) -> bytes:
        return self.streams[i].encrypt(tweak + left, right, None)[:-16]

    def mixed(self, i: int, tweak: bytes, left: bytes, right: bytes) -> bytes:
        block = self.mixes[i].update(self.hashes[i].encrypt(bytes(12), b"", tweak + right))
        return bytes(a ^ b for a, b in zip(left, block, strict=True))

    def encipher(self, tweak: bytes, block: bytes) -> bytes:
        left, right = block[:WIDE_BLOCK_LEFT_BYTES], block[WIDE_BLOCK_LEFT_BYTES:]
        right = self.stream(0, tweak, left, right)
        left = self.mixed(0, tweak, left, right)
        right = self.stream(1, tweak, left, right)
        return self.mixed(1, tweak, left, right) + right


@pytest.mark.parametrize("size", [WIDE_BLOCK_LEFT_BYTES + 1, 33, 100, CELL_BODY_BYTES, 4096])
def test_the_optimised_cipher_gives_the_bytes_of_the_plain_construction(size: int) -> None:
    """The C-call shortcuts (bound methods, one-block CTR for AES-then-XOR) change no output byte."""
    rng = random.Random(size)
    for _ in range(10):
        key, tweak, block = rng.randbytes(32), rng.randbytes(8), rng.randbytes(size)
        cipher = WideBlockCipher(key)
        enciphered = _SpecCipher(key).encipher(tweak, block)
        assert cipher.encipher(tweak, block) == enciphered
        assert cipher.decipher(tweak, enciphered) == block
