"""One conformance suite that every transport passes (in-memory, the simulator's, and WebSocket)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import trio

from simulations.config import NetworkModel
from simulations.netsim import MBPS, Machine, SimNetwork
from tp_net.protocol.errors import ChannelClosed, DialError, LocalProtocolError, RemoteProtocolError
from tp_net.trio.transport import CHANNEL_MESSAGE_BYTES_MAX, Channel, Dialer, Listener
from tp_net.trio.transport_memory import MemoryNetwork
from tp_net.trio.transport_ws import WebSocketDialer, WebSocketListener


@dataclass
class Transport:
    listener: Listener
    dialer: Dialer
    unreachable: str


@pytest.fixture(params=["memory", "simulated", "websocket"])
def transport(request: pytest.FixtureRequest, nursery: trio.Nursery) -> Transport:
    if request.param == "memory":
        network = MemoryNetwork()
        return Transport(network.listener("mem://relay"), network.dialer(), "mem://nowhere")
    if request.param == "simulated":  # the simulator's links: the memory transport and a link model
        sim = SimNetwork(NetworkModel(regions=("eu",), same_region_latency_ms=1.0), random.Random(1))
        server = Machine("relay", "relay", "eu", 100 * MBPS, address="ws://10.0.0.1:7000/")
        sim.add_machine(server)
        client = Machine("client", "client", "eu", 20 * MBPS)
        return Transport(sim.listener(server), sim.dialer(client), "ws://10.9.9.9:7000/")
    # Port 1 on loopback: nothing listens there, so the dial is refused at once.
    return Transport(WebSocketListener("127.0.0.1", 0), WebSocketDialer(nursery), "ws://127.0.0.1:1/")


async def echo(channel: Channel) -> None:
    while True:
        try:
            message = await channel.receive_message()
        except ChannelClosed:
            return
        await channel.send_message(message)


async def test_messages_echo_in_order(transport: Transport, nursery: trio.Nursery) -> None:
    address = await nursery.start(transport.listener.serve, echo)
    channel = await transport.dialer.dial(address)
    messages = [i.to_bytes(4, "big") * (i % 50 + 1) for i in range(300)]

    async def send_all() -> None:
        for message in messages:
            await channel.send_message(message)

    nursery.start_soon(send_all)
    received = [await channel.receive_message() for _ in messages]
    assert received == messages
    await channel.aclose()


async def test_largest_message_round_trips(transport: Transport, nursery: trio.Nursery) -> None:
    address = await nursery.start(transport.listener.serve, echo)
    channel = await transport.dialer.dial(address)
    message = bytes(range(256)) * (CHANNEL_MESSAGE_BYTES_MAX // 256) + b"x" * (
        CHANNEL_MESSAGE_BYTES_MAX % 256
    )
    await channel.send_message(message)
    assert await channel.receive_message() == message
    await channel.aclose()


async def test_oversized_message_is_refused_before_sending(
    transport: Transport, nursery: trio.Nursery
) -> None:
    address = await nursery.start(transport.listener.serve, echo)
    channel = await transport.dialer.dial(address)
    with pytest.raises(LocalProtocolError, match="exceeds"):
        await channel.send_message(b"x" * (CHANNEL_MESSAGE_BYTES_MAX + 1))
    await channel.send_message(b"still usable")
    assert await channel.receive_message() == b"still usable"
    await channel.aclose()


async def test_client_close_reaches_the_server(transport: Transport, nursery: trio.Nursery) -> None:
    closed = trio.Event()

    async def wait_for_close(channel: Channel) -> None:
        with pytest.raises(ChannelClosed):
            await channel.receive_message()
        closed.set()

    address = await nursery.start(transport.listener.serve, wait_for_close)
    channel = await transport.dialer.dial(address)
    await channel.aclose()
    await channel.aclose()  # idempotent
    with trio.fail_after(5):
        await closed.wait()
    with pytest.raises(ChannelClosed):
        await channel.receive_message()


async def test_server_close_reaches_the_client(transport: Transport, nursery: trio.Nursery) -> None:
    async def hang_up(channel: Channel) -> None:
        await channel.send_message(b"bye")

    address = await nursery.start(transport.listener.serve, hang_up)
    channel = await transport.dialer.dial(address)
    assert await channel.receive_message() == b"bye"
    with trio.fail_after(5), pytest.raises(ChannelClosed):
        await channel.receive_message()
    with trio.fail_after(5), pytest.raises(ChannelClosed):
        for _ in range(100):  # a send may be buffered before the close is noticed
            await channel.send_message(b"anyone?")
            await trio.sleep(0.01)
    await channel.aclose()


async def test_dialing_nothing_is_a_dial_error(transport: Transport) -> None:
    with trio.fail_after(5), pytest.raises(DialError):
        await transport.dialer.dial(transport.unreachable)


async def test_a_failing_handler_does_not_stop_the_listener(
    transport: Transport, nursery: trio.Nursery
) -> None:
    calls = 0

    async def fail_first(channel: Channel) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RemoteProtocolError("bad peer")
        await echo(channel)

    address = await nursery.start(transport.listener.serve, fail_first)
    first = await transport.dialer.dial(address)
    with trio.fail_after(5), pytest.raises(ChannelClosed):
        await first.receive_message()
    second = await transport.dialer.dial(address)
    await second.send_message(b"ok")
    assert await second.receive_message() == b"ok"
    await first.aclose()
    await second.aclose()


async def test_many_clients_at_once(transport: Transport, nursery: trio.Nursery) -> None:
    address = await nursery.start(transport.listener.serve, echo)
    results: dict[int, list[bytes]] = {}

    async def client(number: int) -> None:
        channel = await transport.dialer.dial(address)
        replies = []
        for i in range(20):
            await channel.send_message(b"%d:%d" % (number, i))
            replies.append(await channel.receive_message())
        results[number] = replies
        await channel.aclose()

    async with trio.open_nursery() as clients:
        for number in range(10):
            clients.start_soon(client, number)
    assert results == {n: [b"%d:%d" % (n, i) for i in range(20)] for n in range(10)}
