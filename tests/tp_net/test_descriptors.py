"""Descriptors: canonical encoding, signatures under their own domain, and every reason one is refused."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.tp_net.directory_factories import (
    PUBLISHED,
    T0,
    identity,
    model_offer,
    node_descriptor,
    relay_descriptor,
)
from tp_crypto.errors import RemoteProtocolError
from tp_crypto.identity import Identity
from tp_crypto.signed import DOMAIN_PREFIX, sign, verify
from tp_net.protocol.addresses import ADDRESS_LENGTH_MAX
from tp_net.protocol.codec import encode_document
from tp_net.protocol.descriptors import (
    CLOCK_SKEW_ALLOWED_S,
    DESCRIPTOR_BYTES_MAX,
    DESCRIPTOR_DOMAIN,
    DESCRIPTOR_LIFETIME_S,
    HOME_RELAYS_MAX,
    MODELS_PER_NODE_MAX,
    NAME_LENGTH_MAX,
    ONION_KEYS_MAX,
    Descriptor,
    ModelOffer,
    NodeDescriptor,
    RelayDescriptor,
    SignedDescriptor,
    decode_descriptor,
    encode_descriptor,
    sign_descriptor,
)
from tp_net.protocol.directory import DOCUMENT_DOMAIN, INVITATION_DOMAIN, VOTE_DOMAIN

RELAY = identity(1)
NODE = identity(2)
MALLORY = identity(3)
NOW = T0


def a_relay(**changes: Any) -> RelayDescriptor:
    return dataclasses.replace(relay_descriptor(RELAY), **changes)


def a_node(**changes: Any) -> NodeDescriptor:
    return dataclasses.replace(node_descriptor(NODE), **changes)


def a_model(**changes: Any) -> ModelOffer:
    return dataclasses.replace(model_offer(), **changes)


def signed_body(who: Identity, body: bytes) -> SignedDescriptor:
    """`body` signed correctly by `who`, whatever it holds: the refusal must come from the body itself."""
    return SignedDescriptor(body, sign(who, DESCRIPTOR_DOMAIN, body))


def signed_unchecked(who: Identity, descriptor: Descriptor) -> SignedDescriptor:
    """Sign without sign_descriptor's own checks, as a misbehaving publisher would."""
    return signed_body(who, encode_descriptor(descriptor))


def relay_fields(descriptor: RelayDescriptor | None = None) -> list[Any]:
    """The msgpack fields of a relay descriptor body, to edit into malformed ones."""
    d = descriptor or a_relay()
    keys = list(d.onion_keys)
    return ["relay", d.node_id, d.address, keys, d.capacity, d.family, d.version, d.published, d.expires]


def model_fields(m: ModelOffer) -> list[Any]:
    return [
        m.model_id,
        m.gguf_sha256,
        m.parameters,
        m.quantisation,
        m.context_length,
        m.max_concurrent,
        m.load,
        m.vision,
    ]


def node_fields(descriptor: NodeDescriptor | None = None) -> list[Any]:
    d = descriptor or a_node()
    models = [model_fields(m) for m in d.models]
    keys, homes = list(d.onion_keys), list(d.home_relays)
    return ["node", d.node_id, keys, homes, models, d.version, d.published, d.expires, d.family]


def test_field_helpers_match_the_encoder() -> None:
    assert encode_document(relay_fields()) == encode_descriptor(a_relay())
    assert encode_document(node_fields()) == encode_descriptor(a_node())


def refuse(signed: SignedDescriptor, reason: str, now: float = NOW) -> None:
    with pytest.raises(RemoteProtocolError, match=reason):
        signed.open(now)


# --- valid descriptors and the canonical encoding ---------------------------------------------------


@pytest.mark.parametrize("descriptor", [a_relay(), a_node()], ids=["relay", "node"])
def test_signed_descriptor_opens_to_itself(descriptor: Descriptor) -> None:
    who = RELAY if isinstance(descriptor, RelayDescriptor) else NODE
    signed = sign_descriptor(who, descriptor)
    assert signed.open(NOW) == descriptor
    assert decode_descriptor(signed.body) == descriptor
    assert verify(who.node_id, DESCRIPTOR_DOMAIN, signed.body, signed.signature)


def test_encoding_is_deterministic_and_canonical() -> None:
    # Built twice from scratch, equal descriptors encode to the same bytes; re-encoding a decoded one too.
    first, second = a_node(), node_descriptor(identity(2))
    assert first == second and first is not second
    assert encode_descriptor(first) == encode_descriptor(second)
    body = encode_descriptor(first)
    assert encode_descriptor(decode_descriptor(body)) == body
    # Ed25519 is deterministic: signing the same descriptor twice gives identical signed descriptors.
    assert sign_descriptor(NODE, first) == sign_descriptor(NODE, second)


def test_encoding_keeps_order_of_lists() -> None:
    keys = (b"\x01" * 32, b"\x02" * 32)
    relay = a_relay(onion_keys=keys)
    swapped = a_relay(onion_keys=keys[::-1])
    assert decode_descriptor(encode_descriptor(relay)).onion_keys == keys  # newest first, as published
    assert encode_descriptor(relay) != encode_descriptor(swapped)


def test_every_field_is_in_the_signed_body() -> None:
    base = encode_descriptor(a_relay())
    changed = {
        "address": "ws://10.9.9.9:7000/",
        "onion_keys": (b"\x07" * 32,),
        "capacity": 101,
        "family": "ops",
        "version": "0.1.1",
        "published": PUBLISHED + 1,
        "expires": PUBLISHED + 3600,
    }
    for name, value in changed.items():
        assert encode_descriptor(a_relay(**{name: value})) != base, name


def test_a_largest_valid_node_descriptor_fits_the_size_limit() -> None:
    long_name = "\u00e9" * NAME_LENGTH_MAX  # two bytes each in UTF-8
    models = tuple(
        a_model(model_id=f"{index:02d}" + long_name[2:], quantisation=long_name)
        for index in range(MODELS_PER_NODE_MAX)
    )
    relays = tuple(bytes([index]) * 32 for index in range(HOME_RELAYS_MAX))
    node = a_node(models=models, home_relays=relays, version=long_name, onion_keys=(b"\x01" * 32,) * 2)
    signed = sign_descriptor(NODE, node)
    assert len(signed.body) <= DESCRIPTOR_BYTES_MAX
    assert signed.open(NOW) == node


def test_free_slots_never_negative() -> None:
    assert a_model(max_concurrent=4, load=1).free_slots == 3
    assert a_model(max_concurrent=4, load=9).free_slots == 0


def test_signing_refuses_another_identity_or_an_invalid_descriptor() -> None:
    with pytest.raises(ValueError, match="signed by the identity it describes"):
        sign_descriptor(MALLORY, a_relay())
    with pytest.raises(RemoteProtocolError, match="capacity out of range"):
        sign_descriptor(RELAY, a_relay(capacity=0))


# --- signatures -----------------------------------------------------------------------------------


def test_forged_signature_is_refused() -> None:
    signed = sign_descriptor(RELAY, a_relay())
    for position in (0, 31, 32, 63):
        forged = bytearray(signed.signature)
        forged[position] ^= 0x01
        refuse(SignedDescriptor(signed.body, bytes(forged)), "bad descriptor signature")
    refuse(SignedDescriptor(signed.body, b""), "bad descriptor signature")
    refuse(SignedDescriptor(signed.body, signed.signature + b"\x00"), "bad descriptor signature")
    refuse(SignedDescriptor(signed.body, bytes(64)), "bad descriptor signature")


def test_tampered_body_is_refused() -> None:
    signed = sign_descriptor(RELAY, a_relay())
    inflated = encode_descriptor(a_relay(capacity=10**6))
    refuse(SignedDescriptor(inflated, signed.signature), "bad descriptor signature")


def test_signature_by_another_key_is_refused() -> None:
    # Mallory signs a descriptor naming the relay: the signature must be the described node's own.
    refuse(signed_unchecked(MALLORY, a_relay()), "bad descriptor signature")
    # Mallory's own signed descriptor cannot lend its signature to a body naming the relay.
    mallory = sign_descriptor(MALLORY, a_relay(node_id=MALLORY.node_id))
    refuse(SignedDescriptor(encode_descriptor(a_relay()), mallory.signature), "bad descriptor signature")


@pytest.mark.parametrize(
    "domain", [VOTE_DOMAIN, DOCUMENT_DOMAIN, INVITATION_DOMAIN, b"descriptorx", b"descripto"]
)
def test_signature_under_another_domain_is_refused(domain: bytes) -> None:
    body = encode_descriptor(a_relay())
    refuse(SignedDescriptor(body, sign(RELAY, domain, body)), "bad descriptor signature")


def test_raw_signature_without_domain_is_refused() -> None:
    body = encode_descriptor(a_relay())
    refuse(SignedDescriptor(body, RELAY.sign(body)), "bad descriptor signature")
    # The prefix without the domain's terminator is not the same message either.
    refuse(SignedDescriptor(body, RELAY.sign(DOMAIN_PREFIX + DESCRIPTOR_DOMAIN + body)), "signature")


def test_domains_are_separated() -> None:
    body = b"the same bytes"
    signature = sign(RELAY, VOTE_DOMAIN, body)
    assert verify(RELAY.node_id, VOTE_DOMAIN, body, signature)
    assert not verify(RELAY.node_id, DOCUMENT_DOMAIN, body, signature)
    assert not verify(MALLORY.node_id, VOTE_DOMAIN, body, signature)
    assert not verify(RELAY.node_id, VOTE_DOMAIN, body + b"!", signature)
    assert not verify(b"short", VOTE_DOMAIN, body, signature)


@pytest.mark.parametrize("domain", [b"", b"vote\x00", b"a\x00b"])
def test_ambiguous_domains_are_refused(domain: bytes) -> None:
    # With a NUL inside, domain "a\x00" + body "x" would be the message of domain "a" + body "\x00x".
    with pytest.raises(ValueError, match="domain"):
        sign(RELAY, domain, b"body")
    with pytest.raises(ValueError, match="domain"):
        verify(RELAY.node_id, domain, b"body", bytes(64))


# --- freshness ------------------------------------------------------------------------------------


def test_expired_descriptor_is_refused() -> None:
    descriptor = a_relay()
    signed = sign_descriptor(RELAY, descriptor)
    assert signed.open(descriptor.expires - 0.5) == descriptor
    refuse(signed, "descriptor has expired", now=descriptor.expires)
    refuse(signed, "descriptor has expired", now=descriptor.expires + 10**6)


def test_descriptor_published_in_the_future_is_refused() -> None:
    descriptor = a_relay(published=NOW + CLOCK_SKEW_ALLOWED_S)
    assert sign_descriptor(RELAY, descriptor).open(NOW) == descriptor  # within the allowed clock skew
    ahead = sign_descriptor(RELAY, a_relay(published=NOW + CLOCK_SKEW_ALLOWED_S + 1))
    refuse(ahead, "published in the future")


@pytest.mark.parametrize(
    ("published", "expires"),
    [(PUBLISHED, PUBLISHED), (PUBLISHED, PUBLISHED - 1), (PUBLISHED, PUBLISHED + DESCRIPTOR_LIFETIME_S + 1)],
    ids=["zero", "negative", "too-long"],
)
def test_bad_lifetime_is_refused(published: int, expires: int) -> None:
    refuse(signed_unchecked(RELAY, a_relay(published=published, expires=expires)), "bad descriptor lifetime")
    node = a_node(published=published, expires=expires)
    refuse(signed_unchecked(NODE, node), "bad descriptor lifetime")


# --- sizes and shapes -----------------------------------------------------------------------------


def test_oversized_body_is_refused_before_decoding() -> None:
    fields = relay_fields()
    fields[5] = "x" * DESCRIPTOR_BYTES_MAX  # a family far over its limit makes the body too large
    body = encode_document(fields)
    assert len(body) > DESCRIPTOR_BYTES_MAX
    refuse(signed_body(RELAY, body), f"larger than {DESCRIPTOR_BYTES_MAX} bytes")
    refuse(SignedDescriptor(bytes(DESCRIPTOR_BYTES_MAX + 1), bytes(64)), "larger than")


@pytest.mark.parametrize(
    ("index", "value", "reason"),
    [
        (1, "id", "node id has the wrong type"),
        (2, b"ws://10.0.0.1:7000/", "address has the wrong type"),
        (3, b"\x01" * 32, "onion keys has the wrong type"),
        (3, ["key"], "onion keys has the wrong type"),
        (4, True, "capacity has the wrong type"),
        (4, 100.0, "capacity has the wrong type"),
        (4, "100", "capacity has the wrong type"),
        (5, None, "family has the wrong type"),
        (6, 1, "version has the wrong type"),
        (7, False, "published has the wrong type"),
        (8, True, "expires has the wrong type"),
        (8, None, "expires has the wrong type"),
    ],
)
def test_relay_field_of_wrong_type_is_refused(index: int, value: Any, reason: str) -> None:
    fields = relay_fields()
    fields[index] = value
    refuse(signed_body(RELAY, encode_document(fields)), reason)


@pytest.mark.parametrize(
    ("index", "value", "reason"),
    [
        (1, [b"x"], "node id has the wrong type"),
        (2, {"k": b"x"}, "onion keys has the wrong type"),
        (3, [1], "home relays has the wrong type"),
        (4, {"m": 1}, "models has the wrong type"),
        (4, [b"model"], "model has the wrong type"),
        (5, b"0.1", "version has the wrong type"),
        (6, True, "published has the wrong type"),
        (7, 1.5, "expires has the wrong type"),
    ],
)
def test_node_field_of_wrong_type_is_refused(index: int, value: Any, reason: str) -> None:
    fields = node_fields()
    fields[index] = value
    refuse(signed_body(NODE, encode_document(fields)), reason)


@pytest.mark.parametrize(
    ("index", "value", "reason"),
    [
        (0, b"tiny", "model id has the wrong type"),
        (1, "sha", "GGUF sha256 has the wrong type"),
        (2, True, "parameters has the wrong type"),
        (3, 4, "quantisation has the wrong type"),
        (4, False, "context length has the wrong type"),
        (5, True, "max concurrent has the wrong type"),
        (6, False, "load has the wrong type"),
        (6, None, "load has the wrong type"),
        (7, 1, "vision has the wrong type"),
        (7, None, "vision has the wrong type"),
    ],
)
def test_model_field_of_wrong_type_is_refused(index: int, value: Any, reason: str) -> None:
    fields = node_fields()
    fields[4][0][index] = value
    refuse(signed_body(NODE, encode_document(fields)), reason)


def test_wrong_field_counts_are_refused() -> None:
    relay, node = relay_fields(), node_fields()
    cases: list[tuple[list[Any], str]] = [
        (relay[:-1], "relay descriptor has the wrong number of fields"),
        ([*relay, 0], "relay descriptor has the wrong number of fields"),
        (node[:-1], "node descriptor has the wrong number of fields"),
        ([*node, [b"k" * 32], 0], "node descriptor has the wrong number of fields"),
        (["relay"], "relay descriptor has the wrong number of fields"),
    ]
    short_model, long_model = node_fields(), node_fields()
    short_model[4][0] = short_model[4][0][:-1]
    long_model[4][0] = [*long_model[4][0], 0]
    cases += [
        (short_model, "model offer has the wrong number"),
        (long_model, "model offer has the wrong number"),
    ]
    for fields, reason in cases:
        refuse(signed_body(NODE, encode_document(fields)), reason)
        with pytest.raises(RemoteProtocolError, match=reason):
            decode_descriptor(encode_document(fields))


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ([], "descriptor is empty"),
        (["bridge", b"x"], "unknown descriptor kind"),
        ([b"relay", *relay_fields()[1:]], "unknown descriptor kind"),
        (["RELAY", *relay_fields()[1:]], "unknown descriptor kind"),
        ([None], "unknown descriptor kind"),
        ({"kind": "relay"}, "descriptor has the wrong type"),
        ("relay", "descriptor has the wrong type"),
        (7, "descriptor has the wrong type"),
    ],
)
def test_unknown_kind_or_shape_is_refused(document: Any, reason: str) -> None:
    refuse(signed_body(RELAY, encode_document(document)), reason)


def test_garbage_and_trailing_bytes_are_refused() -> None:
    body = encode_descriptor(a_relay())
    refuse(signed_body(RELAY, body + b"\x00"), "malformed")
    refuse(signed_body(RELAY, body[:-1]), "malformed")
    refuse(signed_body(RELAY, b""), "malformed")
    refuse(signed_body(RELAY, b"\xc1"), "malformed")


# --- ranges ---------------------------------------------------------------------------------------


KEY = b"\x05" * 32


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"capacity": 0}, "capacity out of range"),
        ({"capacity": -1}, "capacity out of range"),
        ({"capacity": 10**7 + 1}, "capacity out of range"),
        ({"onion_keys": ()}, "onion keys must list 1..2 keys"),
        ({"onion_keys": (KEY,) * (ONION_KEYS_MAX + 1)}, "onion keys must list"),
        ({"onion_keys": (KEY[:31],)}, "onion keys has a key of the wrong length"),
        ({"onion_keys": (KEY, KEY + b"\x00")}, "onion keys has a key of the wrong length"),
        ({"node_id": RELAY.node_id + b"\x00"}, "node id has the wrong length"),
        ({"family": "f" * (NAME_LENGTH_MAX + 1)}, "family is longer than 64"),
        ({"family": "ops\n"}, "family has unprintable"),
        ({"version": ""}, "version is empty"),
        ({"version": "1\x00"}, "version has unprintable"),
    ],
)
def test_relay_out_of_range_is_refused(changes: dict[str, Any], reason: str) -> None:
    refuse(signed_unchecked(RELAY, a_relay(**changes)), reason)


@pytest.mark.parametrize(
    "address",
    [
        "http://10.0.0.1:7000/",
        "wss://10.0.0.1:7000/",
        "ws://",
        "ws://:7000/",
        "ws://10.0.0.1/",
        "ws://10.0.0.1:0/",
        "ws://10.0.0.1:65536/",
        "ws://10.0.0.1:port/",
        "ws://[::1:7000/",
        "ws://10.0.0.1:7000/ x",
        "ws://10.0.0.1:7000/\n",
        "ws:// 10.0.0.1:7000/",
        "10.0.0.1:7000",
        "",
        "ws://" + "a" * ADDRESS_LENGTH_MAX + ":7000/",
        "ws://a..b:80/",  # IDNA refuses an empty label (UnicodeError in the dialer)
        "ws://10.0.0.1:7000/\u00e9",  # the HTTP request line is ASCII
        "ws://r\u00e9lay.example:7000/",
    ],
)
def test_bad_address_is_refused(address: str) -> None:
    refuse(signed_unchecked(RELAY, a_relay(address=address)), "bad address")


@pytest.mark.parametrize(
    "address", ["ws://10.0.0.1:7000/", "ws://[2001:db8::1]:7000/", "ws://relay.example:80"]
)
def test_good_addresses_are_accepted(address: str) -> None:
    opened = sign_descriptor(RELAY, a_relay(address=address)).open(NOW)
    assert isinstance(opened, RelayDescriptor)
    assert opened.address == address


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"models": ()}, "a node offers 1..16 models"),
        ({"models": (model_offer(),) * (MODELS_PER_NODE_MAX + 1)}, "a node offers 1..16 models"),
        ({"home_relays": ()}, "a node lists 1..8 home relays"),
        ({"home_relays": (KEY,) * (HOME_RELAYS_MAX + 1)}, "a node lists 1..8 home relays"),
        ({"home_relays": (KEY, KEY[:16])}, "home relay id has the wrong length"),
        ({"onion_keys": ()}, "onion keys must list"),
        ({"onion_keys": (KEY,) * 3}, "onion keys must list"),
        ({"onion_keys": (b"",)}, "onion keys has a key of the wrong length"),
        ({"node_id": NODE.node_id[:31]}, "node id has the wrong length"),
        ({"version": "v" * (NAME_LENGTH_MAX + 1)}, "version is longer"),
        ({"family": "f" * (NAME_LENGTH_MAX + 1)}, "family is longer than 64"),
        ({"family": "ops\n"}, "family has unprintable"),
    ],
)
def test_node_out_of_range_is_refused(changes: dict[str, Any], reason: str) -> None:
    refuse(signed_unchecked(NODE, a_node(**changes)), reason)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"model_id": ""}, "model id is empty"),
        ({"model_id": "m" * (NAME_LENGTH_MAX + 1)}, "model id is longer"),
        ({"model_id": "tiny\tllama"}, "model id has unprintable"),
        ({"gguf_sha256": b"\x00" * 31}, "GGUF sha256 has the wrong length"),
        ({"parameters": -1}, "parameter count out of range"),
        ({"parameters": 10**13 + 1}, "parameter count out of range"),
        ({"quantisation": ""}, "quantisation is empty"),
        ({"context_length": 0}, "context length out of range"),
        ({"context_length": 10**7 + 1}, "context length out of range"),
        ({"max_concurrent": 0}, "max concurrent requests out of range"),
        ({"max_concurrent": 1025}, "max concurrent requests out of range"),
        ({"load": -1}, "load out of range"),
        ({"load": 10**6 + 1}, "load out of range"),
    ],
)
def test_model_out_of_range_is_refused(changes: dict[str, Any], reason: str) -> None:
    node = a_node(models=(model_offer("ok"), a_model(**changes)))
    refuse(signed_unchecked(NODE, node), reason)


def test_limits_themselves_are_accepted() -> None:
    edge_models = (
        a_model(parameters=0, context_length=1, max_concurrent=1, load=0),
        a_model(model_id="m" * NAME_LENGTH_MAX, parameters=10**13, context_length=10**7, max_concurrent=1024),
    )
    node = a_node(models=edge_models, onion_keys=(KEY, KEY), version="v" * NAME_LENGTH_MAX)
    assert sign_descriptor(NODE, node).open(NOW) == node
    relay = a_relay(capacity=10**7, family="f" * NAME_LENGTH_MAX, onion_keys=(KEY, KEY))
    assert sign_descriptor(RELAY, relay).open(NOW) == relay
    assert sign_descriptor(RELAY, a_relay(capacity=1)).open(NOW).node_id == RELAY.node_id
