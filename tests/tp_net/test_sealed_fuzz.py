"""Sealed decoders fuzzed: whatever bytes a gateway or a node sends, opening a sealed request or a response
chunk raises only SealedError/RemoteProtocolError, never anything else. Garbage around a valid request's
header (so that decoding gets past the cheap checks) included."""

from __future__ import annotations

import contextlib
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tp_crypto.errors import RemoteProtocolError
from tp_net.protocol import sealed
from tp_net.protocol.sealed import ReplayCache, ResponseOpener, open_request, seal_request, sealing_key_pair

EXAMPLES = int(os.environ.get("TP_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NODE = bytes(range(32))
KEY = sealing_key_pair(b"fuzzing the sealed decoders, key")
NOW = 1_800_000_000.0
HEADER = sealed._header(NODE, KEY.public)
REQUEST = seal_request(NODE, KEY.public, {"messages": []}, NOW)


@FUZZ
@given(st.binary(max_size=2048), st.booleans())
def test_open_request_refuses_garbage_cleanly(data: bytes, with_header: bool) -> None:
    with contextlib.suppress(RemoteProtocolError):
        open_request((HEADER + data) if with_header else data, NODE, [KEY], ReplayCache(), NOW)


@FUZZ
@given(st.binary(max_size=1024), st.sampled_from([1000, 1024, 4096]))
def test_a_well_sealed_request_with_garbage_inside_is_refused_cleanly(plaintext: bytes, size: int) -> None:
    """The node's parsing after decryption: any plaintext a (hostile) client can seal."""
    enc, context = sealed.SUITE.create_sender_context(
        sealed.SUITE.kem.deserialize_public_key(KEY.public), sealed.INFO_LABEL + HEADER
    )
    padded = (plaintext + bytes(size))[:size]
    with contextlib.suppress(RemoteProtocolError):
        open_request(HEADER + enc + context.seal(padded), NODE, [KEY], ReplayCache(), NOW)


@FUZZ
@given(st.lists(st.binary(max_size=256), max_size=6))
def test_the_response_opener_refuses_garbage_cleanly(chunks: list[bytes]) -> None:
    opener = ResponseOpener(REQUEST)
    with contextlib.suppress(RemoteProtocolError):
        for chunk in chunks:
            opener.open(chunk)
        opener.finish()
