"""Onion keys on a schedule: a new key every ONION_KEY_ROTATION_S; the previous one keeps answering for
ONION_KEY_GRACE_S, so clients holding a slightly old directory can still build circuits through us.

The ring lives in the data directory (ONION_KEY_FILE, mode 0600): a restarted relay or node answers with
the keys the current directory lists, instead of failing every client's circuit until the next directory.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tp_crypto.errors import KeyFileError
from tp_crypto.noise import generate_keypair, x25519_public
from tp_crypto.noise_primitives import DH_BYTES

ONION_KEY_FILE = "onion_keys.json"
# A GPU node's sealing keys (sealed requests, PROTOCOL.md 9): X25519 too, on the same schedule, in a ring of
# their own so that neither key ever serves the other's purpose.
SEALING_KEY_FILE = "sealing_keys.json"

ONION_KEY_ROTATION_S = 7 * 24 * 3600
ONION_KEY_GRACE_S = 24 * 3600


@dataclass(frozen=True)
class _OnionKey:
    private: bytes
    public: bytes
    created: float


class OnionKeyRing:
    def __init__(
        self,
        now: float,
        *,
        rotation_s: float = ONION_KEY_ROTATION_S,
        grace_s: float = ONION_KEY_GRACE_S,
        keys: list[_OnionKey] | None = None,
    ) -> None:
        """A ring of `keys` (newest first, e.g. read from a file), or of one new key made at `now`."""
        self._rotation_s = rotation_s
        self._grace_s = grace_s
        self._keys = keys or [_OnionKey(*generate_keypair(), created=now)]

    def rotate_if_due(self, now: float) -> bool:
        """Make a new key when the current one is old enough; drop keys past their grace period."""
        rotated = now - self._keys[0].created >= self._rotation_s
        if rotated:
            self._keys.insert(0, _OnionKey(*generate_keypair(), created=now))
        # A key retired at time t (when its successor was created) answers until t + grace.
        self._keys = [self._keys[0]] + [
            key
            for newer, key in zip(self._keys, self._keys[1:], strict=False)
            if now - newer.created < self._grace_s
        ]
        return rotated

    @classmethod
    def load_or_create(cls, path: Path, now: float) -> OnionKeyRing:
        """The ring saved at `path` (made due rotations included), or a new one saved there."""
        ring = cls(now, keys=_read_keys(path) if path.exists() else None)
        ring.rotate_if_due(now)
        ring.save(path)
        return ring

    def save(self, path: Path) -> None:
        """Write atomically, readable by the owner only."""
        document = [
            {"private": key.private.hex(), "public": key.public.hex(), "created": key.created}
            for key in self._keys
        ]
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(document, handle)
            os.replace(temporary, path)
        finally:
            Path(temporary).unlink(missing_ok=True)

    def private_keys(self) -> list[bytes]:
        """Newest first: what a hop tries when answering a handshake."""
        return [key.private for key in self._keys]

    def public_keys(self) -> tuple[bytes, ...]:
        """Newest first: what the descriptor publishes (clients use the first)."""
        return tuple(key.public for key in self._keys)


def _read_keys(path: Path) -> list[_OnionKey]:
    try:
        document = json.loads(path.read_text())
        keys = [
            _OnionKey(bytes.fromhex(item["private"]), bytes.fromhex(item["public"]), float(item["created"]))
            for item in document
        ]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        reason = exc.__class__.__name__
        raise KeyFileError(f"onion key file {path} is unreadable or malformed ({reason})") from exc
    if not keys or any(len(key.private) != DH_BYTES or len(key.public) != DH_BYTES for key in keys):
        raise KeyFileError(f"onion key file {path} holds no key or a key that is not {DH_BYTES} bytes")
    if any(x25519_public(key.private) != key.public for key in keys):
        raise KeyFileError(f"onion key file {path} holds a public key that does not match its private key")
    return keys
