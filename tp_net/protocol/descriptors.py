"""Descriptors: what relays and GPU nodes publish about themselves, signed by their identity keys.

A descriptor travels as `SignedDescriptor(body, signature)`; the body is the canonical msgpack encoding of
the descriptor (tp_net.protocol.codec), signed under the domain "descriptor". Decoding checks sizes before
anything else and every field's range after; whatever the input, it raises only RemoteProtocolError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from tp_crypto.errors import RemoteProtocolError
from tp_crypto.identity import NODE_ID_BYTES, Identity
from tp_crypto.signed import Verifier, sign, verify
from tp_net.protocol.addresses import AddressError, parse_address
from tp_net.protocol.codec import decode_document, encode_document

_T = TypeVar("_T")

DESCRIPTOR_DOMAIN = b"descriptor"
DESCRIPTOR_BYTES_MAX = 16 * 1024
DESCRIPTOR_LIFETIME_S = 3 * 3600
CLOCK_SKEW_ALLOWED_S = 300
NAME_LENGTH_MAX = 64
HOME_RELAYS_MAX = 8
MODELS_PER_NODE_MAX = 16
ONION_KEYS_MAX = 2  # the current key and the previous one, during its grace period
KEY_BYTES = 32
SHA256_BYTES = 32
MAX_CONCURRENT_MAX = 1024
LOAD_MAX = 10**6


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RemoteProtocolError(message)


def _check_name(field: str, value: str, *, allow_empty: bool = False) -> None:
    _require(len(value) <= NAME_LENGTH_MAX, f"{field} is longer than {NAME_LENGTH_MAX} characters")
    _require(allow_empty or bool(value), f"{field} is empty")
    _require(value.isprintable(), f"{field} has unprintable characters")


def _check_address(address: str) -> None:
    """A dialable `ws://HOST:PORT/...` URL (tp_net.protocol.addresses is the one validator)."""
    try:
        parse_address(address)
    except AddressError as exc:
        raise RemoteProtocolError(f"bad address: address {exc}") from None


def _check_keys(field: str, keys: tuple[bytes, ...]) -> None:
    _require(1 <= len(keys) <= ONION_KEYS_MAX, f"{field} must list 1..{ONION_KEYS_MAX} keys")
    _require(all(len(key) == KEY_BYTES for key in keys), f"{field} has a key of the wrong length")


@dataclass(frozen=True)
class RelayDescriptor:
    node_id: bytes
    address: str
    onion_keys: tuple[bytes, ...]  # newest first
    capacity: int  # relative bandwidth weight (KB/s the operator offers)
    family: str  # operator family: relays with the same non-empty family never share a circuit
    version: str
    published: int  # unix seconds
    expires: int

    def check(self) -> None:
        _require(len(self.node_id) == NODE_ID_BYTES, "node id has the wrong length")
        _check_address(self.address)
        _check_keys("onion keys", self.onion_keys)
        _require(1 <= self.capacity <= 10**7, "capacity out of range 1..10^7")
        _check_name("family", self.family, allow_empty=True)
        _check_name("version", self.version)
        _require(0 < self.expires - self.published <= DESCRIPTOR_LIFETIME_S, "bad descriptor lifetime")


@dataclass(frozen=True)
class ModelOffer:
    model_id: str
    gguf_sha256: bytes
    parameters: int
    quantisation: str
    context_length: int
    max_concurrent: int
    load: int  # requests in progress when published
    vision: bool = False  # reads images (the node loaded the model's projector)

    def check(self) -> None:
        _check_name("model id", self.model_id)
        _require(len(self.gguf_sha256) == SHA256_BYTES, "GGUF sha256 has the wrong length")
        _require(0 <= self.parameters <= 10**13, "parameter count out of range")
        _check_name("quantisation", self.quantisation)
        _require(1 <= self.context_length <= 10**7, "context length out of range")
        _require(
            1 <= self.max_concurrent <= MAX_CONCURRENT_MAX,
            f"max concurrent requests out of range 1..{MAX_CONCURRENT_MAX}",
        )
        _require(0 <= self.load <= 10**6, "load out of range")

    @property
    def free_slots(self) -> int:
        return max(0, self.max_concurrent - self.load)


@dataclass(frozen=True)
class NodeDescriptor:
    node_id: bytes
    onion_keys: tuple[bytes, ...]
    home_relays: tuple[bytes, ...]  # node ids of the relays it keeps links to
    models: tuple[ModelOffer, ...]
    version: str
    published: int
    expires: int
    family: str = ""  # operator family: no relay of this family is ever on a circuit to this node
    # X25519 keys for sealed requests (PROTOCOL.md 9), newest first; none for a node that serves none.
    sealing_keys: tuple[bytes, ...] = ()

    def check(self) -> None:
        _require(len(self.node_id) == NODE_ID_BYTES, "node id has the wrong length")
        _check_keys("onion keys", self.onion_keys)
        _check_name("family", self.family, allow_empty=True)
        if self.sealing_keys:
            _check_keys("sealing keys", self.sealing_keys)
        _require(
            1 <= len(self.home_relays) <= HOME_RELAYS_MAX, f"a node lists 1..{HOME_RELAYS_MAX} home relays"
        )
        _require(all(len(r) == NODE_ID_BYTES for r in self.home_relays), "home relay id has the wrong length")
        _require(
            1 <= len(self.models) <= MODELS_PER_NODE_MAX, f"a node offers 1..{MODELS_PER_NODE_MAX} models"
        )
        for model in self.models:
            model.check()
        _check_name("version", self.version)
        _require(0 < self.expires - self.published <= DESCRIPTOR_LIFETIME_S, "bad descriptor lifetime")


Descriptor = RelayDescriptor | NodeDescriptor


@dataclass(frozen=True)
class SignedDescriptor:
    body: bytes
    signature: bytes

    def open(self, now: float, verify: Verifier = verify) -> Descriptor:
        """The descriptor, if the body is well formed, signed by its node id (`verify` checks), and fresh
        at `now`."""
        _require(
            len(self.body) <= DESCRIPTOR_BYTES_MAX, f"descriptor is larger than {DESCRIPTOR_BYTES_MAX} bytes"
        )
        descriptor = decode_descriptor(self.body)
        descriptor.check()
        _require(
            verify(descriptor.node_id, DESCRIPTOR_DOMAIN, self.body, self.signature),
            "bad descriptor signature",
        )
        _require(descriptor.published <= now + CLOCK_SKEW_ALLOWED_S, "descriptor is published in the future")
        _require(now < descriptor.expires, "descriptor has expired")
        return descriptor


def sign_descriptor(identity: Identity, descriptor: Descriptor) -> SignedDescriptor:
    if descriptor.node_id != identity.node_id:
        raise ValueError("a descriptor must be signed by the identity it describes")
    descriptor.check()
    body = encode_descriptor(descriptor)
    return SignedDescriptor(body, sign(identity, DESCRIPTOR_DOMAIN, body))


# --- canonical encoding: fixed-order msgpack arrays (deterministic bytes for signing) -----------------


def encode_descriptor(descriptor: Descriptor) -> bytes:
    if isinstance(descriptor, RelayDescriptor):
        d = descriptor
        fields: list[Any] = ["relay", d.node_id, d.address, list(d.onion_keys), d.capacity, d.family]
        fields += [d.version, d.published, d.expires]
    else:
        n = descriptor
        models = [
            [
                m.model_id,
                m.gguf_sha256,
                m.parameters,
                m.quantisation,
                m.context_length,
                m.max_concurrent,
                m.load,
                m.vision,
            ]
            for m in n.models
        ]
        fields = ["node", n.node_id, list(n.onion_keys), list(n.home_relays), models]
        fields += [n.version, n.published, n.expires, n.family]
        if n.sealing_keys:  # absent rather than empty: one encoding per descriptor
            fields.append(list(n.sealing_keys))
    return encode_document(fields)


def decode_descriptor(body: bytes) -> Descriptor:
    fields = _typed(decode_document(body), list, "descriptor")
    _require(bool(fields), "descriptor is empty")
    kind = fields[0]
    if kind == "relay":
        _require(len(fields) == 9, "relay descriptor has the wrong number of fields")
        return RelayDescriptor(
            _typed(fields[1], bytes, "node id"),
            _typed(fields[2], str, "address"),
            _byte_strings(fields[3], "onion keys"),
            _typed(fields[4], int, "capacity"),
            _typed(fields[5], str, "family"),
            _typed(fields[6], str, "version"),
            _typed(fields[7], int, "published"),
            _typed(fields[8], int, "expires"),
        )
    _require(kind == "node", "unknown descriptor kind")
    _require(len(fields) in (9, 10), "node descriptor has the wrong number of fields")
    models = tuple(_model(item) for item in _typed(fields[4], list, "models"))
    sealing_keys = _byte_strings(fields[9], "sealing keys") if len(fields) == 10 else ()
    _require(len(fields) == 9 or bool(sealing_keys), "sealing keys are absent, never empty")
    return NodeDescriptor(
        _typed(fields[1], bytes, "node id"),
        _byte_strings(fields[2], "onion keys"),
        _byte_strings(fields[3], "home relays"),
        models,
        _typed(fields[5], str, "version"),
        _typed(fields[6], int, "published"),
        _typed(fields[7], int, "expires"),
        _typed(fields[8], str, "family"),
        sealing_keys,
    )


def _model(value: Any) -> ModelOffer:
    fields = _typed(value, list, "model")
    _require(len(fields) == 8, "model offer has the wrong number of fields")
    _require(isinstance(fields[7], bool), "vision has the wrong type")
    return ModelOffer(
        _typed(fields[0], str, "model id"),
        _typed(fields[1], bytes, "GGUF sha256"),
        _typed(fields[2], int, "parameters"),
        _typed(fields[3], str, "quantisation"),
        _typed(fields[4], int, "context length"),
        _typed(fields[5], int, "max concurrent"),
        _typed(fields[6], int, "load"),
        fields[7],
    )


def _typed(value: Any, kind: type[_T], name: str) -> _T:
    # bool is an int subclass: a bool is never a valid int field.
    _require(isinstance(value, kind) and not isinstance(value, bool), f"{name} has the wrong type")
    return value  # type: ignore[no-any-return]


def _byte_strings(value: Any, name: str) -> tuple[bytes, ...]:
    items = _typed(value, list, name)
    return tuple(_typed(item, bytes, name) for item in items)
