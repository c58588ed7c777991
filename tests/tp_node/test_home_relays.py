"""A node's home relays from the directory: at least two, capacity-weighted, diverse where the directory
allows, kept while listed and replaced when they leave (tp_net.protocol.path_selection.keep_and_top_up)."""

from __future__ import annotations

import random
from collections import Counter

import trio

from tests.tp_net.directory_factories import identity, relay_descriptor
from tp_net.protocol.descriptors import RelayDescriptor
from tp_net.protocol.path_selection import LOCAL_NETWORK_RULES, keep_and_top_up
from tp_node.gpu_node import HomeRelay
from tp_node.home_relays import HOME_RELAYS_WANTED
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
