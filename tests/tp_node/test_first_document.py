"""A new network's first directory document comes from warm-up rounds as soon as a threshold of authorities
votes (not a whole period later), a node that joins during warm-up is in the next round's document, and
every role can say when the next document is due."""

from __future__ import annotations

from tests.tp_net.directory_factories import NETWORK, PERIOD_S, signed_node, signed_relay
from tests.tp_node.test_authority_core import AUTHORITIES, NOW, TRUST, Simulation, node_id
from tp_net.protocol.directory import verify_document
from tp_node.authority_core import (
    FIRST_ROUND_INTERVAL_S,
    FIRST_ROUND_SIGN_DELAY_S,
    Schedule,
    next_document_due,
)


def test_warm_up_rounds_sign_a_document_at_once_and_take_in_a_late_node() -> None:
    # Straight votes close half way to signing (one vote set, PROTOCOL.md 7.2): in a warm-up round that is
    # FIRST_ROUND_SIGN_DELAY_S / 2 after the vote, so the authorities' clocks must agree that closely.
    sim = Simulation.start(offsets=(0.0, 0.4, -0.4))
    t = float(NOW)
    first_aligned = Schedule.next_after(t, PERIOD_S)
    round_ = Schedule.first_round_after(t, PERIOD_S, first_aligned)
    assert round_ is not None and 0 < round_.vote_at - t <= FIRST_ROUND_INTERVAL_S
    assert round_.period % PERIOD_S, "a warm-up document is told from an aligned one by its start"
    relays = [signed_relay(n, published=int(t)) for n in range(1, 5)]
    for signed in relays:
        sim.publish(signed, t, AUTHORITIES[0], AUTHORITIES)
    assert all(core.needs_first_round(t) for core in sim.cores.values())

    sim.run_period(round_, AUTHORITIES)
    first = sim.documents(AUTHORITIES, round_.sign_at)[0]
    assert first is not None, "a document within one warm-up round, not a period"
    directory = verify_document(first, TRUST, round_.sign_at)
    assert directory.network == NETWORK and directory.valid_after == round_.period
    assert set(directory.relays) == {node_id(s) for s in relays}
    assert not any(core.needs_first_round(round_.sign_at) for core in sim.cores.values())

    # A node publishes after the first document: the next warm-up round lists it.
    joined_at = round_.sign_at + 1
    node = signed_node(1, published=int(joined_at))
    sim.publish(node, joined_at, AUTHORITIES[1], AUTHORITIES)
    assert all(core.needs_first_round(joined_at) for core in sim.cores.values())
    second = Schedule.first_round_after(joined_at, PERIOD_S, first_aligned)
    assert second is not None and second.period > round_.period
    sim.run_period(second, AUTHORITIES)
    document = sim.documents(AUTHORITIES, second.sign_at)[0]
    assert document is not None
    assert node_id(node) in verify_document(document, TRUST, second.sign_at).nodes

    # Warm-up ends before the first aligned period's vote; from then on, one document a period.
    assert Schedule.first_round_after(first_aligned.vote_at - 1, PERIOD_S, first_aligned) is None


def test_next_document_due_after_a_warm_up_and_an_aligned_document() -> None:
    warm_up = (int(NOW) // FIRST_ROUND_INTERVAL_S + 1) * FIRST_ROUND_INTERVAL_S
    due = next_document_due(warm_up, PERIOD_S, warm_up + 1)
    assert due == warm_up + FIRST_ROUND_INTERVAL_S + FIRST_ROUND_SIGN_DELAY_S
    aligned = Schedule.next_after(NOW, PERIOD_S).period
    assert next_document_due(aligned, PERIOD_S, aligned + 1) == aligned + PERIOD_S * 3 / 4
    overdue = aligned + PERIOD_S * 3  # no new document for long: the schedule's next signing
    assert next_document_due(aligned, PERIOD_S, overdue) == Schedule.next_after(overdue, PERIOD_S).sign_at
