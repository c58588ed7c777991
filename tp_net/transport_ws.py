"""The WebSocket transport (trio-websocket). The only module that imports trio_websocket.

Addresses are `ws://HOST:PORT/` URLs. Each transport message is one binary WebSocket message; the receive
buffer is 64 KiB (the 4 KiB default throttles large messages) and messages above CHANNEL_MESSAGE_BYTES_MAX
make the library close the connection with code 1009.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
from functools import partial

import trio
import trio_websocket

from tp_net.errors import (
    ChannelClosed,
    DialError,
    LocalProtocolError,
    RemoteProtocolError,
    TokenPlaceError,
)
from tp_net.transport import CHANNEL_MESSAGE_BYTES_MAX, DIAL_TIMEOUT_S, Channel, ChannelHandler
from tp_net.trio_util import is_cancelled

log = logging.getLogger(__name__)

WS_RECEIVE_BUFFER_BYTES = 64 * 1024
WS_MESSAGE_QUEUE_MESSAGES = 64
WS_CLOSE_TIMEOUT_S = 2.0
WS_ACCEPT_TIMEOUT_S = 10.0


class WebSocketChannel:
    """A Channel over one trio-websocket connection.

    When given the TCP stream too, aclose() closes it: trio-websocket leaves a client's socket open when the
    server closed the connection first.
    """

    def __init__(
        self,
        connection: trio_websocket.WebSocketConnection,
        stream: trio.SocketStream | None = None,
    ) -> None:
        self._connection = connection
        self._stream = stream

    async def send_message(self, message: bytes) -> None:
        if len(message) > CHANNEL_MESSAGE_BYTES_MAX:
            raise LocalProtocolError(f"message of {len(message)} bytes exceeds {CHANNEL_MESSAGE_BYTES_MAX}")
        try:
            await self._connection.send_message(bytes(message))
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError) as exc:
            raise ChannelClosed("websocket is closed") from exc

    async def receive_message(self) -> bytes:
        try:
            message = await self._connection.get_message()
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError) as exc:
            raise ChannelClosed("websocket is closed") from exc
        if isinstance(message, str):
            await self.aclose()
            raise RemoteProtocolError("peer sent a text message; only binary messages are allowed")
        return message

    async def aclose(self) -> None:
        # While shutting down (our scope is cancelled) the library's reader task may be cancelled too, so
        # nobody would read the peer's answer to a closing handshake: just close the socket.
        if not is_cancelled():
            await self._close_politely()
        if self._stream is not None:
            with trio.CancelScope(shield=True):
                await self._stream.aclose()

    async def _close_politely(self) -> None:
        with trio.move_on_after(WS_CLOSE_TIMEOUT_S) as scope:
            scope.shield = True
            # The peer may be gone already; then there is nothing left to close politely.
            with contextlib.suppress(trio_websocket.HandshakeError, trio.BrokenResourceError, OSError):
                await self._connection.aclose()


class WebSocketDialer:
    """Dials ws:// URLs; connection background tasks run in the nursery given at construction."""

    def __init__(self, nursery: trio.Nursery, *, dial_timeout_s: float = DIAL_TIMEOUT_S) -> None:
        self._nursery = nursery
        self._dial_timeout_s = dial_timeout_s

    async def dial(self, address: str) -> Channel:
        host, port, resource = parse_ws_address(address)
        try:
            with trio.fail_after(self._dial_timeout_s):
                stream = await trio.open_tcp_stream(host, port)
                try:
                    connection = await trio_websocket.wrap_client_stream(
                        self._nursery,
                        stream,
                        f"{host}:{port}",
                        resource,
                        message_queue_size=WS_MESSAGE_QUEUE_MESSAGES,
                        max_message_size=CHANNEL_MESSAGE_BYTES_MAX,
                        receive_buffer_size=WS_RECEIVE_BUFFER_BYTES,
                    )
                except BaseException:
                    await stream.aclose()
                    raise
        except trio.TooSlowError as exc:
            raise DialError(f"dialing {address} timed out after {self._dial_timeout_s} s") from exc
        except (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed) as exc:
            raise DialError(f"cannot dial {address}: {exc.__class__.__name__}: {exc}") from exc
        return WebSocketChannel(connection, stream)


def parse_ws_address(address: str) -> tuple[str, int, str]:
    """Split `ws://HOST:PORT/PATH` into host, port and resource; DialError names what is wrong."""
    parts = urllib.parse.urlsplit(address)
    if parts.scheme != "ws":
        raise DialError(f"address {address!r} is not a ws:// URL")
    try:
        port = parts.port
    except ValueError as exc:
        raise DialError(f"address {address!r} has an invalid port") from exc
    if not parts.hostname or port is None:
        raise DialError(f"address {address!r} needs a host and a port")
    return parts.hostname, port, parts.path or "/"


def format_ws_address(host: str, port: int) -> str:
    return f"ws://[{host}]:{port}/" if ":" in host else f"ws://{host}:{port}/"


class WebSocketListener:
    """Accepts WebSocket connections on HOST:PORT (127.0.0.1 unless told otherwise)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port

    async def serve(
        self,
        handler: ChannelHandler,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async def on_request(request: trio_websocket.WebSocketRequest) -> None:
            connection = await request.accept()
            channel = WebSocketChannel(connection)
            try:
                await handler(channel)
            except TokenPlaceError as exc:
                # One peer's failure must not take the listener down.
                log.debug("connection handler ended: %s", exc.__class__.__name__)
            finally:
                await channel.aclose()

        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    trio_websocket.serve_websocket,
                    on_request,
                    self.host,
                    self.port,
                    None,
                    message_queue_size=WS_MESSAGE_QUEUE_MESSAGES,
                    max_message_size=CHANNEL_MESSAGE_BYTES_MAX,
                    receive_buffer_size=WS_RECEIVE_BUFFER_BYTES,
                    connect_timeout=WS_ACCEPT_TIMEOUT_S,
                    disconnect_timeout=WS_CLOSE_TIMEOUT_S,
                )
            )
            task_status.started(format_ws_address(self.host, server.port))
