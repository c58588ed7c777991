"""A directory authority's decisions, sans-IO: admission, votes, the document, signature collection.

Schedule of the period that starts at P (every `period_s` seconds): at P - period_s/2 each authority signs
a vote of the descriptors it accepted and sends it to the others; at P - period_s/4 it builds the document
for P from the votes it holds (tp_net.directory.build_document), signs it and sends the signature (with the
document body) to the others; from then on it serves the newest document that carries `threshold`
signatures. Accepted descriptors are also forwarded to the other authorities as they arrive, so their votes
agree. A forward carries the forwarding authority's signature over the descriptor (`forward_proof`); an
upload that claims to be a forward without one that verifies is refused (`check_forward`), so nobody else can
place a descriptor at one authority only (a forward is not forwarded again).

A new network does not wait a whole period for its first document: until the first aligned period's vote,
authorities hold a warm-up round every FIRST_ROUND_INTERVAL_S (at wall-clock multiples of it, so they agree on
the round without talking), voting at the round's start and signing FIRST_ROUND_SIGN_DELAY_S later. The
document of a round is valid from the round's time, which is never a multiple of the period: that is how a
warm-up document is told from an aligned one (`next_document_due`).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from tp_crypto.errors import RemoteProtocolError
from tp_crypto.identity import Identity, short_id
from tp_crypto.signed import Verifier, sign
from tp_net.descriptors import CLOCK_SKEW_ALLOWED_S, Descriptor, SignedDescriptor
from tp_net.directory import (
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

log = logging.getLogger(__name__)

ACCEPTED_DESCRIPTORS_MAX = 20_000
PERIODS_KEPT = 3
FORWARD_DOMAIN = b"forwarded descriptor"
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

    @classmethod
    def next_after(cls, now: float, period_s: int) -> Schedule:
        """The first period whose vote time is still ahead of `now`."""
        period = (int(now) // period_s + 1) * period_s
        if now >= period - period_s / 2:
            period += period_s
        return cls(period, period - period_s / 2, period - period_s / 4)

    @classmethod
    def first_round_after(cls, now: float, period_s: int, first_aligned: Schedule) -> Schedule | None:
        """The next warm-up round after `now`, or None when the first aligned period's vote comes first."""
        slot = (int(now) // FIRST_ROUND_INTERVAL_S + 1) * FIRST_ROUND_INTERVAL_S
        if slot % period_s == 0:  # keep warm-up documents distinguishable from aligned ones
            slot += FIRST_ROUND_INTERVAL_S
        if slot + FIRST_ROUND_SIGN_DELAY_S >= first_aligned.vote_at:
            return None
        return cls(slot, float(slot), slot + FIRST_ROUND_SIGN_DELAY_S)


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
class _Candidate:
    body: bytes
    signatures: dict[bytes, bytes] = field(default_factory=dict)


class AuthorityCore:
    def __init__(self, identity: Identity, trust: Trust, *, period_s: int, admission: Admission) -> None:
        if identity.node_id not in trust.authorities:
            raise ValueError("this identity is not one of the network's authorities")
        self.identity = identity
        self.trust = trust
        self.period_s = period_s
        self.admission = admission
        self._accepted: dict[bytes, tuple[Descriptor, SignedDescriptor]] = {}
        self._votes: dict[int, dict[bytes, Vote]] = {}
        self._candidates: dict[int, dict[bytes, _Candidate]] = {}

    # --- descriptors --------------------------------------------------------------------------

    def accept(self, signed: SignedDescriptor, invitation: bytes | None, now: float) -> Descriptor | None:
        """Validate a published descriptor. Returns it when it is new (to be forwarded to the other
        authorities), None when we already have it or a newer one; DirectoryError says why it was refused."""
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
        if known is None and len(self._accepted) >= ACCEPTED_DESCRIPTORS_MAX:
            raise DirectoryError("descriptor refused: the authority is full")
        self._accepted[descriptor.node_id] = (descriptor, signed)
        log.info("accepted descriptor of %s", short_id(descriptor.node_id))
        return descriptor

    def forward_proof(self, signed: SignedDescriptor) -> dict[str, bytes]:
        """The "forwarded" value of our forward of `signed`: our id and our signature over it."""
        return {
            "authority": self.identity.node_id,
            "signature": sign(self.identity, FORWARD_DOMAIN, _forwarded(self.trust, signed)),
        }

    def check_forward(self, signed: SignedDescriptor, proof: object) -> None:
        """Raises DirectoryError unless `proof` is another authority's `forward_proof` of `signed`."""
        fields = proof if isinstance(proof, dict) else {}
        authority, signature = fields.get("authority"), fields.get("signature")
        if (
            not isinstance(authority, bytes)
            or not isinstance(signature, bytes)
            or authority not in self.trust.authorities
            or authority == self.identity.node_id
            or not self.trust.verify(authority, FORWARD_DOMAIN, _forwarded(self.trust, signed), signature)
        ):
            raise DirectoryError(
                "descriptor refused: 'forwarded' is accepted from the other authorities only"
            )

    @property
    def accepted_count(self) -> int:
        return len(self._accepted)

    # --- votes --------------------------------------------------------------------------------

    def make_vote(self, period: int) -> bytes:
        """Our signed vote for `period`: every accepted descriptor still valid when it starts."""
        fresh = [
            signed
            for node_id, (descriptor, signed) in sorted(self._accepted.items())
            if descriptor.expires > period
        ]
        vote = Vote(self.trust.network, period, self.identity.node_id, tuple(fresh))
        self._votes.setdefault(period, {})[vote.authority] = vote
        return sign_vote(self.identity, vote)

    def add_vote(self, data: bytes, now: float) -> None:
        vote = open_vote(data, self.trust)
        if not self._is_open(vote.period, now):
            raise DirectoryError(f"vote for period {vote.period}, which is not being decided")
        self._votes.setdefault(vote.period, {})[vote.authority] = vote

    def votes_for(self, period: int) -> int:
        return len(self._votes.get(period, {}))

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
        votes = self._votes.get(period, {})
        if len(votes) < self.trust.threshold:
            log.warning(
                "period %d: %d votes, fewer than the threshold %d", period, len(votes), self.trust.threshold
            )
            return None
        trust = self.trust
        body = build_document(
            trust.network, period, self.period_s, votes.values(), trust.threshold, verify=trust.verify
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
