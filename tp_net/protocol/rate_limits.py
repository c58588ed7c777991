"""Token-bucket rate limits, sans-IO: the caller passes the time (docs/PROTOCOL.md 5.6).

A relay answers each CREATE with a Noise NK handshake (two X25519 operations), so one peer sending CREATEs as
fast as it can would spend a relay's CPU on circuits it never uses. Each link has a bucket: a CREATE takes
one token, tokens come back at a steady rate up to a burst, and a CREATE that finds the bucket empty is
answered with DESTROY(RESOURCE_LIMIT) before any crypto runs.

The tier of a link is keyed by what a peer cannot mint for free. A peer listed in the hop's current directory
(a relay, whose link carries the CREATEs of every client behind it, or a GPU node) gets the peer tier; every
other peer, anonymous or proving a node id nobody listed, is a client. A node id alone proves nothing: anyone
can generate one per link. Client links also share one bucket per source address, so opening more links from
one address does not multiply the client tier.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# CREATEs per second (steady) and in one burst, on a link from a client (a peer the directory does not list).
CLIENT_CREATE_RATE_PER_S = 20.0
CLIENT_CREATE_BURST = 64
# The same on a link from a relay or GPU node listed in the hop's current directory.
PEER_CREATE_RATE_PER_S = 200.0
PEER_CREATE_BURST = 512
# All client links from one source address together (a CREATE takes a token from its link and its address).
ADDRESS_CREATE_RATE_PER_S = 200.0
ADDRESS_CREATE_BURST = 512
# Address buckets kept after an address's last link closed (so that reconnecting does not refill it); the
# oldest is forgotten first. One bucket refills in ADDRESS_CREATE_BURST / ADDRESS_CREATE_RATE_PER_S seconds.
ADDRESS_BUCKETS_IDLE_MAX = 4096

# Whether a proven node id is listed in the hop's current directory (a relay or GPU node it knows).
IsListed = Callable[[bytes], bool]


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


@dataclass(eq=False)
class _LinkBuckets:
    peer_id: bytes | None
    address: str | None  # the peer's source address (None: unknown, e.g. in-memory transports)
    listed: bool  # the tier `own` belongs to
    own: TokenBucket


def _bucket(listed: bool) -> TokenBucket:
    if listed:
        return TokenBucket(PEER_CREATE_RATE_PER_S, PEER_CREATE_BURST)
    return TokenBucket(CLIENT_CREATE_RATE_PER_S, CLIENT_CREATE_BURST)


class CreateLimiter:
    """The CREATE buckets of one hop: one per link (client or peer tier) and one per source address, shared
    by that address's links while they are in the client tier.

    The tier is looked up at each CREATE, so a relay the directory lists only after its link came up moves to
    the peer tier then (with a fresh bucket), and one dropped from the directory moves back. `is_listed=None`
    means the hop has no directory to consult (in-memory tests, the simulator): every peer that proved a node
    id gets the peer tier. A link without a source address has only its own bucket.
    """

    def __init__(self, is_listed: IsListed | None = None) -> None:
        self._is_listed = is_listed
        self._links: dict[int, _LinkBuckets] = {}
        self._addresses: dict[str, TokenBucket] = {}
        self._links_from: dict[str, int] = {}
        self._idle_addresses: OrderedDict[str, None] = OrderedDict()  # no link up, oldest first

    def listed(self, peer_id: bytes | None) -> bool:
        """Whether `peer_id` gets the peer tier."""
        if peer_id is None:
            return False
        return self._is_listed is None or self._is_listed(peer_id)

    def link_up(self, link: int, peer_id: bytes | None, peer_host: str | None) -> None:
        listed = self.listed(peer_id)
        self._links[link] = _LinkBuckets(peer_id, peer_host, listed, _bucket(listed))
        if peer_host is not None:
            if peer_host not in self._addresses:
                self._addresses[peer_host] = TokenBucket(ADDRESS_CREATE_RATE_PER_S, ADDRESS_CREATE_BURST)
            self._idle_addresses.pop(peer_host, None)
            self._links_from[peer_host] = self._links_from.get(peer_host, 0) + 1

    def link_down(self, link: int) -> None:
        buckets = self._links.pop(link, None)
        if buckets is None or buckets.address is None:
            return
        remaining = self._links_from[buckets.address] - 1
        if remaining:
            self._links_from[buckets.address] = remaining
            return
        del self._links_from[buckets.address]
        self._idle_addresses[buckets.address] = None
        if len(self._idle_addresses) > ADDRESS_BUCKETS_IDLE_MAX:
            oldest, _ = self._idle_addresses.popitem(last=False)
            del self._addresses[oldest]

    def take(self, link: int, now: float) -> bool:
        """Take a token for one CREATE on `link` from its own bucket and, in the client tier, its address's;
        False (nothing taken) when one of them is empty."""
        buckets = self._links.get(link)
        if buckets is None:
            return False
        listed = self.listed(buckets.peer_id)
        if listed != buckets.listed:
            buckets.listed, buckets.own = listed, _bucket(listed)
        shared = None if listed or buckets.address is None else self._addresses[buckets.address]
        if buckets.own.tokens(now) < 1 or (shared is not None and shared.tokens(now) < 1):
            return False
        buckets.own.take(now)
        if shared is not None:
            shared.take(now)
        return True

    def addresses(self) -> int:
        """Source addresses with a shared bucket (with a link up, or among the idle ones kept)."""
        return len(self._addresses)
