"""Token-bucket rate limits, sans-IO: the caller passes the time (docs/PROTOCOL.md 5.6).

A relay answers each CREATE with a Noise NK handshake (two X25519 operations), so one peer sending CREATEs as
fast as it can would spend a relay's CPU on circuits it never uses. Each link has a bucket: a CREATE takes
one token, tokens come back at a steady rate up to a burst, and a CREATE that finds the bucket empty is
answered with DESTROY(RESOURCE_LIMIT) before any crypto runs.

Anonymous peers are clients (gateways): each builds a few circuits at a time. A peer that proved a node id is
a relay (whose link carries the CREATEs of every client behind it) or a GPU node, so its bucket is larger.
"""

from __future__ import annotations

# CREATEs per second (steady) and in one burst, on a link from an anonymous client.
CLIENT_CREATE_RATE_PER_S = 20.0
CLIENT_CREATE_BURST = 64
# The same on a link from a peer that proved its node id (a relay or a GPU node).
PEER_CREATE_RATE_PER_S = 200.0
PEER_CREATE_BURST = 512


class TokenBucket:
    """`burst` tokens at most, refilled at `rate_per_s`; starts full."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be positive, not {rate_per_s}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._updated: float | None = None

    def tokens(self, now: float) -> float:
        """Tokens available at `now` (time is monotonic: an earlier `now` than before adds nothing)."""
        if self._updated is not None and now > self._updated:
            self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate_per_s)
        if self._updated is None or now > self._updated:
            self._updated = now
        return self._tokens

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens if there are that many at `now`; False (and nothing taken) otherwise."""
        if self.tokens(now) < cost:
            return False
        self._tokens -= cost
        return True


def create_bucket(*, anonymous_peer: bool) -> TokenBucket:
    """The CREATE bucket of a new link."""
    if anonymous_peer:
        return TokenBucket(CLIENT_CREATE_RATE_PER_S, CLIENT_CREATE_BURST)
    return TokenBucket(PEER_CREATE_RATE_PER_S, PEER_CREATE_BURST)
