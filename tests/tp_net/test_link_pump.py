"""LinkPump: control replies are bounded (one Pong owed per link) and never count as queued cells; a
silent peer is pinged, then its link is aborted."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tp_crypto.identity import Identity
from tp_net.protocol.errors import LinkClosed
from tp_net.protocol.frames import CELL_BODY_BYTES, Cell, Frame, Ping, Pong
from tp_net.protocol.liveness import LINK_SILENCE_DEADLINE_S
from tp_net.trio.link_pump import LinkPump
from tp_net.trio.link_trio import Link, accept_link, dial_link
from tp_net.trio.transport import Channel
from tp_net.trio.transport_memory import MemoryNetwork

RELAY = Identity.generate()
PINGS = 20_000
PINGS_PER_SEND = 500


async def _linked(nursery: trio.Nursery) -> tuple[Link, LinkPump]:
    """A dialed link (the peer) and a pump running on the accepting side."""
    network = MemoryNetwork(buffer_messages=4)
    accepted: list[Link] = []
    ready = trio.Event()

    async def handler(channel: Channel) -> None:
        accepted.append(await accept_link(channel, identity=RELAY))
        ready.set()
        await trio.sleep_forever()

    address = await nursery.start(network.listener("mem://relay").serve, handler)
    peer = await dial_link(network.dialer(), address, expected_peer_id=RELAY.node_id)
    await ready.wait()
    pump = LinkPump(accepted[0], 1)
    received: list[Frame] = []
    nursery.start_soon(pump.run_writer)
    nursery.start_soon(pump.run_reader, received.extend)
    return peer, pump


async def test_a_peer_that_pings_and_never_reads_is_owed_one_pong(nursery: trio.Nursery) -> None:
    peer, pump = await _linked(nursery)
    for first in range(0, PINGS, PINGS_PER_SEND):
        await peer.send([Ping(token) for token in range(first, first + PINGS_PER_SEND)])
    await trio.testing.wait_all_tasks_blocked()
    # The writer is stuck on the full channel; the reader went on and kept only the latest Pong.
    assert pump.queued_frames == 0
    assert pump.pong_owed
    pongs: list[Pong] = []
    while not pongs or pongs[-1].token != PINGS - 1:
        pongs += [frame for frame in await peer.receive() if isinstance(frame, Pong)]
    # Only what the stuck writer had taken before the channel filled, then the latest Ping's answer.
    assert len(pongs) < 16, len(pongs)


async def test_a_pong_never_counts_as_a_queued_cell(nursery: trio.Nursery) -> None:
    peer, pump = await _linked(nursery)
    await peer.send([Ping(1)])
    await trio.testing.wait_all_tasks_blocked()
    pump.enqueue(Cell(2**31, 3, bytes(CELL_BODY_BYTES)))
    assert pump.queued_frames == 1 and pump.queued_cells(2**31) <= 1
    frames: list[Frame] = []
    while len(frames) < 2:
        frames += await peer.receive()
    assert Pong(1) in frames


async def test_a_silent_peer_gets_pings_then_the_link_is_aborted(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The peer's process stops answering (it neither reads nor writes): Pings go out, and once nothing came
    in for the silence deadline the link is closed without a goodbye and the reader ends."""
    peer, pump = await _linked(nursery)
    started = trio.current_time()
    with trio.fail_after(LINK_SILENCE_DEADLINE_S + 1):
        await pump.closed.wait()
    assert pump.silent
    assert trio.current_time() - started == pytest.approx(LINK_SILENCE_DEADLINE_S, abs=0.01)
    pings = [frame for frame in await peer.receive() if isinstance(frame, Ping)]
    assert pings and pump.liveness.pings_sent >= 2
    with pytest.raises(LinkClosed):
        while True:
            await peer.receive()


async def test_a_peer_that_answers_pings_keeps_its_link(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    peer, pump = await _linked(nursery)

    async def answer() -> None:
        while True:
            for frame in await peer.receive():
                if isinstance(frame, Ping):
                    await peer.send([Pong(frame.token)])

    nursery.start_soon(answer)
    await trio.sleep(10 * LINK_SILENCE_DEADLINE_S)
    assert not pump.closed.is_set()
    assert pump.liveness.pings_sent >= 10
