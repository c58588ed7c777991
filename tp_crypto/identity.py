"""Ed25519 identities: one key per machine; its public key is the node id.

Key files hold the 32-byte seed as hex under a header line, are created with mode 0600, and are refused when
another user could read them. Noise needs X25519 keys: both halves are derived from the Ed25519 key with the
standard birational map, so proving the X25519 static key in a handshake proves the node id.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import nacl.signing

from tp_crypto.errors import KeyFileError, RemoteProtocolError

NODE_ID_BYTES = 32
SIGNATURE_BYTES = 64
SEED_BYTES = 32
KEY_FILE_HEADER = "token.place identity v1"
KEY_FILE_MODE = 0o600
# Any bit here means a user other than the owner may read or change the key.
KEY_FILE_FORBIDDEN_BITS = 0o077


class Identity:
    """A machine's long-term Ed25519 signing key."""

    __slots__ = ("_signing_key", "_x25519_private", "node_id")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"identity seed must be {SEED_BYTES} bytes, got {len(seed)}")
        self._signing_key = nacl.signing.SigningKey(seed)
        self.node_id: bytes = bytes(self._signing_key.verify_key)
        secret = seed + self.node_id
        self._x25519_private: bytes = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(secret)

    @classmethod
    def generate(cls) -> Identity:
        return cls(os.urandom(SEED_BYTES))

    @property
    def seed(self) -> bytes:
        return bytes(self._signing_key)

    @property
    def x25519_private(self) -> bytes:
        """The Noise static private key that belongs to this identity."""
        return self._x25519_private

    def sign(self, message: bytes) -> bytes:
        return self._signing_key.sign(message).signature

    def __repr__(self) -> str:
        return f"Identity(node_id={short_id(self.node_id)})"


def short_id(node_id: bytes) -> str:
    """A short printable form of a node id for logs."""
    return node_id[:8].hex()


def verify_signature(node_id: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is `node_id`'s Ed25519 signature of `message`."""
    if len(node_id) != NODE_ID_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        nacl.signing.VerifyKey(node_id).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


def node_id_to_x25519(node_id: bytes) -> bytes:
    """The X25519 public key a node with this id must prove in a Noise handshake."""
    if len(node_id) != NODE_ID_BYTES:
        raise RemoteProtocolError(f"node id must be {NODE_ID_BYTES} bytes, got {len(node_id)}")
    try:
        return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(node_id)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError, ValueError) as exc:
        raise RemoteProtocolError("node id is not a valid Ed25519 public key") from exc


def create_key_file(path: Path) -> Identity:
    """Write a new identity to `path` (mode 0600); refuses to overwrite an existing file."""
    identity = Identity.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    except FileExistsError as exc:
        raise KeyFileError(f"key file {path} already exists; refusing to overwrite it") from exc
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(f"{KEY_FILE_HEADER}\n{identity.seed.hex()}\n")
    return identity


def load_key_file(path: Path) -> Identity:
    """Read an identity, refusing a missing, corrupt or group/world-accessible key file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise KeyFileError(f"key file {path} does not exist (create one with `init`)") from exc
    if not stat.S_ISREG(mode):
        raise KeyFileError(f"key file {path} is not a regular file")
    if mode & KEY_FILE_FORBIDDEN_BITS:
        raise KeyFileError(
            f"key file {path} has mode {stat.S_IMODE(mode):04o}: other users may read it; "
            f"run `chmod 600 {path}`"
        )
    return Identity(_parse_key_file(path))


def load_or_create_key_file(path: Path) -> Identity:
    if path.exists():
        return load_key_file(path)
    return create_key_file(path)


def _parse_key_file(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"key file {path} cannot be read: {exc.__class__.__name__}") from exc
    lines = text.split("\n")
    if len(lines) < 2 or lines[0] != KEY_FILE_HEADER:
        raise KeyFileError(f"key file {path} is corrupt: first line is not {KEY_FILE_HEADER!r}")
    try:
        seed = bytes.fromhex(lines[1].strip())
    except ValueError as exc:
        raise KeyFileError(f"key file {path} is corrupt: the key is not hex") from exc
    if len(seed) != SEED_BYTES:
        raise KeyFileError(f"key file {path} is corrupt: key is {len(seed)} bytes, expected {SEED_BYTES}")
    if any(line.strip() for line in lines[2:]):
        raise KeyFileError(f"key file {path} is corrupt: unexpected text after the key")
    return seed
