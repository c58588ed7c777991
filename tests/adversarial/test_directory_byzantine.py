"""A byzantine authority against two honest ones (2 of 3), sans-IO: the cores of tp_node.authority_core
exchange votes, relays and signatures through a timed message queue that stands for AuthorityRunner (a vote a
core takes as news is relayed at once to the other authorities, arriving RELAY_LATENCY_S later). The third
authority is a fake peer holding the real key of authority C and doing what a faulty or hostile one can:
equivocate (a different signed vote to each peer), send its vote to one peer only or at the last moment,
plant a descriptor at one authority only (with a valid forward proof: it is an authority), withhold
everything, and send garbage votes, relays and signatures. Every period, the two honest authorities must serve
the same document, valid from that period and signed by both. The same attack over real processes is in
test_directory_byzantine_processes.py.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.tp_net.directory_factories import NETWORK, PERIOD_S, T0, network_of, signed_relay, signed_vote
from tp_crypto.errors import RemoteProtocolError
from tp_crypto.identity import Identity
from tp_net.protocol.descriptors import SignedDescriptor
from tp_net.protocol.directory import (
    DirectoryError,
    DocumentBody,
    build_document,
    sign_document,
    verify_document,
)
from tp_node.authority_core import Admission, AuthorityCore, Schedule
from tp_node.directory_service import DirectoryService

AUTHORITIES, TRUST = network_of(3, 2)
A, B, C = AUTHORITIES  # C is the byzantine one
HONEST = (A, B)
RELAY_LATENCY_S = 1.0  # far below the gap between votes closing and signing (450 s at PERIOD_S)
HONEST_RELAYS = 4


@dataclass
class Network:
    """The honest cores and a timed queue of the messages between them (and from the byzantine peer)."""

    cores: dict[bytes, AuthorityCore] = field(default_factory=dict)
    queue: list[tuple[float, int, Callable[[float], None]]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def start(cls) -> Network:
        net = cls()
        for who in HONEST:
            net.cores[who.node_id] = AuthorityCore(who, TRUST, period_s=PERIOD_S, admission=Admission.OPEN)
        return net

    def at(self, when: float, action: Callable[[float], None]) -> None:
        heapq.heappush(self.queue, (when, next(self._order), action))

    def run_until(self, end: float) -> None:
        while self.queue and self.queue[0][0] <= end:
            when, _, action = heapq.heappop(self.queue)
            action(when)

    def vote_to(self, who: Identity, data: bytes, when: float, relayed: object = None) -> None:
        """A vote reaching honest `who` at `when`; what it takes as news it relays to the other honest one."""

        def deliver(now: float) -> None:
            core = self.cores[who.node_id]
            try:
                news = core.add_vote(data, now, relayed)
            except (DirectoryError, RemoteProtocolError) as exc:
                self.refused.append(str(exc))
                return
            if news is not None:
                proof = core.relay_proof(data)
                for other in HONEST:
                    if other is not who and other.node_id != news.authority:
                        self.vote_to(other, data, now + RELAY_LATENCY_S, proof)

        self.at(when, deliver)

    def signature_to(
        self, who: Identity, period: int, body: bytes, signer: bytes, signature: bytes, *, when: float
    ) -> None:
        def deliver(now: float) -> None:
            try:
                self.cores[who.node_id].add_signature(period, body, signer, signature, now)
            except (DirectoryError, RemoteProtocolError) as exc:
                self.refused.append(str(exc))

        self.at(when, deliver)

    def honest_round(self, schedule: Schedule) -> None:
        """What AuthorityRunner does for each honest authority: vote at vote_at, sign at sign_at."""
        for who in HONEST:
            self.at(schedule.vote_at, functools.partial(self._vote, who, schedule.period))
            self.at(schedule.sign_at, functools.partial(self._sign, who, schedule.period))

    def _vote(self, who: Identity, period: int, now: float) -> None:
        data = self.cores[who.node_id].make_vote(period)
        for other in HONEST:
            if other is not who:
                self.vote_to(other, data, now + RELAY_LATENCY_S)

    def _sign(self, who: Identity, period: int, now: float) -> None:
        made = self.cores[who.node_id].make_signature(period)
        if made is None:
            return
        body, signature = made
        for other in HONEST:
            if other is not who:
                self.signature_to(other, period, body, who.node_id, signature, when=now + RELAY_LATENCY_S)


# --- the byzantine authority's moves --------------------------------------------------------------


def planted(period: int) -> SignedDescriptor:
    """A relay the byzantine authority forwards to A only (with its own, valid, forward proof)."""
    return signed_relay(100 + (period // PERIOD_S) % 50, published=period - PERIOD_S)


def honest_relays(period: int) -> list[SignedDescriptor]:
    return [signed_relay(n, published=period - PERIOD_S) for n in range(1, HONEST_RELAYS + 1)]


def plant_at_a(net: Network, period: int, now: float) -> SignedDescriptor:
    signed = planted(period)
    core = net.cores[A.node_id]
    byzantine = AuthorityCore(C, TRUST, period_s=PERIOD_S, admission=Admission.OPEN)
    core.check_forward(signed, byzantine.forward_proof(signed))  # a genuine forward: C is an authority
    core.accept(signed, None, now)
    return signed


def equivocate(net: Network, schedule: Schedule) -> None:
    """A different signed vote to each peer at voting time: with the planted descriptor to A, without to B."""
    signed = plant_at_a(net, schedule.period, schedule.vote_at - 60)
    with_it = signed_vote(C, [*honest_relays(schedule.period), signed], period=schedule.period)
    without = signed_vote(C, honest_relays(schedule.period), period=schedule.period)
    net.vote_to(A, with_it, schedule.vote_at + 1)
    net.vote_to(B, without, schedule.vote_at + 1)


def one_peer_at_the_last_moment(net: Network, schedule: Schedule) -> None:
    """Its vote (carrying the descriptor planted at A) to A only, just before votes close."""
    signed = plant_at_a(net, schedule.period, schedule.vote_at - 60)
    net.vote_to(A, signed_vote(C, [signed], period=schedule.period), schedule.votes_close_at - 0.001)


def one_peer_too_late(net: Network, schedule: Schedule) -> None:
    """Its vote to B only, a moment before B signs (after votes closed): a relay could not reach A in time."""
    signed = plant_at_a(net, schedule.period, schedule.vote_at - 60)
    net.vote_to(B, signed_vote(C, [signed], period=schedule.period), schedule.sign_at - 0.5)


def split_across_the_close(net: Network, schedule: Schedule) -> None:
    """One vote to A just before the close, another to B just after it."""
    signed = plant_at_a(net, schedule.period, schedule.vote_at - 60)
    net.vote_to(A, signed_vote(C, [signed], period=schedule.period), schedule.votes_close_at - 0.001)
    net.vote_to(B, signed_vote(C, [], period=schedule.period), schedule.votes_close_at + 0.001)


def withhold(net: Network, schedule: Schedule) -> None:
    """Nothing at all, while still holding the descriptor planted at A."""
    plant_at_a(net, schedule.period, schedule.vote_at - 60)


def garbage(net: Network, schedule: Schedule) -> None:
    """Bytes that are no vote, a vote with a bad signature, a forged relay of its own vote, a relay of an
    honest vote under its own proof, garbage signatures, and a real signature over a document of its own."""
    period, t = schedule.period, schedule.vote_at + 1
    byzantine = AuthorityCore(C, TRUST, period_s=PERIOD_S, admission=Admission.OPEN)
    own = signed_vote(C, [planted(period)], period=period)
    for who in HONEST:
        net.vote_to(who, os.urandom(200), t)
        net.vote_to(who, own[:-8] + bytes(8), t)
        net.vote_to(who, own, schedule.votes_close_at + 1, byzantine.relay_proof(own))  # its own relay
        net.vote_to(who, own, schedule.votes_close_at + 1, {"authority": A.node_id, "signature": bytes(64)})
    body = build_document(NETWORK, period, PERIOD_S, [], 1).encode()
    other = DocumentBody(NETWORK, period, period + PERIOD_S, period + 2 * PERIOD_S, ()).encode()
    for who in HONEST:
        net.signature_to(who, period, body, C.node_id, bytes(64), when=schedule.sign_at)
        net.signature_to(
            who, period, os.urandom(100), C.node_id, sign_document(C, body), when=schedule.sign_at
        )
        net.signature_to(who, period, other, C.node_id, sign_document(C, other), when=schedule.sign_at)
        net.signature_to(who, period, body, A.node_id, sign_document(C, body), when=schedule.sign_at)


MOVES: dict[str, Callable[[Network, Schedule], None]] = {
    "equivocate": equivocate,
    "one peer at the last moment": one_peer_at_the_last_moment,
    "one peer too late": one_peer_too_late,
    "split across the close": split_across_the_close,
    "withhold": withhold,
    "garbage": garbage,
}


def run_periods(net: Network, moves: list[Callable[[Network, Schedule], None]]) -> list[int]:
    """One period per move, honest descriptors republished before each; the periods decided."""
    t = float(T0 + 60)
    periods = []
    for move in moves:
        schedule = Schedule.next_after(t, PERIOD_S)
        for signed in honest_relays(schedule.period):
            for who in HONEST:
                net.cores[who.node_id].accept(signed, None, schedule.vote_at - 120)
        net.honest_round(schedule)
        move(net, schedule)
        net.run_until(schedule.period)
        assert_one_document(net, schedule.period)
        for core in net.cores.values():
            core.forget_before(schedule.period)
        periods.append(schedule.period)
        t = schedule.period + 1
    return periods


def assert_one_document(net: Network, period: int) -> None:
    served = [net.cores[who.node_id].latest_document(period) for who in HONEST]
    assert served[0] is not None and served[1] is not None, f"no document for period {period}"
    assert served[0].body == served[1].body, "the honest authorities serve different documents"
    directory = verify_document(served[0], TRUST, period)
    assert directory.valid_after == period
    assert {A.node_id, B.node_id} <= directory.signers
    assert {r.node_id for r in directory.relays.values()} >= {
        signed.open(period).node_id for signed in honest_relays(period)
    }


@pytest.mark.parametrize("move", list(MOVES))
def test_the_honest_two_sign_one_document_whatever_the_byzantine_authority_does(move: str) -> None:
    net = Network.start()
    run_periods(net, [MOVES[move]] * 3)
    assert net.refused or move in ("equivocate", "one peer at the last moment", "withhold")


def test_a_byzantine_authority_changing_its_move_every_period_never_stops_the_directory() -> None:
    net = Network.start()
    periods = run_periods(net, list(MOVES.values()) * 2)
    assert periods == [periods[0] + i * PERIOD_S for i in range(len(MOVES) * 2)]  # one document each period


def test_refusals_name_the_reason() -> None:
    net = Network.start()
    run_periods(net, [garbage, split_across_the_close])
    assert any("relay proof" in reason for reason in net.refused)
    assert any("does not verify" in reason for reason in net.refused)
    assert any("after its votes closed" in reason for reason in net.refused)


async def test_the_service_relays_votes_taken_straight_once_and_never_relayed_ones() -> None:
    schedule = Schedule.next_after(T0 + 60, PERIOD_S)
    relays: list[tuple[bytes, bytes]] = []
    service = DirectoryService(
        TRUST,
        authority=AuthorityCore(A, TRUST, period_s=PERIOD_S, admission=Admission.OPEN),
        relay_vote=lambda vote, author: relays.append((vote, author)),
        wall_clock=lambda: schedule.vote_at + 1,
    )

    async def send(request: dict[str, object]) -> None:
        assert [reply async for reply in service.handle(request)] == [{"ok": True}]

    from_c = signed_vote(C, [], period=schedule.period)
    await send({"op": "vote", "vote": from_c})
    assert relays == [(from_c, C.node_id)]  # to every authority but C
    await send({"op": "vote", "vote": from_c})  # the same again: nothing new
    from_b = signed_vote(B, [], period=schedule.period)
    relayer = AuthorityCore(C, TRUST, period_s=PERIOD_S, admission=Admission.OPEN)
    await send({"op": "vote", "vote": from_b, "relayed": relayer.relay_proof(from_b)})
    assert relays == [(from_c, C.node_id)]  # a relayed vote is not relayed again
