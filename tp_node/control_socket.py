"""The control socket's IO: a Unix socket (mode 0600) in the data directory, served and queried with trio."""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from tp_node.control import (
    CONTROL_REQUEST_BYTES_MAX,
    CONTROL_RESPONSE_BYTES_MAX,
    ControlError,
    LineReader,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_result,
)

log = logging.getLogger(__name__)

CONTROL_TIMEOUT_S = 5.0
SOCKET_MODE = 0o600
UNIX_PATH_BYTES_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
RECEIVE_BYTES = 65536

StatusSource = Callable[[], dict[str, Any]]


async def serve_control(
    path: Path, status: StatusSource, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Answer control requests on `path` until cancelled; the socket file is removed at the end."""
    listener = await _listen(path)
    try:
        task_status.started()

        async def handler(stream: trio.SocketStream) -> None:
            await _answer(stream, status)

        await trio.serve_listeners(handler, [listener])
    finally:
        path.unlink(missing_ok=True)


async def query(path: Path, command: str) -> dict[str, Any]:
    """Ask the role listening on `path`; ControlError with a clear reason when nobody answers."""
    try:
        with trio.fail_after(CONTROL_TIMEOUT_S):
            stream = await trio.open_unix_socket(str(path))
            async with stream:
                await stream.send_all(encode_request(command))
                return decode_response(await _receive_line(stream, CONTROL_RESPONSE_BYTES_MAX))
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(
            f"nothing answers on {path}: is the role running with this data directory?"
        ) from None
    except trio.TooSlowError:
        raise ControlError(f"{path} did not answer within {CONTROL_TIMEOUT_S:.0f} s") from None


async def _listen(path: Path) -> trio.SocketListener:
    if len(os.fsencode(path)) > UNIX_PATH_BYTES_MAX:
        raise ControlError(f"control socket path {path} is longer than {UNIX_PATH_BYTES_MAX} bytes")
    await _remove_stale(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is created 0600: no moment where others could connect
    try:
        await sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, SOCKET_MODE)
    sock.listen()
    return trio.SocketListener(sock)


async def _remove_stale(path: Path) -> None:
    """A socket file left by a killed process is removed; one that answers belongs to a running role."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlError(f"{path} exists and is not a socket; remove it")
    try:
        stream = await trio.open_unix_socket(str(path))
    except OSError:
        path.unlink(missing_ok=True)
        return
    await stream.aclose()
    raise ControlError(f"{path} is in use: another process runs with this data directory")


async def _answer(stream: trio.abc.Stream, status: StatusSource) -> None:
    async with stream:
        try:
            with trio.fail_after(CONTROL_TIMEOUT_S):
                decode_request(await _receive_line(stream, CONTROL_REQUEST_BYTES_MAX))
                reply = encode_result(status())
        except ControlError as exc:
            reply = encode_error(str(exc))
        except (trio.TooSlowError, trio.BrokenResourceError):
            return
        try:
            await stream.send_all(reply)
        except trio.BrokenResourceError:
            log.debug("control client left before its answer")


async def _receive_line(stream: trio.abc.Stream, limit: int) -> bytes:
    reader = LineReader(limit)
    while True:
        data = await stream.receive_some(RECEIVE_BYTES)
        if not data:
            raise ControlError("control connection closed before a complete message")
        line = reader.feed(data)
        if line is not None:
            return line
