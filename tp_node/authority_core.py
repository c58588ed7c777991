"""A directory authority's decisions, sans-IO: admission, votes, the document, signature collection.

Schedule of the period that starts at P (every `period_s` seconds): at P - period_s/2 each authority signs
a vote of the descriptors it accepted and sends it to the others; at P - period_s/4 it builds the document
for P from the votes it holds (tp_net.protocol.directory.build_document), signs it and sends the signature
(with the document body) to the others; from then on it serves the newest document that carries `threshold`
signatures.

One vote set (as Tor's dir-spec vote and consensus phases): every authority must build from the same votes,
or their documents differ and none gathers `threshold` signatures. A vote sent straight to us is taken only
until the period's `votes_close_at` (half way between voting and signing); each one we take we relay at once
to the other authorities, signed by us (`relay_proof`), and a relayed vote is taken until we sign. So any
vote one honest authority holds, every honest one holds by signing time. An authority seen with two different
signed votes for one period (equivocation: the relays bring both to everyone) is left out of that period at
every honest authority; its signatures count as anyone's would (only over the document the others built).

Accepted descriptors are also forwarded to the other authorities as they arrive, so their votes agree. A
forward carries the forwarding authority's signature over the descriptor (`forward_proof`); an upload that
claims to be a forward without one that verifies is refused (`check_forward`), so nobody else can place a
descriptor at one authority only (a forward is not forwarded again).

A new network does not wait a whole period for its first document: until the first aligned period's vote,
authorities hold a warm-up round every FIRST_ROUND_INTERVAL_S (at wall-clock multiples of it, so they agree on
the round without talking), voting at the round's start and signing FIRST_ROUND_SIGN_DELAY_S later. The
document of a round is valid from the round's time, which is never a multiple of the period: that is how a
warm-up document is told from an aligned one (`next_document_due`).
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from dataclasses import dataclass, field

from tp_crypto.errors import RemoteProtocolError
from tp_crypto.identity import Identity, short_id
from tp_crypto.signed import Verifier, sign
from tp_net.protocol.bandwidth_weights import as_weights
from tp_net.protocol.descriptors import (
    CLOCK_SKEW_ALLOWED_S,
    Descriptor,
    NodeDescriptor,
    RelayDescriptor,
    SignedDescriptor,
)
from tp_net.protocol.directory import (
    DOCUMENT_DOMAIN,
    DOCUMENT_VALID_PERIODS,
    DirectoryError,
    DocumentBody,
    SignedDocument,
    Trust,
    Vote,
    build_document,
    check_invitation,
    decode_body,
    digest,
    open_vote,
    sign_document,
    sign_vote,
)
from tp_net.protocol.path_selection import subnet_key
from tp_node.admission_queue import AdmissionQueue, Held

log = logging.getLogger(__name__)

ACCEPTED_DESCRIPTORS_MAX = 20_000
# Shares of the accepted descriptors, so that one operator's flood fills its own share, not the authority:
# relays per network of their address (IPv4 /16, IPv6 /32, or hostname:
# tp_net.protocol.path_selection.subnet_key), and relays per declared family. A new node id beyond its share
# is refused; updates of held ones are not.
RELAYS_PER_SUBNET_MAX = 64
RELAYS_PER_FAMILY_MAX = 64
# GPU nodes per home relay they list (a node has no address: its home relays, admitted by reachability, are
# what bounds a flood of node descriptors).
NODES_PER_HOME_RELAY_MAX = 64
PERIODS_KEPT = 3
FORWARD_DOMAIN = b"forwarded descriptor"
VOTE_RELAY_DOMAIN = b"relayed vote"
FIRST_ROUND_INTERVAL_S = 4  # warm-up rounds (before the first aligned period) start this often
FIRST_ROUND_SIGN_DELAY_S = 2.0  # a warm-up round's votes arrive within this; then each authority signs


class Admission(enum.Enum):
    OPEN = "open"  # any well-formed, correctly signed, fresh descriptor
    INVITE = "invite"  # only with an invitation token signed by one of the network's authorities


@dataclass(frozen=True)
class Schedule:
    """When the authorities act for the period that starts at `period`."""

    period: int
    vote_at: float
    sign_at: float

    @property
    def votes_close_at(self) -> float:
        """After this, a vote sent straight to an authority is refused; relays of the votes taken until then
        have until `sign_at` to arrive."""
        return (self.vote_at + self.sign_at) / 2

    @classmethod
    def of_period(cls, period: int, period_s: int) -> Schedule:
        """The schedule of `period`: an aligned period (a multiple of `period_s`) or a warm-up round."""
        if period % period_s:
            return cls(period, float(period), period + FIRST_ROUND_SIGN_DELAY_S)
        return cls(period, period - period_s / 2, period - period_s / 4)

    @classmethod
    def next_after(cls, now: float, period_s: int) -> Schedule:
        """The first period whose vote time is still ahead of `now`."""
        period = (int(now) // period_s + 1) * period_s
        if now >= period - period_s / 2:
            period += period_s
        return cls.of_period(period, period_s)

    @classmethod
    def first_round_after(cls, now: float, period_s: int, first_aligned: Schedule) -> Schedule | None:
        """The next warm-up round after `now`, or None when the first aligned period's vote comes first."""
        slot = (int(now) // FIRST_ROUND_INTERVAL_S + 1) * FIRST_ROUND_INTERVAL_S
        if slot % period_s == 0:  # keep warm-up documents distinguishable from aligned ones
            slot += FIRST_ROUND_INTERVAL_S
        if slot + FIRST_ROUND_SIGN_DELAY_S >= first_aligned.vote_at:
            return None
        return cls.of_period(slot, period_s)


def next_document_due(valid_after: int, period_s: int, now: float) -> float:
    """When the document after one valid from `valid_after` is expected to be signed (wall clock).

    After a warm-up document: the next warm-up round; after an aligned one: the next period's signing; when
    that time has passed with no new document, the next signing the schedule holds."""
    if valid_after % period_s:
        due = valid_after + FIRST_ROUND_INTERVAL_S + FIRST_ROUND_SIGN_DELAY_S
    else:
        due = valid_after + period_s - period_s / 4
    return due if due > now else Schedule.next_after(now, period_s).sign_at


@dataclass
class _VoteSet:
    """The votes of one period: at most one per authority, as signed bytes. An authority seen with two
    different votes is left out of the period for good (its equivocation is the proof)."""

    votes: dict[bytes, tuple[Vote, bytes]] = field(default_factory=dict)
    equivocators: set[bytes] = field(default_factory=set)

    def add(self, vote: Vote, data: bytes) -> bool:
        """Whether `vote` is news: a first vote from its authority, or a second, different one."""
        if vote.authority in self.equivocators:
            return False
        held = self.votes.get(vote.authority)
        if held is None:
            self.votes[vote.authority] = (vote, data)
            return True
        if held[1] == data:
            return False
        del self.votes[vote.authority]
        self.equivocators.add(vote.authority)
        log.warning(
            "authority %s sent two different votes for period %d: left out of it",
            short_id(vote.authority),
            vote.period,
        )
        return True

    def counted(self) -> list[Vote]:
        return [vote for vote, _ in self.votes.values()]


@dataclass
class _Candidate:
    body: bytes
    signatures: dict[bytes, bytes] = field(default_factory=dict)


class AuthorityCore:
    def __init__(
        self,
        identity: Identity,
        trust: Trust,
        *,
        period_s: int,
        admission: Admission,
        check_reachability: bool = False,
    ) -> None:
        """`check_reachability`: a new relay waits until its address was reached and a node until one of its
        home relays is admitted (tp_node.admission_queue); every authority the roles assemble checks
        (tp_node.roles.authority_core), the sans-IO tests of votes and documents need not dial."""
        if identity.node_id not in trust.authorities:
            raise ValueError("this identity is not one of the network's authorities")
        self.identity = identity
        self.trust = trust
        self.period_s = period_s
        self.admission = admission
        self.check_reachability = check_reachability
        self.queue = AdmissionQueue()
        self._accepted: dict[bytes, tuple[Descriptor, SignedDescriptor]] = {}
        self._shares: Counter[_Share] = Counter()  # accepted descriptors per share
        self._votes: dict[int, _VoteSet] = {}
        self._candidates: dict[int, dict[bytes, _Candidate]] = {}
        self._measured: dict[bytes, int] = {}  # what our measurer found (tp_net.protocol.bandwidth_weights)

    # --- descriptors --------------------------------------------------------------------------

    def accept(
        self, signed: SignedDescriptor, invitation: bytes | None, now: float, *, forwarded: bool = False
    ) -> Descriptor | None:
        """Validate a published descriptor. Returns it when it is admitted now and new (to be forwarded to
        the other authorities); None when we already have it or a newer one, or when it waits (a relay for
        its reachability dial, a node for a home relay: `reached` admits it later). DirectoryError says why
        it was refused. `forwarded`: it came as another authority's (verified) forward."""
        try:
            descriptor = signed.open(now, self.trust.verify)
        except RemoteProtocolError as exc:
            raise DirectoryError(f"descriptor refused: {exc}") from exc
        if self.admission is Admission.INVITE:
            if invitation is None:
                raise DirectoryError("descriptor refused: this authority admits invited nodes only")
            check_invitation(invitation, descriptor.node_id, self.trust, now)
        known = self._accepted.get(descriptor.node_id)
        # Same second, other body: a republish right after a key rotation; the later one wins.
        if known is not None and (known[0].published > descriptor.published or known[1].body == signed.body):
            return None
        self._check_shares(descriptor, known)
        if self.check_reachability:
            held = Held(descriptor, signed, invitation, forwarded)
            if isinstance(descriptor, RelayDescriptor) and (
                known is None
                or not isinstance(known[0], RelayDescriptor)
                or known[0].address != descriptor.address
            ):
                self.queue.hold_relay(held)  # a new relay, or a known one at a new address: dial it first
                return None
            if isinstance(descriptor, NodeDescriptor) and not any(
                home in self._accepted for home in descriptor.home_relays
            ):
                self.queue.hold_node(held)
                return None
        return self._admit(descriptor, signed, known)

    def reached(self, node_id: bytes, reachable: bool, now: float) -> list[Held]:
        """The reachability dial of the waiting relay `node_id` ended: when `reachable` (the peer at its
        address proved its id) it is admitted with the nodes that wait for it as their home relay. Returns
        what was admitted (to be forwarded, unless it came as a forward); nothing when it was unreachable
        (dropped, with the nodes that wait for it), evicted meanwhile, or no longer fits."""
        held = self.queue.take_relay(node_id)
        if held is None:
            return []
        if not reachable:
            log.info("relay %s unreachable at its address: not admitted", short_id(node_id))
            return []
        admitted = []
        for candidate in [held, *self.queue.nodes_homed_at(node_id)]:
            descriptor = candidate.descriptor
            if descriptor.expires <= now:
                continue
            known = self._accepted.get(descriptor.node_id)
            if known is not None and known[0].published > descriptor.published:
                continue
            try:
                self._check_shares(descriptor, known)
                self._admit(descriptor, candidate.signed, known)
            except DirectoryError as exc:
                log.info("%s", exc)
                continue
            admitted.append(candidate)
        return admitted

    def _check_shares(
        self, descriptor: Descriptor, known: tuple[Descriptor, SignedDescriptor] | None
    ) -> None:
        held_shares = _shares_of(known[0]) if known is not None else set()
        for kind, key in _shares_of(descriptor) - held_shares:
            if self._shares[kind, key] >= _SHARE_LIMITS[kind]:
                raise DirectoryError(
                    f"descriptor refused: {kind} {key!r} has {_SHARE_LIMITS[kind]} {_SHARE_UNITS[kind]}"
                )
        if known is None and len(self._accepted) >= ACCEPTED_DESCRIPTORS_MAX:
            raise DirectoryError("descriptor refused: the authority is full")

    def _admit(
        self,
        descriptor: Descriptor,
        signed: SignedDescriptor,
        known: tuple[Descriptor, SignedDescriptor] | None,
    ) -> Descriptor:
        """Hold `descriptor` as admitted (its shares checked by the caller)."""
        self._shares.subtract(_shares_of(known[0]) if known is not None else set())
        self._shares.update(_shares_of(descriptor))
        self._accepted[descriptor.node_id] = (descriptor, signed)
        log.info("accepted descriptor of %s", short_id(descriptor.node_id))
        return descriptor

    def forward_proof(self, signed: SignedDescriptor) -> dict[str, bytes]:
        """The "forwarded" value of our forward of `signed`: our id and our signature over it."""
        return self._proof(FORWARD_DOMAIN, _forwarded(self.trust, signed))

    def check_forward(self, signed: SignedDescriptor, proof: object) -> None:
        """Raises DirectoryError unless `proof` is another authority's `forward_proof` of `signed`."""
        if not self._proves(FORWARD_DOMAIN, _forwarded(self.trust, signed), proof, self.identity.node_id):
            raise DirectoryError(
                "descriptor refused: 'forwarded' is accepted from the other authorities only"
            )

    def _proof(self, domain: bytes, message: bytes) -> dict[str, bytes]:
        return {"authority": self.identity.node_id, "signature": sign(self.identity, domain, message)}

    def _proves(self, domain: bytes, message: bytes, proof: object, *not_by: bytes) -> bool:
        """Whether `proof` is a trusted authority's `_proof` of `message`, by none of `not_by` (nor us)."""
        fields = proof if isinstance(proof, dict) else {}
        authority, signature = fields.get("authority"), fields.get("signature")
        return (
            isinstance(authority, bytes)
            and isinstance(signature, bytes)
            and authority in self.trust.authorities
            and authority != self.identity.node_id
            and authority not in not_by
            and self.trust.verify(authority, domain, message, signature)
        )

    @property
    def accepted_count(self) -> int:
        return len(self._accepted)

    # --- votes --------------------------------------------------------------------------------

    def make_vote(self, period: int) -> bytes:
        """Our signed vote for `period`: every accepted descriptor still valid when it starts."""
        fresh = {
            node_id: signed
            for node_id, (descriptor, signed) in sorted(self._accepted.items())
            if descriptor.expires > period
        }
        measured = as_weights({k: v for k, v in self._measured.items() if k in fresh})
        vote = Vote(self.trust.network, period, self.identity.node_id, tuple(fresh.values()), measured)
        data = sign_vote(self.identity, vote)
        self._votes.setdefault(period, _VoteSet()).add(vote, data)
        return data

    def record_weights(self, measured: dict[bytes, int]) -> None:
        """The weights our measurer has found so far; the next vote carries those of listed descriptors."""
        self._measured = dict(measured)

    def add_vote(self, data: bytes, now: float, relayed: object = None) -> Vote | None:
        """Take a peer's signed vote, sent straight to us (`relayed` None) until the period's votes close, or
        relayed by another authority (`relayed` its `relay_proof`, by neither us nor the vote's author)
        until we sign. Returns the vote when it is to be relayed to the other authorities: news sent
        straight to us (a first vote of its authority, or a second, different one)."""
        vote = open_vote(data, self.trust)
        if not self._is_open(vote.period, now):
            raise DirectoryError(f"vote for period {vote.period}, which is not being decided")
        if relayed is None:
            if now > Schedule.of_period(vote.period, self.period_s).votes_close_at:
                raise DirectoryError(f"vote for period {vote.period} arrived after its votes closed")
        elif not self._proves(VOTE_RELAY_DOMAIN, data, relayed, vote.authority):
            raise DirectoryError("a relayed vote must carry another authority's relay proof")
        if vote.authority == self.identity.node_id:
            return None  # ours, back
        news = self._votes.setdefault(vote.period, _VoteSet()).add(vote, data)
        return vote if news and relayed is None else None

    def relay_proof(self, data: bytes) -> dict[str, bytes]:
        """The "relayed" value of our relay of the signed vote `data`."""
        return self._proof(VOTE_RELAY_DOMAIN, data)

    def votes_for(self, period: int) -> int:
        """How many votes of `period` count (one per authority, none from an equivocating one)."""
        return len(self._votes.get(period, _VoteSet()).votes)

    def needs_first_round(self, now: float) -> bool:
        """Warm-up: whether the document we serve (if any) lacks a node we accepted, or lists one we no
        longer hold (only node ids count: every republish changes a descriptor's bytes)."""
        document = self.latest_document(now)
        if document is None:
            return True
        listed = {descriptor.node_id for descriptor in _opened(decode_body(document.body), self.trust.verify)}
        return listed != set(self._accepted)

    # --- documents ----------------------------------------------------------------------------

    def make_signature(self, period: int) -> tuple[bytes, bytes] | None:
        """(document body, our signature) for `period`, or None with fewer votes than the threshold
        (then no document could ever gather enough signatures)."""
        votes = self._votes.get(period, _VoteSet()).counted()
        if len(votes) < self.trust.threshold:
            log.warning(
                "period %d: %d votes, fewer than the threshold %d", period, len(votes), self.trust.threshold
            )
            return None
        body = build_document(
            self.trust.network, period, self.period_s, votes, self.trust.threshold, verify=self.trust.verify
        )
        encoded = body.encode()
        signature = sign_document(self.identity, encoded)
        self._add_candidate(period, encoded, self.identity.node_id, signature)
        return encoded, signature

    def add_signature(self, period: int, body: bytes, authority: bytes, signature: bytes, now: float) -> None:
        if authority not in self.trust.authorities:
            raise DirectoryError("signature from an authority we do not trust")
        if not self._is_open(period, now):
            raise DirectoryError(f"signature for period {period}, which is not being decided")
        if not self.trust.verify(authority, DOCUMENT_DOMAIN, body, signature):
            raise DirectoryError("document signature does not verify")
        # The period is the body's own: a (replayed) signature of another period's document must not be
        # served as this period's.
        try:
            document = decode_body(body)
        except RemoteProtocolError as exc:
            raise DirectoryError(f"signed document is malformed: {exc}") from exc
        if document.network != self.trust.network or document.valid_after != period:
            raise DirectoryError(f"signed document is not {self.trust.network!r} period {period}")
        self._add_candidate(period, body, authority, signature)

    def latest_document(self, now: float | None = None) -> SignedDocument | None:
        """The newest document with at least `threshold` signatures (the one with the most, if several).

        With `now`, only documents a client would accept at `now`: not one signed ahead of its period (a
        client refuses it until `CLOCK_SKEW_ALLOWED_S` before the period starts), nor an expired one."""
        for period in sorted(self._candidates, reverse=True):
            if now is not None and not (
                now + CLOCK_SKEW_ALLOWED_S >= period >= now - DOCUMENT_VALID_PERIODS * self.period_s
            ):
                continue
            candidates = self._candidates[period].values()
            best = max(candidates, key=lambda c: (len(c.signatures), digest(c.body)))
            if len(best.signatures) >= self.trust.threshold:
                return SignedDocument(best.body, tuple(sorted(best.signatures.items())))
        return None

    def forget_before(self, now: float) -> None:
        """Drop expired descriptors and the state of periods long past."""
        self._accepted = {k: v for k, v in self._accepted.items() if v[0].expires > now}
        self.queue.forget_expired(now)
        self._shares = Counter(share for d, _ in self._accepted.values() for share in _shares_of(d))
        oldest = int(now) - PERIODS_KEPT * self.period_s
        self._votes = {p: v for p, v in self._votes.items() if p >= oldest}
        self._candidates = {p: c for p, c in self._candidates.items() if p >= oldest}

    def _is_open(self, period: int, now: float) -> bool:
        """Periods (and warm-up rounds) being decided around `now` (allowing for clock skew between
        authorities)."""
        aligned = period % self.period_s == 0 or period % FIRST_ROUND_INTERVAL_S == 0
        return aligned and now - self.period_s <= period <= now + 2 * self.period_s

    def _add_candidate(self, period: int, body: bytes, authority: bytes, signature: bytes) -> None:
        candidates = self._candidates.setdefault(period, {})
        candidate = candidates.setdefault(digest(body), _Candidate(body))
        candidate.signatures[authority] = signature


_Share = tuple[str, str]  # (kind, key): ("subnet", "198.51.0.0/16"), ("family", "example operator")
_SHARE_LIMITS = {
    "subnet": RELAYS_PER_SUBNET_MAX,
    "family": RELAYS_PER_FAMILY_MAX,
    "home": NODES_PER_HOME_RELAY_MAX,
}
_SHARE_UNITS = {"subnet": "relays", "family": "relays", "home": "nodes"}


def _shares_of(descriptor: Descriptor) -> set[_Share]:
    """The shares a descriptor counts in: a relay its network's and its family's, a GPU node the share of
    each home relay it lists."""
    if isinstance(descriptor, NodeDescriptor):
        return {("home", home.hex()) for home in descriptor.home_relays}
    if not isinstance(descriptor, RelayDescriptor):
        return set()
    shares = {("subnet", subnet_key(descriptor.address))}
    if descriptor.family:
        shares.add(("family", descriptor.family))
    return shares


def _forwarded(trust: Trust, signed: SignedDescriptor) -> bytes:
    """What a forward proof signs: the network and the signed descriptor, each length-prefixed."""
    parts = (trust.network.encode(), signed.body, signed.signature)
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def _opened(body: DocumentBody, verify: Verifier) -> list[Descriptor]:
    opened = []
    for signed in body.descriptors:
        try:
            opened.append(signed.open(body.valid_after, verify))
        except RemoteProtocolError:
            continue  # never in a document we signed; a peer's bad one simply does not count
    return opened
