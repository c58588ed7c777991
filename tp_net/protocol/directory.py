"""The signed directory: votes, documents, invitations, and how a client checks a document.

Each period, every authority signs a *vote* listing the descriptors it accepted. From the votes it holds,
an authority computes the *document* deterministically: for each node id, the descriptor that the most votes
carry, included only when at least `threshold` votes carry it. Authorities with the same votes produce the
same bytes and sign them; a client accepts a document only with `threshold` valid signatures from distinct
authorities it trusts, for its own network, inside the validity window.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tp_crypto.errors import RemoteProtocolError, TokenPlaceError
from tp_crypto.identity import SIGNATURE_BYTES, Identity
from tp_crypto.signed import Verifier, sign, verify
from tp_net.protocol.bandwidth_weights import Weights, decode_weights, document_weights, encode_weights
from tp_net.protocol.codec import DOCUMENT_BYTES_MAX, decode_document, encode_document
from tp_net.protocol.descriptors import (
    CLOCK_SKEW_ALLOWED_S,
    Descriptor,
    NodeDescriptor,
    RelayDescriptor,
    SignedDescriptor,
)

VOTE_DOMAIN = b"vote"
DOCUMENT_DOMAIN = b"directory"
INVITATION_DOMAIN = b"invitation"
DESCRIPTORS_PER_DOCUMENT_MAX = 20_000
# Far more than any network has authorities; bounds the signature checks one document can cost a client.
SIGNATURES_PER_DOCUMENT_MAX = 64
# A document is fresh for one period and still usable for this many periods.
DOCUMENT_VALID_PERIODS = 3


class DirectoryError(TokenPlaceError):
    """A vote, document or invitation was refused; the message says why."""


@dataclass(frozen=True)
class Trust:
    """What a client trusts: a network name, its authorities' ids, and how many must sign."""

    network: str
    authorities: frozenset[bytes]
    threshold: int
    verify: Verifier = field(default=verify, compare=False, repr=False)  # checks every signature

    def __post_init__(self) -> None:
        if not 1 <= self.threshold <= len(self.authorities):
            raise ValueError(f"threshold {self.threshold} must be in 1..{len(self.authorities)}")


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- votes ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vote:
    network: str
    period: int
    authority: bytes
    descriptors: tuple[SignedDescriptor, ...]
    measured: Weights = ()  # the weights this authority measured (tp_net.protocol.bandwidth_weights)

    def encode(self) -> bytes:
        items = [[d.body, d.signature] for d in self.descriptors]
        measured = encode_weights(self.measured)
        return encode_document(["vote", self.network, self.period, self.authority, items, measured])


def sign_vote(identity: Identity, vote: Vote) -> bytes:
    body = vote.encode()
    return encode_document([body, sign(identity, VOTE_DOMAIN, body)])


def open_vote(data: bytes, trust: Trust) -> Vote:
    """A peer's vote, if it is signed by a trusted authority of this network."""
    body, signature = _signed_pair(data)
    fields = _fields(decode_document(body), 6, "vote")
    measured = decode_weights(fields[5], DESCRIPTORS_PER_DOCUMENT_MAX)
    vote = Vote(_str(fields[1]), _int(fields[2]), _bytes(fields[3]), _descriptors(fields[4]), measured)
    if vote.network != trust.network:
        raise DirectoryError(f"vote for network {vote.network!r}, not {trust.network!r}")
    if vote.authority not in trust.authorities:
        raise DirectoryError("vote from an authority we do not trust")
    if not trust.verify(vote.authority, VOTE_DOMAIN, body, signature):
        raise DirectoryError("vote signature does not verify")
    return vote


# --- documents ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentBody:
    network: str
    valid_after: int
    fresh_until: int
    valid_until: int
    descriptors: tuple[SignedDescriptor, ...]  # sorted by node id
    weights: Weights = ()  # one per descriptor: what path selection weighs it by (bandwidth_weights)

    def encode(self) -> bytes:
        items = [[d.body, d.signature] for d in self.descriptors]
        weights = encode_weights(self.weights)
        return encode_document(
            ["directory", self.network, self.valid_after, self.fresh_until, self.valid_until, items, weights]
        )


@dataclass
class _Tally:
    signed: SignedDescriptor
    descriptor: Descriptor
    votes: int = 0

    def order(self) -> tuple[int, int, bytes, bytes]:
        """Best first: the most votes, then the newest, then the lowest digest (then the lowest signature,
        for one body carrying two valid signatures)."""
        return (-self.votes, -self.descriptor.published, digest(self.signed.body), self.signed.signature)


def build_document(
    network: str,
    period: int,
    period_s: int,
    votes: Iterable[Vote],
    threshold: int,
    *,
    verify: Verifier = verify,
) -> DocumentBody:
    """The deterministic document for the period starting at `period`, from one vote per authority.

    A descriptor is in when at least `threshold` votes carry it; per node id the one with the most votes
    wins (ties: the newest, then the lowest digest), so every authority with the same votes signs the same
    bytes, whatever order it holds them in. Descriptors that are not valid at the start of the period are
    left out; a vote listing one descriptor twice counts once. Each descriptor's weight is the median of
    the votes' measurements of it (`document_weights`).
    """
    # Keyed by body *and* signature: a node may sign one body twice (Ed25519 allows other valid signatures),
    # and which copy a document carries must not depend on the order the votes arrived in.
    votes = list(votes)
    tallies: dict[tuple[bytes, bytes], _Tally | None] = {}
    authorities: set[bytes] = set()
    for vote in votes:
        if vote.network != network or vote.period != period:
            raise ValueError(f"a vote for {vote.network!r} period {vote.period} is not for this document")
        if vote.authority in authorities:
            raise ValueError("two votes from one authority")
        authorities.add(vote.authority)
        for key in {(d.body, d.signature) for d in vote.descriptors}:
            if key not in tallies:
                signed = SignedDescriptor(*key)
                try:
                    tallies[key] = _Tally(signed, signed.open(period, verify))
                except RemoteProtocolError:
                    tallies[key] = None  # invalid: never counted, never checked again
            tally = tallies[key]
            if tally is not None:
                tally.votes += 1
    best: dict[bytes, _Tally] = {}
    for tally in tallies.values():
        if tally is None or tally.votes < threshold:
            continue
        node_id = tally.descriptor.node_id
        if node_id not in best or tally.order() < best[node_id].order():
            best[node_id] = tally
    chosen = tuple(best[node_id].signed for node_id in sorted(best))
    measured = [vote.measured for vote in votes]
    weights = document_weights(measured, (tally.descriptor for tally in best.values()), threshold)
    return DocumentBody(
        network, period, period + period_s, period + DOCUMENT_VALID_PERIODS * period_s, chosen, weights
    )


def sign_document(identity: Identity, body: bytes) -> bytes:
    return sign(identity, DOCUMENT_DOMAIN, body)


@dataclass(frozen=True)
class SignedDocument:
    body: bytes
    signatures: tuple[tuple[bytes, bytes], ...]  # (authority id, signature)

    def encode(self) -> bytes:
        return encode_document([self.body, [list(pair) for pair in self.signatures]])

    @classmethod
    def decode(cls, data: bytes) -> SignedDocument:
        if len(data) > DOCUMENT_BYTES_MAX + 64 * 1024:
            raise DirectoryError("directory document is too large")
        fields = _fields(decode_document(data), 2, "signed document", check_kind=False)
        items = _list(fields[1])
        if len(items) > SIGNATURES_PER_DOCUMENT_MAX:
            raise DirectoryError(f"directory document has over {SIGNATURES_PER_DOCUMENT_MAX} signatures")
        pairs = tuple(
            (_bytes(p[0]), _bytes(p[1])) for p in (_fields(item, 2, "signature", False) for item in items)
        )
        return cls(_bytes(fields[0]), pairs)


@dataclass(frozen=True)
class Directory:
    """A verified document: the relays and GPU nodes a client may use."""

    network: str
    valid_after: int
    fresh_until: int
    valid_until: int
    relays: dict[bytes, RelayDescriptor]
    nodes: dict[bytes, NodeDescriptor]
    signers: frozenset[bytes] = field(default_factory=frozenset)
    weights: Mapping[bytes, int] = field(default_factory=dict)  # measured; path selection's only weights

    def nodes_for(self, model_id: str) -> list[NodeDescriptor]:
        return [n for n in self.nodes.values() if any(m.model_id == model_id for m in n.models)]

    def model_ids(self) -> list[str]:
        return sorted({m.model_id for n in self.nodes.values() for m in n.models})


def verify_document(document: SignedDocument, trust: Trust, now: float) -> Directory:
    """Check a document as a client: size, enough trusted signatures, network, validity window."""
    if len(document.body) > DOCUMENT_BYTES_MAX:
        raise DirectoryError(f"directory document is larger than {DOCUMENT_BYTES_MAX} bytes")
    signers: set[bytes] = set()
    for authority, signature in document.signatures:
        # Each trusted authority counts once; repeats of one already counted cost no more checks.
        trusted = authority in trust.authorities and authority not in signers
        if trusted and trust.verify(authority, DOCUMENT_DOMAIN, document.body, signature):
            signers.add(authority)
    if len(signers) < trust.threshold:
        raise DirectoryError(
            f"directory document has {len(signers)} valid signatures from trusted authorities, "
            f"needs {trust.threshold}"
        )
    body = decode_body(document.body)
    if body.network != trust.network:
        raise DirectoryError(f"directory document is for network {body.network!r}, not {trust.network!r}")
    if now + CLOCK_SKEW_ALLOWED_S < body.valid_after:
        raise DirectoryError("directory document is not valid yet")
    if now > body.valid_until:
        raise DirectoryError("directory document has expired")
    return _directory(body, frozenset(signers), trust.verify)


class NewestDocument:
    """The document a client (a gateway, the in-process client, a relay's cache) holds, and the one place it
    takes a new one: verified (`verify_document`) and never older than the one held. A still-valid older
    document (a rollback, by a source replaying what it once served) would bring back relays and nodes the
    authorities have since dropped, or hide new ones; it is refused."""

    def __init__(self, trust: Trust) -> None:
        self.trust = trust
        self.document: SignedDocument | None = None
        self.directory: Directory | None = None

    def offer(self, document: SignedDocument, now: float) -> bool:
        """True when `document` verifies and is newer than the held one (it is now held); False when it is
        of the held one's period (the held one stays). DirectoryError when it does not verify or is older."""
        directory = verify_document(document, self.trust, now)
        if self.directory is not None:
            if directory.valid_after < self.directory.valid_after:
                raise DirectoryError(
                    f"directory document valid from {directory.valid_after} is older than the one held "
                    f"(valid from {self.directory.valid_after}): refused as a rollback"
                )
            if directory.valid_after == self.directory.valid_after:
                return False
        self.document, self.directory = document, directory
        return True


def decode_body(data: bytes) -> DocumentBody:
    fields = _fields(decode_document(data), 7, "directory")
    return DocumentBody(
        _str(fields[1]),
        _int(fields[2]),
        _int(fields[3]),
        _int(fields[4]),
        _descriptors(fields[5]),
        decode_weights(fields[6], DESCRIPTORS_PER_DOCUMENT_MAX),
    )


def _directory(body: DocumentBody, signers: frozenset[bytes], verify: Verifier) -> Directory:
    relays: dict[bytes, RelayDescriptor] = {}
    nodes: dict[bytes, NodeDescriptor] = {}
    for signed in body.descriptors:
        try:
            descriptor = signed.open(body.valid_after, verify)
        except RemoteProtocolError as exc:
            raise DirectoryError(f"directory document lists an invalid descriptor: {exc}") from exc
        if isinstance(descriptor, RelayDescriptor):
            relays[descriptor.node_id] = descriptor
        else:
            nodes[descriptor.node_id] = descriptor
    weights = {node_id: weight for node_id, weight in body.weights if node_id in relays or node_id in nodes}
    return Directory(
        body.network, body.valid_after, body.fresh_until, body.valid_until, relays, nodes, signers, weights
    )


# --- invitations ----------------------------------------------------------------------------------


def make_invitation(authority: Identity, node_id: bytes, network: str, expires: int) -> bytes:
    """A token letting `node_id` publish to authorities whose admission policy is `invite`."""
    body = encode_document(["invitation", network, node_id, authority.node_id, expires])
    return encode_document([body, sign(authority, INVITATION_DOMAIN, body)])


def check_invitation(token: bytes, node_id: bytes, trust: Trust, now: float) -> None:
    """Raise DirectoryError unless `token` invites `node_id` to this network, signed by a trusted
    authority."""
    try:
        body, signature = _signed_pair(token)
        fields = _fields(decode_document(body), 5, "invitation")
        network, invited, issuer, expires = (
            _str(fields[1]),
            _bytes(fields[2]),
            _bytes(fields[3]),
            _int(fields[4]),
        )
    except RemoteProtocolError as exc:
        raise DirectoryError(f"invitation is malformed: {exc}") from exc
    if network != trust.network or invited != node_id:
        raise DirectoryError("invitation is for another node or network")
    if issuer not in trust.authorities or not trust.verify(issuer, INVITATION_DOMAIN, body, signature):
        raise DirectoryError("invitation is not signed by a trusted authority")
    if now > expires:
        raise DirectoryError("invitation has expired")


# --- field helpers --------------------------------------------------------------------------------


def _signed_pair(data: bytes) -> tuple[bytes, bytes]:
    fields = _fields(decode_document(data), 2, "signed object", check_kind=False)
    signature = _bytes(fields[1])
    if len(signature) != SIGNATURE_BYTES:
        raise RemoteProtocolError("signature has the wrong length")
    return _bytes(fields[0]), signature


def _fields(value: Any, count: int, kind: str, check_kind: bool = True) -> list[Any]:
    if not isinstance(value, list) or len(value) != count:
        raise RemoteProtocolError(f"{kind} has the wrong shape")
    if check_kind and value[0] != kind:
        raise RemoteProtocolError(f"expected a {kind}")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise RemoteProtocolError("expected a list")
    return value


def _bytes(value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise RemoteProtocolError("expected bytes")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise RemoteProtocolError("expected a string")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise RemoteProtocolError("expected an integer")
    return value


def _descriptors(value: Any) -> tuple[SignedDescriptor, ...]:
    items = _list(value)
    if len(items) > DESCRIPTORS_PER_DOCUMENT_MAX:
        raise RemoteProtocolError("too many descriptors")
    pairs = (_fields(item, 2, "descriptor", check_kind=False) for item in items)
    return tuple(SignedDescriptor(_bytes(b), _bytes(s)) for b, s in pairs)
