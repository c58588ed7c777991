"""Onion layer crypto of circuits: a wide-block layer per hop and direction, and an end-to-end MAC.

Each hop of a circuit shares four keys with the client, derived from one Noise NK handshake against the
hop's onion key (forward secrecy from `ee`, hop authentication from `es`). Per direction a hop has:

- a layer key: every cell that passes the hop in that direction goes through a tweakable wide-block
  permutation of its whole body (tp_crypto.wide_block, LIONESS), with the count of cells this direction
  has handled so far as the tweak. The side that adds the layer (the client going forward, the hop going
  backward) enciphers, the side that removes it deciphers. Cells keep their fixed size, so a relay cannot
  tell its position. A bit changed anywhere turns the whole body into noise at the next hop that adds or
  removes a layer, and no later relay can change it back (the tagging attack of plain XOR layers);
- a MAC key: a cell addressed to (or sent by) this hop carries `recognized = 0` and a 16-byte keyed-BLAKE2b
  tag over (counter of such cells, payload). A hop "recognizes" a cell only when the tag verifies; every
  other cell is forwarded. The counter makes a replayed, reordered or dropped cell fail the tag.

Body layout (plaintext at the hop it is for): recognized (2 zero bytes) | tag (16) | payload.
A modified cell fails the tag at the hop it was meant for and at every hop after; the last hop, which has
nowhere to forward an unrecognized cell, tears the circuit down.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass

from tp_crypto.errors import RemoteProtocolError
from tp_crypto.noise import NK, HandshakeState
from tp_crypto.wide_block import WideBlockCipher

RECOGNIZED = b"\x00\x00"
ONION_TAG_BYTES = 16
ONION_HEADER_BYTES = len(RECOGNIZED) + ONION_TAG_BYTES
HOP_PROLOGUE = b"token.place circuit hop"
_KEY_BYTES = 32
_TWEAK_BYTES = 8  # the tweak: the count of cells this direction handled, little-endian


class OnionDirection:
    """One direction of one hop: its layer permutation, the count of cells it handled, its MAC counter."""

    __slots__ = ("_cell_count", "_decipher", "_encipher", "_mac_count", "_mac_key")

    def __init__(self, cipher_key: bytes, mac_key: bytes) -> None:
        # Every key is fresh from one handshake and used for one direction, so tweaks start at 0.
        layer = WideBlockCipher(cipher_key)
        self._encipher = layer.encipher  # bound once: wrap and unwrap run for every cell at every hop
        self._decipher = layer.decipher
        self._cell_count = 0
        self._mac_key = mac_key
        self._mac_count = 0

    def wrap(self, body: bytes) -> bytes:
        """Add this hop's layer (the client going forward, the hop going backward)."""
        count = self._cell_count
        self._cell_count = count + 1
        return self._encipher(count.to_bytes(_TWEAK_BYTES, "little"), body)

    def unwrap(self, body: bytes) -> bytes:
        """Remove this hop's layer (the hop going forward, the client going backward)."""
        count = self._cell_count
        self._cell_count = count + 1
        return self._decipher(count.to_bytes(_TWEAK_BYTES, "little"), body)

    def seal(self, payload: bytes) -> bytes:
        """The plaintext body of a cell this direction originates (before wrap)."""
        tag = self._tag(payload)
        self._mac_count += 1
        return RECOGNIZED + tag + payload

    def open(self, body: bytes) -> bytes | None:
        """The payload when `body` (already unwrapped) is addressed here, else None. Counts it if so."""
        if body[:2] != RECOGNIZED:
            return None
        payload = body[ONION_HEADER_BYTES:]
        if not hmac.compare_digest(body[2:ONION_HEADER_BYTES], self._tag(payload)):
            return None
        self._mac_count += 1
        return payload

    def _tag(self, payload: bytes) -> bytes:
        counter = self._mac_count.to_bytes(8, "little")
        return hashlib.blake2b(counter + payload, key=self._mac_key, digest_size=ONION_TAG_BYTES).digest()


def tag_of(body: bytes) -> bytes:
    """The tag field of a plaintext body (what an authenticated SENDME echoes)."""
    return body[len(RECOGNIZED) : ONION_HEADER_BYTES]


@dataclass(frozen=True)
class HopLayer:
    """The crypto state a client and one hop share: forward is client -> hop, backward hop -> client."""

    forward: OnionDirection
    backward: OnionDirection


def _derive(secret: bytes, label: bytes) -> bytes:
    return hashlib.blake2b(label, key=secret, digest_size=_KEY_BYTES).digest()


def layer_from_secrets(forward_secret: bytes, backward_secret: bytes) -> HopLayer:
    return HopLayer(
        OnionDirection(_derive(forward_secret, b"fwd cipher"), _derive(forward_secret, b"fwd mac")),
        OnionDirection(_derive(backward_secret, b"bwd cipher"), _derive(backward_secret, b"bwd mac")),
    )


class HopKey(enum.IntEnum):
    """Which of its keys a hop answers a handshake with (the first byte of the client's message)."""

    ONION = 0  # the rotating onion key from the directory: the normal case
    IDENTITY = 1  # the X25519 form of the node id: for bootstrapping, before any directory is known


class HopHandshakeClient:
    """The client side of one hop's NK handshake: CREATE (or EXTEND) out, CREATED (or EXTENDED) in."""

    def __init__(self, hop_public: bytes, *, key: HopKey = HopKey.ONION) -> None:
        self._key = key
        self._noise = HandshakeState(NK, initiator=True, prologue=HOP_PROLOGUE, remote_static=hop_public)

    def first_message(self) -> bytes:
        return bytes([self._key]) + self._noise.write_message(b"")

    def finish(self, reply: bytes) -> HopLayer:
        """The hop's layer, once its reply proves it holds the onion key. RemoteProtocolError otherwise."""
        if self._noise.read_message(reply):
            raise RemoteProtocolError("hop handshake reply carries an unexpected payload")
        to_hop, from_hop = self._noise.split_secrets()
        return layer_from_secrets(to_hop, from_hop)


def requested_hop_key(message: bytes) -> HopKey:
    """Which key the client's first message is for; RemoteProtocolError for an unknown one."""
    try:
        return HopKey(message[0])
    except (IndexError, ValueError):
        raise RemoteProtocolError("hop handshake names no known key") from None


def answer_hop_handshake(private_key: bytes, message: bytes) -> tuple[bytes, HopLayer]:
    """The hop side: (reply, layer) for a client's first message; RemoteProtocolError if it is bad."""
    requested_hop_key(message)
    noise = HandshakeState(NK, initiator=False, prologue=HOP_PROLOGUE, static_private=private_key)
    if noise.read_message(message[1:]):
        raise RemoteProtocolError("hop handshake carries an unexpected payload")
    reply = noise.write_message(b"")
    to_client, from_client = noise.split_secrets()
    return reply, layer_from_secrets(from_client, to_client)
