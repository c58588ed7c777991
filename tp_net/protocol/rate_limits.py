"""Token-bucket rate limits, sans-IO: the caller passes the time (docs/PROTOCOL.md 5.6).

A relay answers each CREATE with a Noise NK handshake (two X25519 operations), so one client sending CREATEs
as fast as it can would spend a relay's CPU on circuits it never uses. Each client has a bucket: a CREATE
takes one token, tokens come back at a steady rate up to a burst, and a CREATE that finds the bucket empty is
answered with DESTROY(RESOURCE_LIMIT) before any crypto runs.

Per-client limits are applied where the client is visible: at its entry, the relay its own link reaches. A
client is its source address (all its links share one bucket, which outlives them, so more links or
reconnecting do not multiply it); a link without a known address (in-memory transports) is a client of its
own. A link from a relay or GPU node listed in the hop's current directory carries the circuits of every
client behind that peer, each already limited at its entry: it has no CREATE bucket, as Tor exempts relays
from its circuit-creation limits. A shared bucket there would let one client's burst, spread over entries
it is allowed, deny every other client of that path (a node's home relay link carries all of the node's
circuits). A node id alone proves nothing (anyone can generate one per link): only listed peers are exempt.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# CREATEs per second (steady) and in one burst, from one client: all the links of one source address
# together, or one link whose address is unknown.
CLIENT_CREATE_RATE_PER_S = 200.0
CLIENT_CREATE_BURST = 512
# Address buckets kept after an address's last link closed (so that reconnecting does not refill it); the
# oldest is forgotten first. One bucket refills in CLIENT_CREATE_BURST / CLIENT_CREATE_RATE_PER_S seconds.
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


@dataclass(frozen=True)
class _LinkPeer:
    peer_id: bytes | None
    address: str | None  # the peer's source address (None: unknown, e.g. in-memory transports)
    own: TokenBucket | None  # the link's own bucket, when it has no address


def _client_bucket() -> TokenBucket:
    return TokenBucket(CLIENT_CREATE_RATE_PER_S, CLIENT_CREATE_BURST)


class CreateLimiter:
    """The CREATE buckets of one hop: one per client source address, shared by its links (and one per link
    whose address is unknown); links from listed peers take none.

    Whether a link's peer is listed is looked up at each CREATE, so a relay the directory lists only after
    its link came up is exempt from then on, and one dropped from the directory is a client again (of its
    address's bucket). `is_listed=None` means the hop has no directory to consult (in-memory tests, the
    simulator, a GPU node, whose only links are those it dials to its home relays): every peer that proved a
    node id is then listed.
    """

    def __init__(self, is_listed: IsListed | None = None) -> None:
        self._is_listed = is_listed
        self._links: dict[int, _LinkPeer] = {}
        self._addresses: dict[str, TokenBucket] = {}
        self._links_from: dict[str, int] = {}
        self._idle_addresses: OrderedDict[str, None] = OrderedDict()  # no link up, oldest first

    def listed(self, peer_id: bytes | None) -> bool:
        """Whether `peer_id` is a listed peer (its links carry other clients' CREATEs: no bucket)."""
        if peer_id is None:
            return False
        return self._is_listed is None or self._is_listed(peer_id)

    def link_up(self, link: int, peer_id: bytes | None, peer_host: str | None) -> None:
        self._links[link] = _LinkPeer(peer_id, peer_host, _client_bucket() if peer_host is None else None)
        if peer_host is not None:
            if peer_host not in self._addresses:
                self._addresses[peer_host] = _client_bucket()
            self._idle_addresses.pop(peer_host, None)
            self._links_from[peer_host] = self._links_from.get(peer_host, 0) + 1

    def link_down(self, link: int) -> None:
        peer = self._links.pop(link, None)
        if peer is None or peer.address is None:
            return
        remaining = self._links_from[peer.address] - 1
        if remaining:
            self._links_from[peer.address] = remaining
            return
        del self._links_from[peer.address]
        self._idle_addresses[peer.address] = None
        if len(self._idle_addresses) > ADDRESS_BUCKETS_IDLE_MAX:
            oldest, _ = self._idle_addresses.popitem(last=False)
            del self._addresses[oldest]

    def take(self, link: int, now: float) -> bool:
        """Take a token for one CREATE on `link` from its client's bucket (none for a listed peer); False
        (nothing taken) when it is empty or the link is unknown."""
        peer = self._links.get(link)
        if peer is None:
            return False
        if self.listed(peer.peer_id):
            return True
        if peer.address is not None:
            return self._addresses[peer.address].take(now)
        assert peer.own is not None
        return peer.own.take(now)

    def addresses(self) -> int:
        """Source addresses with a bucket (with a link up, or among the idle ones kept)."""
        return len(self._addresses)
