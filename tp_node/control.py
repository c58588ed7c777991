"""The local control protocol (sans-IO): one JSON request line, one JSON response line.

    request:  {"v": 1, "command": "status"}
    response: {"v": 1, "ok": true, "result": {...}}  or  {"v": 1, "ok": false, "error": "..."}

It runs over a Unix socket in the role's data directory (mode 0600), so only the operator's user can ask.
Nothing here does IO: tp_node.control_socket moves the bytes.
"""

from __future__ import annotations

import json
from typing import Any

from tp_crypto.errors import TokenPlaceError

CONTROL_VERSION = 1
CONTROL_SOCKET_NAME = "control.sock"
COMMANDS = ("status",)
CONTROL_REQUEST_BYTES_MAX = 1024
CONTROL_RESPONSE_BYTES_MAX = 1 << 20
LINE_END = b"\n"


class ControlError(TokenPlaceError):
    """A control message is malformed, too long, or reports a failure."""


def encode_request(command: str) -> bytes:
    if command not in COMMANDS:
        raise ControlError(f"unknown control command {command!r} (known: {', '.join(COMMANDS)})")
    return _line({"v": CONTROL_VERSION, "command": command})


def decode_request(line: bytes) -> str:
    """The command a request line asks for."""
    message = _object(line, CONTROL_REQUEST_BYTES_MAX, "request")
    command = message.get("command")
    if command not in COMMANDS:
        raise ControlError(f"unknown control command {command!r} (known: {', '.join(COMMANDS)})")
    return str(command)


def encode_result(result: dict[str, Any]) -> bytes:
    return _line({"v": CONTROL_VERSION, "ok": True, "result": result})


def encode_error(message: str) -> bytes:
    return _line({"v": CONTROL_VERSION, "ok": False, "error": message})


def decode_response(line: bytes) -> dict[str, Any]:
    """The result of a response line; ControlError carrying the server's message when it failed."""
    message = _object(line, CONTROL_RESPONSE_BYTES_MAX, "response")
    if message.get("ok") is not True:
        raise ControlError(f"control request failed: {message.get('error', 'no reason given')}")
    result = message.get("result")
    if not isinstance(result, dict):
        raise ControlError("control response has no result object")
    return result


class LineReader:
    """Collects received bytes into one line, refusing more than `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray) -> bytes | None:
        """The complete line once its end arrived, else None."""
        self._buffer += data
        end = self._buffer.find(LINE_END)
        if (end < 0 and len(self._buffer) > self._limit) or end > self._limit:
            raise ControlError(f"control message longer than {self._limit} bytes")
        return bytes(self._buffer[:end]) if end >= 0 else None


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode() + LINE_END


def _object(line: bytes, limit: int, kind: str) -> dict[str, Any]:
    if len(line) > limit:
        raise ControlError(f"control {kind} longer than {limit} bytes")
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlError(f"control {kind} is not JSON") from None
    if not isinstance(message, dict):
        raise ControlError(f"control {kind} is not a JSON object")
    if message.get("v") != CONTROL_VERSION:
        raise ControlError(f"control {kind} has version {message.get('v')!r}, expected {CONTROL_VERSION}")
    return message
