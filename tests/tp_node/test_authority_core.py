"""The authority core, sans-IO: admission, votes, signatures, the served document, and a plain-Python
simulation of three authorities (2 of 3) that exchange votes and signatures by direct calls."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from tests.tp_net.directory_factories import (
    NETWORK,
    PERIOD_S,
    T0,
    identity,
    network_of,
    signed_node,
    signed_relay,
    signed_vote,
)
from tp_crypto.identity import Identity
from tp_net.protocol.descriptors import CLOCK_SKEW_ALLOWED_S, SignedDescriptor, decode_descriptor
from tp_net.protocol.directory import (
    DOCUMENT_VALID_PERIODS,
    DirectoryError,
    DocumentBody,
    SignedDocument,
    Trust,
    decode_body,
    make_invitation,
    open_vote,
    sign_document,
    verify_document,
)
from tp_node import authority_core
from tp_node.authority_core import Admission, AuthorityCore, Schedule

AUTHORITIES, TRUST = network_of(3, 2)
A, B, C = AUTHORITIES
P1 = T0 + PERIOD_S  # the first period the tests decide
NOW = T0 + 60  # a minute into the period before P1: descriptors published before it are fresh


def core(who: Identity = A, admission: Admission = Admission.OPEN, trust: Trust = TRUST) -> AuthorityCore:
    return AuthorityCore(who, trust, period_s=PERIOD_S, admission=admission)


def node_id(signed: SignedDescriptor) -> bytes:
    return decode_descriptor(signed.body).node_id


def voted(authority: AuthorityCore, period: int = P1) -> tuple[SignedDescriptor, ...]:
    return open_vote(authority.make_vote(period), TRUST).descriptors


# --- Schedule -------------------------------------------------------------------------------------


def test_schedule_examples() -> None:
    assert Schedule.next_after(T0, PERIOD_S) == Schedule(P1, P1 - 1800, P1 - 900)
    assert Schedule.of_period(P1, PERIOD_S).votes_close_at == P1 - 1350
    assert Schedule.next_after(P1 - 1800 - 0.5, PERIOD_S).period == P1
    assert Schedule.next_after(P1 - 1800, PERIOD_S).period == P1 + PERIOD_S  # vote time reached: next one
    assert Schedule.next_after(P1 - 1, PERIOD_S).period == P1 + PERIOD_S


def test_schedule_vote_is_always_the_next_one_ahead() -> None:
    rng = random.Random(5)
    for period_s in (2, 3, 300, 3600):
        for _ in range(500):
            now = T0 + rng.uniform(-3 * period_s, 3 * period_s)
            schedule = Schedule.next_after(now, period_s)
            assert schedule.period % period_s == 0
            assert now < schedule.vote_at <= now + period_s
            assert schedule.vote_at == schedule.period - period_s / 2
            assert schedule.vote_at < schedule.sign_at == schedule.period - period_s / 4 < schedule.period


# --- accepting descriptors ------------------------------------------------------------------------


def test_only_an_authority_of_the_network_runs_a_core() -> None:
    with pytest.raises(ValueError, match="not one of the network's authorities"):
        core(identity(99))


def test_open_admission_accepts_valid_descriptors_once() -> None:
    authority = core()
    relay = signed_relay(1)
    assert authority.accept(relay, None, NOW) == relay.open(NOW)
    assert authority.accept(relay, None, NOW) is None  # known: nothing to forward
    assert authority.accept(signed_node(1), None, NOW) is not None
    assert authority.accepted_count == 2


def test_invalid_descriptors_are_refused_with_the_reason() -> None:
    authority = core()
    good = signed_relay(1)
    forged = SignedDescriptor(good.body, bytes(64))
    with pytest.raises(DirectoryError, match="descriptor refused: bad descriptor signature"):
        authority.accept(forged, None, NOW)
    expired = signed_relay(2, published=NOW - 3600, lifetime_s=3600)
    with pytest.raises(DirectoryError, match="descriptor refused: descriptor has expired"):
        authority.accept(expired, None, NOW)
    with pytest.raises(DirectoryError, match="descriptor refused: malformed"):
        authority.accept(SignedDescriptor(b"\xc1", bytes(64)), None, NOW)
    assert authority.accepted_count == 0


def test_stale_descriptor_is_ignored_and_newer_replaces() -> None:
    authority = core()
    old, new = signed_relay(1, published=NOW - 600), signed_relay(1, published=NOW - 60)
    assert authority.accept(new, None, NOW) is not None
    assert authority.accept(old, None, NOW) is None
    assert voted(authority) == (new,)
    newest = signed_relay(1, published=NOW)
    assert authority.accept(newest, None, NOW) == newest.open(NOW)
    assert voted(authority) == (newest,)
    assert authority.accepted_count == 1


def test_invite_admission_refuses_uninvited_nodes() -> None:
    authority = core(admission=Admission.INVITE)
    relay = signed_relay(1)
    with pytest.raises(DirectoryError, match="admits invited nodes only"):
        authority.accept(relay, None, NOW)
    someone_else = make_invitation(B, identity(12345).node_id, NETWORK, T0 + 86400)
    with pytest.raises(DirectoryError, match="another node"):
        authority.accept(relay, someone_else, NOW)
    by_outsider = make_invitation(identity(99), node_id(relay), NETWORK, T0 + 86400)
    with pytest.raises(DirectoryError, match="not signed by a trusted authority"):
        authority.accept(relay, by_outsider, NOW)
    expired = make_invitation(B, node_id(relay), NETWORK, int(NOW) - 1)
    with pytest.raises(DirectoryError, match="expired"):
        authority.accept(relay, expired, NOW)
    assert authority.accepted_count == 0


def test_invite_admission_accepts_invited_nodes() -> None:
    authority = core(admission=Admission.INVITE)
    relay = signed_relay(1)
    # Any of the network's authorities may invite, not only this one.
    invitation = make_invitation(B, node_id(relay), NETWORK, T0 + 86400)
    assert authority.accept(relay, invitation, NOW) == relay.open(NOW)
    assert voted(authority) == (relay,)


def test_only_another_authority_can_prove_a_forward() -> None:
    """A forward is not forwarded again, so a forged one would place a descriptor at one authority only."""
    relay, other = signed_relay(1), signed_relay(2)
    proof = core(B).forward_proof(relay)
    core(A).check_forward(relay, proof)
    core(C).check_forward(relay, proof)
    stranger = identity(99)  # an authority of its own network of the same name, not of this one
    outsider = core(stranger, trust=Trust(NETWORK, frozenset({stranger.node_id}), 1))
    forged = [
        True,
        {},
        {"authority": B.node_id},
        {"authority": B.node_id, "signature": b"\0" * 64},
        {
            "authority": B.node_id,
            "signature": core(B).forward_proof(other)["signature"],
        },  # another descriptor
        {**outsider.forward_proof(relay)},  # signed, but not by one of this network's authorities
        {**outsider.forward_proof(relay), "authority": B.node_id},
        core(A).forward_proof(relay),  # "from" the receiving authority itself
        {"authority": B.node_id, "signature": "text"},
    ]
    for bad in forged:
        with pytest.raises(DirectoryError, match="from the other authorities only"):
            core(A).check_forward(relay, bad)


def test_full_authority_refuses_new_nodes_but_takes_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(authority_core, "ACCEPTED_DESCRIPTORS_MAX", 2)
    authority = core()
    authority.accept(signed_relay(1, published=NOW - 60), None, NOW)
    authority.accept(signed_relay(2), None, NOW)
    with pytest.raises(DirectoryError, match="the authority is full"):
        authority.accept(signed_relay(3), None, NOW)
    assert authority.accept(signed_relay(1, published=NOW), None, NOW) is not None


# --- votes ----------------------------------------------------------------------------------------


def test_vote_lists_descriptors_valid_at_the_period_start_sorted_by_node_id() -> None:
    authority = core()
    short_lived = signed_relay(1, published=NOW - 60, lifetime_s=P1 - (NOW - 60))  # expires exactly at P1
    lasting = [signed_relay(n, published=NOW) for n in (2, 3, 4)] + [signed_node(1, published=NOW)]
    for signed in [short_lived, *lasting]:
        authority.accept(signed, None, NOW)
    vote = open_vote(authority.make_vote(P1), TRUST)
    assert (vote.network, vote.period, vote.authority) == (NETWORK, P1, A.node_id)
    assert set(vote.descriptors) == set(lasting)
    ids = [node_id(d) for d in vote.descriptors]
    assert ids == sorted(ids)
    assert authority.votes_for(P1) == 1  # our own vote counts


def test_votes_from_peers_are_stored_once_per_authority() -> None:
    authority = core()
    vote = signed_vote(B, [signed_relay(1)], period=P1)
    assert authority.add_vote(vote, NOW) is not None  # news: to be relayed
    assert authority.add_vote(vote, NOW) is None  # the same again: nothing new
    assert authority.votes_for(P1) == 1
    authority.add_vote(signed_vote(C, [], period=P1), NOW)
    assert authority.votes_for(P1) == 2
    assert authority.votes_for(P1 + PERIOD_S) == 0


def test_an_authority_with_two_different_votes_is_left_out_of_the_period() -> None:
    authority = core()
    authority.add_vote(signed_vote(B, [signed_relay(1)], period=P1), NOW)
    # B votes again, differently: equivocation. The second vote is news (relayed so every peer sees both).
    assert authority.add_vote(signed_vote(B, [signed_relay(2)], period=P1), NOW) is not None
    assert authority.votes_for(P1) == 0
    assert authority.add_vote(signed_vote(B, [signed_relay(1)], period=P1), NOW) is None
    assert authority.votes_for(P1) == 0


def test_votes_sent_straight_close_before_signing_but_relayed_ones_do_not() -> None:
    schedule = Schedule.of_period(P1, PERIOD_S)
    assert schedule.vote_at < schedule.votes_close_at < schedule.sign_at
    late = schedule.votes_close_at + 1
    authority = core()
    vote = signed_vote(C, [signed_relay(1)], period=P1)
    with pytest.raises(DirectoryError, match="after its votes closed"):
        authority.add_vote(vote, late)
    # Relayed: only with another authority's relay proof, by neither the author nor us.
    for forged in (True, core(C).relay_proof(vote), core(A).relay_proof(vote)):
        with pytest.raises(DirectoryError, match="relay proof"):
            authority.add_vote(vote, late, forged)
    bad = core(B).relay_proof(vote) | {"signature": bytes(64)}
    with pytest.raises(DirectoryError, match="relay proof"):
        authority.add_vote(vote, late, bad)
    assert authority.add_vote(vote, late, core(B).relay_proof(vote)) is None  # taken, not relayed again
    assert authority.votes_for(P1) == 1


@pytest.mark.parametrize(
    "period",
    [
        P1 + 2 * PERIOD_S,  # too far ahead of NOW (more than two periods)
        T0 - 2 * PERIOD_S,  # long decided
        P1 + 1,  # not a period boundary
        0,
        -PERIOD_S,
    ],
)
def test_votes_and_signatures_for_periods_far_from_now_are_refused(period: int) -> None:
    authority = core()
    with pytest.raises(DirectoryError, match="not being decided"):
        authority.add_vote(signed_vote(B, [], period=period), NOW)
    body = DocumentBody(NETWORK, period, period + PERIOD_S, period + 3 * PERIOD_S, ()).encode()
    with pytest.raises(DirectoryError, match="not being decided"):
        authority.add_signature(period, body, B.node_id, sign_document(B, body), NOW)
    assert authority.votes_for(period) == 0


def test_periods_near_now_are_open() -> None:
    authority = core()
    for period in (T0, P1, P1 + PERIOD_S):
        vote = signed_vote(B, [], period=period)
        authority.add_vote(vote, NOW, core(C).relay_proof(vote))  # T0's straight votes closed long ago
        assert authority.votes_for(period) == 1


def test_bad_votes_are_refused() -> None:
    authority = core()
    with pytest.raises(DirectoryError, match="do not trust"):
        authority.add_vote(signed_vote(identity(99), [], period=P1), NOW)
    with pytest.raises(DirectoryError, match="network"):
        authority.add_vote(signed_vote(B, [], period=P1, network="othernet"), NOW)
    assert authority.votes_for(P1) == 0


# --- signatures and the served document -----------------------------------------------------------


def empty_body(period: int, network: str = NETWORK) -> bytes:
    return DocumentBody(network, period, period + PERIOD_S, period + 3 * PERIOD_S, ()).encode()


def test_no_signature_without_threshold_votes() -> None:
    authority = core()
    authority.make_vote(P1)
    assert authority.make_signature(P1) is None
    assert authority.latest_document() is None


def test_signature_is_over_the_built_document() -> None:
    authority = core()
    relay = signed_relay(1)
    authority.accept(relay, None, NOW)
    authority.make_vote(P1)
    authority.add_vote(signed_vote(B, [relay], period=P1), NOW)
    made = authority.make_signature(P1)
    assert made is not None
    body, signature = made
    assert decode_body(body).descriptors == (relay,)
    assert signature == sign_document(A, body)
    assert authority.latest_document() is None  # one signature of two
    authority.add_signature(P1, body, B.node_id, sign_document(B, body), NOW)
    latest = authority.latest_document()
    assert latest is not None
    assert verify_document(latest, TRUST, P1).signers == {A.node_id, B.node_id}


def test_bad_signatures_are_refused() -> None:
    authority = core()
    body = empty_body(P1)
    with pytest.raises(DirectoryError, match="do not trust"):
        authority.add_signature(P1, body, identity(99).node_id, sign_document(identity(99), body), NOW)
    with pytest.raises(DirectoryError, match="does not verify"):
        authority.add_signature(P1, body, B.node_id, sign_document(C, body), NOW)
    with pytest.raises(DirectoryError, match="does not verify"):
        authority.add_signature(P1, body, B.node_id, sign_document(B, body + b"\x00"), NOW)


def test_a_signed_document_of_another_period_or_network_is_refused() -> None:
    # A replayed signature of an older document must not become this period's document.
    authority = core()
    for body in (empty_body(T0), empty_body(P1, network="othernet")):
        for signer in (B, C):
            with pytest.raises(DirectoryError, match="is not 'testnet' period"):
                authority.add_signature(P1, body, signer.node_id, sign_document(signer, body), NOW)
    garbage = b"\xc1 not a document"
    with pytest.raises(DirectoryError, match="malformed"):
        authority.add_signature(P1, garbage, B.node_id, sign_document(B, garbage), NOW)
    assert authority.latest_document() is None


def sign_by(authority: AuthorityCore, period: int, *signers: Identity, body: bytes | None = None) -> bytes:
    body = body if body is not None else empty_body(period)
    for signer in signers:
        authority.add_signature(period, body, signer.node_id, sign_document(signer, body), NOW)
    return body


def test_latest_document_is_the_newest_period_with_enough_signatures() -> None:
    authority = core()
    older = sign_by(authority, T0, B, C)
    latest = authority.latest_document()
    assert latest is not None and latest.body == older
    newer = sign_by(authority, P1, B)  # only one signature yet: the older document is still served
    latest = authority.latest_document()
    assert latest is not None and latest.body == older
    sign_by(authority, P1, C, body=newer)
    latest = authority.latest_document()
    assert latest is not None and latest.body == newer
    assert latest.signatures == tuple(sorted((s.node_id, sign_document(s, newer)) for s in (B, C)))


def test_latest_document_prefers_the_body_with_most_signatures() -> None:
    authority = core()
    relay = signed_relay(1)
    contested = DocumentBody(NETWORK, P1, P1 + PERIOD_S, P1 + 3 * PERIOD_S, (relay,)).encode()
    sign_by(authority, P1, B, C)
    sign_by(authority, P1, A, B, C, body=contested)
    latest = authority.latest_document()
    assert latest is not None and latest.body == contested and len(latest.signatures) == 3


def test_latest_document_at_now_skips_documents_clients_would_refuse() -> None:
    authority = core()
    current, upcoming = sign_by(authority, T0, B, C), sign_by(authority, P1, B, C)
    assert authority.latest_document() == SignedDocument(
        upcoming, tuple(sorted((s.node_id, sign_document(s, upcoming)) for s in (B, C)))
    )
    # Signed a quarter period ahead, the next document is not valid for clients until just before P1.
    early = P1 - PERIOD_S / 4
    at_early = authority.latest_document(early)
    assert at_early is not None and at_early.body == current
    verify_document(at_early, TRUST, early)
    for now in (P1 - CLOCK_SKEW_ALLOWED_S, P1 + PERIOD_S):
        at_now = authority.latest_document(now)
        assert at_now is not None and at_now.body == upcoming
        verify_document(at_now, TRUST, now)
    assert authority.latest_document(P1 + DOCUMENT_VALID_PERIODS * PERIOD_S + 1) is None  # all expired


def test_forget_before_drops_expired_state() -> None:
    authority = core()
    short = signed_relay(1, published=NOW, lifetime_s=600)
    long = signed_relay(2, published=NOW)
    authority.accept(short, None, NOW)
    authority.accept(long, None, NOW)
    authority.add_vote(signed_vote(B, [], period=T0), T0 - PERIOD_S / 2)
    sign_by(authority, T0, B, C)
    authority.forget_before(NOW + 600)
    assert authority.accepted_count == 1
    assert voted(authority) == (long,)
    assert authority.votes_for(T0) == 1 and authority.latest_document() is not None  # still current
    later = T0 + DOCUMENT_VALID_PERIODS * PERIOD_S
    authority.forget_before(later)
    assert authority.votes_for(T0) == 1  # kept while a document of T0 could be valid
    authority.forget_before(later + 1)
    assert authority.votes_for(T0) == 0
    assert authority.latest_document() is None
    assert authority.accepted_count == 1
    authority.forget_before(long.open(NOW).expires)
    assert authority.accepted_count == 0


# --- three authorities, 2 of 3 --------------------------------------------------------------------


@dataclass
class Simulation:
    """Three authority cores with slightly different clocks, wired by direct calls."""

    cores: dict[bytes, AuthorityCore] = field(default_factory=dict)
    clock_offset_s: dict[bytes, float] = field(default_factory=dict)
    refusals: list[str] = field(default_factory=list)

    @classmethod
    def start(
        cls, admission: Admission = Admission.OPEN, offsets: tuple[float, ...] = (0.0, 20.0, -30.0)
    ) -> Simulation:
        sim = cls()
        for who, offset in zip(AUTHORITIES, offsets, strict=True):
            sim.cores[who.node_id] = core(who, admission)
            sim.clock_offset_s[who.node_id] = offset
        return sim

    def now(self, authority: bytes, t: float) -> float:
        return t + self.clock_offset_s[authority]

    def publish(
        self,
        signed: SignedDescriptor,
        t: float,
        via: Identity,
        alive: list[Identity],
        invitation: bytes | None = None,
    ) -> None:
        """Publish to one authority, which forwards what it accepts to the others alive."""
        first = self.cores[via.node_id]
        if first.accept(signed, invitation, self.now(via.node_id, t)) is None:
            return
        for peer in alive:
            if peer is not via:
                self.cores[peer.node_id].accept(signed, invitation, self.now(peer.node_id, t))

    def run_period(self, schedule: Schedule, alive: list[Identity]) -> None:
        votes = {a.node_id: self.cores[a.node_id].make_vote(schedule.period) for a in alive}
        for receiver in alive:
            for sender, vote in votes.items():
                if sender != receiver.node_id:
                    now = self.now(receiver.node_id, schedule.vote_at)
                    self.cores[receiver.node_id].add_vote(vote, now)
        signatures = {a.node_id: self.cores[a.node_id].make_signature(schedule.period) for a in alive}
        for receiver in alive:
            for sender, made in signatures.items():
                if made is not None and sender != receiver.node_id:
                    body, signature = made
                    now = self.now(receiver.node_id, schedule.sign_at)
                    self.cores[receiver.node_id].add_signature(schedule.period, body, sender, signature, now)
        for a in alive:
            self.cores[a.node_id].forget_before(self.now(a.node_id, schedule.sign_at))

    def documents(self, alive: list[Identity], now: float) -> list[SignedDocument | None]:
        return [self.cores[a.node_id].latest_document(now) for a in alive]


def everyone(published: int) -> list[SignedDescriptor]:
    return [signed_relay(n, published=published) for n in range(1, 5)] + [
        signed_node(n, published=published) for n in (1, 2)
    ]


def test_three_authorities_converge_and_survive_losing_one() -> None:
    sim = Simulation.start()
    t = float(NOW)
    published = everyone(int(t))
    for index, signed in enumerate(published):  # each reaches one authority, which forwards it
        sim.publish(signed, t, AUTHORITIES[index % 3], AUTHORITIES)
    assert all(c.accepted_count == len(published) for c in sim.cores.values())

    first = Schedule.next_after(t, PERIOD_S)
    assert first.period == P1
    sim.run_period(first, AUTHORITIES)
    documents = sim.documents(AUTHORITIES, first.period)
    assert documents[0] is not None and documents.count(documents[0]) == 3  # one identical document
    assert {authority for authority, _ in documents[0].signatures} == TRUST.authorities
    directory = verify_document(documents[0], TRUST, first.period)
    assert directory.signers == TRUST.authorities
    assert set(directory.relays) | set(directory.nodes) == {node_id(d) for d in published}
    assert SignedDocument.decode(documents[0].encode()) == documents[0]  # what a relay would serve

    # C dies. Nodes republish (to A and B only); the next period still gets a document, with 2 signatures.
    alive = [A, B]
    t = first.sign_at + 60
    republished = everyone(int(t))
    for index, signed in enumerate(republished):
        sim.publish(signed, t, alive[index % 2], alive)
    second = Schedule.next_after(t, PERIOD_S)
    assert second.period == first.period + PERIOD_S
    sim.run_period(second, alive)
    documents = sim.documents(alive, second.period)
    assert documents[0] is not None and documents[0] == documents[1]
    directory = verify_document(documents[0], TRUST, second.period)
    assert directory.signers == {A.node_id, B.node_id}
    published_at = {r.published for r in directory.relays.values()} | {
        n.published for n in directory.nodes.values()
    }
    assert published_at == {int(t)}
    # The dead authority still serves what it had, which a client still accepts until it expires.
    stale = sim.cores[C.node_id].latest_document(second.period)
    assert stale is not None and verify_document(stale, TRUST, second.period).valid_after == first.period

    # With only A left there is no quorum: A makes no signature and keeps serving the last document.
    alive = [A]
    third = Schedule.next_after(second.sign_at + 1, PERIOD_S)
    sim.run_period(third, alive)
    latest = sim.cores[A.node_id].latest_document(third.period)
    assert latest is not None and decode_body(latest.body).valid_after == second.period


def test_authorities_agree_when_one_missed_a_descriptor() -> None:
    # A relay reaches only A (forwarding failed): with 2 of 3 it is left out, but all three still agree.
    sim = Simulation.start()
    t = float(NOW)
    shared = everyone(int(t))[:3]
    for signed in shared:
        sim.publish(signed, t, A, AUTHORITIES)
    lonely = signed_relay(7, published=int(t))
    sim.publish(lonely, t, A, [A])
    schedule = Schedule.next_after(t, PERIOD_S)
    sim.run_period(schedule, AUTHORITIES)
    documents = sim.documents(AUTHORITIES, schedule.period)
    assert documents[0] is not None and documents.count(documents[0]) == 3
    assert set(decode_body(documents[0].body).descriptors) == set(shared)


def test_invite_only_network_converges_on_invited_nodes() -> None:
    sim = Simulation.start(Admission.INVITE)
    t = float(NOW)
    invited, uninvited = signed_relay(1, published=int(t)), signed_relay(2, published=int(t))
    token = make_invitation(C, node_id(invited), NETWORK, int(t) + 86400)
    sim.publish(invited, t, A, AUTHORITIES, invitation=token)
    with pytest.raises(DirectoryError, match="invited nodes only"):
        sim.publish(uninvited, t, B, AUTHORITIES)
    schedule = Schedule.next_after(t, PERIOD_S)
    sim.run_period(schedule, AUTHORITIES)
    documents = sim.documents(AUTHORITIES, schedule.period)
    assert documents[0] is not None and documents.count(documents[0]) == 3
    assert decode_body(documents[0].body).descriptors == (invited,)


def test_many_periods_keep_converging() -> None:
    sim = Simulation.start()
    rng = random.Random(11)
    t = float(NOW)
    for _ in range(6):
        for number in range(1, 6):
            if rng.random() < 0.8:  # some relays skip a republication
                who = AUTHORITIES[rng.randrange(3)]
                sim.publish(signed_relay(number, published=int(t)), t, who, AUTHORITIES)
        schedule = Schedule.next_after(t, PERIOD_S)
        sim.run_period(schedule, AUTHORITIES)
        documents = sim.documents(AUTHORITIES, schedule.period)
        assert documents[0] is not None and documents.count(documents[0]) == 3
        body = decode_body(documents[0].body)
        assert body.valid_after == schedule.period
        verify_document(documents[0], TRUST, schedule.period)
        t = schedule.sign_at + rng.uniform(1, 600)
    # Old periods were forgotten along the way.
    assert all(c.votes_for(P1) == 0 for c in sim.cores.values())
