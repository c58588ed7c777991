"""A relay's accepted links (in memory): idle links of strangers are closed; links in use and links of
listed peers are kept."""

from __future__ import annotations

import random
from functools import partial

import pytest
import trio

from tp_crypto.identity import Identity
from tp_net.protocol.errors import LinkClosed
from tp_net.protocol.link import CloseReason
from tp_net.protocol.link_limits import LinkLimits
from tp_net.protocol.rate_limits import IsListed
from tp_net.trio.client import ClientLink
from tp_net.trio.link_trio import Link, dial_link
from tp_net.trio.transport_memory import MemoryNetwork
from tp_node.relay import Relay
from tp_node.testing.memory_network import in_process_network

IDLE_TIMEOUT_S = 10.0


def relay_with_idle_timeout(
    index: int,
    identity: Identity,
    onion_keys: list[bytes],
    net: MemoryNetwork,
    rng: random.Random,
    *,
    is_listed: IsListed | None = None,
) -> Relay:
    limits = LinkLimits(idle_timeout_s=IDLE_TIMEOUT_S)
    return Relay(identity, onion_keys, dialer=net.dialer(), rng=rng, link_limits=limits, is_listed=is_listed)


async def closed_reason(link: Link) -> int | None:
    """Read until the relay closes the link; the reason it gave."""
    with trio.fail_after(IDLE_TIMEOUT_S * 3), pytest.raises(LinkClosed) as closed:
        while True:
            await link.receive()
    return closed.value.reason


@pytest.mark.parametrize("identity", [None, Identity(bytes(32))], ids=["anonymous", "unlisted node id"])
async def test_a_strangers_idle_link_is_closed_after_the_timeout(
    autojump_clock: trio.abc.Clock, identity: Identity | None
) -> None:
    nobody: IsListed = lambda node_id: False  # noqa: E731
    make_relay = partial(relay_with_idle_timeout, is_listed=nobody)
    async with in_process_network(relay_count=1, make_relay=make_relay) as net:
        guard = net.relay_hops[0]
        assert guard.address is not None
        link = await dial_link(
            net.network.dialer(), guard.address, expected_peer_id=guard.node_id, identity=identity
        )
        started = trio.current_time()
        assert await closed_reason(link) == CloseReason.TIMEOUT
        assert IDLE_TIMEOUT_S <= trio.current_time() - started <= IDLE_TIMEOUT_S * 1.5


async def test_links_with_circuits_and_links_of_listed_peers_are_kept(autojump_clock: trio.abc.Clock) -> None:
    async with in_process_network(make_relay=relay_with_idle_timeout) as net:
        # The GPU node's link to its home relay: a proven id, which counts as listed without a directory.
        node_link = net.relays[-1].core.link_to(net.node_hop.node_id)
        async with ClientLink.connect(net.network.dialer(), net.relay_hops[0]) as client:
            circuit = await client.build_circuit(net.path())
            await trio.sleep(IDLE_TIMEOUT_S * 5)
            assert circuit.is_open and not client.closed
        await trio.sleep(IDLE_TIMEOUT_S * 5)
        assert node_link is not None and net.relays[-1].core.link_to(net.node_hop.node_id) == node_link
