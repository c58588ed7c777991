"""Path selection: diversity rules, guard pinning, model choice, measured weights (chi-square), GuardStore."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import random
import stat
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tp_net.protocol.descriptors import ModelOffer, NodeDescriptor, RelayDescriptor
from tp_net.protocol.path_selection import (
    GUARD_FILE_MODE,
    GUARDS_PER_CLIENT,
    LOCAL_NETWORK_RULES,
    STRICT_RULES,
    GuardStore,
    GuardStoreError,
    PathError,
    PathRules,
    choose_guards,
    choose_node,
    choose_path,
    circuit_hops,
    diverse,
    subnet_key,
)

EXAMPLES = int(os.environ.get("TP_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DRAWS = 20_000
# Upper critical values of the chi-square distribution at p = 0.001, by degrees of freedom.
CHI_SQUARE_CRITICAL_P001 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515, 6: 22.458}

MODEL = "tiny-llama"
UNKNOWN_ID = bytes([250]) * 32  # a relay id that no directory here lists


def relay(number: int, host: str | None = None, *, capacity: int = 10, family: str = "") -> RelayDescriptor:
    address = f"ws://{host or f'10.{number}.0.1'}:9000/"
    keys = (bytes([number]) * 32, bytes([255]) * 32)  # newest first
    return RelayDescriptor(bytes([number]) * 32, address, keys, capacity, family, "1", 0, 3600)


def offer(max_concurrent: int, load: int, model_id: str = MODEL) -> ModelOffer:
    return ModelOffer(model_id, bytes(32), 10**9, "Q4_K_M", 2048, max_concurrent, load)


def gpu_node(number: int, homes: Sequence[bytes], *offers: ModelOffer) -> NodeDescriptor:
    models = offers or (offer(4, 0),)
    return NodeDescriptor(
        bytes([100 + number]) * 32, (bytes([number]) * 32,), tuple(homes), models, "1", 0, 1
    )


def chi_square(counts: Counter[Hashable], weights: Mapping[Hashable, int]) -> float:
    draws = sum(counts.values())
    total = sum(weights.values())
    expected = {key: draws * weight / total for key, weight in weights.items()}
    return sum((counts[key] - expected[key]) ** 2 / expected[key] for key in weights)


def assert_follows_weights(counts: Counter[Hashable], weights: Mapping[Hashable, int]) -> None:
    assert set(counts) <= set(weights), f"drew outside the candidates: {set(counts) - set(weights)}"
    statistic = chi_square(counts, weights)
    assert statistic < CHI_SQUARE_CRITICAL_P001[len(weights) - 1], (statistic, counts, weights)
    # The test has power: the same counts clearly reject equal weights.
    uniform = dict.fromkeys(weights, 1)
    assert chi_square(counts, uniform) > CHI_SQUARE_CRITICAL_P001[len(weights) - 1]


# --- diversity rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("ws://10.1.2.3:9000/", "ws://10.1.200.7:80/", True),
        ("ws://10.1.2.3:9000/", "ws://10.2.2.3:9000/", False),
        ("ws://[2001:db8:1::1]:9000/", "ws://[2001:db8:ffff::2]:9000/", True),
        ("ws://[2001:db8::1]:9000/", "ws://[2001:db9::1]:9000/", False),
        ("ws://[::ffff:10.1.2.3]:9000/", "ws://10.1.9.9:9000/", True),
        ("ws://Relay.Example:9000/", "ws://relay.example:443/", True),
        ("ws://relay.example:9000/", "ws://other.example:9000/", False),
        ("ws://relay.example:9000/", "ws://10.1.2.3:9000/", False),
    ],
)
def test_subnet_key(a: str, b: str, same: bool) -> None:
    assert (subnet_key(a) == subnet_key(b)) is same


def test_subnet_key_of_a_malformed_address_is_the_address() -> None:
    assert subnet_key("ws://[::1:9000/") == "ws://[::1:9000/"


def test_diverse_rules() -> None:
    a = relay(1, "10.1.0.1", family="ops")
    same_subnet = relay(2, "10.1.5.5")
    same_family = relay(3, "10.3.0.1", family="ops")
    unrelated = relay(4, "10.4.0.1", family="other")
    assert not diverse(a, a)
    assert not diverse(a, a, PathRules(subnet_diversity=False, family_diversity=False))
    assert not diverse(a, same_subnet)
    assert diverse(a, same_subnet, LOCAL_NETWORK_RULES)
    assert not diverse(a, same_family)
    assert diverse(a, same_family, PathRules(family_diversity=False))
    assert diverse(a, unrelated)


def test_empty_family_is_no_family() -> None:
    assert diverse(relay(1), relay(2))


# --- guards -----------------------------------------------------------------------------------------


def test_choose_guards_returns_distinct_relays_of_the_directory() -> None:
    relays = [relay(n) for n in range(8)]
    guards = choose_guards(relays, random.Random(1))
    assert len(guards) == GUARDS_PER_CLIENT == len(set(guards))
    assert set(guards) <= {r.node_id for r in relays}


def test_choose_guards_is_fixed_by_the_seed() -> None:
    relays = [relay(n) for n in range(8)]
    assert choose_guards(relays, random.Random(7)) == choose_guards(relays, random.Random(7))


def test_choose_guards_from_a_small_directory_returns_all() -> None:
    relays = [relay(1), relay(2)]
    assert sorted(choose_guards(relays, random.Random(1))) == sorted(r.node_id for r in relays)
    assert choose_guards([], random.Random(1)) == []


def test_choose_guards_are_diverse_where_possible() -> None:
    # Two networks of three relays each: the first two guards are always in different networks.
    relays = [relay(n, f"10.{n % 2}.0.{n}") for n in range(6)]
    for seed in range(50):
        guards = choose_guards(relays, random.Random(seed))
        assert len(set(guards)) == 3
        assert guards[0][0] % 2 != guards[1][0] % 2  # relay n's id starts with byte n


def test_choose_guards_follow_measured_weights_not_declared_capacity() -> None:
    # Declared capacity falls as the measured weight rises: only the measured weight may count.
    relays = [relay(n, capacity=c) for n, c in enumerate([10**7, 10**6, 1000, 10, 1])]
    weights = {r.node_id: w for r, w in zip(relays, [1, 2, 3, 4, 10], strict=True)}
    rng = random.Random(11)
    firsts = Counter[Hashable](choose_guards(relays, rng, count=1, weights=weights)[0] for _ in range(DRAWS))
    assert_follows_weights(firsts, weights)


def test_without_weights_every_relay_weighs_the_same() -> None:
    relays = [relay(n, capacity=c) for n, c in enumerate([10**7, 1, 1])]
    rng = random.Random(16)
    firsts = Counter[Hashable](choose_guards(relays, rng, count=1)[0] for _ in range(DRAWS))
    assert chi_square(firsts, {r.node_id: 1 for r in relays}) < CHI_SQUARE_CRITICAL_P001[len(relays) - 1]


# --- model choice -----------------------------------------------------------------------------------


def test_choose_node_none_when_nobody_offers_the_model() -> None:
    nodes = [gpu_node(1, [UNKNOWN_ID], offer(4, 0, "other-model"))]
    assert choose_node(nodes, MODEL, random.Random(1)) is None
    assert choose_node([], MODEL, random.Random(1)) is None


def test_choose_node_uses_the_offer_for_the_model() -> None:
    busy_for_model = gpu_node(1, [UNKNOWN_ID], offer(8, 0, "other-model"), offer(4, 4))
    free_for_model = gpu_node(2, [UNKNOWN_ID], offer(8, 8, "other-model"), offer(1, 0))
    for seed in range(30):
        assert choose_node([busy_for_model, free_for_model], MODEL, random.Random(seed)) is free_for_model


def test_choose_node_follows_measured_weight_times_free_share() -> None:
    nodes = [
        gpu_node(1, [UNKNOWN_ID], offer(4, 3)),  # 1/4 free
        gpu_node(2, [UNKNOWN_ID], offer(4, 1)),  # 3/4 free
        gpu_node(
            3, [UNKNOWN_ID], offer(1024, 0)
        ),  # declares 1,024 idle slots: counts only its measured weight
        gpu_node(4, [UNKNOWN_ID], offer(8, 8)),  # full: never chosen while others have room
        gpu_node(5, [UNKNOWN_ID], offer(8, 0, "other-model")),
    ]
    weights = {nodes[0].node_id: 40, nodes[1].node_id: 40, nodes[2].node_id: 20, nodes[3].node_id: 99}
    rng = random.Random(12)
    counts = Counter[Hashable](_chosen(nodes, rng, weights).node_id for _ in range(DRAWS))
    assert_follows_weights(counts, {nodes[0].node_id: 10, nodes[1].node_id: 30, nodes[2].node_id: 20})


def test_choose_node_when_all_are_full_follows_measured_weight() -> None:
    nodes = [
        gpu_node(1, [UNKNOWN_ID], offer(2, 2)),
        gpu_node(2, [UNKNOWN_ID], offer(6, 9)),
        gpu_node(3, [UNKNOWN_ID], offer(1024, 1024)),
    ]
    weights = {nodes[0].node_id: 2, nodes[1].node_id: 6, nodes[2].node_id: 12}
    rng = random.Random(13)
    counts = Counter[Hashable](_chosen(nodes, rng, weights).node_id for _ in range(DRAWS))
    assert_follows_weights(counts, weights)


def _chosen(
    nodes: Sequence[NodeDescriptor], rng: random.Random, weights: Mapping[bytes, int] | None = None
) -> NodeDescriptor:
    node = choose_node(nodes, MODEL, rng, weights=weights or {})
    assert node is not None
    return node


# --- paths: rules and errors ------------------------------------------------------------------------


def test_choose_path_is_guard_middle_home() -> None:
    guard, middle, home = relay(1), relay(2), relay(3)
    node = gpu_node(1, [home.node_id])
    path = choose_path([home, middle, guard], node, [guard.node_id], random.Random(1))
    assert path == [guard, middle, home]


def test_home_relay_missing_from_directory() -> None:
    node = gpu_node(1, [UNKNOWN_ID])
    with pytest.raises(PathError, match=r"no home relay of node .* is in the directory"):
        choose_path([relay(1), relay(2), relay(3)], node, [relay(1).node_id], random.Random(1))


@pytest.mark.parametrize(
    "guard_ids",
    [[], [UNKNOWN_ID], [relay(3).node_id], [relay(4).node_id]],
    ids=["no guards", "guard not in directory", "guard is the home relay", "guard in home's /16"],
)
def test_no_usable_guard(guard_ids: list[bytes]) -> None:
    relays = [relay(1), relay(2), relay(3), relay(4, "10.3.9.9")]
    node = gpu_node(1, [relay(3).node_id])
    with pytest.raises(PathError, match="no usable guard"):
        choose_path(relays, node, guard_ids, random.Random(1))


def test_no_middle_relay() -> None:
    guard, home = relay(1, family="a"), relay(2, family="b")
    relays = [guard, home, relay(3, family="a"), relay(4, "10.2.7.7")]
    with pytest.raises(PathError, match=r"no middle relay diverse from guard .* and home relay"):
        choose_path(relays, gpu_node(1, [home.node_id]), [guard.node_id], random.Random(1))


def test_first_usable_guard_is_used() -> None:
    relays = [relay(n) for n in range(1, 8)]
    home = relays[6]
    guard_ids = [UNKNOWN_ID, home.node_id, relays[1].node_id, relays[0].node_id]
    for seed in range(30):
        path = choose_path(relays, gpu_node(1, [home.node_id]), guard_ids, random.Random(seed))
        assert path[0] == relays[1]


def test_guard_leaving_no_middle_is_skipped() -> None:
    # Guard 1 shares a family with guard 2 and a /16 with relay 3: only guard 2 leaves a middle.
    home = relay(9)
    relays = [home, relay(1, family="a"), relay(2, family="a"), relay(3, "10.1.5.5")]
    path = choose_path(
        relays, gpu_node(1, [home.node_id]), [relays[1].node_id, relays[2].node_id], random.Random(1)
    )
    assert path == [relays[2], relays[3], home]


def test_home_without_a_path_is_skipped() -> None:
    # The first home shares the guard's /16, so every circuit goes through the second one.
    guard, blocked_home, open_home = relay(1), relay(2, "10.1.3.3"), relay(3)
    relays = [guard, blocked_home, open_home, relay(4), relay(5)]
    node = gpu_node(1, [blocked_home.node_id, open_home.node_id])
    for seed in range(30):
        assert choose_path(relays, node, [guard.node_id], random.Random(seed))[2] == open_home


def test_local_network_rules_allow_one_host() -> None:
    relays = [relay(n, "127.0.0.1") for n in range(1, 4)]
    node = gpu_node(1, [relays[2].node_id])
    path = choose_path(relays, node, [relays[0].node_id], random.Random(1), rules=LOCAL_NETWORK_RULES)
    assert path == relays
    with pytest.raises(PathError):
        choose_path(relays, node, [relays[0].node_id], random.Random(1), rules=STRICT_RULES)


def test_circuit_hops_use_newest_onion_keys() -> None:
    path = [relay(1), relay(2), relay(3)]
    node = gpu_node(1, [relay(3).node_id])
    hops = circuit_hops(path, node)
    assert [hop.node_id for hop in hops] == [*(r.node_id for r in path), node.node_id]
    assert [hop.onion_key for hop in hops] == [*(r.onion_keys[0] for r in path), node.onion_keys[0]]
    assert [hop.address for hop in hops] == [*(r.address for r in path), None]


# --- paths: relays and the node ---------------------------------------------------------------------


def test_no_relay_of_the_nodes_family_is_on_its_circuits() -> None:
    home, other_home = relay(9), relay(10, family="gpu-op")
    relays = [home, other_home, *(relay(n, family="gpu-op" if n % 2 else "") for n in range(1, 9))]
    node = dataclasses.replace(gpu_node(1, [home.node_id, other_home.node_id]), family="gpu-op")
    rng = random.Random(17)
    guards = [relays[2].node_id, relays[3].node_id, relays[4].node_id]  # families: gpu-op, "", gpu-op
    for _ in range(200):
        path = choose_path(relays, node, guards, rng)
        assert all(hop.family != "gpu-op" for hop in path)
        assert path[0] == relays[3]


def test_a_relay_with_the_nodes_identity_key_is_never_on_its_circuits() -> None:
    node = gpu_node(1, [relay(9).node_id])
    twin = dataclasses.replace(relay(5), node_id=node.node_id)  # one operator key runs both
    relays = [relay(9), twin, relay(1), relay(2)]
    rng = random.Random(18)
    for _ in range(100):
        assert twin not in choose_path(relays, node, [twin.node_id, relay(1).node_id], rng)


def test_only_relays_of_another_family_can_be_a_nodes_home() -> None:
    home = relay(9, family="gpu-op")
    node = dataclasses.replace(gpu_node(1, [home.node_id]), family="gpu-op")
    with pytest.raises(PathError, match="no home relay"):
        choose_path([home, relay(1), relay(2)], node, [relay(1).node_id], random.Random(1))


def test_hostnames_are_compared_by_what_they_resolve_to() -> None:
    a, b = relay(1, "relay-a.example"), relay(2, "relay-b.example")
    assert diverse(a, b)  # unresolved, each name is its own network
    rules = PathRules(resolved={"relay-a.example": "10.7.1.1", "relay-b.example": "10.7.200.9"})
    assert not diverse(a, b, rules)
    assert not diverse(a, relay(3, "10.7.9.9"), rules)
    assert diverse(a, relay(4, "10.8.9.9"), rules)
    v6 = PathRules(resolved={"relay-a.example": "2001:db8::1", "relay-b.example": "2001:db8:ffff::2"})
    assert not diverse(a, b, v6)


# --- paths: measured weights ------------------------------------------------------------------------


def test_middle_follows_weights() -> None:
    guard, home = relay(1, capacity=50), relay(2, capacity=50)
    middles = [relay(n, capacity=c) for n, c in zip(range(3, 8), [1, 2, 3, 4, 10], strict=True)]
    excluded = relay(8, "10.1.4.4", capacity=1000)  # in the guard's /16: never a middle
    weights = {r.node_id: r.capacity for r in [guard, home, *middles, excluded]}  # measured as declared
    node = gpu_node(1, [home.node_id])
    rng = random.Random(14)
    counts = Counter[Hashable](
        choose_path([guard, home, *middles, excluded], node, [guard.node_id], rng, weights=weights)[1].node_id
        for _ in range(DRAWS)
    )
    assert_follows_weights(counts, {m.node_id: m.capacity for m in middles})


def test_home_relay_follows_weights() -> None:
    guard = relay(1)
    homes = [relay(n) for n in range(2, 5)]
    weights = {h.node_id: w for h, w in zip(homes, [1, 3, 6], strict=True)}
    node = gpu_node(1, [h.node_id for h in homes])
    rng = random.Random(15)
    relays = [guard, *homes, relay(5), relay(6)]
    counts = Counter[Hashable](
        choose_path(relays, node, [guard.node_id], rng, weights=weights)[2].node_id for _ in range(DRAWS)
    )
    assert_follows_weights(counts, weights)


# --- paths: property test against brute force ------------------------------------------------------


def network_of(address: str) -> str:
    """The test's own reading of the rule: IPv4 /16, IPv6 /32, else the lowercase hostname."""
    host = address.removeprefix("ws://").removesuffix("/").rsplit(":", 1)[0]
    if host.startswith("["):
        return "v6 " + ":".join(ipaddress.IPv6Address(host[1:-1]).exploded.split(":")[:2])
    octets = host.split(".")
    if len(octets) == 4 and all(octet.isdigit() for octet in octets):
        return "v4 " + ".".join(octets[:2])
    return "name " + host.lower()


def may_share(a: RelayDescriptor, b: RelayDescriptor, rules: PathRules) -> bool:
    if a.node_id == b.node_id:
        return False
    if rules.subnet_diversity and network_of(a.address) == network_of(b.address):
        return False
    return not (rules.family_diversity and a.family != "" and a.family == b.family)


def valid_paths(
    relays: Sequence[RelayDescriptor], node: NodeDescriptor, guards: Sequence[bytes], rules: PathRules
) -> list[tuple[RelayDescriptor, RelayDescriptor, RelayDescriptor]]:
    return [
        (guard, middle, home)
        for guard in relays
        if guard.node_id in guards
        for home in relays
        if home.node_id in node.home_relays
        for middle in relays
        if may_share(guard, middle, rules)
        and may_share(guard, home, rules)
        and may_share(middle, home, rules)
    ]


hosts = st.one_of(
    st.builds("10.{}.{}.{}".format, st.integers(0, 2), st.integers(0, 2), st.integers(1, 3)),
    st.builds("[2001:{}:{}::1]".format, st.sampled_from(["db8", "db9"]), st.sampled_from(["1", "2"])),
    st.sampled_from(["relay.example", "RELAY.example", "other.example"]),
)


@st.composite
def directories(draw: st.DrawFn) -> tuple[list[RelayDescriptor], NodeDescriptor, list[bytes], PathRules, int]:
    relays = [
        relay(
            number,
            draw(hosts),
            capacity=draw(st.integers(1, 100)),
            family=draw(st.sampled_from(["", "", "a", "b"])),
        )
        for number in range(draw(st.integers(1, 7)))
    ]
    ids = [r.node_id for r in relays] + [UNKNOWN_ID]
    node = gpu_node(1, draw(st.lists(st.sampled_from(ids), min_size=1, max_size=4)))
    guards = draw(st.lists(st.sampled_from(ids), max_size=4))
    rules = PathRules(draw(st.booleans()), draw(st.booleans()))
    return relays, node, guards, rules, draw(st.integers(0, 2**32))


@FUZZ
@given(directories())
def test_paths_obey_the_rules_and_exist_whenever_one_does(
    case: tuple[list[RelayDescriptor], NodeDescriptor, list[bytes], PathRules, int],
) -> None:
    relays, node, guards, rules, seed = case
    valid = valid_paths(relays, node, guards, rules)
    try:
        path = choose_path(relays, node, guards, random.Random(seed), rules=rules)
    except PathError:
        assert not valid
        return
    guard, middle, home = path
    assert (
        guard,
        middle,
        home,
    ) in valid  # distinct, pairwise diverse, a home relay last, a pinned guard first
    # The guard is the most preferred one that has any valid path through this home relay.
    guards_with_path = {g.node_id for g, _, h in valid if h == home}
    assert guard.node_id == next(g for g in guards if g in guards_with_path)


@FUZZ
@given(directories())
def test_guards_are_diverse_where_possible(
    case: tuple[list[RelayDescriptor], NodeDescriptor, list[bytes], PathRules, int],
) -> None:
    relays, _, _, rules, seed = case
    guards = choose_guards(relays, random.Random(seed), rules=rules)
    by_id = {r.node_id: r for r in relays}
    assert len(guards) == len(set(guards)) == min(GUARDS_PER_CLIENT, len(relays))
    for index, guard_id in enumerate(guards):
        earlier = [by_id[g] for g in guards[:index]]
        some_diverse = [r for r in relays if all(may_share(r, e, rules) for e in earlier)]
        assert all(may_share(by_id[guard_id], e, rules) for e in earlier) or not some_diverse


# --- GuardStore -------------------------------------------------------------------------------------


def test_guard_store_round_trip(tmp_path: Path) -> None:
    store = GuardStore(tmp_path / "state" / "guards.json")
    relays = [relay(n) for n in range(1, 9)]
    guards = store.guards_for(relays, random.Random(1))
    assert len(guards) == GUARDS_PER_CLIENT
    assert store.load() == guards
    assert os.listdir(tmp_path / "state") == ["guards.json"]  # no temp file left behind


def test_guards_persist_across_instances(tmp_path: Path) -> None:
    relays = [relay(n) for n in range(1, 9)]
    first = GuardStore(tmp_path / "guards.json").guards_for(relays, random.Random(1))
    for seed in range(2, 6):
        assert GuardStore(tmp_path / "guards.json").guards_for(relays, random.Random(seed)) == first


def test_guards_topped_up_when_one_leaves(tmp_path: Path) -> None:
    relays = [relay(n) for n in range(1, 9)]
    store = GuardStore(tmp_path / "guards.json")
    first = store.guards_for(relays, random.Random(1))
    remaining = [r for r in relays if r.node_id != first[1]]
    second = store.guards_for(remaining, random.Random(2))
    assert second[:2] == [first[0], first[2]]
    assert second[2] not in first
    assert GuardStore(tmp_path / "guards.json").load() == second


def test_guard_file_mode_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "guards.json"
    path.write_text(json.dumps({"version": 1, "guards": []}))
    path.chmod(0o644)
    GuardStore(path).guards_for([relay(1), relay(2)], random.Random(1))
    assert stat.S_IMODE(path.stat().st_mode) == GUARD_FILE_MODE == 0o600


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"version": 2, "guards": []}',
        b'{"version": 1, "guards": "ab"}',
        b'{"version": 1, "guards": ["zz"]}',
        b'{"version": 1, "guards": ["' + b"ab" * 31 + b'"]}',
        b" " * (64 * 1024 + 1),
    ],
    ids=["text", "not utf-8", "list", "version", "guards not a list", "not hex", "short id", "oversized"],
)
def test_corrupt_guard_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "guards.json"
    path.write_bytes(content)
    with pytest.raises(GuardStoreError, match=f"guard file {path} is corrupt"):
        GuardStore(path).guards_for([relay(1)], random.Random(1))
