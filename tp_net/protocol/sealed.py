"""Sealed requests (PROTOCOL.md section 9): a request encrypted end to end to one GPU node's sealing key, so
that any gateway (and every relay) carries it without reading it. Modelled on Oblivious HTTP (RFC 9458) and
its chunked responses (draft-ietf-ohai-chunked-ohttp), on HPKE (RFC 9180) from pyhpke, never hand-rolled.

Sans-IO: bytes and documents in, bytes and documents out. The client side seals a request
(`seal_request`) and opens the response chunks in order (`ResponseOpener`); the node side opens the request
(`open_request`, with a `ReplayCache`) and seals every response chunk (`ResponseSealer`).

Request: `header || enc || HPKE-seal(info = INFO_LABEL || header, plaintext)`, header = version, the suite's
three ids, the node id and the sealing public key (so the node picks its key and refuses a request for
another node before any work). The plaintext is `nonce(16) || sent(8, unix s) || length(4) || document ||
zeros`, padded to one of SEALED_REQUEST_BUCKETS_BYTES: its size says only its bucket.

Response: the node picks `response_nonce` (32 random bytes) and derives, as the chunked-OHTTP draft does,
`prk = Extract(enc || response_nonce, Export(EXPORT_LABEL, 32))`, `key = Expand(prk, "key", 32)`,
`nonce = Expand(prk, "nonce", 12)`. Chunk i is ChaCha20-Poly1305 under `nonce XOR i`, its plaintext
`length(4) || message || zeros` padded to a multiple of SEALED_CHUNK_PADDING_BYTES; the last chunk is empty
and sealed with AAD "final". The first chunk travels after the response nonce. A changed, dropped,
reordered or replayed chunk fails to open; a response without its final chunk is cut short and says so.
"""

from __future__ import annotations

import heapq
import secrets
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKeyPair, OpenError

from tp_crypto.errors import LocalProtocolError, RemoteProtocolError
from tp_crypto.identity import NODE_ID_BYTES
from tp_crypto.noise_primitives import TAG_BYTES
from tp_net.protocol import codec
from tp_net.protocol.descriptors import KEY_BYTES
from tp_net.protocol.messages import REQUEST_BYTES_MAX

SEALED_SERVICE = "sealed"  # the node's circuit service that opens sealed requests
SUITE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305)
SUITE_IDS = (KEMId.DHKEM_X25519_HKDF_SHA256.value, KDFId.HKDF_SHA256.value, AEADId.CHACHA20_POLY1305.value)
SEALED_VERSION = 1
INFO_LABEL = b"token.place sealed request\x00"
EXPORT_LABEL = b"token.place sealed response"
FINAL_AAD = b"final"

ENC_BYTES = 32
REQUEST_NONCE_BYTES = 16
RESPONSE_NONCE_BYTES = 32
AEAD_KEY_BYTES = 32
AEAD_NONCE_BYTES = 12
_HEADER = struct.Struct(">BHHH")
HEADER_BYTES = _HEADER.size + NODE_ID_BYTES + KEY_BYTES
_REQUEST_PREFIX = struct.Struct(">16sQI")
_LENGTH = struct.Struct(">I")

# Sealed plaintext sizes a request may have: the smallest that fits is used. The largest leaves room for the
# header, enc, tag and base64 (the gateway's JSON body, 4/3 larger) within one request (REQUEST_BYTES_MAX).
SEALED_REQUEST_OVERHEAD_BYTES = 4096
SEALED_REQUEST_BUCKETS_BYTES = (
    1024,
    4 * 1024,
    16 * 1024,
    64 * 1024,
    256 * 1024,
    REQUEST_BYTES_MAX * 3 // 4 - SEALED_REQUEST_OVERHEAD_BYTES,
)
SEALED_REQUEST_BYTES_MAX = HEADER_BYTES + ENC_BYTES + SEALED_REQUEST_BUCKETS_BYTES[-1] + TAG_BYTES
# A response chunk's plaintext is a multiple of this: its size says the token count only roughly.
SEALED_CHUNK_PADDING_BYTES = 64
# Chunks one response may have (the counter never wraps); a message of a response is at most
# SEALED_CHUNK_BYTES_MAX sealed.
SEALED_RESPONSE_CHUNKS_MAX = 1_000_000
SEALED_CHUNK_BYTES_MAX = 64 * 1024
# A request is accepted from `sent - clock skew` until `sent + age`; its nonce is kept that long.
SEALED_REQUEST_AGE_MAX_S = 120
SEALED_CLOCK_SKEW_S = 30
# Nonces a node remembers; past it the oldest is forgotten and nothing as old is accepted any more.
SEALED_REPLAY_CACHE_ENTRIES_MAX = 100_000


class SealedError(RemoteProtocolError):
    """A sealed request or chunk that does not open; `code` says why (never anything about the content)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SealingKey:
    """A node's sealing key pair (X25519, raw 32-byte keys)."""

    private: bytes
    public: bytes


def _header(node_id: bytes, public_key: bytes) -> bytes:
    ids = _HEADER.pack(SEALED_VERSION, *SUITE_IDS)
    return ids + node_id + public_key


def bucket_bytes(length: int) -> int:
    """The smallest bucket that holds `length` bytes of request plaintext."""
    for bucket in SEALED_REQUEST_BUCKETS_BYTES:
        if length <= bucket:
            return bucket
    raise LocalProtocolError(f"a sealed request of {length} bytes exceeds {SEALED_REQUEST_BUCKETS_BYTES[-1]}")


def _padded(body: bytes, size: int) -> bytes:
    return body + bytes(size - len(body))


def _unpadded(plaintext: bytes, offset: int, what: str) -> bytes:
    (length,) = _LENGTH.unpack_from(plaintext, offset)
    start = offset + _LENGTH.size
    end = start + length
    if end > len(plaintext) or any(plaintext[end:]):
        raise SealedError("bad_padding", f"{what} has a bad length or padding")
    return plaintext[start:end]


# --- the client side --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SealedRequest:
    data: bytes  # what travels to the node
    enc: bytes
    secret: bytes  # the exported response secret: only the opener needs it


def seal_request(
    node_id: bytes,
    public_key: bytes,
    document: Any,
    now: float,
    *,
    nonce: bytes | None = None,
    ephemeral_ikm: bytes | None = None,
) -> SealedRequest:
    """Seal `document` (an inference request, 6.1) to the node `node_id` whose descriptor lists `public_key`.
    `nonce` and `ephemeral_ikm` are fixed only by tests (known answers); by default both are fresh."""
    if len(node_id) != NODE_ID_BYTES or len(public_key) != KEY_BYTES:
        raise LocalProtocolError("a node id and a sealing key are 32 bytes each")
    body = codec.encode_document(document)
    prefix = _REQUEST_PREFIX.pack(nonce or secrets.token_bytes(REQUEST_NONCE_BYTES), int(now), len(body))
    plaintext = prefix + body
    header = _header(node_id, public_key)
    ephemeral = None if ephemeral_ikm is None else SUITE.kem.derive_key_pair(ephemeral_ikm)
    enc, context = SUITE.create_sender_context(
        SUITE.kem.deserialize_public_key(public_key), INFO_LABEL + header, eks=ephemeral
    )
    sealed = context.seal(_padded(plaintext, bucket_bytes(len(plaintext))))
    return SealedRequest(header + enc + sealed, enc, context.export(EXPORT_LABEL, AEAD_KEY_BYTES))


def _chunk_keys(secret: bytes, enc: bytes, response_nonce: bytes) -> tuple[ChaCha20Poly1305, bytes]:
    prk = SUITE.kdf.extract(enc + response_nonce, secret)
    key = SUITE.kdf.expand(prk, b"key", AEAD_KEY_BYTES)
    return ChaCha20Poly1305(key), SUITE.kdf.expand(prk, b"nonce", AEAD_NONCE_BYTES)


def _chunk_nonce(base: bytes, counter: int) -> bytes:
    return (int.from_bytes(base, "big") ^ counter).to_bytes(AEAD_NONCE_BYTES, "big")


class ResponseOpener:
    """Opens a response's chunks, in order. `open` returns a chunk's message, or None for the final chunk;
    `finish` raises unless the final chunk came (a response cut short)."""

    def __init__(self, request: SealedRequest) -> None:
        self._request = request
        self._aead: ChaCha20Poly1305 | None = None
        self._base_nonce = b""
        self._counter = 0
        self.finished = False

    def open(self, chunk: bytes) -> Any:
        if self.finished:
            raise SealedError("after_final", "a sealed chunk arrived after the final one")
        if len(chunk) > RESPONSE_NONCE_BYTES + SEALED_CHUNK_BYTES_MAX:
            raise SealedError("too_large", "a sealed chunk is too large")
        if self._aead is None:
            if len(chunk) < RESPONSE_NONCE_BYTES:
                raise SealedError("bad_seal", "the first sealed chunk lacks the response nonce")
            response_nonce, chunk = chunk[:RESPONSE_NONCE_BYTES], chunk[RESPONSE_NONCE_BYTES:]
            self._aead, self._base_nonce = _chunk_keys(
                self._request.secret, self._request.enc, response_nonce
            )
        if self._counter >= SEALED_RESPONSE_CHUNKS_MAX:
            raise SealedError("too_many_chunks", "a sealed response has too many chunks")
        nonce = _chunk_nonce(self._base_nonce, self._counter)
        try:
            plaintext = self._aead.decrypt(nonce, chunk, None)
            final = False
        except InvalidTag:
            try:
                plaintext = self._aead.decrypt(nonce, chunk, FINAL_AAD)
            except InvalidTag:
                raise SealedError(
                    "bad_seal", "a sealed chunk does not open (changed or out of order)"
                ) from None
            final = True
        self._counter += 1
        if len(plaintext) < _LENGTH.size:
            raise SealedError("bad_padding", "a sealed chunk is too short")
        body = _unpadded(plaintext, 0, "a sealed chunk")
        if final:
            if body:
                raise SealedError("bad_final", "the final sealed chunk carries data")
            self.finished = True
            return None
        return codec.decode_document(body)

    def finish(self) -> None:
        if not self.finished:
            raise SealedError("truncated", "the sealed response ended before its final chunk")


# --- the node side ----------------------------------------------------------------------------------------


class ReplayCache:
    """Nonces of the sealed requests a node accepted, each kept until its request is too old to be accepted
    anyway. Bounded: when full, the oldest is forgotten and no request sent at or before it is accepted.
    `started` (unix s): a node passes its start time, so that nothing sent before a restart (whose nonces the
    new process never saw) is accepted."""

    def __init__(
        self,
        *,
        entries_max: int = SEALED_REPLAY_CACHE_ENTRIES_MAX,
        age_max_s: float = SEALED_REQUEST_AGE_MAX_S,
        skew_s: float = SEALED_CLOCK_SKEW_S,
        started: float | None = None,
    ) -> None:
        self._entries_max = entries_max
        self._age_max_s = age_max_s
        self._skew_s = skew_s
        self._nonces: set[bytes] = set()
        self._by_age: list[tuple[int, bytes]] = []
        # Requests sent at or before this are refused (forgotten nonces, or sent before this process began).
        self._floor = -1 if started is None else int(started) - 1

    def __len__(self) -> int:
        return len(self._nonces)

    def check_and_add(self, nonce: bytes, sent: int, now: float) -> None:
        """Accept a request's nonce once; SealedError for a stale, future or replayed one."""
        if sent > now + self._skew_s:
            raise SealedError("stale", "the sealed request is dated in the future")
        if sent < now - self._age_max_s or sent <= self._floor:
            raise SealedError("stale", "the sealed request is too old")
        if nonce in self._nonces:
            raise SealedError("replayed", "the sealed request was seen before")
        while self._by_age and self._by_age[0][0] < now - self._age_max_s:
            self._nonces.discard(heapq.heappop(self._by_age)[1])
        while len(self._nonces) >= self._entries_max:
            oldest, forgotten = heapq.heappop(self._by_age)
            self._nonces.discard(forgotten)
            self._floor = max(self._floor, oldest)
        if sent <= self._floor:
            raise SealedError("stale", "the sealed request is too old")
        self._nonces.add(nonce)
        heapq.heappush(self._by_age, (sent, nonce))


class ResponseSealer:
    """Seals one response's chunks, in order; `seal_final` ends it."""

    def __init__(self, secret: bytes, enc: bytes, response_nonce: bytes) -> None:
        self._aead, self._base_nonce = _chunk_keys(secret, enc, response_nonce)
        self._prefix = response_nonce
        self._counter = 0
        self.finished = False

    def seal(self, message: Any) -> bytes:
        return self._seal(codec.encode_document(message), None)

    def seal_final(self) -> bytes:
        sealed = self._seal(b"", FINAL_AAD)
        self.finished = True
        return sealed

    def _seal(self, body: bytes, aad: bytes | None) -> bytes:
        if self.finished:
            raise LocalProtocolError("the sealed response is finished")
        if self._counter >= SEALED_RESPONSE_CHUNKS_MAX:
            raise LocalProtocolError("a sealed response has too many chunks")
        plaintext = _LENGTH.pack(len(body)) + body
        padded = -len(plaintext) % SEALED_CHUNK_PADDING_BYTES + len(plaintext)
        if padded + TAG_BYTES > SEALED_CHUNK_BYTES_MAX:
            raise LocalProtocolError("a sealed response message is too large")
        sealed = self._aead.encrypt(
            _chunk_nonce(self._base_nonce, self._counter), _padded(plaintext, padded), aad
        )
        self._counter += 1
        prefix, self._prefix = self._prefix, b""
        return prefix + sealed


def sealed_node_id(data: bytes) -> bytes:
    """The node a sealed request names in its header (what a gateway may check before forwarding it)."""
    return data[_HEADER.size : _HEADER.size + NODE_ID_BYTES]


@dataclass(frozen=True)
class OpenedRequest:
    document: Any
    sealer: ResponseSealer


def open_request(
    data: bytes,
    node_id: bytes,
    keys: list[SealingKey],
    replay: ReplayCache,
    now: float,
    *,
    response_nonce: bytes | None = None,
) -> OpenedRequest:
    """Open a sealed request addressed to this node (`node_id`, one of `keys`); SealedError otherwise.
    Every check that needs no key comes first; the nonce is remembered only once the request opened."""
    if len(data) > SEALED_REQUEST_BYTES_MAX:
        raise SealedError("too_large", "the sealed request is too large")
    if len(data) < HEADER_BYTES + ENC_BYTES + TAG_BYTES:
        raise SealedError("malformed", "the sealed request is too short")
    version, kem_id, kdf_id, aead_id = _HEADER.unpack_from(data)
    if (version, kem_id, kdf_id, aead_id) != (SEALED_VERSION, *SUITE_IDS):
        raise SealedError("unsupported", "the sealed request's version or suite is not supported")
    if sealed_node_id(data) != node_id:
        raise SealedError("wrong_node", "the sealed request is addressed to another node")
    public_key = data[_HEADER.size + NODE_ID_BYTES : HEADER_BYTES]
    key = next((key for key in keys if key.public == public_key), None)
    if key is None:
        raise SealedError("unknown_key", "the sealed request is sealed to a key this node does not hold")
    enc, sealed = data[HEADER_BYTES : HEADER_BYTES + ENC_BYTES], data[HEADER_BYTES + ENC_BYTES :]
    try:
        context = SUITE.create_recipient_context(
            enc, SUITE.kem.deserialize_private_key(key.private), INFO_LABEL + data[:HEADER_BYTES]
        )
        plaintext = context.open(sealed)
    except (OpenError, ValueError):
        raise SealedError("bad_seal", "the sealed request does not open") from None
    if len(plaintext) not in SEALED_REQUEST_BUCKETS_BYTES:
        raise SealedError("bad_padding", "the sealed request is not padded to a bucket")
    nonce, sent, _ = _REQUEST_PREFIX.unpack_from(plaintext)
    body = _unpadded(plaintext, _REQUEST_PREFIX.size - _LENGTH.size, "the sealed request")
    document = codec.decode_document(body)
    replay.check_and_add(nonce, sent, now)
    secret = context.export(EXPORT_LABEL, AEAD_KEY_BYTES)
    sealer = ResponseSealer(secret, enc, response_nonce or secrets.token_bytes(RESPONSE_NONCE_BYTES))
    return OpenedRequest(document, sealer)


def sealing_key_pair(ikm: bytes) -> SealingKey:
    """A key pair derived from `ikm` (RFC 9180 DeriveKeyPair): for tests and known answers."""
    pair: KEMKeyPair = SUITE.kem.derive_key_pair(ikm)
    return SealingKey(pair.private_key.to_private_bytes(), pair.public_key.to_public_bytes())
