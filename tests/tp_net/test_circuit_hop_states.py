"""The circuit state table at a hop (tp_net.protocol.hop_states): every (state, event) pair is either listed
or refused with the named protocol error, and HopCore follows the table on the wire."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.tp_net.circuit_harness import CLIENT, Delivery, Wire
from tp_crypto.errors import RemoteProtocolError
from tp_net.protocol.cells import (
    CellCommand,
    DestroyReason,
    destroy_reason,
    handshake_cell,
    relay_cell,
)
from tp_net.protocol.frames import CELL_BODY_BYTES, CELL_COMMAND_MAX, Cell
from tp_net.protocol.hop_states import (
    TRANSITIONS,
    CircuitStateError,
    HopAction,
    HopEvent,
    HopState,
    cell_event,
    transition,
)

A, E, S = HopAction, HopEvent, HopState
_OPEN = (S.LAST_HOP, S.DIALING, S.AWAITING_CREATED, S.RELAYING)

# The table written out by hand: a change to the product's table must change this too.
EXPECTED = {
    **{(s, E.RELAY_FROM_CLIENT): (A.PEEL, s) for s in _OPEN},
    **{(s, E.RELAY_EARLY_FROM_CLIENT): (A.PEEL, s) for s in _OPEN},
    **{(s, E.DESTROY_FROM_CLIENT): (A.DESTROYED, S.CLOSED) for s in _OPEN},
    **{(s, E.DROP): (A.TAKE_DROP, s) for s in _OPEN},
    (S.AWAITING_CREATED, E.DESTROY_FROM_NEXT): (A.DESTROYED, S.CLOSED),
    (S.RELAYING, E.DESTROY_FROM_NEXT): (A.DESTROYED, S.CLOSED),
    (S.LAST_HOP, E.NOT_FOR_THIS_HOP): (A.TEARDOWN_INTEGRITY, S.CLOSED),
    (S.DIALING, E.NOT_FOR_THIS_HOP): (A.TEARDOWN_INTEGRITY, S.CLOSED),
    (S.AWAITING_CREATED, E.NOT_FOR_THIS_HOP): (A.TEARDOWN_INTEGRITY, S.CLOSED),
    (S.RELAYING, E.NOT_FOR_THIS_HOP): (A.PASS_FORWARD, S.RELAYING),
    (S.LAST_HOP, E.STREAM): (A.SERVE_STREAM, S.LAST_HOP),
    (S.DIALING, E.STREAM): (A.SERVE_STREAM, S.DIALING),
    (S.LAST_HOP, E.EXTEND): (A.START_EXTEND, S.DIALING),
    (S.DIALING, E.LINKED): (A.SEND_CREATE, S.AWAITING_CREATED),
    (S.DIALING, E.LINK_FAILED): (A.TEARDOWN_CONNECT_FAILED, S.CLOSED),
    (S.AWAITING_CREATED, E.CREATED_FROM_NEXT): (A.SEND_EXTENDED, S.RELAYING),
    (S.RELAYING, E.RELAY_FROM_NEXT): (A.PASS_BACKWARD, S.RELAYING),
}


def test_the_table_is_the_one_written_out_here() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize("state", list(HopState))
@pytest.mark.parametrize("event", list(HopEvent))
def test_every_state_and_event_pair_is_listed_or_refused(state: HopState, event: HopEvent) -> None:
    if (state, event) in TRANSITIONS:
        assert transition(state, event) == TRANSITIONS[state, event]
        return
    with pytest.raises(CircuitStateError) as refused:
        transition(state, event)
    assert isinstance(refused.value, RemoteProtocolError)  # the hop answers it with DESTROY (PROTOCOL)
    assert (refused.value.state, refused.value.event) == (state, event)


def test_nothing_reaches_a_closed_circuit_and_every_action_and_state_is_used() -> None:
    assert not [pair for pair in TRANSITIONS if pair[0] is S.CLOSED]
    assert {action for action, _ in TRANSITIONS.values()} == set(HopAction)
    reached, frontier = {S.LAST_HOP}, [S.LAST_HOP]
    while frontier:
        state = frontier.pop()
        for (source, _), (_, target) in TRANSITIONS.items():
            if source is state and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(HopState)


@pytest.mark.parametrize("from_client", [True, False])
def test_every_cell_command_is_an_event_and_an_unknown_one_is_refused_everywhere(from_client: bool) -> None:
    events = {cell_event(command, from_client=from_client) for command in CellCommand}
    assert len(events) == len(CellCommand) and E.UNKNOWN_CELL not in events
    assert CELL_COMMAND_MAX not in set(CellCommand)  # a command a cell may carry that no hop knows
    assert cell_event(CELL_COMMAND_MAX, from_client=from_client) is E.UNKNOWN_CELL
    for state in HopState:
        with pytest.raises(CircuitStateError):
            transition(state, E.UNKNOWN_CELL)


def test_a_created_or_create_is_never_accepted_from_the_client_side() -> None:
    for state in HopState:
        for event in (E.CREATE_FROM_CLIENT, E.CREATED_FROM_CLIENT, E.CREATE_FROM_NEXT, E.OTHER_MESSAGE):
            assert (state, event) not in TRANSITIONS
        assert (state, E.EXTEND_NOT_EARLY) not in TRANSITIONS


# --- HopCore follows the table ----------------------------------------------------------------------


def _keep_all_but(command: CellCommand, held: list[Delivery]) -> Callable[[Delivery], list[Cell]]:
    """A tap that holds back cells of `command` (in `held`) and lets every other cell through."""

    def tap(delivery: Delivery) -> list[Cell]:
        if delivery.cell.command == command:
            held.append(delivery)
            return []
        return [delivery.cell]

    return tap


def test_a_circuit_at_the_first_hop_goes_last_hop_dialing_awaiting_created_relaying() -> None:
    wire = Wire(seed=3)
    wire.add_hop("r0")
    wire.add_hop("r1")  # not linked to r0: the extend dials
    wire.connect_mode = "hold"
    handle = wire.open_circuit(["r0", "r1"])
    ref = (handle.link, handle.circuit.circuit_id)
    core = wire.hops["r0"].core
    assert core.state_of(ref) is S.DIALING
    created: list[Delivery] = []
    wire.tap(_keep_all_but(CellCommand.CREATED, created))
    wire.release_connects()
    wire.run()
    assert core.state_of(ref) is S.AWAITING_CREATED
    wire.clear_taps()
    for delivery in created:
        wire.send(delivery.src, delivery.link, delivery.cell)
    wire.run()
    assert core.state_of(ref) is S.RELAYING and handle.built
    one_hop = wire.open_circuit(["r0"])
    assert core.state_of((one_hop.link, one_hop.circuit.circuit_id)) is S.LAST_HOP


def test_a_create_reusing_a_relaying_circuits_id_destroys_it_both_ways_as_a_protocol_error() -> None:
    wire = Wire(seed=4)
    path = wire.add_path(1)
    handle = wire.open_circuit(path)
    assert handle.built
    ref = (handle.link, handle.circuit.circuit_id)
    assert wire.hops["r0"].core.state_of(ref) is S.RELAYING
    destroys: list[Delivery] = []
    wire.tap(_keep_all_but(CellCommand.DESTROY, destroys))
    wire.send(CLIENT, handle.link, handshake_cell(ref[1], CellCommand.CREATE, bytes(32)))
    wire.run()
    assert wire.hops["r0"].core.state_of(ref) is None
    assert sorted(d.dst for d in destroys) == [CLIENT, "node"]
    assert {destroy_reason(d.cell) for d in destroys} == {DestroyReason.PROTOCOL}


def test_relay_from_the_next_hop_before_created_is_refused() -> None:
    wire = Wire(seed=5)
    wire.add_hop("r0")
    wire.add_hop("r1")
    wire.connect_mode = "hold"
    handle = wire.open_circuit(["r0", "r1"])
    created: list[Delivery] = []
    wire.tap(_keep_all_but(CellCommand.CREATED, created))
    wire.release_connects()
    wire.run()
    ref = (handle.link, handle.circuit.circuit_id)
    assert wire.hops["r0"].core.state_of(ref) is S.AWAITING_CREATED
    (answer,) = created
    wire.send("r1", answer.link, relay_cell(answer.cell.circuit_id, bytes(CELL_BODY_BYTES)))
    wire.run()
    assert wire.hops["r0"].core.state_of(ref) is None
    assert handle.closed and handle.closed[0].reason == DestroyReason.PROTOCOL


def test_an_unknown_cell_command_on_a_circuit_destroys_it_as_a_protocol_error() -> None:
    wire = Wire(seed=6)
    path = wire.add_path(1)
    handle = wire.open_circuit(path)
    ref = (handle.link, handle.circuit.circuit_id)
    wire.send(CLIENT, handle.link, Cell(ref[1], CELL_COMMAND_MAX, bytes(CELL_BODY_BYTES)))
    wire.run()
    assert wire.hops["r0"].core.state_of(ref) is None
    assert [closed.reason for closed in handle.closed] == [DestroyReason.PROTOCOL]
