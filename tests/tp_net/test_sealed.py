"""Sealed requests (tp_net.protocol.sealed): RFC 9180 known answers through pyhpke, then the attacks a gateway
or relay can try on a sealed request and its chunked response: tamper, truncate, reorder, replay, redirect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tp_net.protocol import sealed
from tp_net.protocol.sealed import (
    SEALED_REQUEST_BUCKETS_BYTES,
    ReplayCache,
    ResponseOpener,
    SealedError,
    SealingKey,
    open_request,
    seal_request,
    sealing_key_pair,
)

VECTORS = Path(__file__).parent / "vectors"
NODE = bytes(range(32))
OTHER_NODE = bytes(32)
NOW = 1_800_000_000.0
REQUEST = {"model": "tiny", "messages": [{"role": "user", "content": "the sentinel prompt"}]}


def rfc_vector() -> dict[str, Any]:
    vector: dict[str, Any] = json.loads((VECTORS / "hpke_x25519_sha256_chacha20poly1305.json").read_text())
    return vector


def test_rfc9180_base_mode_vector_through_pyhpke() -> None:
    v = rfc_vector()
    assert (v["kem_id"], v["kdf_id"], v["aead_id"]) == sealed.SUITE_IDS
    receiver = sealing_key_pair(bytes.fromhex(v["ikmR"]))
    assert receiver == SealingKey(bytes.fromhex(v["skRm"]), bytes.fromhex(v["pkRm"]))
    ephemeral = sealed.SUITE.kem.derive_key_pair(bytes.fromhex(v["ikmE"]))
    info = bytes.fromhex(v["info"])
    enc, sender = sealed.SUITE.create_sender_context(
        sealed.SUITE.kem.deserialize_public_key(receiver.public), info, eks=ephemeral
    )
    assert enc.hex() == v["enc"]
    recipient = sealed.SUITE.create_recipient_context(
        enc, sealed.SUITE.kem.deserialize_private_key(receiver.private), info
    )
    seq = 0
    for case in v["encryptions"]:
        while seq < case["seq"]:  # the vectors skip sequence numbers: advance both contexts past them
            recipient.open(sender.seal(b"", b""), b"")
            seq += 1
        ct = sender.seal(bytes.fromhex(case["pt"]), bytes.fromhex(case["aad"]))
        assert ct.hex() == case["ct"]
        assert recipient.open(ct, bytes.fromhex(case["aad"])).hex() == case["pt"]
        seq += 1
    for export in v["exports"]:
        context = bytes.fromhex(export["context"])
        assert sender.export(context, export["length"]).hex() == export["value"]
        assert recipient.export(context, export["length"]).hex() == export["value"]


KEY = sealing_key_pair(b"node sealing key for the tests.." * 1)


def sealed_request(node: bytes = NODE, now: float = NOW, document: Any = None) -> sealed.SealedRequest:
    return seal_request(node, KEY.public, REQUEST if document is None else document, now)


def open_at_node(data: bytes, replay: ReplayCache | None = None, now: float = NOW) -> sealed.OpenedRequest:
    return open_request(data, NODE, [KEY], ReplayCache() if replay is None else replay, now)


def full_response(opened: sealed.OpenedRequest, messages: list[Any]) -> list[bytes]:
    return [opened.sealer.seal(message) for message in messages] + [opened.sealer.seal_final()]


def test_round_trip() -> None:
    request = sealed_request()
    opened = open_at_node(request.data)
    assert opened.document == REQUEST
    messages = [{"text": "hello"}, {"text": " world"}, {"finish_reason": "stop"}]
    opener = ResponseOpener(request)
    got = [opener.open(chunk) for chunk in full_response(opened, messages)]
    assert got == [*messages, None]
    opener.finish()


def test_request_size_is_its_bucket_only() -> None:
    short = sealed_request(document={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]})
    longer = sealed_request(document={"model": "tiny", "messages": [{"role": "user", "content": "x" * 900}]})
    assert len(short.data) == len(longer.data)
    overhead = sealed.HEADER_BYTES + sealed.ENC_BYTES + sealed.TAG_BYTES
    assert len(short.data) - overhead == SEALED_REQUEST_BUCKETS_BYTES[0]
    bigger = sealed_request(document={"messages": [{"role": "user", "content": "x" * 2000}]})
    assert len(bigger.data) - overhead == SEALED_REQUEST_BUCKETS_BYTES[1]


def test_response_chunk_sizes_are_padded() -> None:
    request = sealed_request()
    opened = open_at_node(request.data)
    first, second = opened.sealer.seal({"text": "a"}), opened.sealer.seal({"text": "abcdefghij"})
    assert len(first) - sealed.RESPONSE_NONCE_BYTES == len(second)


@pytest.mark.parametrize("where", [0, 7, 40, sealed.HEADER_BYTES + 3, sealed.HEADER_BYTES + 40, -1])
def test_tampered_request_is_refused(where: int) -> None:
    data = bytearray(sealed_request().data)
    data[where] ^= 1
    with pytest.raises(SealedError):
        open_at_node(bytes(data))


def test_request_for_another_node_is_refused_even_with_the_right_key() -> None:
    """A gateway cannot redirect: the node id is in the header and in HPKE's info."""
    request = sealed_request(node=OTHER_NODE)
    with pytest.raises(SealedError) as refused:
        open_at_node(request.data)
    assert refused.value.code == "wrong_node"
    # Rewriting the header's node id to this node breaks the seal (the header is HPKE's info).
    data = request.data[:7] + NODE + request.data[7 + 32 :]
    with pytest.raises(SealedError) as broken:
        open_at_node(data)
    assert broken.value.code == "bad_seal"


def test_request_to_an_unknown_key_is_refused() -> None:
    other = sealing_key_pair(b"another key's input keying material")
    request = seal_request(NODE, other.public, REQUEST, NOW)
    with pytest.raises(SealedError) as refused:
        open_at_node(request.data)
    assert refused.value.code == "unknown_key"


def test_replayed_request_is_refused() -> None:
    replay = ReplayCache()
    request = sealed_request()
    open_at_node(request.data, replay)
    with pytest.raises(SealedError) as refused:
        open_at_node(request.data, replay, now=NOW + 1)
    assert refused.value.code == "replayed"


@pytest.mark.parametrize("age_s", [sealed.SEALED_REQUEST_AGE_MAX_S + 1, -(sealed.SEALED_CLOCK_SKEW_S + 1)])
def test_stale_or_future_request_is_refused(age_s: float) -> None:
    request = sealed_request(now=NOW - age_s)
    with pytest.raises(SealedError) as refused:
        open_at_node(request.data)
    assert refused.value.code == "stale"


def test_replay_cache_is_bounded_and_refuses_what_it_forgot() -> None:
    replay = ReplayCache(entries_max=3)
    for sent in range(5):
        replay.check_and_add(bytes([sent]) * 16, int(NOW) - 10 + sent, NOW)
        assert len(replay) <= 3
    # The two oldest were forgotten: a replay of either is refused as too old, not accepted.
    for sent in range(2):
        with pytest.raises(SealedError) as refused:
            replay.check_and_add(bytes([sent]) * 16, int(NOW) - 10 + sent, NOW)
        assert refused.value.code == "stale"
    with pytest.raises(SealedError):
        replay.check_and_add(bytes([4]) * 16, int(NOW) - 6, NOW)


def test_replay_cache_forgets_expired_nonces() -> None:
    replay = ReplayCache(entries_max=10)
    replay.check_and_add(b"a" * 16, int(NOW), NOW)
    replay.check_and_add(b"b" * 16, int(NOW) + 200, NOW + 200)
    assert len(replay) == 1


def hand_sealed(padded_to: int, last_byte: bytes = b"") -> bytes:
    key = sealed.SUITE.kem.deserialize_public_key(KEY.public)
    header = sealed._header(NODE, KEY.public)
    enc, context = sealed.SUITE.create_sender_context(key, sealed.INFO_LABEL + header)
    body = b"\x80"  # an empty msgpack map
    plaintext = sealed._REQUEST_PREFIX.pack(b"n" * 16, int(NOW), len(body)) + body
    padded = plaintext + bytes(padded_to - len(plaintext) - len(last_byte)) + last_byte
    return header + enc + context.seal(padded)


def test_padding_must_be_zero() -> None:
    """A node accepts only canonical padding (no covert bytes in it)."""
    assert open_at_node(hand_sealed(1024)).document == {}
    with pytest.raises(SealedError) as refused:
        open_at_node(hand_sealed(1024, b"\x01"))
    assert refused.value.code == "bad_padding"


def test_request_must_be_padded_to_a_bucket() -> None:
    """A client that does not pad is refused, so every client's request hides among its bucket."""
    with pytest.raises(SealedError) as refused:
        open_at_node(hand_sealed(1000))
    assert refused.value.code == "bad_padding"


def test_tampered_chunk_is_detected() -> None:
    request = sealed_request()
    chunks = full_response(open_at_node(request.data), [{"text": "a"}, {"text": "b"}])
    changed = bytearray(chunks[1])
    changed[5] ^= 1
    opener = ResponseOpener(request)
    opener.open(chunks[0])
    with pytest.raises(SealedError) as refused:
        opener.open(bytes(changed))
    assert refused.value.code == "bad_seal"


def test_reordered_chunks_are_detected() -> None:
    request = sealed_request()
    chunks = full_response(open_at_node(request.data), [{"text": "a"}, {"text": "b"}, {"text": "c"}])
    opener = ResponseOpener(request)
    opener.open(chunks[0])
    with pytest.raises(SealedError):
        opener.open(chunks[2])


def test_dropped_or_replayed_chunk_is_detected() -> None:
    request = sealed_request()
    chunks = full_response(open_at_node(request.data), [{"text": "a"}, {"text": "b"}])
    opener = ResponseOpener(request)
    opener.open(chunks[0])
    with pytest.raises(SealedError):
        opener.open(chunks[0][sealed.RESPONSE_NONCE_BYTES :])  # chunk 0 again, where chunk 1 is due


def test_truncated_response_is_detected() -> None:
    """Dropping the tail, or the final marker alone, is caught at the end of the stream."""
    request = sealed_request()
    chunks = full_response(open_at_node(request.data), [{"text": "a"}, {"finish_reason": "stop"}])
    opener = ResponseOpener(request)
    for chunk in chunks[:-1]:
        opener.open(chunk)
    with pytest.raises(SealedError) as refused:
        opener.finish()
    assert refused.value.code == "truncated"


def test_final_chunk_cannot_be_moved_up() -> None:
    """A non-final chunk never opens as final (the AAD differs), so a gateway cannot end a response early
    by relabelling; and nothing opens after the final chunk."""
    request = sealed_request()
    opened = open_at_node(request.data)
    chunks = full_response(opened, [{"text": "a"}])
    opener = ResponseOpener(request)
    assert opener.open(chunks[0]) == {"text": "a"}
    assert opener.open(chunks[1]) is None
    with pytest.raises(SealedError) as refused:
        opener.open(chunks[1])
    assert refused.value.code == "after_final"


def test_response_of_another_request_does_not_open() -> None:
    first, second = sealed_request(), sealed_request()
    chunks = full_response(open_at_node(second.data), [{"text": "a"}])
    with pytest.raises(SealedError):
        ResponseOpener(first).open(chunks[0])


def test_known_answer_of_a_sealed_request() -> None:
    """The sealed bytes are a pure function of the inputs once the randomness is fixed (what the JS client is
    checked against: tests/tp_net/vectors/sealed.json)."""
    stored = json.loads((VECTORS / "sealed.json").read_text())
    made = seal_request(
        bytes.fromhex(stored["node_id"]),
        bytes.fromhex(stored["public_key"]),
        stored["document"],
        stored["now"],
        nonce=bytes.fromhex(stored["nonce"]),
        ephemeral_ikm=bytes.fromhex(stored["ephemeral_ikm"]),
    )
    assert made.data.hex() == stored["sealed"]
    key = sealing_key_pair(bytes.fromhex(stored["key_ikm"]))
    opened = open_request(
        made.data,
        bytes.fromhex(stored["node_id"]),
        [key],
        ReplayCache(),
        stored["now"],
        response_nonce=bytes.fromhex(stored["response_nonce"]),
    )
    assert opened.document == stored["document"]
    chunks = [opened.sealer.seal(message) for message in stored["messages"]] + [opened.sealer.seal_final()]
    assert [chunk.hex() for chunk in chunks] == stored["chunks"]


def test_a_restarted_node_refuses_what_was_sent_before_it_started() -> None:
    """A new process has lost the nonces the old one saw: nothing sent before its start is accepted."""
    replay = ReplayCache(started=NOW)
    with pytest.raises(SealedError) as refused:
        replay.check_and_add(b"r" * 16, int(NOW) - 2, NOW + 1)
    assert refused.value.code == "stale"
    replay.check_and_add(b"s" * 16, int(NOW), NOW + 1)
