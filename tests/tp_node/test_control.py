"""The control protocol (sans-IO) and its Unix socket: status answers, bad requests, permissions."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from tp_node.control import (
    CONTROL_REQUEST_BYTES_MAX,
    ControlError,
    LineReader,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_result,
)
from tp_node.control_socket import query, serve_control


def test_requests_and_responses_round_trip() -> None:
    assert encode_request("status") == b'{"command":"status","v":1}\n'
    assert decode_request(encode_request("status").rstrip(b"\n")) == "status"
    result = {"links": {"count": 2}}
    assert decode_response(encode_result(result).rstrip(b"\n")) == result
    with pytest.raises(ControlError, match="control request failed: busy"):
        decode_response(encode_error("busy").rstrip(b"\n"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"status", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"v": 2, "command": "status"}', "version 2, expected 1"),
        (b'{"v": 1, "command": "shutdown"}', "unknown control command 'shutdown'"),
        (b"{" + b" " * CONTROL_REQUEST_BYTES_MAX + b"}", "longer than 1024 bytes"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(line: bytes, message: str) -> None:
    with pytest.raises(ControlError, match=message):
        decode_request(line)


def test_line_reader_waits_for_the_end_and_bounds_the_length() -> None:
    reader = LineReader(8)
    assert reader.feed(b"abc") is None
    assert reader.feed(b"de\nrest") == b"abcde"
    with pytest.raises(ControlError, match="longer than 8 bytes"):
        LineReader(8).feed(b"123456789")


async def test_the_socket_answers_status_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    status: dict[str, Any] = {"role": "relay", "circuits": 3}
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, lambda: status)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert await query(path, "status") == status
        with pytest.raises(ControlError, match="is in use: another process"):
            await serve_control(path, lambda: status)
        nursery.cancel_scope.cancel()
    assert not path.exists()


async def test_a_stale_socket_is_replaced_and_a_missing_one_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with pytest.raises(ControlError, match=r"nothing answers on .*is the role running"):
        await query(path, "status")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on, as a killed process leaves it
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, lambda: {"ok": 1})
        assert await query(path, "status") == {"ok": 1}
        nursery.cancel_scope.cancel()


async def test_a_malformed_request_gets_an_error_response(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, lambda: {})
        stream = await trio.open_unix_socket(str(path))
        async with stream:
            await stream.send_all(b'{"v": 1, "command": "reboot"}\n')
            reply = await stream.receive_some(4096)
        with pytest.raises(ControlError, match="unknown control command 'reboot'"):
            decode_response(reply.rstrip(b"\n"))
        nursery.cancel_scope.cancel()


async def test_a_file_in_the_way_is_named(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    path.write_text("not a socket")
    with pytest.raises(ControlError, match="exists and is not a socket"):
        await serve_control(path, dict)
    assert os.path.exists(path)


async def test_a_socket_path_too_long_for_unix_sockets_is_named(tmp_path: Path) -> None:
    path = tmp_path / ("d" * 120) / "control.sock"
    with pytest.raises(ControlError, match="longer than 107 bytes"):
        await serve_control(path, dict)
