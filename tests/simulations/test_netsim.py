from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from simulations.config import NetworkModel
from simulations.netsim import MBPS, SILENT_DIAL_TIMEOUT_S, Machine, SimNetwork
from tp_crypto.identity import Identity
from tp_net.protocol.errors import ChannelClosed, DialError
from tp_net.protocol.liveness import LivenessLimits
from tp_net.trio.link_pump import LinkPump
from tp_net.trio.link_trio import accept_link, dial_link
from tp_net.trio.transport import Channel


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def _network(**model: float) -> tuple[SimNetwork, Machine, Machine]:
    network = SimNetwork(NetworkModel(latency_jitter_sigma=0.0, **model), random.Random(1))  # type: ignore[arg-type]
    relay = Machine("relay", "relay", "eu", 1 * MBPS, address="ws://10.0.0.1:7000/")
    client = Machine("client", "client", "na", 1 * MBPS)
    network.add_machine(relay)
    return network, relay, client


async def _echo(channel: Channel) -> None:
    while True:
        await channel.send_message(await channel.receive_message())


async def test_messages_arrive_after_latency_and_serialisation(clock: trio.testing.MockClock) -> None:
    network, relay, client = _network(cross_region_latency_ms=50.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(network.listener(relay).serve, _echo)
        started = trio.current_time()
        channel = await network.dialer(client).dial("ws://10.0.0.1:7000/")
        assert trio.current_time() - started == pytest.approx(0.1)  # one round trip to connect
        started = trio.current_time()
        await channel.send_message(bytes(62_500))  # half a second at 1 Mbit/s, each way
        assert len(await channel.receive_message()) == 62_500
        assert trio.current_time() - started == pytest.approx(2 * (0.5 + 0.05))
        nursery.cancel_scope.cancel()


async def test_partitions_and_crashes_break_links_and_dials(clock: trio.testing.MockClock) -> None:
    network, relay, client = _network()
    async with trio.open_nursery() as nursery:
        await nursery.start(network.listener(relay).serve, _echo)
        channel = await network.dialer(client).dial("ws://10.0.0.1:7000/")
        network.cut(("eu",))
        with pytest.raises(ChannelClosed):
            await channel.receive_message()
        with pytest.raises(DialError):
            await network.dialer(client).dial("ws://10.0.0.1:7000/")
        network.heal()
        channel = await network.dialer(client).dial("ws://10.0.0.1:7000/")
        network.crash(relay)
        with pytest.raises(ChannelClosed):
            await channel.send_message(b"x")
        with pytest.raises(DialError):
            await network.dialer(client).dial("ws://10.0.0.9:7000/")
        nursery.cancel_scope.cancel()


async def test_lossy_links_break(clock: trio.testing.MockClock) -> None:
    network, relay, client = _network(link_drop_per_message=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(network.listener(relay).serve, _echo)
        channel = await network.dialer(client).dial("ws://10.0.0.1:7000/")
        with pytest.raises(ChannelClosed):
            await channel.send_message(b"x")
        assert network.links_dropped == 1
        nursery.cancel_scope.cancel()


def test_a_machine_clock_is_virtual_time_plus_its_skew() -> None:
    async def main() -> float:
        await trio.sleep(10)
        return Machine("m", "relay", "eu", 1.0, clock_skew_s=-3.0).wall_clock()

    from simulations.netsim import SIM_EPOCH_S

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == SIM_EPOCH_S + 7.0


async def test_a_pulled_cable_loses_every_message_without_closing_anything(
    clock: trio.testing.MockClock,
) -> None:
    network, relay, client = _network()
    async with trio.open_nursery() as nursery:
        await nursery.start(network.listener(relay).serve, _echo)
        channel = await network.dialer(client).dial("ws://10.0.0.1:7000/")
        network.silent.pull(relay)
        await channel.send_message(b"lost")  # no error: nothing tells the sender
        with trio.move_on_after(60) as waited:
            await channel.receive_message()
        assert waited.cancelled_caught  # no echo, and no ChannelClosed either
        started = trio.current_time()
        with pytest.raises(DialError):
            await network.dialer(client).dial("ws://10.0.0.1:7000/")
        assert trio.current_time() - started >= SILENT_DIAL_TIMEOUT_S
        network.silent.plug(relay)
        await channel.send_message(b"back")
        assert await channel.receive_message() == b"back"  # the same link carries again
        assert network.silent.messages_lost == 1
        nursery.cancel_scope.cancel()


async def test_a_link_pump_closes_a_silent_link_within_its_liveness_deadline(
    clock: trio.testing.MockClock,
) -> None:
    """What makes a role fail over: its link's liveness (tp_net.protocol.liveness) aborts a silent link, so
    the circuits on it are destroyed and the client builds around it."""
    network, relay, client = _network()
    limits = LivenessLimits(keepalive_idle_s=1.0, silence_deadline_s=3.0)

    async def serve_link(channel: Channel) -> None:
        link = await accept_link(channel, identity=relay_identity)
        pump = LinkPump(link, 1, liveness=limits)
        async with trio.open_nursery() as inner:
            inner.start_soon(pump.run_writer)
            await pump.run_reader(lambda frames: None)
            inner.cancel_scope.cancel()

    relay_identity = Identity.generate()
    async with trio.open_nursery() as nursery:
        await nursery.start(network.listener(relay).serve, serve_link)
        dialer = network.dialer(client)
        link = await dial_link(dialer, "ws://10.0.0.1:7000/", expected_peer_id=relay_identity.node_id)
        pump = LinkPump(link, 1, liveness=limits)
        nursery.start_soon(pump.run_writer)
        nursery.start_soon(pump.run_reader, lambda frames: None)
        await trio.sleep(5)
        assert not pump.closed.is_set()  # Pings and Pongs keep a quiet but live link open
        network.silent.pull(relay)
        pulled_at = trio.current_time()
        await pump.closed.wait()
        assert pump.silent and trio.current_time() - pulled_at <= limits.silence_deadline_s
        nursery.cancel_scope.cancel()
