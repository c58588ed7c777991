"""A node's home relays from the directory: at least two, capacity-weighted, diverse where the directory
allows, kept while listed and replaced when they leave (tp_net.protocol.path_selection.keep_and_top_up)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncGenerator, Mapping
from functools import partial
from typing import Any

import trio

from tests.tp_net.directory_factories import (
    NETWORK,
    T0,
    document,
    identity,
    network_of,
    relay_descriptor,
    signed_document,
    signed_relay,
)
from tp_crypto.noise_primitives import generate_keypair
from tp_net.protocol.bootstrap_config import Bootstrap, BootstrapAuthority
from tp_net.protocol.descriptors import RelayDescriptor
from tp_net.protocol.link_limits import LINK_IDLE_TIMEOUT_S
from tp_net.protocol.path_selection import LOCAL_NETWORK_RULES, keep_and_top_up
from tp_net.trio.transport import Channel, Dialer
from tp_net.trio.transport_memory import MemoryNetwork
from tp_node.directory_service import DirectoryService
from tp_node.engine import FakeEngine
from tp_node.gpu_node import GpuNode, HomeRelay
from tp_node.home_relays import HOME_RELAYS_WANTED, keep_home_relays
from tp_node.relay import Relay
from tp_node.testing.memory_network import in_process_network


def relays(count: int, **overrides: object) -> list[RelayDescriptor]:
    return [relay_descriptor(identity(n), number=n, **overrides) for n in range(1, count + 1)]  # type: ignore[arg-type]


def test_two_distinct_relays_are_chosen_and_kept_while_listed() -> None:
    listed = relays(6)
    chosen = keep_and_top_up([], listed, random.Random(1), count=HOME_RELAYS_WANTED)
    assert HOME_RELAYS_WANTED == 2 and len(set(chosen)) == 2
    for seed in range(20):
        assert keep_and_top_up(chosen, listed, random.Random(seed), count=2) == chosen


def test_a_relay_that_left_the_directory_is_replaced_and_the_other_kept() -> None:
    listed = relays(6)
    first, second = keep_and_top_up([], listed, random.Random(2), count=2)
    remaining = [relay for relay in listed if relay.node_id != first]
    after = keep_and_top_up([first, second], remaining, random.Random(3), count=2)
    assert after[0] == second and after[1] not in (first, second) and len(after) == 2


def test_the_choice_follows_the_measured_weight() -> None:
    listed = relays(3)
    weights = {listed[0].node_id: 10_000, listed[1].node_id: 100, listed[2].node_id: 100}
    counts = Counter(
        keep_and_top_up([], listed, random.Random(seed), count=1, weights=weights)[0] for seed in range(300)
    )
    assert counts[listed[0].node_id] > 250


def test_two_home_relays_never_share_a_subnet_or_family_when_others_are_listed() -> None:
    same_subnet = [relay_descriptor(identity(n), number=n, address=f"ws://10.1.0.{n}:7000/") for n in (1, 2)]
    same_family = [relay_descriptor(identity(n), number=n, family="acme") for n in (3, 4)]
    other = [relay_descriptor(identity(5), number=5)]
    listed = [*same_subnet, *same_family, *other]
    for seed in range(100):
        chosen = set(keep_and_top_up([], listed, random.Random(seed), count=2))
        assert not {r.node_id for r in same_subnet} <= chosen
        assert not {r.node_id for r in same_family} <= chosen


def test_a_local_network_on_one_host_still_gets_two() -> None:
    listed = [
        relay_descriptor(identity(n), number=n, address=f"ws://127.0.0.1:{7000 + n}/") for n in (1, 2, 3)
    ]
    assert len(set(keep_and_top_up([], listed, random.Random(0), count=2, rules=LOCAL_NETWORK_RULES))) == 2
    assert len(set(keep_and_top_up([], listed[:1], random.Random(0), count=2))) == 1  # fewer: all there is


async def test_the_node_links_to_new_home_relays_and_leaves_dropped_ones() -> None:
    async with in_process_network(relay_count=3) as net:
        node_id = net.node.identity.node_id
        homes = [HomeRelay(hop.node_id, hop.address or "") for hop in net.relay_hops]
        net.node.use_home_relays(homes[:2])  # the directory's choice: relay 2 (the first home) left
        with trio.fail_after(10):
            while (
                net.relays[0].core.link_to(node_id) is None
                or net.relays[1].core.link_to(node_id) is None
                or net.relays[2].core.link_to(node_id) is not None
            ):
                await trio.sleep(0.01)
        assert net.node.home_relays == homes[:2]


SHORT_PERIOD_S = 600
assert SHORT_PERIOD_S / 4 < LINK_IDLE_TIMEOUT_S


class CountingDialer:
    """The memory network's dialer, counting the dials (each one a TCP, WebSocket and Noise handshake)."""

    def __init__(self, dialer: Dialer) -> None:
        self._dialer = dialer
        self.dials = 0

    async def dial(self, address: str) -> Channel:
        self.dials += 1
        return await self._dialer.dial(address)


async def test_each_round_fetches_the_directory_over_the_link_kept_to_the_authority(
    autojump_clock: trio.abc.Clock,
) -> None:
    (authority,), trust = network_of(1, 1)
    listed = [signed_relay(n) for n in (1, 2, 3)]
    served = DirectoryService(trust, wall_clock=lambda: T0 + trio.current_time())
    # A short period: rounds a quarter period apart stay within the relay's idle limit for a kept link.
    body = document(listed, period_s=SHORT_PERIOD_S).encode()
    served.offer_document(signed_document(body, [authority]))
    fetches = [0]

    async def counted(request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        fetches[0] += 1
        async for answer in served.handle(request):
            yield answer

    network = MemoryNetwork()
    address = "ws://10.9.0.1:7000/"
    private, _public = generate_keypair()
    server = Relay(
        authority, [private], dialer=network.dialer(), rng=random.Random(1), services={"directory": counted}
    )
    bootstrap = Bootstrap(NETWORK, 1, SHORT_PERIOD_S, (BootstrapAuthority(authority.node_id, address),), True)
    node_private, _ = generate_keypair()
    node = GpuNode(
        identity(50),
        [node_private],
        home_relays=[],
        engine=FakeEngine(),
        dialer=network.dialer(),
        rng=random.Random(2),
    )
    dialer = CountingDialer(network.dialer())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, network.listener(address))
        await nursery.start(
            partial(keep_home_relays, wall_clock=lambda: T0 + trio.current_time()),
            node,
            bootstrap,
            dialer,
            [],
            random.Random(3),
        )
        with trio.fail_after(SHORT_PERIOD_S):
            while fetches[0] < 4:
                await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert len(node.home_relays) == HOME_RELAYS_WANTED
    assert dialer.dials == 1  # one link for every round, not one per round
