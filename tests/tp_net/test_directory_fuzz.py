"""Garbage into the directory decoders yields only RemoteProtocolError or DirectoryError; valid descriptors
round-trip; documents do not depend on the order of votes."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tp_net.directory_factories import (
    NETWORK,
    PERIOD_S,
    T0,
    document,
    identity,
    model_offer,
    network_of,
    other_signature,
    signed_document,
    signed_node,
    signed_relay,
    signed_vote,
    vote,
)
from tp_crypto.errors import RemoteProtocolError
from tp_net.protocol.codec import decode_document, encode_document
from tp_net.protocol.descriptors import (
    DESCRIPTOR_DOMAIN,
    KEY_BYTES,
    ModelOffer,
    NodeDescriptor,
    RelayDescriptor,
    SignedDescriptor,
    decode_descriptor,
    encode_descriptor,
    sign_descriptor,
)
from tp_net.protocol.directory import (
    DirectoryError,
    SignedDocument,
    Vote,
    build_document,
    check_invitation,
    decode_body,
    make_invitation,
    open_vote,
    verify_document,
)

EXAMPLES = int(os.environ.get("TP_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

AUTHORITIES, TRUST = network_of(3, 2)
INVITED = identity(3001).node_id
PUBLISHER = identity(4000)

DESCRIPTORS = [signed_relay(n) for n in range(1, 4)] + [signed_node(n) for n in (1, 2)]
VALID_DOCUMENT = signed_document(document(DESCRIPTORS).encode(), AUTHORITIES)
SAMPLES = {
    "descriptor": DESCRIPTORS[0].body,
    "node descriptor": DESCRIPTORS[-1].body,
    "vote": signed_vote(AUTHORITIES[0], DESCRIPTORS[:2]),
    "document": VALID_DOCUMENT.encode(),
    "body": VALID_DOCUMENT.body,
    "invitation": make_invitation(AUTHORITIES[1], INVITED, NETWORK, T0 + 86400),
    "vote body": vote(AUTHORITIES[0], DESCRIPTORS[:2]).encode(),
    "invitation body": encode_document(["invitation", NETWORK, INVITED, AUTHORITIES[1].node_id, T0 + 86400]),
}
EXPECTED = (RemoteProtocolError, DirectoryError)


def open_descriptor(data: bytes) -> object:
    return SignedDescriptor(data, DESCRIPTORS[0].signature).open(T0)


def verify_encoded_document(data: bytes) -> object:
    return verify_document(SignedDocument.decode(data), TRUST, T0)


def verify_body(data: bytes) -> object:
    # The body of a document that trusted authorities signed: a client still never crashes on it.
    return verify_document(signed_document(data, AUTHORITIES), TRUST, T0)


DECODERS: list[Callable[[bytes], object]] = [
    open_descriptor,
    decode_descriptor,
    SignedDocument.decode,
    verify_encoded_document,
    decode_body,
    verify_body,
    lambda data: open_vote(data, TRUST),
    lambda data: check_invitation(data, INVITED, TRUST, T0),
]


def only_protocol_errors(data: bytes) -> None:
    for decoder in DECODERS:
        with contextlib.suppress(*EXPECTED):
            decoder(data)


def test_unmutated_samples_are_accepted() -> None:
    # The fuzzers start from valid inputs: mutations explore the paths past the first check.
    assert open_descriptor(SAMPLES["descriptor"]) == decode_descriptor(SAMPLES["descriptor"])
    assert isinstance(DESCRIPTORS[-1].open(T0), NodeDescriptor)
    assert verify_encoded_document(SAMPLES["document"]) == verify_body(SAMPLES["body"])
    assert open_vote(SAMPLES["vote"], TRUST).descriptors == tuple(DESCRIPTORS[:2])
    check_invitation(SAMPLES["invitation"], INVITED, TRUST, T0)


@FUZZ
@given(st.binary(max_size=1024))
def test_random_bytes_only_raise_protocol_errors(data: bytes) -> None:
    only_protocol_errors(data)


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_mutated_encodings_only_raise_protocol_errors(name: str, data: st.DataObject) -> None:
    sample = bytearray(SAMPLES[name])
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(sample) - 1))
        sample[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(sample)))
    only_protocol_errors(bytes(sample[:cut]))
    only_protocol_errors(bytes(sample))


# Well-formed msgpack of the wrong structure reaches deeper than random bytes do.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=40)
    | st.sampled_from(["relay", "node", "vote", "directory", "invitation", NETWORK])
    | st.just(T0)
    | st.just(bytes(32))
    | st.just(bytes(64))
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=10) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=40,
)


@FUZZ
@given(values)
def test_structured_garbage_only_raises_protocol_errors(value: Any) -> None:
    data = encode_document(value)
    only_protocol_errors(data)
    only_protocol_errors(encode_document([data, bytes(64)]))  # as the body of a signed pair


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.integers(0, 12), values)
def test_fields_replaced_with_garbage_only_raise_protocol_errors(name: str, index: int, value: Any) -> None:
    sample = SAMPLES[name]
    fields = decode_document(sample)
    if isinstance(fields, list) and fields:
        fields[index % len(fields)] = value
        mutated = encode_document(fields)
        only_protocol_errors(mutated)
        only_protocol_errors(encode_document([mutated, bytes(64)]))  # inside a signed pair


# --- valid descriptors round-trip -----------------------------------------------------------------

names = st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "S"]), min_size=1, max_size=64)
keys = st.lists(st.binary(min_size=KEY_BYTES, max_size=KEY_BYTES), min_size=1, max_size=2).map(tuple)
times = st.integers(T0 - 3600, T0)
offers = st.builds(
    ModelOffer,
    names,
    st.binary(min_size=32, max_size=32),
    st.integers(0, 10**13),
    names,
    st.integers(1, 10**7),
    st.integers(1, 1024),
    st.integers(0, 10**6),
)


@st.composite
def relays(draw: st.DrawFn) -> RelayDescriptor:
    published = draw(times)
    host = draw(st.sampled_from(["10.1.2.3", "[2001:db8::1]", "relay.example", "localhost"]))
    address = f"ws://{host}:{draw(st.integers(1, 65535))}/"
    return RelayDescriptor(
        PUBLISHER.node_id,
        address,
        draw(keys),
        draw(st.integers(1, 10**7)),
        draw(st.just("") | names),
        draw(names),
        published,
        published + draw(st.integers(3601, 3 * 3600)),
    )


@st.composite
def nodes(draw: st.DrawFn) -> NodeDescriptor:
    published = draw(times)
    return NodeDescriptor(
        PUBLISHER.node_id,
        draw(keys),
        tuple(draw(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=8))),
        tuple(draw(st.lists(offers, min_size=1, max_size=16))),
        draw(names),
        published,
        published + draw(st.integers(3601, 3 * 3600)),
    )


@FUZZ
@given(relays() | nodes())
def test_valid_descriptors_round_trip(descriptor: RelayDescriptor | NodeDescriptor) -> None:
    body = encode_descriptor(descriptor)
    assert decode_descriptor(body) == descriptor
    assert encode_descriptor(decode_descriptor(body)) == body
    signed = sign_descriptor(PUBLISHER, descriptor)
    assert signed.body == body
    assert signed.open(T0) == descriptor


# --- documents do not depend on the order of votes ------------------------------------------------

RELAY_1 = signed_relay(1)
POOL = [
    RELAY_1,
    *(signed_relay(n) for n in range(2, 6)),
    signed_relay(1, published=T0 - 1200),
    signed_relay(2, capacity=7),
    signed_node(1),
    signed_node(1, models=(model_offer("other"),)),
    signed_node(2),
    # The same body under a second valid signature, and under a broken one.
    SignedDescriptor(RELAY_1.body, other_signature(identity(2001), DESCRIPTOR_DOMAIN, RELAY_1.body, b"n")),
    SignedDescriptor(RELAY_1.body, bytes(64)),
]


@FUZZ
@given(
    st.lists(st.lists(st.sampled_from(POOL), max_size=12), min_size=1, max_size=3),
    st.integers(1, 3),
    st.randoms(use_true_random=False),
)
def test_documents_do_not_depend_on_vote_order(
    carried: list[list[SignedDescriptor]], threshold: int, rng: random.Random
) -> None:
    votes = [vote(AUTHORITIES[i], items) for i, items in enumerate(carried)]
    expected = build_document(NETWORK, T0, PERIOD_S, votes, threshold)
    shuffled = [
        Vote(v.network, v.period, v.authority, tuple(rng.sample(v.descriptors, len(v.descriptors))))
        for v in votes
    ]
    rng.shuffle(shuffled)
    again = build_document(NETWORK, T0, PERIOD_S, shuffled, threshold)
    assert again.encode() == expected.encode()
    # Every listed descriptor is carried by at least `threshold` votes, and one per node id.
    ids = [decode_descriptor(d.body).node_id for d in expected.descriptors]
    assert ids == sorted(set(ids))
    for listed in expected.descriptors:
        assert sum(listed in v.descriptors for v in votes) >= threshold
    # And the document verifies once signed.
    verify_document(signed_document(expected.encode(), AUTHORITIES), TRUST, T0)
