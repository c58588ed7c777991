"""Onion keys on a schedule: a new key every ONION_KEY_ROTATION_S; the previous one keeps answering for
ONION_KEY_GRACE_S, so clients holding a slightly old directory can still build circuits through us."""

from __future__ import annotations

from dataclasses import dataclass

from tp_crypto.noise import generate_keypair

ONION_KEY_ROTATION_S = 7 * 24 * 3600
ONION_KEY_GRACE_S = 24 * 3600


@dataclass(frozen=True)
class _OnionKey:
    private: bytes
    public: bytes
    created: float


class OnionKeyRing:
    def __init__(
        self, now: float, *, rotation_s: float = ONION_KEY_ROTATION_S, grace_s: float = ONION_KEY_GRACE_S
    ) -> None:
        self._rotation_s = rotation_s
        self._grace_s = grace_s
        self._keys = [_OnionKey(*generate_keypair(), created=now)]

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

    def private_keys(self) -> list[bytes]:
        """Newest first: what a hop tries when answering a handshake."""
        return [key.private for key in self._keys]

    def public_keys(self) -> tuple[bytes, ...]:
        """Newest first: what the descriptor publishes (clients use the first)."""
        return tuple(key.public for key in self._keys)
