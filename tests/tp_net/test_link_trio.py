"""Links over real transports (in-memory and WebSocket) in one process."""

from __future__ import annotations

import pytest
import trio

from tp_crypto.errors import RemoteProtocolError
from tp_crypto.identity import Identity
from tp_net.protocol.errors import ChannelClosed, HandshakeTimeout, LinkClosed
from tp_net.protocol.frames import Padding, Ping
from tp_net.protocol.link import CloseReason
from tp_net.trio.link_trio import LINK_HANDSHAKE_TIMEOUT_S, Link, accept_link, dial_link
from tp_net.trio.transport import Channel
from tp_net.trio.transport_memory import MemoryNetwork
from tp_net.trio.transport_ws import WebSocketDialer, WebSocketListener

RELAY = Identity.generate()
NODE = Identity.generate()


async def echo_links(channel: Channel) -> None:
    link = await accept_link(channel, identity=RELAY)
    while True:
        try:
            frames = await link.receive()
        except LinkClosed:
            return
        await link.send(frames)


async def test_link_over_memory_carries_frames_both_ways(nursery: trio.Nursery) -> None:
    network = MemoryNetwork()
    address = await nursery.start(network.listener("mem://relay").serve, echo_links)
    link = await dial_link(network.dialer(), address, expected_peer_id=RELAY.node_id, identity=NODE)
    assert link.peer_id == RELAY.node_id
    frames = [Padding(b"%d:" % i + b"%d" % i) for i in range(1000)]
    nursery.start_soon(link.send, frames)
    received: list[object] = []
    while len(received) < len(frames):
        received.extend(await link.receive())
    assert received == frames
    await link.aclose()


async def test_link_over_websocket_with_rekeying(nursery: trio.Nursery) -> None:
    async def handler(channel: Channel) -> None:
        link = await accept_link(channel, identity=RELAY, rekey_after_messages=5)
        while True:
            await link.send(await link.receive())

    address = await nursery.start(WebSocketListener().serve, handler)
    link = await dial_link(
        WebSocketDialer(nursery), address, expected_peer_id=RELAY.node_id, rekey_after_messages=5
    )
    for i in range(40):
        await link.send([Ping(i)])
        assert await link.receive() == [Ping(i)]
    await link.aclose()


async def test_wrong_expected_id_aborts_the_dial(nursery: trio.Nursery) -> None:
    network = MemoryNetwork()
    address = await nursery.start(network.listener("mem://relay").serve, echo_links)
    with pytest.raises(RemoteProtocolError, match="not the node"):
        await dial_link(network.dialer(), address, expected_peer_id=NODE.node_id)


async def test_silent_listener_times_out_the_handshake(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    network = MemoryNetwork()

    async def silent(channel: Channel) -> None:
        await trio.sleep_forever()

    address = await nursery.start(network.listener("mem://silent").serve, silent)
    with pytest.raises(HandshakeTimeout):
        await dial_link(network.dialer(), address, expected_peer_id=RELAY.node_id)
    assert trio.current_time() == pytest.approx(LINK_HANDSHAKE_TIMEOUT_S)


async def test_silent_dialer_times_out_on_the_listener(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    network = MemoryNetwork()
    outcome: list[BaseException] = []

    async def handler(channel: Channel) -> None:
        try:
            await accept_link(channel, identity=RELAY)
        except HandshakeTimeout as exc:
            outcome.append(exc)

    address = await nursery.start(network.listener("mem://relay").serve, handler)
    channel = await network.dialer().dial(address)
    await trio.sleep(LINK_HANDSHAKE_TIMEOUT_S + 1)
    assert len(outcome) == 1
    with pytest.raises(ChannelClosed):
        await channel.receive_message()


async def test_close_reason_reaches_the_peer(nursery: trio.Nursery) -> None:
    network = MemoryNetwork()
    accepted: list[Link] = []

    async def handler(channel: Channel) -> None:
        accepted.append(await accept_link(channel, identity=RELAY))
        await trio.sleep_forever()

    address = await nursery.start(network.listener("mem://relay").serve, handler)
    link = await dial_link(network.dialer(), address, expected_peer_id=RELAY.node_id)
    while not accepted:
        await trio.sleep(0.01)
    await accepted[0].aclose(CloseReason.SHUTDOWN)
    with pytest.raises(LinkClosed) as info:
        await link.receive()
    assert info.value.reason == CloseReason.SHUTDOWN
    with pytest.raises(LinkClosed):
        await link.send([Ping(1)])
