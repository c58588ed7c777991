"""The sans-IO WebSocket handshake and framing (RFC 6455 subset used by links)."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tp_net.protocol import ws_protocol
from tp_net.protocol.ws_protocol import (
    Close,
    CloseCode,
    FrameReader,
    Message,
    Opcode,
    Ping,
    Pong,
    WebSocketError,
    encode_frame,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
MASK = b"\x01\x02\x03\x04"
EXAMPLES = int(os.environ.get("TP_FUZZ_EXAMPLES", "300"))
# No per-example deadline, as every other fuzzer here: a loaded 2-core machine stalls any example now and
# then, and what matters is that the reader raises only protocol errors, not how fast.
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_accept_token_matches_the_rfc_example() -> None:
    assert ws_protocol.accept_token(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_client_request_round_trips_through_the_server_parser() -> None:
    request = ws_protocol.client_request("relay.example:7000", "/", KEY)
    head, rest = ws_protocol.split_head(request + b"\x82\x00") or (b"", b"")
    assert rest == b"\x82\x00"
    assert ws_protocol.parse_client_request(head) == ("/", KEY)
    ws_protocol.check_server_response(ws_protocol.server_response(KEY), KEY)


@pytest.mark.parametrize(
    ("head", "complaint"),
    [
        (b"POST / HTTP/1.1\r\n\r\n", "GET"),
        (b"GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n", "Upgrade: websocket"),
        (b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", "Connection: Upgrade"),
        (b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", "version 13"),
        (
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: short\r\n\r\n",
            "16 bytes",
        ),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", "malformed"),
        (b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n", "ASCII"),
    ],
)
def test_bad_upgrade_requests_are_refused_with_a_reason(head: bytes, complaint: str) -> None:
    with pytest.raises(WebSocketError, match=complaint):
        ws_protocol.parse_client_request(head)


def test_a_wrong_accept_token_or_status_is_refused() -> None:
    with pytest.raises(WebSocketError, match="Sec-WebSocket-Accept"):
        ws_protocol.check_server_response(ws_protocol.server_response("b3RoZXIga2V5IDEyMzQ1Ng=="), KEY)
    with pytest.raises(WebSocketError, match="refused"):
        ws_protocol.check_server_response(ws_protocol.rejection_response("no"), KEY)


def test_an_endless_handshake_is_refused_at_the_bound() -> None:
    assert ws_protocol.split_head(b"GET / HTTP/1.1\r\n") is None
    with pytest.raises(WebSocketError, match="longer than"):
        ws_protocol.split_head(b"x" * (ws_protocol.HANDSHAKE_BYTES_MAX + 1))


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_every_length_encoding_round_trips(size: int) -> None:
    payload = bytes(range(256)) * (size // 256 + 1)
    payload = payload[:size]
    server_side = FrameReader(masked=True, message_bytes_max=100_000)
    assert server_side.feed(encode_frame(Opcode.BINARY, payload, MASK)) == [Message(payload)]
    client_side = FrameReader(masked=False, message_bytes_max=100_000)
    assert client_side.feed(encode_frame(Opcode.BINARY, payload)) == [Message(payload)]


def test_masking_is_applied_on_the_wire() -> None:
    frame = encode_frame(Opcode.BINARY, b"\x00\x00\x00\x00\x00", MASK)
    assert frame[2:6] == MASK
    assert frame[6:] == b"\x01\x02\x03\x04\x01"


def test_frames_split_anywhere_reassemble() -> None:
    wire = encode_frame(Opcode.BINARY, b"a" * 300, MASK) + encode_frame(Opcode.PING, b"hi", MASK)
    reader = FrameReader(masked=True, message_bytes_max=1000)
    events = []
    for index in range(len(wire)):
        events += reader.feed(wire[index : index + 1])
    assert events == [Message(b"a" * 300), Ping(b"hi")]


def test_fragmented_message_with_a_ping_in_between() -> None:
    reader = FrameReader(masked=False, message_bytes_max=1000)
    first = bytes([Opcode.BINARY, 3]) + b"abc"  # FIN clear
    ping = encode_frame(Opcode.PING, b"p")
    last = bytes([0x80 | Opcode.CONTINUATION, 2]) + b"de"
    assert reader.feed(first + ping + last) == [Ping(b"p"), Message(b"abcde")]


def test_control_frames_and_close_codes() -> None:
    reader = FrameReader(masked=False, message_bytes_max=10)
    wire = encode_frame(Opcode.PONG, b"x") + encode_frame(Opcode.CLOSE, struct.pack("!H", 1000))
    assert reader.feed(wire + encode_frame(Opcode.CLOSE, b"")) == [Pong(b"x"), Close(1000), Close(None)]


@pytest.mark.parametrize(
    ("wire", "complaint", "code"),
    [
        (bytes([0x80 | Opcode.TEXT, 1]) + b"a", "text message", CloseCode.UNSUPPORTED_DATA),
        (bytes([0xC0 | Opcode.BINARY, 0]), "reserved bits", CloseCode.PROTOCOL_ERROR),
        (bytes([0x80 | Opcode.BINARY, 0x80]) + MASK, "masking", CloseCode.PROTOCOL_ERROR),
        (bytes([0x80 | 0x3, 0]), "unexpected opcode", CloseCode.PROTOCOL_ERROR),
        (bytes([0x80 | 0xB, 0]), "reserved control", CloseCode.PROTOCOL_ERROR),
        (bytes([Opcode.PING, 0]), "fragmented control", CloseCode.PROTOCOL_ERROR),
        (bytes([0x80 | Opcode.PING, 126, 0, 126]), "longer than 125", CloseCode.PROTOCOL_ERROR),
        (bytes([0x80 | Opcode.CONTINUATION, 0]), "unexpected opcode", CloseCode.PROTOCOL_ERROR),
        (bytes([Opcode.BINARY, 0, Opcode.BINARY, 0]), "before the previous", CloseCode.PROTOCOL_ERROR),
        (bytes([0x80 | Opcode.CLOSE, 1, 3]), "1-byte", CloseCode.PROTOCOL_ERROR),
    ],
)
def test_protocol_violations_name_the_problem(wire: bytes, complaint: str, code: CloseCode) -> None:
    with pytest.raises(WebSocketError, match=complaint) as raised:
        FrameReader(masked=False, message_bytes_max=1000).feed(wire)
    assert raised.value.close_code == code


def test_an_oversized_message_is_refused_from_its_header_alone() -> None:
    reader = FrameReader(masked=False, message_bytes_max=1000)
    header = bytes([0x80 | Opcode.BINARY, 127]) + struct.pack("!Q", 2**40)
    with pytest.raises(WebSocketError, match="longer than 1000") as raised:
        reader.feed(header)  # no payload byte sent: the length alone condemns it
    assert raised.value.close_code == CloseCode.MESSAGE_TOO_BIG


def test_fragments_count_towards_the_message_limit() -> None:
    reader = FrameReader(masked=False, message_bytes_max=5)
    reader.feed(bytes([Opcode.BINARY, 3]) + b"abc")
    with pytest.raises(WebSocketError, match="longer than 5"):
        reader.feed(bytes([Opcode.CONTINUATION, 3]))


@FUZZ
@given(st.binary(max_size=400), st.booleans())
def test_fuzz_reader_raises_only_protocol_errors(data: bytes, masked: bool) -> None:
    reader = FrameReader(masked=masked, message_bytes_max=256)
    try:
        events = reader.feed(data)
    except WebSocketError:
        return
    assert all(len(e.data) <= 256 for e in events if isinstance(e, Message))
