"""The signed directory: votes, documents, invitations, and how a client checks a document.

Each period, every authority signs a *vote* listing the descriptors it accepted. From the votes it holds,
an authority computes the *document* deterministically: for each node id, the descriptor that the most votes
carry, included only when at least `threshold` votes carry it. Authorities with the same votes produce the
same bytes and sign them; a client accepts a document only with `threshold` valid signatures from distinct
authorities it trusts, for its own network, inside the validity window.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tp_crypto.errors import RemoteProtocolError, TokenPlaceError
from tp_crypto.identity import SIGNATURE_BYTES, Identity
from tp_crypto.signed import sign, verify
from tp_net.codec import decode_document, encode_document
from tp_net.descriptors import (
    CLOCK_SKEW_ALLOWED_S,
    Descriptor,
    NodeDescriptor,
    RelayDescriptor,
    SignedDescriptor,
)

VOTE_DOMAIN = b"vote"
DOCUMENT_DOMAIN = b"directory"
INVITATION_DOMAIN = b"invitation"
DOCUMENT_BYTES_MAX = 8 * 1024 * 1024
DESCRIPTORS_PER_DOCUMENT_MAX = 20_000
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

    def encode(self) -> bytes:
        items = [[d.body, d.signature] for d in self.descriptors]
        return encode_document(["vote", self.network, self.period, self.authority, items])


def sign_vote(identity: Identity, vote: Vote) -> bytes:
    body = vote.encode()
    return encode_document([body, sign(identity, VOTE_DOMAIN, body)])


def open_vote(data: bytes, trust: Trust) -> Vote:
    """A peer's vote, if it is signed by a trusted authority of this network."""
    body, signature = _signed_pair(data)
    fields = _fields(decode_document(body), 5, "vote")
    vote = Vote(_str(fields[1]), _int(fields[2]), _bytes(fields[3]), _descriptors(fields[4]))
    if vote.network != trust.network:
        raise DirectoryError(f"vote for network {vote.network!r}, not {trust.network!r}")
    if vote.authority not in trust.authorities:
        raise DirectoryError("vote from an authority we do not trust")
    if not verify(vote.authority, VOTE_DOMAIN, body, signature):
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

    def encode(self) -> bytes:
        items = [[d.body, d.signature] for d in self.descriptors]
        return encode_document(
            ["directory", self.network, self.valid_after, self.fresh_until, self.valid_until, items]
        )


@dataclass
class _Tally:
    signed: SignedDescriptor
    descriptor: Descriptor
    votes: int = 0

    def rank(self, key: bytes) -> tuple[int, int, bytes]:
        return (self.votes, self.descriptor.published, key)


def build_document(
    network: str, period: int, period_s: int, votes: Iterable[Vote], threshold: int
) -> DocumentBody:
    """The deterministic document for the period starting at `period`, from one vote per authority.

    A descriptor is in when at least `threshold` votes carry it; per node id the one with the most votes
    wins (ties: the newest, then the lowest digest), so every authority with the same votes signs the same
    bytes. Descriptors that are not valid at the start of the period are left out.
    """
    tallies: dict[bytes, _Tally] = {}
    for vote in votes:
        for signed in {digest(d.body): d for d in vote.descriptors}.values():
            key = digest(signed.body)
            tally = tallies.get(key)
            if tally is None:
                try:
                    tally = tallies[key] = _Tally(signed, signed.open(period))
                except RemoteProtocolError:
                    continue
            tally.votes += 1
    best: dict[bytes, tuple[tuple[int, int, bytes], _Tally]] = {}
    for key, tally in tallies.items():
        node_id = tally.descriptor.node_id
        if tally.votes >= threshold and (node_id not in best or tally.rank(key) > best[node_id][0]):
            best[node_id] = (tally.rank(key), tally)
    chosen = tuple(best[node_id][1].signed for node_id in sorted(best))
    return DocumentBody(
        network, period, period + period_s, period + DOCUMENT_VALID_PERIODS * period_s, chosen
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
        pairs = tuple(
            (_bytes(p[0]), _bytes(p[1]))
            for p in (_fields(item, 2, "signature", False) for item in _list(fields[1]))
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

    def nodes_for(self, model_id: str) -> list[NodeDescriptor]:
        return [n for n in self.nodes.values() if any(m.model_id == model_id for m in n.models)]

    def model_ids(self) -> list[str]:
        return sorted({m.model_id for n in self.nodes.values() for m in n.models})


def verify_document(document: SignedDocument, trust: Trust, now: float) -> Directory:
    """Check a document as a client: size, enough trusted signatures, network, validity window."""
    if len(document.body) > DOCUMENT_BYTES_MAX:
        raise DirectoryError(f"directory document is larger than {DOCUMENT_BYTES_MAX} bytes")
    signers = {
        authority
        for authority, signature in document.signatures
        if authority in trust.authorities and verify(authority, DOCUMENT_DOMAIN, document.body, signature)
    }
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
    return _directory(body, frozenset(signers))


def decode_body(data: bytes) -> DocumentBody:
    fields = _fields(decode_document(data), 6, "directory")
    return DocumentBody(
        _str(fields[1]), _int(fields[2]), _int(fields[3]), _int(fields[4]), _descriptors(fields[5])
    )


def _directory(body: DocumentBody, signers: frozenset[bytes]) -> Directory:
    relays: dict[bytes, RelayDescriptor] = {}
    nodes: dict[bytes, NodeDescriptor] = {}
    for signed in body.descriptors:
        try:
            descriptor = signed.open(body.valid_after)
        except RemoteProtocolError as exc:
            raise DirectoryError(f"directory document lists an invalid descriptor: {exc}") from exc
        if isinstance(descriptor, RelayDescriptor):
            relays[descriptor.node_id] = descriptor
        else:
            nodes[descriptor.node_id] = descriptor
    return Directory(
        body.network, body.valid_after, body.fresh_until, body.valid_until, relays, nodes, signers
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
    if issuer not in trust.authorities or not verify(issuer, INVITATION_DOMAIN, body, signature):
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
