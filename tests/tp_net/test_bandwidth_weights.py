"""Measured weights: the document's median-of-votes rule, caps, newcomers, the wire form, the scheduler."""

from __future__ import annotations

import random

import pytest

from tests.tp_net.directory_factories import (
    NETWORK,
    PERIOD_S,
    T0,
    authorities,
    identity,
    model_offer,
    network_of,
    node_descriptor,
    relay_descriptor,
    signed_node,
    signed_relay,
    signed_vote,
    vote,
)
from tp_crypto.errors import RemoteProtocolError
from tp_net.protocol.bandwidth_weights import (
    MEASUREMENTS_IN_FLIGHT_MAX,
    NODE_TOKENS_PER_S_PER_SLOT_MAX,
    NODE_WEIGHT_UNMEASURED_TOKENS_PER_S,
    RELAY_WEIGHT_UNMEASURED_KBPS,
    REMEASURE_INTERVAL_S,
    WEIGHT_MAX,
    WEIGHT_MIN,
    MeasurementScheduler,
    Outcome,
    Sample,
    decode_weights,
    document_weights,
)
from tp_net.protocol.directory import Vote, build_document, decode_body, open_vote, sign_vote

RELAY = relay_descriptor(identity(1), capacity=10**7)
SMALL_RELAY = relay_descriptor(identity(2), number=2, capacity=50)
NODE = node_descriptor(identity(3), models=(model_offer(max_concurrent=2),))


def test_the_median_of_the_measured_votes_wins() -> None:
    honest = [((RELAY.node_id, 900),), ((RELAY.node_id, 1100),)]
    lying = ((RELAY.node_id, 10**7),)  # one authority inflates its friend
    assert document_weights([*honest, lying], [RELAY], 2) == ((RELAY.node_id, 1100),)
    assert document_weights([honest[0], lying, lying], [RELAY], 2) == ((RELAY.node_id, 10**7),)  # 2 liars


def test_weights_are_capped_by_what_is_declared() -> None:
    measured = [((SMALL_RELAY.node_id, 5000), (NODE.node_id, 10**6))] * 2
    weights = dict(document_weights(measured, [SMALL_RELAY, NODE], 2))
    assert weights == {SMALL_RELAY.node_id: 50, NODE.node_id: 2 * NODE_TOKENS_PER_S_PER_SLOT_MAX}


def test_fewer_than_threshold_measurements_give_the_unmeasured_weight() -> None:
    measured = [((RELAY.node_id, 9000), (NODE.node_id, 50))]
    weights = dict(document_weights(measured, [RELAY, NODE], 2))
    assert weights == {
        RELAY.node_id: RELAY_WEIGHT_UNMEASURED_KBPS,
        NODE.node_id: NODE_WEIGHT_UNMEASURED_TOKENS_PER_S,
    }


def test_a_zero_measurement_keeps_the_minimum_weight() -> None:
    assert document_weights([((NODE.node_id, 0),)], [NODE], 1) == ((NODE.node_id, WEIGHT_MIN),)


def test_votes_and_documents_carry_the_weights() -> None:
    identities, trust = network_of(3, 2)
    descriptors = [signed_relay(1), signed_node(1)]
    ids = [d.open(T0).node_id for d in descriptors]
    votes = [
        Vote(NETWORK, T0, who.node_id, tuple(descriptors), ((min(ids), 40 + i), (max(ids), 40 + i)))
        for i, who in enumerate(identities)
    ]
    assert open_vote(signed_vote(identities[0], descriptors), trust).measured == ()
    assert open_vote(sign_vote(identities[1], votes[1]), trust).measured == votes[1].measured
    body = build_document(NETWORK, T0, PERIOD_S, votes, 2)
    assert decode_body(body.encode()).weights == body.weights
    assert dict(body.weights) == {ids[0]: 41, ids[1]: 41}  # the median of 40, 41, 42


@pytest.mark.parametrize(
    "value",
    [
        "weights",
        [[bytes(32)]],
        [[bytes(31), 1]],
        [[bytes(32), -1]],
        [[bytes(32), WEIGHT_MAX + 1]],
        [[bytes(32), True]],
        [[bytes([2]) * 32, 1], [bytes([1]) * 32, 1]],  # not sorted
        [[bytes(32), 1], [bytes(32), 1]],  # one id twice
        [[bytes([n]) * 32, 1] for n in range(5)],  # over the count
    ],
)
def test_bad_weights_are_refused(value: object) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_weights(value, 4)


def test_scheduler_measures_the_least_recently_measured_first_within_limits() -> None:
    relays = [bytes([n]) * 32 for n in range(10)]
    scheduler = MeasurementScheduler(PERIOD_S, random.Random(1))
    scheduler.set_targets(relays, [])
    first = scheduler.due(T0)
    assert len(first) == MEASUREMENTS_IN_FLIGHT_MAX
    assert scheduler.due(T0 + 1) == []  # all slots in flight
    for probe in first:
        scheduler.record(probe.node_id, Sample(Outcome.ANSWERED, 100.0))
    second = scheduler.due(T0 + 2)
    assert not {p.node_id for p in first} & {p.node_id for p in second}  # the unmeasured go first
    assert scheduler.weights() == {p.node_id: 100 for p in first}


def test_scheduler_forgets_dropped_targets() -> None:
    scheduler = MeasurementScheduler(PERIOD_S, random.Random(2))
    scheduler.set_targets([bytes(32)], [])
    [probe] = scheduler.due(T0)
    scheduler.set_targets([], [])
    scheduler.record(probe.node_id, Sample(Outcome.ANSWERED, 5.0))
    assert scheduler.weights() == {}
    assert scheduler.in_flight == 0


def test_factories_still_build_unweighted_votes() -> None:
    one = vote(authorities(1)[0], [signed_relay(1)])
    assert one.measured == ()


def test_a_target_is_measured_at_most_once_per_remeasure_interval() -> None:
    scheduler = MeasurementScheduler(4, random.Random(3))  # a local network's 4 s period
    scheduler.set_targets([bytes(32)], [])
    [probe] = scheduler.due(T0)
    scheduler.record(probe.node_id, Sample(Outcome.ANSWERED, 5.0))
    assert scheduler.due(T0 + REMEASURE_INTERVAL_S - 1) == []
    assert scheduler.due(T0 + REMEASURE_INTERVAL_S) == [probe]
