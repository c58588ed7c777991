"""RFC 6455 WebSocket, sans-IO: the opening handshake and binary-message framing, nothing more.

token.place links need one thing from WebSockets: ordered binary messages over TCP that pass through web
infrastructure. A general library (extensions, text, fragmentation on send, background reader tasks) costs
a relay more CPU per cell than its own onion and link crypto, so this module implements only what links use:
- the handshake (client request, server 101 answer), both bounded by HANDSHAKE_BYTES_MAX;
- unfragmented binary messages on send (client frames masked, server frames not, as RFC 6455 requires);
- on receive: binary messages (fragmented or not), ping (answered with pong), pong, close; a text message, a
  reserved bit or opcode, a wrongly masked frame or a message above the limit is a protocol error, detected
  from the frame header, before its payload is buffered.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum

from tp_net.protocol.errors import RemoteProtocolError

HANDSHAKE_BYTES_MAX = 8 * 1024
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTROL_PAYLOAD_BYTES_MAX = 125


class Opcode(IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    MESSAGE_TOO_BIG = 1009


class WebSocketError(RemoteProtocolError):
    """The peer broke the protocol; `close_code` is what to tell it before closing."""

    def __init__(self, message: str, close_code: CloseCode = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.close_code = close_code


# --- the opening handshake --------------------------------------------------------------------------


def accept_token(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + WS_GUID).digest()).decode("ascii")


def client_request(host: str, resource: str, key: str) -> bytes:
    return (
        f"GET {resource} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode("ascii")


def server_response(key: str) -> bytes:
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_token(key)}\r\n\r\n"
    ).encode("ascii")


def rejection_response(reason: str) -> bytes:
    body = reason.encode("ascii", "replace")
    return (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode("ascii")
        + body
    )


def split_head(buffer: bytes | bytearray) -> tuple[bytes, bytes] | None:
    """(head, the bytes after it) once `buffer` holds a whole HTTP head; None while it does not."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > HANDSHAKE_BYTES_MAX:
            raise WebSocketError(f"handshake longer than {HANDSHAKE_BYTES_MAX} bytes")
        return None
    if end + 4 > HANDSHAKE_BYTES_MAX:
        raise WebSocketError(f"handshake longer than {HANDSHAKE_BYTES_MAX} bytes")
    return bytes(buffer[: end + 4]), bytes(buffer[end + 4 :])


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError as exc:
        raise WebSocketError("handshake is not ASCII") from exc
    start_line, *lines = text[:-4].split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise WebSocketError("malformed handshake header line")
        headers[name.lower()] = value.strip()
    return start_line, headers


def _has_token(value: str, token: str) -> bool:
    return token in (part.strip().lower() for part in value.split(","))


def parse_client_request(head: bytes) -> tuple[str, str]:
    """(resource, key) of a valid upgrade request; WebSocketError names what is wrong."""
    start_line, headers = _parse_head(head)
    method, _, rest = start_line.partition(" ")
    resource, _, version = rest.partition(" ")
    if method != "GET" or not resource.startswith("/") or version != "HTTP/1.1":
        raise WebSocketError("handshake is not a GET request over HTTP/1.1")
    if not _has_token(headers.get("upgrade", ""), "websocket"):
        raise WebSocketError("handshake lacks 'Upgrade: websocket'")
    if not _has_token(headers.get("connection", ""), "upgrade"):
        raise WebSocketError("handshake lacks 'Connection: Upgrade'")
    if headers.get("sec-websocket-version") != "13":
        raise WebSocketError("only WebSocket version 13 is supported")
    key = headers.get("sec-websocket-key", "")
    if len(_base64_or_empty(key)) != 16:
        raise WebSocketError("Sec-WebSocket-Key is not 16 bytes of base64")
    return resource, key


def _base64_or_empty(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return b""


def check_server_response(head: bytes, key: str) -> None:
    """WebSocketError unless `head` accepts the upgrade requested with `key`."""
    start_line = head.split(b"\r\n", 1)[0].decode("ascii", "replace")
    parts = start_line.split(" ", 2)
    if len(parts) < 2 or parts[0] != "HTTP/1.1" or parts[1] != "101":
        raise WebSocketError(f"server refused the upgrade: {start_line[:80]!r}")
    _, headers = _parse_head(head)
    if headers.get("sec-websocket-accept") != accept_token(key):
        raise WebSocketError("server answered with a wrong Sec-WebSocket-Accept")
    if headers.get("sec-websocket-extensions"):
        raise WebSocketError("server chose an extension that was not offered")


# --- frames -----------------------------------------------------------------------------------------


def mask_payload(data: bytes, mask: bytes) -> bytes:
    """XOR with the 4-byte key repeated (its own inverse); one big-integer XOR, not a Python loop."""
    size = len(data)
    if not size:
        return b""
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


def encode_frame(opcode: Opcode, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final frame; masked with the 4-byte `mask` when given (a client must mask)."""
    size = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, mask_bit | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, mask_bit | 127, size)
    if mask is None:
        return header + payload
    return header + mask + mask_payload(payload, mask)


def close_payload(code: CloseCode) -> bytes:
    return struct.pack("!H", code)


@dataclass(frozen=True)
class Message:
    data: bytes


@dataclass(frozen=True)
class Ping:
    payload: bytes


@dataclass(frozen=True)
class Pong:
    payload: bytes


@dataclass(frozen=True)
class Close:
    code: int | None


Event = Message | Ping | Pong | Close


class FrameReader:
    """Turns received bytes into events. `masked`: whether the peer must mask (it is a client)."""

    def __init__(self, *, masked: bool, message_bytes_max: int) -> None:
        self._masked = masked
        self._message_bytes_max = message_bytes_max
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_bytes = 0
        self._in_message = False

    def feed(self, data: bytes) -> list[Event]:
        self._buffer += data
        events: list[Event] = []
        while (frame := self._next_frame()) is not None:
            event = self._on_frame(*frame)
            if event is not None:
                events.append(event)
        return events

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        first, second = buffer[0], buffer[1]
        if first & 0x70:
            raise WebSocketError("frame uses reserved bits (no extension was agreed)")
        if bool(second & 0x80) != self._masked:
            raise WebSocketError("frame masking is wrong for this side of the connection")
        length, offset = second & 0x7F, 2
        if length == 126:
            if len(buffer) < 4:
                return None
            length, offset = struct.unpack_from("!H", buffer, 2)[0], 4
        elif length == 127:
            if len(buffer) < 10:
                return None
            length, offset = struct.unpack_from("!Q", buffer, 2)[0], 10
        self._check_length(first & 0x0F, length)
        mask_end = offset + (4 if self._masked else 0)
        if len(buffer) < mask_end + length:
            return None
        payload = bytes(buffer[mask_end : mask_end + length])
        if self._masked:
            payload = mask_payload(payload, bytes(buffer[offset:mask_end]))
        del buffer[: mask_end + length]
        return bool(first & 0x80), first & 0x0F, payload

    def _check_length(self, opcode: int, length: int) -> None:
        """Refuse from the header alone, before the payload is buffered."""
        if opcode >= Opcode.CLOSE:
            if length > CONTROL_PAYLOAD_BYTES_MAX:
                raise WebSocketError("control frame longer than 125 bytes")
        elif self._fragment_bytes + length > self._message_bytes_max:
            raise WebSocketError(
                f"message longer than {self._message_bytes_max} bytes", CloseCode.MESSAGE_TOO_BIG
            )

    def _on_frame(self, final: bool, opcode: int, payload: bytes) -> Event | None:
        if opcode >= Opcode.CLOSE:
            if not final:
                raise WebSocketError("fragmented control frame")
            return self._control(opcode, payload)
        if opcode == Opcode.TEXT:
            raise WebSocketError("text message; only binary messages are allowed", CloseCode.UNSUPPORTED_DATA)
        if opcode == Opcode.BINARY:
            if self._in_message:
                raise WebSocketError("new message before the previous one ended")
        elif opcode != Opcode.CONTINUATION or not self._in_message:
            raise WebSocketError(f"unexpected opcode {opcode}")
        if final and not self._in_message:
            return Message(payload)
        self._in_message = True
        self._fragments.append(payload)
        self._fragment_bytes += len(payload)
        if not final:
            return None
        message = b"".join(self._fragments)
        self._fragments, self._fragment_bytes, self._in_message = [], 0, False
        return Message(message)

    @staticmethod
    def _control(opcode: int, payload: bytes) -> Event:
        if opcode == Opcode.PING:
            return Ping(payload)
        if opcode == Opcode.PONG:
            return Pong(payload)
        if opcode != Opcode.CLOSE:
            raise WebSocketError(f"reserved control opcode {opcode}")
        if len(payload) == 1:
            raise WebSocketError("close frame with a 1-byte payload")
        return Close(struct.unpack_from("!H", payload)[0] if payload else None)
