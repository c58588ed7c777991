"""The signed directory: votes, deterministic documents, threshold verification, invitations."""

from __future__ import annotations

import itertools
import random

import pytest

from tests.tp_net.directory_factories import (
    NETWORK,
    PERIOD_S,
    PUBLISHED,
    T0,
    document,
    identity,
    network_of,
    other_signature,
    signed_document,
    signed_node,
    signed_relay,
    signed_vote,
    vote,
)
from tp_crypto.errors import RemoteProtocolError
from tp_crypto.signed import sign
from tp_net.protocol.codec import encode_document
from tp_net.protocol.descriptors import (
    CLOCK_SKEW_ALLOWED_S,
    DESCRIPTOR_DOMAIN,
    RelayDescriptor,
    SignedDescriptor,
    decode_descriptor,
)
from tp_net.protocol.directory import (
    DESCRIPTORS_PER_DOCUMENT_MAX,
    DOCUMENT_BYTES_MAX,
    DOCUMENT_DOMAIN,
    DOCUMENT_VALID_PERIODS,
    INVITATION_DOMAIN,
    SIGNATURES_PER_DOCUMENT_MAX,
    VOTE_DOMAIN,
    DirectoryError,
    DocumentBody,
    SignedDocument,
    Trust,
    Vote,
    build_document,
    check_invitation,
    decode_body,
    digest,
    make_invitation,
    open_vote,
    sign_document,
    sign_vote,
    verify_document,
)

AUTHORITIES, TRUST = network_of(3, 2)
A, B, C = AUTHORITIES
OUTSIDER = identity(99)
RELAYS = [signed_relay(n) for n in range(1, 5)]
NODES = [signed_node(n) for n in range(1, 3)]
EVERYONE = RELAYS + NODES


def node_id(signed: SignedDescriptor) -> bytes:
    return decode_descriptor(signed.body).node_id


def forged(signed: SignedDescriptor) -> SignedDescriptor:
    signature = bytearray(signed.signature)
    signature[5] ^= 0x40
    return SignedDescriptor(signed.body, bytes(signature))


def build(votes: list[Vote], threshold: int = 2) -> DocumentBody:
    return build_document(NETWORK, T0, PERIOD_S, votes, threshold)


# --- trust ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0, -1, 4])
def test_trust_threshold_must_be_reachable(threshold: int) -> None:
    with pytest.raises(ValueError, match="threshold"):
        Trust(NETWORK, TRUST.authorities, threshold)


# --- votes ----------------------------------------------------------------------------------------


def test_vote_round_trips() -> None:
    sent = vote(A, EVERYONE)
    assert open_vote(sign_vote(A, sent), TRUST) == sent
    assert open_vote(signed_vote(B, []), TRUST) == vote(B, [])


def test_vote_from_untrusted_authority_is_refused() -> None:
    with pytest.raises(DirectoryError, match="authority we do not trust"):
        open_vote(signed_vote(OUTSIDER, EVERYONE), TRUST)


def test_vote_for_another_network_is_refused() -> None:
    with pytest.raises(DirectoryError, match="vote for network 'othernet', not 'testnet'"):
        open_vote(signed_vote(A, EVERYONE, network="othernet"), TRUST)


def test_vote_with_bad_signature_is_refused() -> None:
    body = vote(A, EVERYONE).encode()
    signature = bytearray(sign(A, VOTE_DOMAIN, body))
    signature[0] ^= 1
    with pytest.raises(DirectoryError, match="vote signature does not verify"):
        open_vote(encode_document([body, bytes(signature)]), TRUST)


def test_vote_signed_by_another_trusted_authority_is_refused() -> None:
    # B cannot speak for A: the signature must be the named authority's.
    body = vote(A, EVERYONE).encode()
    with pytest.raises(DirectoryError, match="vote signature does not verify"):
        open_vote(encode_document([body, sign(B, VOTE_DOMAIN, body)]), TRUST)


@pytest.mark.parametrize("domain", [DOCUMENT_DOMAIN, DESCRIPTOR_DOMAIN, INVITATION_DOMAIN])
def test_vote_signed_under_another_domain_is_refused(domain: bytes) -> None:
    body = vote(A, EVERYONE).encode()
    with pytest.raises(DirectoryError, match="vote signature does not verify"):
        open_vote(encode_document([body, sign(A, domain, body)]), TRUST)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        encode_document([b"body"]),
        encode_document([b"body", b"short signature"]),
        encode_document([encode_document(["ballot", NETWORK, T0, A.node_id, []]), bytes(64)]),
        encode_document([encode_document(["vote", NETWORK, True, A.node_id, []]), bytes(64)]),
        encode_document([encode_document(["vote", NETWORK, T0, A.node_id, [[b"x"]]]), bytes(64)]),
        encode_document([encode_document(["vote", NETWORK, T0, A.node_id]), bytes(64)]),
    ],
)
def test_malformed_vote_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        open_vote(data, TRUST)


# --- building documents ---------------------------------------------------------------------------


def test_document_includes_what_threshold_votes_carry() -> None:
    r1, r2, r3, r4 = RELAYS
    body = build([vote(A, [r1, r2, r3]), vote(B, [r1, r2]), vote(C, [r1, r4])])
    assert set(body.descriptors) == {r1, r2}  # r3 and r4: one vote each, fewer than 2
    assert build([vote(A, [r1, r2, r3]), vote(B, [r1, r2]), vote(C, [r1, r4])], threshold=3).descriptors == (
        r1,
    )
    assert build([vote(A, [r3])], threshold=1).descriptors == (r3,)
    assert build([], threshold=1).descriptors == ()


def test_document_window_and_order() -> None:
    body = build([vote(a, EVERYONE) for a in AUTHORITIES])
    assert (body.network, body.valid_after, body.fresh_until) == (NETWORK, T0, T0 + PERIOD_S)
    assert body.valid_until == T0 + DOCUMENT_VALID_PERIODS * PERIOD_S
    ids = [node_id(d) for d in body.descriptors]
    assert ids == sorted(ids) and len(ids) == len(EVERYONE)
    assert decode_body(body.encode()) == body


def test_same_votes_in_any_order_give_identical_bytes() -> None:
    rng = random.Random(7)
    votes = [vote(A, EVERYONE), vote(B, RELAYS[:3] + NODES[:1]), vote(C, RELAYS[1:] + NODES)]
    expected = build(votes).encode()
    for order in itertools.permutations(votes):
        shuffled = []
        for v in order:
            items = list(v.descriptors)
            rng.shuffle(items)
            shuffled.append(Vote(v.network, v.period, v.authority, tuple(items)))
        assert build(shuffled).encode() == expected


def test_version_with_more_votes_wins() -> None:
    old = signed_relay(1, published=PUBLISHED - 60)
    new = signed_relay(1)
    # The newer one is carried by fewer votes: the majority decides, not the publication time.
    votes = [vote(A, [old]), vote(B, [old]), vote(C, [new])]
    assert build(votes, threshold=1).descriptors == (old,)
    votes = [vote(A, [old]), vote(B, [new]), vote(C, [new])]
    assert build(votes, threshold=1).descriptors == (new,)


def test_tied_versions_pick_the_newer() -> None:
    old = signed_relay(1, published=PUBLISHED - 60)
    new = signed_relay(1)
    for votes in itertools.permutations([vote(A, [old, new]), vote(B, [old]), vote(C, [new])]):
        assert build(list(votes)).descriptors == (new,)


def test_tied_versions_of_equal_age_pick_the_lower_digest() -> None:
    one, other = signed_relay(1, capacity=100), signed_relay(1, capacity=200)
    lower = min(one, other, key=lambda d: digest(d.body))
    for votes in itertools.permutations([vote(A, [one, other]), vote(B, [one]), vote(C, [other])]):
        assert build(list(votes)).descriptors == (lower,)


def test_one_body_with_two_valid_signatures_is_chosen_independently_of_order() -> None:
    # A node may sign one body twice with different nonces and hand each copy to different authorities.
    # Which copy goes in the document must not depend on the order an authority holds the votes in.
    who = identity(2001)
    first = signed_relay(1)
    second = SignedDescriptor(first.body, other_signature(who, DESCRIPTOR_DOMAIN, first.body, b"nonce"))
    assert second.signature != first.signature and second.open(T0) == first.open(T0)
    tie = [vote(A, [first]), vote(B, [second])]
    expected = build(tie, threshold=1).encode()
    assert build(tie[::-1], threshold=1).encode() == expected
    assert build(tie, threshold=1).descriptors == (min(first, second, key=lambda d: d.signature),)
    # With more votes behind one copy, that copy wins, whatever the order.
    majority = [vote(A, [first]), vote(B, [second]), vote(C, [second])]
    for votes in itertools.permutations(majority):
        assert build(list(votes), threshold=1).descriptors == (second,)


def test_invalid_or_expired_descriptors_are_left_out() -> None:
    good = signed_relay(1)
    expired_at_start = signed_relay(2, published=T0 - 3600, lifetime_s=3600)  # expires exactly at T0
    from_the_future = signed_relay(3, published=T0 + CLOCK_SKEW_ALLOWED_S + 1)
    bad = forged(signed_relay(4))
    garbage = SignedDescriptor(b"\x93\x01\x02\x03", bytes(64))
    carried = [good, expired_at_start, from_the_future, bad, garbage]
    assert build([vote(a, carried) for a in AUTHORITIES]).descriptors == (good,)


def test_copies_with_a_bad_signature_do_not_count() -> None:
    # A vote carrying a body under a broken signature does not vote for that body.
    good = signed_relay(1)
    for votes in itertools.permutations([vote(A, [good]), vote(B, [forged(good)]), vote(C, [])]):
        assert build(list(votes)).descriptors == ()


def test_duplicate_entries_in_one_vote_count_once() -> None:
    r1 = RELAYS[0]
    assert build([vote(A, [r1, r1, r1]), vote(B, [])]).descriptors == ()
    assert build([vote(A, [r1, r1]), vote(B, [r1])]).descriptors == (r1,)


def test_build_refuses_votes_that_are_not_one_per_authority_for_this_document() -> None:
    with pytest.raises(ValueError, match="two votes from one authority"):
        build([vote(A, RELAYS), vote(A, NODES)])
    with pytest.raises(ValueError, match="not for this document"):
        build([vote(A, RELAYS, period=T0 + PERIOD_S)])
    with pytest.raises(ValueError, match="not for this document"):
        build([vote(A, RELAYS, network="othernet")])


# --- signed documents -----------------------------------------------------------------------------


def good_document() -> SignedDocument:
    return signed_document(document(EVERYONE).encode(), AUTHORITIES)


def test_signed_document_round_trips() -> None:
    signed = good_document()
    assert SignedDocument.decode(signed.encode()) == signed


def test_verified_document_lists_relays_and_nodes() -> None:
    directory = verify_document(good_document(), TRUST, T0)
    assert directory.network == NETWORK
    assert (directory.valid_after, directory.fresh_until) == (T0, T0 + PERIOD_S)
    assert directory.valid_until == T0 + DOCUMENT_VALID_PERIODS * PERIOD_S
    assert set(directory.relays) == {node_id(r) for r in RELAYS}
    assert set(directory.nodes) == {node_id(n) for n in NODES}
    assert all(isinstance(r, RelayDescriptor) for r in directory.relays.values())
    assert directory.signers == TRUST.authorities
    assert directory.model_ids() == ["tiny-llama"]
    assert {n.node_id for n in directory.nodes_for("tiny-llama")} == set(directory.nodes)
    assert directory.nodes_for("other") == []


def test_threshold_of_signatures_is_enough() -> None:
    body = document(EVERYONE).encode()
    for pair in itertools.combinations(AUTHORITIES, 2):
        directory = verify_document(signed_document(body, pair), TRUST, T0)
        assert directory.signers == {a.node_id for a in pair}


def refused(document: SignedDocument, reason: str, now: float = T0, trust: Trust = TRUST) -> None:
    with pytest.raises(DirectoryError, match=reason):
        verify_document(document, trust, now)


def test_too_few_signatures_are_refused() -> None:
    body = document(EVERYONE).encode()
    refused(signed_document(body, []), "has 0 valid signatures from trusted authorities, needs 2")
    refused(signed_document(body, [A]), "has 1 valid signatures from trusted authorities, needs 2")
    refused(signed_document(body, AUTHORITIES[:2]), "needs 3", trust=Trust(NETWORK, TRUST.authorities, 3))


def test_signatures_from_untrusted_keys_do_not_count() -> None:
    body = document(EVERYONE).encode()
    refused(signed_document(body, [A, OUTSIDER]), "has 1 valid signatures")
    # Even under another network's trust that lists the outsider, A's network's trust does not.
    other_trust = Trust(NETWORK, frozenset({A.node_id, OUTSIDER.node_id}), 2)
    assert verify_document(signed_document(body, [A, OUTSIDER]), other_trust, T0).signers == {
        A.node_id,
        OUTSIDER.node_id,
    }


def test_duplicate_signatures_of_one_authority_count_once() -> None:
    body = document(EVERYONE).encode()
    pair = (A.node_id, sign_document(A, body))
    refused(SignedDocument(body, (pair, pair, pair)), "has 1 valid signatures")
    alternative = (A.node_id, other_signature(A, DOCUMENT_DOMAIN, body, b"again"))
    refused(SignedDocument(body, (pair, alternative)), "has 1 valid signatures")


def test_signatures_over_a_different_body_do_not_count() -> None:
    body = document(EVERYONE).encode()
    other_body = document(RELAYS).encode()
    pairs = ((A.node_id, sign_document(A, body)), (B.node_id, sign_document(B, other_body)))
    refused(SignedDocument(body, pairs), "has 1 valid signatures")


def test_signatures_under_another_domain_do_not_count() -> None:
    body = document(EVERYONE).encode()
    for domain in (VOTE_DOMAIN, DESCRIPTOR_DOMAIN, INVITATION_DOMAIN):
        pairs = ((A.node_id, sign_document(A, body)), (B.node_id, sign(B, domain, body)))
        refused(SignedDocument(body, pairs), "has 1 valid signatures")


def test_a_signature_labelled_with_another_authority_does_not_count() -> None:
    body = document(EVERYONE).encode()
    pairs = ((A.node_id, sign_document(A, body)), (B.node_id, sign_document(C, body)))
    refused(SignedDocument(body, pairs), "has 1 valid signatures")


def test_signature_order_does_not_matter_and_junk_pairs_are_ignored() -> None:
    body = document(EVERYONE).encode()
    junk = ((OUTSIDER.node_id, bytes(64)), (b"short", b"x"), (A.node_id, b""))
    good = tuple((a.node_id, sign_document(a, body)) for a in (B, C))
    assert verify_document(SignedDocument(body, junk + good), TRUST, T0).signers == {B.node_id, C.node_id}
    assert verify_document(SignedDocument(body, good[::-1] + junk), TRUST, T0).signers == {
        B.node_id,
        C.node_id,
    }


def test_document_for_another_network_is_refused() -> None:
    body = document(EVERYONE, network="othernet").encode()
    refused(signed_document(body, AUTHORITIES), "for network 'othernet', not 'testnet'")


def test_document_validity_window() -> None:
    signed = good_document()
    verify_document(signed, TRUST, T0 - CLOCK_SKEW_ALLOWED_S)  # a client whose clock is a little behind
    refused(signed, "not valid yet", now=T0 - CLOCK_SKEW_ALLOWED_S - 1)
    valid_until = T0 + DOCUMENT_VALID_PERIODS * PERIOD_S
    verify_document(signed, TRUST, valid_until)
    refused(signed, "has expired", now=valid_until + 1)


def test_oversized_document_is_refused() -> None:
    body = bytes(DOCUMENT_BYTES_MAX + 1)
    refused(SignedDocument(body, ((A.node_id, bytes(64)),)), f"larger than {DOCUMENT_BYTES_MAX} bytes")


def test_document_listing_an_invalid_descriptor_is_refused() -> None:
    expired = signed_relay(2, published=T0 - 3600, lifetime_s=3600)
    cases = {
        "bad descriptor signature": forged(RELAYS[0]),
        "descriptor has expired": expired,
        "published in the future": signed_relay(3, published=T0 + CLOCK_SKEW_ALLOWED_S + 1),
        "malformed": SignedDescriptor(b"\xc1", bytes(64)),
    }
    for reason, bad in cases.items():
        # Authorities would never build this; the signatures are valid, the listed descriptor is not.
        body = DocumentBody(NETWORK, T0, T0 + PERIOD_S, T0 + 3 * PERIOD_S, (RELAYS[1], bad)).encode()
        refused(signed_document(body, AUTHORITIES), f"lists an invalid descriptor: .*{reason}")


def test_unsigned_body_is_never_parsed() -> None:
    # Without enough signatures the body is refused before it is decoded.
    refused(SignedDocument(b"\xc1 garbage", ()), "has 0 valid signatures")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        encode_document([b"body"]),
        encode_document([b"body", [[b"id"]]]),
        encode_document([b"body", [[b"id", "sig"]]]),
        encode_document(["body", []]),
        encode_document([b"body", b"not a list"]),
    ],
)
def test_malformed_signed_document_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        SignedDocument.decode(data)


def test_signed_document_with_too_many_signatures_is_refused() -> None:
    pairs = [[A.node_id, bytes(64)]] * (SIGNATURES_PER_DOCUMENT_MAX + 1)
    with pytest.raises(DirectoryError, match="signatures"):
        SignedDocument.decode(encode_document([b"body", pairs]))
    assert len(SignedDocument.decode(encode_document([b"body", pairs[:-1]])).signatures) == len(pairs) - 1


@pytest.mark.parametrize(
    "fields",
    [
        ["directory", NETWORK, T0, T0, T0],
        ["catalogue", NETWORK, T0, T0, T0, []],
        ["directory", NETWORK, T0, True, T0, []],
        ["directory", b"net", T0, T0, T0, []],
        ["directory", NETWORK, T0, T0, T0, [[b"body"]]],
        ["directory", NETWORK, T0, T0, T0, [[b"body", b"sig"]] * (DESCRIPTORS_PER_DOCUMENT_MAX + 1)],
    ],
)
def test_malformed_body_is_a_protocol_error(fields: list[object]) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_body(encode_document(fields))


# --- invitations ----------------------------------------------------------------------------------

INVITED = identity(3001).node_id
EXPIRES = T0 + 86400


def test_valid_invitation() -> None:
    token = make_invitation(A, INVITED, NETWORK, EXPIRES)
    check_invitation(token, INVITED, TRUST, T0)
    check_invitation(token, INVITED, TRUST, EXPIRES)  # still good at its expiry second


def test_invitation_for_another_node_is_refused() -> None:
    token = make_invitation(A, INVITED, NETWORK, EXPIRES)
    with pytest.raises(DirectoryError, match="another node or network"):
        check_invitation(token, identity(3002).node_id, TRUST, T0)


def test_invitation_for_another_network_is_refused() -> None:
    token = make_invitation(A, INVITED, "othernet", EXPIRES)
    with pytest.raises(DirectoryError, match="another node or network"):
        check_invitation(token, INVITED, TRUST, T0)


def test_expired_invitation_is_refused() -> None:
    token = make_invitation(A, INVITED, NETWORK, EXPIRES)
    with pytest.raises(DirectoryError, match="invitation has expired"):
        check_invitation(token, INVITED, TRUST, EXPIRES + 1)


def test_invitation_from_untrusted_issuer_is_refused() -> None:
    token = make_invitation(OUTSIDER, INVITED, NETWORK, EXPIRES)
    with pytest.raises(DirectoryError, match="not signed by a trusted authority"):
        check_invitation(token, INVITED, TRUST, T0)


def invitation_body(issuer: bytes, expires: int = EXPIRES) -> bytes:
    return encode_document(["invitation", NETWORK, INVITED, issuer, expires])


@pytest.mark.parametrize(
    "token",
    [
        # An outsider signs a token naming a trusted issuer.
        encode_document(
            [invitation_body(A.node_id), sign(OUTSIDER, INVITATION_DOMAIN, invitation_body(A.node_id))]
        ),
        # A trusted authority's signature under another domain.
        encode_document([invitation_body(A.node_id), sign(A, DOCUMENT_DOMAIN, invitation_body(A.node_id))]),
        # Another trusted authority's signature on a token naming A.
        encode_document([invitation_body(A.node_id), sign(B, INVITATION_DOMAIN, invitation_body(A.node_id))]),
        # A's signature, but the expiry was pushed back after signing.
        encode_document(
            [
                invitation_body(A.node_id, EXPIRES + 10**6),
                sign(A, INVITATION_DOMAIN, invitation_body(A.node_id)),
            ]
        ),
    ],
    ids=["outsider", "other-domain", "other-authority", "tampered"],
)
def test_forged_invitation_is_refused(token: bytes) -> None:
    with pytest.raises(DirectoryError, match="not signed by a trusted authority"):
        check_invitation(token, INVITED, TRUST, T0)


def test_invitation_with_flipped_signature_bit_is_refused() -> None:
    token = bytearray(make_invitation(A, INVITED, NETWORK, EXPIRES))
    token[-1] ^= 1  # the signature is the last field
    with pytest.raises(DirectoryError, match="not signed by a trusted authority"):
        check_invitation(bytes(token), INVITED, TRUST, T0)


@pytest.mark.parametrize(
    "token",
    [
        b"",
        b"\xc1",
        encode_document([invitation_body(A.node_id)]),
        encode_document([invitation_body(A.node_id), b"short"]),
        encode_document([encode_document(["vote", NETWORK, INVITED, A.node_id, EXPIRES]), bytes(64)]),
        encode_document([encode_document(["invitation", NETWORK, INVITED, A.node_id, True]), bytes(64)]),
        encode_document([encode_document(["invitation", NETWORK, INVITED, A.node_id]), bytes(64)]),
        encode_document([encode_document(["invitation", NETWORK, "id", A.node_id, EXPIRES]), bytes(64)]),
    ],
)
def test_malformed_invitation_is_refused(token: bytes) -> None:
    with pytest.raises(DirectoryError, match="invitation is malformed"):
        check_invitation(token, INVITED, TRUST, T0)
