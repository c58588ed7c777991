"""The WebSocket transport: tp_net.protocol.ws_protocol over trio TCP streams.

Addresses are `ws://HOST:PORT/` URLs. Each transport message is one binary WebSocket message; a message
above CHANNEL_MESSAGE_BYTES_MAX is refused before sending, and a peer announcing one is cut off with close
code 1009 before its payload is buffered. Reading happens in the task that calls receive_message (no
background task per connection), so a forwarded cell costs one wake-up, not three.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import random
import time
from collections import deque

import trio

from tp_net.protocol import ws_protocol
from tp_net.protocol.addresses import AddressError, parse_address
from tp_net.protocol.errors import (
    ChannelClosed,
    DialError,
    LocalProtocolError,
    RemoteProtocolError,
    TokenPlaceError,
)
from tp_net.protocol.link_limits import ConnectionCounter, source_key
from tp_net.protocol.ws_protocol import CloseCode, FrameReader, Opcode, WebSocketError
from tp_net.trio import message_trace
from tp_net.trio.transport import CHANNEL_MESSAGE_BYTES_MAX, DIAL_TIMEOUT_S, Channel, ChannelHandler
from tp_net.trio.trio_util import acquire_soon, is_cancelled

log = logging.getLogger(__name__)

WS_RECEIVE_BYTES = 64 * 1024
WS_CLOSE_TIMEOUT_S = 2.0
WS_ACCEPT_TIMEOUT_S = 10.0
# TCP's own dead-peer detection, for what the link's Pings cannot see (a link whose sends are stuck in the
# kernel, a handshake in progress): probes after this long idle, this far apart, this many unanswered.
TCP_KEEPALIVE_IDLE_S = 10
TCP_KEEPALIVE_INTERVAL_S = 5
TCP_KEEPALIVE_PROBES = 3
# Sent data unacknowledged for this long kills the connection (instead of ~15 minutes of retransmissions).
TCP_USER_TIMEOUT_MS = 20_000

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_TRACING = message_trace.ENABLED  # the latency tracer (off unless TP_TRACE_DIR was set at start)


class WebSocketChannel:
    """A Channel over one TCP stream after the opening handshake. `client`: this side dialed (and masks)."""

    def __init__(self, stream: trio.SocketStream, *, client: bool, received: bytes = b"") -> None:
        self._stream = stream
        set_dead_peer_timeouts(stream.socket)
        self.peer_host = peer_host(stream)
        self._client = client
        self._reader = FrameReader(masked=not client, message_bytes_max=CHANNEL_MESSAGE_BYTES_MAX)
        # Masking defends HTTP proxies against chosen plaintext, not secrecy: a fast seeded PRNG will do.
        self._masks = random.Random(os.urandom(16))
        self._send_lock = trio.Lock()
        self._messages: deque[bytes] = deque()
        self._early = received
        self._gone = trio.Event()  # set once the peer can send no more (its close, EOF, an error, our close)
        self._receiving = False
        self._close_sent = False
        self._closed = False
        if _TRACING:
            self._trace_ports = _ports(stream)
            self._trace_sent = self._trace_received = 0

    async def send_message(self, message: bytes) -> None:
        if len(message) > CHANNEL_MESSAGE_BYTES_MAX:
            raise LocalProtocolError(f"message of {len(message)} bytes exceeds {CHANNEL_MESSAGE_BYTES_MAX}")
        if self._close_sent or self._closed:
            raise ChannelClosed("websocket is closed")
        if _TRACING:
            started = time.monotonic_ns()
            await self._send_frame(Opcode.BINARY, bytes(message))
            self._trace_sent += 1
            message_trace.message("send0", self._trace_ports, self._trace_sent, len(message), started)
            message_trace.message("send", self._trace_ports, self._trace_sent, len(message))
            return
        await self._send_frame(Opcode.BINARY, bytes(message))

    async def receive_message(self) -> bytes:
        while not self._messages:
            if self._gone.is_set() or self._closed:
                raise ChannelClosed("websocket is closed")
            self._receiving = True
            try:
                await self._receive_events()
            finally:
                self._receiving = False
        if _TRACING:
            self._trace_received += 1
            message_trace.message("recv", self._trace_ports, self._trace_received, len(self._messages[0]))
        return self._messages.popleft()

    async def aclose(self) -> None:
        if self._closed:
            return
        # Shutting down (our scope is cancelled): no goodbye, just close the socket.
        if not is_cancelled() and not self._gone.is_set():
            with trio.move_on_after(WS_CLOSE_TIMEOUT_S) as scope:
                scope.shield = True
                await self._close_politely(CloseCode.NORMAL)
        await self._close_stream()

    # --- internals ------------------------------------------------------------------------------

    async def _send_frame(self, opcode: Opcode, payload: bytes) -> None:
        mask = self._masks.getrandbits(32).to_bytes(4, "little") if self._client else None
        frame = ws_protocol.encode_frame(opcode, payload, mask)
        try:
            await acquire_soon(self._send_lock)  # held by another task only while a pong or close goes out
            try:
                await self._write(frame)
            finally:
                self._send_lock.release()
        except _STREAM_ERRORS as exc:
            self._gone.set()
            raise ChannelClosed("websocket is closed") from exc

    # The hot path talks to the socket's file descriptor directly: trio's stream methods add two scheduler
    # round trips to every send and one to every receive, a large share of a relay's CPU per cell. The fd is
    # read at each call (-1 once closed, so a reused number is never written to); only one task sends (the
    # lock) and one receives at a time, which is what trio's conflict detection would enforce.

    async def _write(self, data: bytes) -> None:
        """All of `data` out: straight into the socket when it has room, else through trio (waiting for room,
        cancellable)."""
        try:
            sent = os.write(self._stream.socket.fileno(), data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            await self._stream.send_all(memoryview(data)[sent:])

    async def _read(self) -> bytes:
        """The next bytes from the socket (b"" at its end), waiting in trio's epoll when there are none."""
        socket = self._stream.socket
        waited = False
        while True:
            try:
                data = os.read(socket.fileno(), WS_RECEIVE_BYTES)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(socket)
                waited = True
                continue
            if not waited:  # the bytes were waiting: yield anyway, or a flood would starve other tasks
                await trio.lowlevel.checkpoint()
            return data

    async def _receive_events(self) -> None:
        data, self._early = self._early, b""
        if not data:
            try:
                data = await self._read()
            except _STREAM_ERRORS as exc:
                self._gone.set()
                raise ChannelClosed("websocket is closed") from exc
            if not data:
                self._gone.set()
                raise ChannelClosed("the peer closed the connection")
        try:
            events = self._reader.feed(data)
        except WebSocketError as exc:
            await self._fail(exc.close_code)
            raise
        for event in events:
            await self._on_event(event)

    async def _on_event(self, event: ws_protocol.Event) -> None:
        if isinstance(event, ws_protocol.Message):
            self._messages.append(event.data)
        elif isinstance(event, ws_protocol.Ping):
            if not self._close_sent:
                await self._send_frame(Opcode.PONG, event.payload)
        elif isinstance(event, ws_protocol.Close):
            # Messages that came before the close are still delivered; then ChannelClosed.
            await self._send_close(CloseCode.NORMAL)
            self._gone.set()

    async def _close_politely(self, code: CloseCode) -> None:
        """Send a close frame and wait (bounded by the caller) for the peer's, dropping late messages."""
        if not await self._send_close(code):
            return
        if self._receiving:  # another task reads: it will see the peer's close frame
            await self._gone.wait()
            return
        try:
            while not self._gone.is_set():
                await self._receive_events()
        except (ChannelClosed, RemoteProtocolError):
            pass

    async def _fail(self, code: CloseCode) -> None:
        with trio.move_on_after(WS_CLOSE_TIMEOUT_S) as scope:
            scope.shield = True
            await self._send_close(code)
        await self._close_stream()

    async def _send_close(self, code: CloseCode) -> bool:
        """Our close frame, once per connection; False when the connection broke sending it (or before)."""
        if self._close_sent:
            return True
        self._close_sent = True
        try:
            await self._send_frame(Opcode.CLOSE, ws_protocol.close_payload(code))
        except ChannelClosed:
            return False
        return True

    async def _close_stream(self) -> None:
        self._closed = True
        self._gone.set()
        with trio.CancelScope(shield=True):
            await self._stream.aclose()


def set_dead_peer_timeouts(sock: trio.socket.SocketType) -> None:
    """TCP keepalive and TCP_USER_TIMEOUT on a connection, where the platform has them (Linux has all)."""
    tcp = trio.socket.IPPROTO_TCP
    options = [
        (trio.socket.SOL_SOCKET, trio.socket.SO_KEEPALIVE, 1),
        (tcp, getattr(trio.socket, "TCP_KEEPIDLE", None), TCP_KEEPALIVE_IDLE_S),
        (tcp, getattr(trio.socket, "TCP_KEEPINTVL", None), TCP_KEEPALIVE_INTERVAL_S),
        (tcp, getattr(trio.socket, "TCP_KEEPCNT", None), TCP_KEEPALIVE_PROBES),
        (tcp, getattr(trio.socket, "TCP_USER_TIMEOUT", None), TCP_USER_TIMEOUT_MS),
    ]
    for level, option, value in options:
        if option is None:
            continue
        # A socket already closed, an unusual platform: the link's Pings (tp_net.protocol.liveness) still
        # apply.
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, value)


def _ports(stream: trio.SocketStream) -> tuple[int, int]:
    """(local port, peer port) of a TCP stream, (0, 0) when the socket no longer knows them: what names a
    connection in the latency tracer's records."""
    try:
        local, peer = stream.socket.getsockname(), stream.socket.getpeername()
    except OSError:
        return (0, 0)
    return (int(local[1]), int(peer[1])) if isinstance(local, tuple) and isinstance(peer, tuple) else (0, 0)


def peer_host(stream: trio.SocketStream) -> str | None:
    """The address at the other end of a TCP stream, as per-address limits count it (an IPv6 address as its
    /64, tp_net.protocol.link_limits.source_key); None when the socket no longer knows it."""
    try:
        name = stream.socket.getpeername()
    except OSError:
        return None
    return source_key(name[0]) if isinstance(name, tuple) and isinstance(name[0], str) else None


async def _read_head(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    """The HTTP head of a handshake and whatever the peer sent after it."""
    buffer = bytearray()
    while True:
        try:
            data = await stream.receive_some(ws_protocol.HANDSHAKE_BYTES_MAX)
        except _STREAM_ERRORS as exc:
            raise ChannelClosed("connection broke during the WebSocket handshake") from exc
        if not data:
            raise ChannelClosed("connection closed during the WebSocket handshake")
        buffer += data
        head = ws_protocol.split_head(buffer)
        if head is not None:
            return head


class WebSocketDialer:
    """Dials ws:// URLs. The nursery argument is accepted for compatibility; no background tasks run."""

    def __init__(
        self, nursery: trio.Nursery | None = None, *, dial_timeout_s: float = DIAL_TIMEOUT_S
    ) -> None:
        self._dial_timeout_s = dial_timeout_s

    async def dial(self, address: str) -> Channel:
        host, port, resource = parse_ws_address(address)
        try:
            with trio.fail_after(self._dial_timeout_s):
                stream = await trio.open_tcp_stream(host, port)
                try:
                    return await _client_handshake(stream, f"{host}:{port}", resource)
                except BaseException:
                    with trio.CancelScope(shield=True):
                        await stream.aclose()
                    raise
        except trio.TooSlowError as exc:
            raise DialError(f"dialing {address} timed out after {self._dial_timeout_s} s") from exc
        except (OSError, ChannelClosed, WebSocketError) as exc:
            raise DialError(f"cannot dial {address}: {exc.__class__.__name__}: {exc}") from exc


async def _client_handshake(stream: trio.SocketStream, host: str, resource: str) -> WebSocketChannel:
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    try:
        await stream.send_all(ws_protocol.client_request(host, resource, key))
    except _STREAM_ERRORS as exc:
        raise ChannelClosed("connection broke during the WebSocket handshake") from exc
    head, rest = await _read_head(stream)
    ws_protocol.check_server_response(head, key)
    return WebSocketChannel(stream, client=True, received=rest)


def parse_ws_address(address: str) -> tuple[str, int, str]:
    """Split `ws://HOST:PORT/PATH` into host, port and resource; DialError names what is wrong (the
    validator is tp_net.protocol.addresses: nothing that passes it fails later in IDNA or the request
    line)."""
    try:
        parsed = parse_address(address)
    except AddressError as exc:
        raise DialError(f"address {address!r} {exc}") from None
    return parsed.host, parsed.port, parsed.path


def format_ws_address(host: str, port: int) -> str:
    return f"ws://[{host}]:{port}/" if ":" in host else f"ws://{host}:{port}/"


class WebSocketListener:
    """Accepts WebSocket connections on HOST:PORT (127.0.0.1 unless told otherwise).

    With `connections`, every TCP connection is counted from its accept to its close, and one past the caps
    (tp_net.protocol.link_limits) is closed at once, before any handshake: a flood of connections holds no
    more file descriptors than the caps allow.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, connections: ConnectionCounter | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.connections = connections

    async def serve(
        self,
        handler: ChannelHandler,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        port = listeners[0].socket.getsockname()[1]

        async def on_connection(stream: trio.SocketStream) -> None:
            counter = self.connections
            source = peer_host(stream)
            if counter is not None and not counter.admit(source):
                log.debug("connection refused: over a connection cap")
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                return
            try:
                await _serve_connection(stream, handler)
            finally:
                if counter is not None:
                    counter.release(source)

        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, on_connection, listeners)
            task_status.started(format_ws_address(self.host, port))


async def _serve_connection(stream: trio.SocketStream, handler: ChannelHandler) -> None:
    channel = await _accept(stream)
    if channel is None:
        return
    try:
        await handler(channel)
    except TokenPlaceError as exc:
        # One peer's failure must not take the listener down.
        log.debug("connection handler ended: %s", exc.__class__.__name__)
    finally:
        await channel.aclose()


async def _accept(stream: trio.SocketStream) -> WebSocketChannel | None:
    """The server side of the handshake; None (connection closed) when it fails or takes too long."""
    try:
        with trio.fail_after(WS_ACCEPT_TIMEOUT_S):
            head, rest = await _read_head(stream)
            try:
                _, key = ws_protocol.parse_client_request(head)
            except WebSocketError as exc:
                await stream.send_all(ws_protocol.rejection_response(str(exc)))
                raise
            await stream.send_all(ws_protocol.server_response(key))
    except (trio.TooSlowError, ChannelClosed, WebSocketError, *_STREAM_ERRORS) as exc:
        log.debug("WebSocket handshake failed: %s", exc.__class__.__name__)
        with trio.CancelScope(shield=True):
            await stream.aclose()
        return None
    return WebSocketChannel(stream, client=False, received=rest)
