"""Token buckets (tp_net.protocol.rate_limits) and the CREATE rate limit of HopCore, on an injected clock."""

from __future__ import annotations

import pytest

from tests.tp_net.circuit_harness import Wire
from tp_net.protocol import rate_limits
from tp_net.protocol.cells import DestroyReason
from tp_net.protocol.circuit_client import CircuitClosed
from tp_net.protocol.rate_limits import CreateLimiter, TokenBucket


def test_a_bucket_starts_full_and_empties() -> None:
    bucket = TokenBucket(10.0, 3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(10.0, 3)
    for _ in range(3):
        bucket.take(0.0)
    assert bucket.tokens(0.05) == pytest.approx(0.5)
    assert not bucket.take(0.05)
    assert bucket.take(0.1)
    assert bucket.tokens(100.0) == 3.0  # never more than the burst


def test_time_going_backwards_adds_nothing() -> None:
    bucket = TokenBucket(10.0, 2)
    bucket.take(5.0)
    bucket.take(5.0)
    assert not bucket.take(4.0)
    assert bucket.tokens(5.0) == 0.0


def test_a_failed_take_takes_nothing() -> None:
    bucket = TokenBucket(1.0, 2)
    assert not bucket.take(0.0, cost=3.0)
    assert bucket.tokens(0.0) == 2.0


@pytest.mark.parametrize(("rate", "burst", "named"), [(0.0, 1, "rate_per_s"), (1.0, 0, "burst")])
def test_bad_parameters_are_named(rate: float, burst: int, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        TokenBucket(rate, burst)


def _burst(limiter: CreateLimiter, link: int, now: float = 0.0) -> int:
    """CREATEs taken on `link` at `now` until refused."""
    taken = 0
    while limiter.take(link, now):
        taken += 1
    return taken


LISTED = b"r" * 32
FRESH = b"f" * 32


def test_listed_peers_take_no_token_and_everyone_else_is_a_client() -> None:
    limiter = CreateLimiter(lambda node_id: node_id == LISTED)
    limiter.link_up(1, LISTED, "10.0.0.1")
    limiter.link_up(2, FRESH, "10.0.0.2")  # a node id minted for this link proves nothing
    limiter.link_up(3, None, "10.0.0.3")
    listed_creates = 10 * rate_limits.CLIENT_CREATE_BURST
    assert all(limiter.take(1, 0.0) for _ in range(listed_creates))  # its clients met their entries' limits
    assert _burst(limiter, 2) == rate_limits.CLIENT_CREATE_BURST
    assert _burst(limiter, 3) == rate_limits.CLIENT_CREATE_BURST


def test_without_a_directory_every_proven_node_id_is_a_peer() -> None:
    limiter = CreateLimiter()
    limiter.link_up(1, FRESH, None)
    limiter.link_up(2, None, None)
    assert all(limiter.take(1, 0.0) for _ in range(2 * rate_limits.CLIENT_CREATE_BURST))
    assert _burst(limiter, 2) == rate_limits.CLIENT_CREATE_BURST


def test_a_client_is_its_address_however_many_links_it_opens() -> None:
    limiter = CreateLimiter(lambda node_id: node_id == LISTED)
    for link in range(4):
        limiter.link_up(link, FRESH if link % 2 else None, "10.0.0.1")
    assert _burst(limiter, 0) == rate_limits.CLIENT_CREATE_BURST  # one link may use its client's budget
    assert sum(_burst(limiter, link) for link in range(4)) == 0  # and the others share what is left
    limiter.link_up(100, None, "10.0.0.2")  # another address has its own
    limiter.link_up(101, LISTED, "10.0.0.1")  # a listed relay on that address is not a client
    assert _burst(limiter, 100) == rate_limits.CLIENT_CREATE_BURST
    assert limiter.take(101, 0.0)
    # The shared bucket refills at its own rate.
    assert limiter.take(3, 1.0 / rate_limits.CLIENT_CREATE_RATE_PER_S)


def test_links_without_an_address_are_clients_of_their_own() -> None:
    limiter = CreateLimiter()
    limiter.link_up(1, None, None)
    limiter.link_up(2, None, None)
    assert _burst(limiter, 1) == rate_limits.CLIENT_CREATE_BURST
    assert _burst(limiter, 2) == rate_limits.CLIENT_CREATE_BURST


def test_reconnecting_does_not_refill_an_address_bucket() -> None:
    limiter = CreateLimiter()
    taken = 0
    for link in range(3):
        limiter.link_up(link, None, "10.0.0.1")
        taken += _burst(limiter, link)
        limiter.link_down(link)
    assert taken == rate_limits.CLIENT_CREATE_BURST
    limiter.link_down(0)  # unknown links are ignored
    assert not limiter.take(0, 0.0)


def test_idle_address_buckets_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rate_limits, "ADDRESS_BUCKETS_IDLE_MAX", 2)
    limiter = CreateLimiter()
    for link, address in enumerate(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.1"]):
        limiter.link_up(link, None, address)
        limiter.link_down(link)
    assert limiter.addresses() == 2


def test_a_peer_listed_later_is_exempt_from_then_on() -> None:
    listed: set[bytes] = set()
    limiter = CreateLimiter(listed.__contains__)
    limiter.link_up(1, FRESH, "10.0.0.1")
    assert _burst(limiter, 1) == rate_limits.CLIENT_CREATE_BURST
    listed.add(FRESH)
    assert limiter.take(1, 0.0)
    listed.clear()
    assert not limiter.take(1, 0.0)  # a client again, of its address's (empty) bucket


def test_creates_beyond_a_clients_burst_are_refused_until_tokens_return() -> None:
    wire = Wire(90)
    wire.add_hop("r0")
    link = wire.client_link("r0")
    burst = rate_limits.CLIENT_CREATE_BURST
    handles = [wire.open_circuit(["r0"], link=link) for _ in range(burst + 2)]
    assert [h.built for h in handles] == [True] * burst + [False, False]
    assert handles[-1].closed == [CircuitClosed(DestroyReason.RESOURCE_LIMIT)]
    wire.now += 1.0 / rate_limits.CLIENT_CREATE_RATE_PER_S
    assert wire.open_circuit(["r0"], link=link).built
    assert not wire.open_circuit(["r0"], link=link).built


def test_each_client_has_its_own_bucket() -> None:
    wire = Wire(91)
    wire.add_hop("r0")
    flooder = wire.client_link("r0")
    for _ in range(rate_limits.CLIENT_CREATE_BURST):
        wire.open_circuit(["r0"], link=flooder)
    assert not wire.open_circuit(["r0"], link=flooder).built
    assert wire.open_circuit(["r0"]).built  # another client, another link


def test_a_relay_link_carries_more_creates_than_a_client_may_send() -> None:
    wire = Wire(92)
    wire.add_hop("r0")
    wire.add_hop("r1")
    wire.connect("r0", "r1")
    count = rate_limits.CLIENT_CREATE_BURST + 8
    handles = [wire.open_circuit(["r0", "r1"]) for _ in range(count)]  # one client link each
    assert all(handle.built for handle in handles)
