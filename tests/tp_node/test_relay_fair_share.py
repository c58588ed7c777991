"""A relay handles each link's received frames in fair turns (tp_net.protocol.link_limits.fair_turns): a
link that sends a large message (a flood) is handled a turn at a time, and another link's frames that
arrive meanwhile are handled before the flood's message is done, not after it."""

from __future__ import annotations

import random

import trio
import trio.testing

from tp_crypto.identity import Identity
from tp_net.protocol.frames import Frame, Padding
from tp_net.protocol.link_limits import LINK_TURN_COST_MAX
from tp_net.trio.link_trio import dial_link
from tp_net.trio.transport_memory import MemoryNetwork
from tp_node.relay import Relay
from tp_node.testing.memory_network import in_process_network

FLOOD_FRAMES = 64 * LINK_TURN_COST_MAX


class RecordingRelay(Relay):
    """Notes each call of the on_frames seam: (link id, how many frames)."""

    handled: list[tuple[int, int]]

    def on_frames(self, link_id: int, frames: list[Frame]) -> None:
        self.handled.append((link_id, len(frames)))
        super().on_frames(link_id, frames)


def _recording(
    index: int, identity: Identity, keys: list[bytes], net: MemoryNetwork, rng: random.Random
) -> Relay:
    relay = RecordingRelay(identity, keys, dialer=net.dialer(), rng=rng)
    relay.handled = []
    return relay


async def test_a_flooding_link_waits_its_turn_behind_another_links_frames() -> None:
    async with in_process_network(make_relay=_recording) as net:
        guard = net.path()[0]
        relay = net.relays[0]
        assert isinstance(relay, RecordingRelay)
        flooder = await dial_link(net.network.dialer(), guard.address or "", expected_peer_id=guard.node_id)
        honest = await dial_link(net.network.dialer(), guard.address or "", expected_peer_id=guard.node_id)
        await trio.testing.wait_all_tasks_blocked()
        relay.handled.clear()
        await flooder.send([Padding(b"f") for _ in range(FLOOD_FRAMES)])
        while not relay.handled:  # the relay has begun on the flood's message
            await trio.lowlevel.checkpoint()
        await honest.send([Padding(b"h")])
        with trio.fail_after(10):
            while sum(count for _, count in relay.handled) < FLOOD_FRAMES + 1:
                await trio.lowlevel.checkpoint()
        flood_link = relay.handled[0][0]
        assert all(count <= LINK_TURN_COST_MAX for _, count in relay.handled), relay.handled
        honest_at = next(i for i, (link, _) in enumerate(relay.handled) if link != flood_link)
        # The honest frame went ahead of most of the flood's message.
        assert honest_at < len(relay.handled) // 2, relay.handled
        await flooder.aclose()
        await honest.aclose()
