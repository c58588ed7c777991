"""The WebSocket transport against an independent RFC 6455 implementation (trio-websocket), and its
handling of peers that break the protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio_websocket

from tp_net.protocol.errors import ChannelClosed, DialError, RemoteProtocolError
from tp_net.trio.transport import CHANNEL_MESSAGE_BYTES_MAX, Channel
from tp_net.trio.transport_ws import (
    TCP_KEEPALIVE_IDLE_S,
    TCP_USER_TIMEOUT_MS,
    WebSocketChannel,
    WebSocketDialer,
    WebSocketListener,
    parse_ws_address,
)


@asynccontextmanager
async def _library_client(
    nursery: trio.Nursery, address: str, **options: Any
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A trio-websocket client whose TCP stream this test closes (the library leaves it open when the
    server closes first)."""
    host, port, resource = parse_ws_address(address)
    stream = await trio.open_tcp_stream(host, port)
    try:
        yield await trio_websocket.wrap_client_stream(nursery, stream, host, resource, **options)
    finally:
        await stream.aclose()


async def _echo(channel: Channel) -> None:
    try:
        while True:
            await channel.send_message(await channel.receive_message())
    except ChannelClosed:
        return


async def test_trio_websocket_client_talks_to_our_listener(nursery: trio.Nursery) -> None:
    address = await nursery.start(WebSocketListener("127.0.0.1", 0).serve, _echo)
    async with _library_client(nursery, address) as ws:
        for size in (0, 1, 200, 70_000 - 5_000):
            await ws.send_message(b"\x07" * size)
            assert await ws.get_message() == b"\x07" * size
        await ws.ping(b"are you there")  # answered with a pong, or this would hang


async def test_our_dialer_talks_to_a_trio_websocket_server(nursery: trio.Nursery) -> None:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        while True:
            try:
                message = await ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            await ws.send_message(message)

    server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
    channel = await WebSocketDialer().dial(f"ws://127.0.0.1:{server.port}/")
    for size in (0, 5, CHANNEL_MESSAGE_BYTES_MAX):
        await channel.send_message(b"m" * size)
        assert await channel.receive_message() == b"m" * size
    with trio.fail_after(5):
        await channel.aclose()


async def test_a_text_message_ends_the_channel(nursery: trio.Nursery) -> None:
    closed = trio.Event()

    async def handler(channel: Channel) -> None:
        try:
            await channel.receive_message()
        except (ChannelClosed, RemoteProtocolError):
            closed.set()
            raise

    address = await nursery.start(WebSocketListener("127.0.0.1", 0).serve, handler)
    async with _library_client(nursery, address) as ws:
        await ws.send_message("text is not allowed")
        with trio.fail_after(5):
            await closed.wait()
            try:
                await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                assert exc.reason.code == 1003
            else:
                raise AssertionError("the connection stayed open")


async def test_an_oversized_message_is_cut_off_with_1009(nursery: trio.Nursery) -> None:
    address = await nursery.start(WebSocketListener("127.0.0.1", 0).serve, _echo)
    async with _library_client(nursery, address, max_message_size=2 * CHANNEL_MESSAGE_BYTES_MAX) as ws:
        await ws.send_message(b"x" * (CHANNEL_MESSAGE_BYTES_MAX + 1))
        with trio.fail_after(5):
            try:
                await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                assert exc.reason.code == 1009
            else:
                raise AssertionError("the oversized message was echoed")


async def test_a_non_websocket_client_gets_400_and_the_listener_goes_on(nursery: trio.Nursery) -> None:
    address = await nursery.start(WebSocketListener("127.0.0.1", 0).serve, _echo)
    host, port, _ = parse_ws_address(address)
    stream = await trio.open_tcp_stream(host, port)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with trio.fail_after(5):
        answer = await stream.receive_some(1000)
    assert answer.startswith(b"HTTP/1.1 400")
    await stream.aclose()
    channel = await WebSocketDialer().dial(address)
    await channel.send_message(b"still serving")
    assert await channel.receive_message() == b"still serving"
    await channel.aclose()


async def test_a_server_that_is_not_websocket_is_a_dial_error(nursery: trio.Nursery) -> None:
    async def http_only(stream: trio.SocketStream) -> None:
        await stream.receive_some(1000)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await stream.aclose()

    listeners = await nursery.start(trio.serve_tcp, http_only, 0)
    port = listeners[0].socket.getsockname()[1]
    try:
        await WebSocketDialer().dial(f"ws://127.0.0.1:{port}/")
    except DialError as exc:
        assert "refused the upgrade" in str(exc)
    else:
        raise AssertionError("dial succeeded")


async def test_both_ends_of_a_connection_detect_a_dead_peer_in_tcp(nursery: trio.Nursery) -> None:
    """Keepalive probes and TCP_USER_TIMEOUT on dialed and accepted sockets, so the kernel gives up on a
    vanished peer in seconds, not after ~15 minutes of retransmissions."""
    accepted: list[Channel] = []
    ready = trio.Event()

    async def handler(channel: Channel) -> None:
        accepted.append(channel)
        ready.set()
        await trio.sleep_forever()

    address = await nursery.start(WebSocketListener("127.0.0.1", 0).serve, handler)
    dialed = await WebSocketDialer().dial(address)
    await ready.wait()
    for channel in (dialed, accepted[0]):
        assert isinstance(channel, WebSocketChannel)
        sock = channel._stream.socket
        assert sock.getsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_KEEPALIVE) == 1
        if hasattr(trio.socket, "TCP_USER_TIMEOUT"):  # Linux
            tcp = trio.socket.IPPROTO_TCP
            assert sock.getsockopt(tcp, trio.socket.TCP_USER_TIMEOUT) == TCP_USER_TIMEOUT_MS
            assert sock.getsockopt(tcp, trio.socket.TCP_KEEPIDLE) == TCP_KEEPALIVE_IDLE_S
    await dialed.aclose()
