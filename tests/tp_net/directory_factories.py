"""Seeded, deterministic makers of identities, descriptors, trusts, votes and documents for directory tests.

Every identity comes from `Identity(random.Random(seed).randbytes(32))`, so a seed names one key forever.
Times default to `T0`, the start of a period: descriptors are published a little before it and stay valid
for the next two periods.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence

import nacl.bindings

from tp_crypto.identity import Identity
from tp_crypto.signed import DOMAIN_PREFIX
from tp_net.protocol.descriptors import (
    DESCRIPTOR_LIFETIME_S,
    ModelOffer,
    NodeDescriptor,
    RelayDescriptor,
    SignedDescriptor,
    sign_descriptor,
)
from tp_net.protocol.directory import (
    DocumentBody,
    SignedDocument,
    Trust,
    Vote,
    build_document,
    sign_document,
    sign_vote,
)

NETWORK = "testnet"
PERIOD_S = 3600
T0 = 500_000 * PERIOD_S  # a period boundary in late 2027
PUBLISHED = T0 - 600
AUTHORITY_SEED_BASE = 1000
RELAY_SEED_BASE = 2000
NODE_SEED_BASE = 3000


def identity(seed: int) -> Identity:
    return Identity(random.Random(seed).randbytes(32))


def onion_key(seed: int) -> bytes:
    return random.Random(f"onion {seed}").randbytes(32)


def relay_descriptor(
    who: Identity,
    *,
    number: int = 1,
    address: str | None = None,
    capacity: int = 100,
    family: str = "",
    version: str = "0.1.0",
    published: int = PUBLISHED,
    lifetime_s: int = DESCRIPTOR_LIFETIME_S,
    onion_keys: tuple[bytes, ...] | None = None,
) -> RelayDescriptor:
    return RelayDescriptor(
        who.node_id,
        address if address is not None else f"ws://10.{number % 256}.0.1:7000/",
        onion_keys if onion_keys is not None else (onion_key(number),),
        capacity,
        family,
        version,
        published,
        published + lifetime_s,
    )


def model_offer(
    model_id: str = "tiny-llama",
    *,
    parameters: int = 10**9,
    quantisation: str = "Q4_K_M",
    context_length: int = 2048,
    max_concurrent: int = 4,
    load: int = 0,
) -> ModelOffer:
    sha = hashlib.sha256(model_id.encode()).digest()
    return ModelOffer(model_id, sha, parameters, quantisation, context_length, max_concurrent, load)


def node_descriptor(
    who: Identity,
    *,
    number: int = 1,
    home_relays: tuple[bytes, ...] | None = None,
    models: tuple[ModelOffer, ...] | None = None,
    version: str = "0.1.0",
    published: int = PUBLISHED,
    lifetime_s: int = DESCRIPTOR_LIFETIME_S,
    onion_keys: tuple[bytes, ...] | None = None,
) -> NodeDescriptor:
    return NodeDescriptor(
        who.node_id,
        onion_keys if onion_keys is not None else (onion_key(1000 + number),),
        home_relays if home_relays is not None else (identity(RELAY_SEED_BASE + 1).node_id,),
        models if models is not None else (model_offer(),),
        version,
        published,
        published + lifetime_s,
    )


def signed_relay(
    number: int,
    *,
    published: int = PUBLISHED,
    lifetime_s: int = DESCRIPTOR_LIFETIME_S,
    capacity: int = 100,
    family: str = "",
) -> SignedDescriptor:
    """Relay `number`'s descriptor, signed by its own identity."""
    who = identity(RELAY_SEED_BASE + number)
    descriptor = relay_descriptor(
        who, number=number, published=published, lifetime_s=lifetime_s, capacity=capacity, family=family
    )
    return sign_descriptor(who, descriptor)


def signed_node(
    number: int,
    *,
    published: int = PUBLISHED,
    lifetime_s: int = DESCRIPTOR_LIFETIME_S,
    models: tuple[ModelOffer, ...] | None = None,
) -> SignedDescriptor:
    """GPU node `number`'s descriptor, signed by its own identity."""
    who = identity(NODE_SEED_BASE + number)
    descriptor = node_descriptor(
        who, number=number, published=published, lifetime_s=lifetime_s, models=models
    )
    return sign_descriptor(who, descriptor)


def authorities(n: int, *, seed: int = AUTHORITY_SEED_BASE) -> list[Identity]:
    """The identities of `n` authorities; the same `seed` gives the same ones."""
    return [identity(seed + index) for index in range(n)]


def network_of(
    n: int, k: int, *, network: str = NETWORK, seed: int = AUTHORITY_SEED_BASE
) -> tuple[list[Identity], Trust]:
    """`n` authority identities and the Trust that needs `k` of them."""
    identities = authorities(n, seed=seed)
    return identities, Trust(network, frozenset(a.node_id for a in identities), k)


def vote(
    who: Identity, descriptors: Iterable[SignedDescriptor], *, period: int = T0, network: str = NETWORK
) -> Vote:
    return Vote(network, period, who.node_id, tuple(descriptors))


def signed_vote(
    who: Identity, descriptors: Iterable[SignedDescriptor], *, period: int = T0, network: str = NETWORK
) -> bytes:
    return sign_vote(who, vote(who, descriptors, period=period, network=network))


def document(
    descriptors: Sequence[SignedDescriptor],
    *,
    network: str = NETWORK,
    period: int = T0,
    period_s: int = PERIOD_S,
) -> DocumentBody:
    """The document built from one vote carrying `descriptors` (threshold 1)."""
    one_vote = vote(authorities(1)[0], descriptors, period=period, network=network)
    return build_document(network, period, period_s, [one_vote], 1)


def signed_document(body: bytes, signers: Iterable[Identity]) -> SignedDocument:
    return SignedDocument(body, tuple((s.node_id, sign_document(s, body)) for s in signers))


def other_signature(who: Identity, domain: bytes, body: bytes, nonce: bytes) -> bytes:
    """A second valid Ed25519 signature of `body` under `domain`, with a nonce of our choosing.

    Ed25519 signers normally derive the nonce from the key and message, but any nonce gives a signature
    that verifies: a malicious node can publish one body with several different valid signatures.
    """
    message = DOMAIN_PREFIX + domain + b"\x00" + body
    expanded = bytearray(hashlib.sha512(who.seed).digest()[:32])
    expanded[0] &= 248
    expanded[31] = (expanded[31] & 127) | 64
    secret = nacl.bindings.crypto_core_ed25519_scalar_reduce(bytes(expanded) + bytes(32))
    r = nacl.bindings.crypto_core_ed25519_scalar_reduce(hashlib.sha512(nonce).digest())
    big_r = nacl.bindings.crypto_scalarmult_ed25519_base_noclamp(r)
    challenge = hashlib.sha512(big_r + who.node_id + message).digest()
    k = nacl.bindings.crypto_core_ed25519_scalar_reduce(challenge)
    s = nacl.bindings.crypto_core_ed25519_scalar_add(
        r, nacl.bindings.crypto_core_ed25519_scalar_mul(k, secret)
    )
    return bytes(big_r + s)
