"""Capacity inflation and refuse-and-read nodes against measured weights (issue 18, part 2).

The issue's scenario: two relays declaring 10^7 KB/s and one GPU node declaring 1,024 slots, one operator,
against 100 honest relays and 10 honest 4-slot nodes under open admission. Weighted by what they declare,
the attacker holds the guard and the node of ~95% of requests (the issue measured 94.8%). Here three real
`AuthorityCore`s measure every relay and node (a `MeasurementScheduler` each, probes answered by the
world's true rates), vote their measurements, and sign the document; path selection, run as the gateway
runs it, then gives the attacker no more than twice what its measured share predicts (f_guard * f_node).

Pure and in memory: the attack is on the weights, which no socket carries differently.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tests.tp_net.directory_factories import (
    NETWORK,
    NODE_SEED_BASE,
    PERIOD_S,
    PUBLISHED,
    RELAY_SEED_BASE,
    T0,
    identity,
    model_offer,
    network_of,
    node_descriptor,
    signed_relay,
)
from tp_net.protocol.bandwidth_weights import (
    MEASUREMENTS_IN_FLIGHT_MAX,
    MEASUREMENTS_PER_PERIOD_MAX,
    MeasurementScheduler,
    Outcome,
    Sample,
    TargetKind,
    predicted_share,
)
from tp_net.protocol.descriptors import SignedDescriptor, sign_descriptor
from tp_net.protocol.directory import Directory, SignedDocument, verify_document
from tp_net.protocol.path_selection import choose_guards, choose_node, choose_path
from tp_node.authority_core import Admission, AuthorityCore, Schedule

MODEL = "tiny-llama"
HONEST_RELAYS = 100
HONEST_NODES = 10
ATTACKER_RELAYS = (101, 102)
ATTACKER_NODE = 11
HONEST_RELAY_KBPS = 1_000  # what honest relays declare and forward
ATTACKER_RELAY_KBPS = 5_000  # what the attacker's relays really forward (they declare 10^7)
NODE_TOKENS_PER_S = 20.0  # every node, the attacker's included, really generates this per request
REQUESTS = 4_000  # one fresh client each: guards, node and path as the gateway chooses them
DECLARED_RATE_MIN = 0.9  # weighted by declarations the attack wins at least this often (the issue: 94.8%)
PREDICTION_FACTOR_MAX = 2.0  # the acceptance bound: at most twice the measured share's prediction
REFUSER_WEIGHT_FACTOR_MIN = 10  # honest nodes weigh at least this many times a refuse-and-read node
MEASURING_PERIODS = 4  # enough for SAMPLES_KEPT_PER_TARGET samples of every target


@dataclass(frozen=True)
class World:
    relays: list[SignedDescriptor]
    nodes: list[SignedDescriptor]
    rates: dict[bytes, float]  # true forwarding KB/s of relays, tokens/s of nodes
    refuses: dict[bytes, float]  # share of requests a node refuses as overloaded
    attacker: frozenset[bytes]


def relay_id(number: int) -> bytes:
    return identity(RELAY_SEED_BASE + number).node_id


def node_id(number: int) -> bytes:
    return identity(NODE_SEED_BASE + number).node_id


def signed_gpu_node(number: int, home: int, slots: int) -> SignedDescriptor:
    who = identity(NODE_SEED_BASE + number)
    offer = model_offer(MODEL, max_concurrent=slots)
    descriptor = node_descriptor(who, number=number, home_relays=(relay_id(home),), models=(offer,))
    return sign_descriptor(who, descriptor)


def inflation_world(*, attacker_refuses: float = 0.0) -> World:
    honest_relays = [signed_relay(n, capacity=HONEST_RELAY_KBPS) for n in range(1, HONEST_RELAYS + 1)]
    bad_relays = [signed_relay(n, capacity=10**7) for n in ATTACKER_RELAYS]
    nodes = [signed_gpu_node(n, home=n, slots=4) for n in range(1, HONEST_NODES + 1)]
    nodes.append(signed_gpu_node(ATTACKER_NODE, home=50, slots=1024))
    rates = {relay_id(n): float(HONEST_RELAY_KBPS) for n in range(1, HONEST_RELAYS + 1)}
    rates.update((relay_id(n), float(ATTACKER_RELAY_KBPS)) for n in ATTACKER_RELAYS)
    rates.update((node_id(n), NODE_TOKENS_PER_S) for n in range(1, ATTACKER_NODE + 1))
    attacker = frozenset({*(relay_id(n) for n in ATTACKER_RELAYS), node_id(ATTACKER_NODE)})
    refuses = {node_id(ATTACKER_NODE): attacker_refuses}
    return World(honest_relays + bad_relays, nodes, rates, refuses, attacker)


def measure(scheduler: MeasurementScheduler, world: World, rng: random.Random, start: float) -> None:
    """Run the scheduler for MEASURING_PERIODS periods against the world's true rates (+-10% noise); each
    probe takes a second, so the in-flight and per-period limits both bind."""
    now = start
    while now < start + MEASURING_PERIODS * PERIOD_S:
        probes = scheduler.due(now)
        assert len(probes) <= MEASUREMENTS_IN_FLIGHT_MAX
        for probe in probes:
            refused = probe.kind is TargetKind.NODE and rng.random() < world.refuses.get(probe.node_id, 0.0)
            if refused:
                scheduler.record(probe.node_id, Sample(Outcome.OVERLOADED))
            else:
                rate = world.rates[probe.node_id] * rng.uniform(0.9, 1.1)
                scheduler.record(probe.node_id, Sample(Outcome.ANSWERED, rate))
        now += 1.0


def measured_directory(world: World, *, measured_by: int = 3) -> Directory:
    """The document three open-admission authorities sign after `measured_by` of them measured the world."""
    identities, trust = network_of(3, 2)
    cores = [AuthorityCore(who, trust, period_s=PERIOD_S, admission=Admission.OPEN) for who in identities]
    vote_at = float(PUBLISHED)  # late in the period before T0, when the descriptors are fresh
    for index, core in enumerate(cores):
        for signed in world.relays + world.nodes:
            core.accept(signed, None, vote_at)
        if index < measured_by:
            scheduler = MeasurementScheduler(PERIOD_S, random.Random(index))
            scheduler.set_targets(
                [relay_id_of(s) for s in world.relays], [relay_id_of(s) for s in world.nodes]
            )
            measure(scheduler, world, random.Random(100 + index), vote_at - MEASURING_PERIODS * PERIOD_S)
            core.record_weights(scheduler.weights())
    votes = [core.make_vote(T0) for core in cores]
    vote_time = Schedule.of_period(T0, PERIOD_S).vote_at  # straight votes are taken until votes close
    for core in cores:
        for data in votes:
            core.add_vote(data, vote_time)
    signatures = [core.make_signature(T0) for core in cores]
    for core in cores:
        for who, made in zip(identities, signatures, strict=True):
            assert made is not None
            core.add_signature(T0, made[0], who.node_id, made[1], vote_at)
    document = cores[0].latest_document()
    assert document is not None
    return verify_document(SignedDocument.decode(document.encode()), trust, T0)


def relay_id_of(signed: SignedDescriptor) -> bytes:
    return signed.open(T0).node_id


def compromise_rate(directory: Directory, attacker: frozenset[bytes], weights: Mapping[bytes, int]) -> float:
    """The share of requests, each from a fresh client, whose guard and node the attacker both holds."""
    rng = random.Random(7)
    relays = list(directory.relays.values())
    nodes = list(directory.nodes.values())
    compromised = 0
    for _ in range(REQUESTS):
        guards = choose_guards(relays, rng, weights=weights)
        node = choose_node(nodes, MODEL, rng, weights=weights)
        assert node is not None
        path = choose_path(relays, node, guards, rng, weights=weights)
        compromised += path[0].node_id in attacker and node.node_id in attacker
    return compromised / REQUESTS


def predicted_rate(directory: Directory, attacker: frozenset[bytes]) -> float:
    relays: Sequence[bytes] = list(directory.relays)
    nodes: Sequence[bytes] = list(directory.nodes)
    weights = directory.weights
    return predicted_share(weights, relays, attacker) * predicted_share(weights, nodes, attacker)


def test_capacity_inflation_is_held_to_the_measured_share() -> None:
    world = inflation_world()
    directory = measured_directory(world)
    declared = {r.node_id: r.capacity for r in directory.relays.values()}
    declared.update((n.node_id, n.models[0].max_concurrent) for n in directory.nodes.values())
    assert compromise_rate(directory, world.attacker, declared) >= DECLARED_RATE_MIN  # the attack

    rate = compromise_rate(directory, world.attacker, directory.weights)
    predicted = predicted_rate(directory, world.attacker)
    assert 0.0 < predicted < 0.02  # ~ (10,000 / 110,000) * (1 / 11): the attacker's measured share
    assert rate <= PREDICTION_FACTOR_MAX * predicted, (rate, predicted)


def test_refuse_and_read_node_keeps_almost_no_weight() -> None:
    # The node reads every prompt and refuses 3 in 4 as overloaded (the gateway retries elsewhere,
    # unnoticed): test requests look like any other, so it refuses those too and its weight collapses.
    world = inflation_world(attacker_refuses=0.75)
    directory = measured_directory(world)
    bad = node_id(ATTACKER_NODE)
    honest = [directory.weights[node_id(n)] for n in range(1, HONEST_NODES + 1)]
    assert directory.weights[bad] * REFUSER_WEIGHT_FACTOR_MIN <= min(honest)
    rng = random.Random(8)
    nodes = list(directory.nodes.values())
    chosen = [choose_node(nodes, MODEL, rng, weights=directory.weights) for _ in range(REQUESTS)]
    share = sum(node is not None and node.node_id == bad for node in chosen) / REQUESTS
    assert share <= PREDICTION_FACTOR_MAX * predicted_share(directory.weights, list(directory.nodes), [bad])
    assert share < 0.01


def test_unmeasured_newcomers_weigh_little_whatever_they_declare() -> None:
    # Only one authority (fewer than the threshold of 2) measured: every weight is the unmeasured one, so
    # declaring 10^7 buys nothing, and the attacker holds its share by count.
    world = inflation_world()
    directory = measured_directory(world, measured_by=1)
    bad_relays = [relay_id(n) for n in ATTACKER_RELAYS]
    assert {directory.weights[r] for r in directory.relays} == {directory.weights[bad_relays[0]]}
    share = predicted_share(directory.weights, list(directory.relays), bad_relays)
    assert share == len(ATTACKER_RELAYS) / (HONEST_RELAYS + len(ATTACKER_RELAYS))


def test_measuring_stays_within_its_limits() -> None:
    scheduler = MeasurementScheduler(PERIOD_S, random.Random(1))
    flood = [bytes([n % 256, n // 256]) * 16 for n in range(20_000)]
    scheduler.set_targets(flood, [])
    started = 0
    for second in range(PERIOD_S):
        probes = scheduler.due(T0 + second)
        started += len(probes)
        for probe in probes:
            scheduler.record(probe.node_id, Sample(Outcome.ANSWERED, 1.0))
    assert started == MEASUREMENTS_PER_PERIOD_MAX
    assert NETWORK  # the factories' network, used by the documents above
