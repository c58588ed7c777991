"""The one transition table of a circuit at a hop, sans-IO (h11's `_state.py` style).

A circuit at a hop is in one `HopState`. Every cell, relay message and dial result that reaches it is one
`HopEvent`; `transition` looks the pair up and returns what the hop does (`HopAction`) and the state after
it. A pair the table does not list is refused with `CircuitStateError`, a RemoteProtocolError, which the
hop answers by destroying the circuit both ways (DestroyReason.PROTOCOL). tp_net.protocol.circuit_hop carries
out the actions; this module decides nothing else.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tp_crypto.errors import RemoteProtocolError
from tp_crypto.onion import HopLayer
from tp_net.protocol.cells import CellCommand
from tp_net.protocol.hop_outputs import CircuitRef
from tp_net.protocol.rate_limits import TokenBucket
from tp_net.protocol.streams import CircuitEdge


class HopState(enum.Enum):
    code: int  # the state's index in the table's int-keyed form (set below)

    LAST_HOP = "the circuit ends here (created; may serve streams or extend)"
    DIALING = "EXTEND accepted; waiting for a link to the next hop"
    AWAITING_CREATED = "CREATE sent to the next hop"
    RELAYING = "extended; relay cells pass through both ways"
    CLOSED = "torn down"


class HopEvent(enum.Enum):
    code: int  # the event's index in the table's int-keyed form (set below)

    # Cells, by the side they came from (the client side is the link the circuit was created on).
    CREATE_FROM_CLIENT = "CREATE from the client side for a circuit id in use"
    CREATED_FROM_CLIENT = "CREATED from the client side"
    RELAY_FROM_CLIENT = "RELAY from the client side"
    RELAY_EARLY_FROM_CLIENT = "RELAY_EARLY from the client side"
    DESTROY_FROM_CLIENT = "DESTROY from the client side"
    CREATE_FROM_NEXT = "CREATE from the next hop for a circuit id in use"
    CREATED_FROM_NEXT = "CREATED from the next hop"
    RELAY_FROM_NEXT = "RELAY from the next hop"
    RELAY_EARLY_FROM_NEXT = "RELAY_EARLY from the next hop"
    DESTROY_FROM_NEXT = "DESTROY from the next hop"
    UNKNOWN_CELL = "a cell command no hop knows"
    # What a forward cell holds once this hop's layer is off.
    NOT_FOR_THIS_HOP = "a forward body this hop does not recognise"
    DROP = "a DROP (padding) message"
    EXTEND = "an EXTEND message in a RELAY_EARLY cell"
    EXTEND_NOT_EARLY = "an EXTEND message in a RELAY cell"
    STREAM = "a BEGIN, DATA, END or SENDME message"
    OTHER_MESSAGE = "a relay message no hop accepts from the client"
    # The IO layer's answer to ConnectTo (or a link already up).
    LINKED = "a link to the next hop"
    LINK_FAILED = "no link to the next hop"


class HopAction(enum.Enum):
    PEEL = "remove this hop's layer and look at the body"
    PASS_FORWARD = "send the body to the next hop"
    PASS_BACKWARD = "add this hop's layer and send the cell to the client"
    TAKE_DROP = "charge the circuit's DROP budget"
    START_EXTEND = "check the extend limits and policy, then find or dial a link"
    SEND_CREATE = "send CREATE on the link to the next hop"
    SEND_EXTENDED = "tell the client the circuit is extended"
    SERVE_STREAM = "hand the message to the local services' stream edge"
    DESTROYED = "forget the circuit; DESTROY goes to the other side only"
    TEARDOWN_INTEGRITY = "a body nobody recognises at the circuit's end: destroy both ways"
    TEARDOWN_CONNECT_FAILED = "destroy both ways: the next hop cannot be reached"


_ANY_STATE = (HopState.LAST_HOP, HopState.DIALING, HopState.AWAITING_CREATED, HopState.RELAYING)
_EXTENDING = (HopState.DIALING, HopState.AWAITING_CREATED)


def _table() -> dict[tuple[HopState, HopEvent], tuple[HopAction, HopState]]:
    table: dict[tuple[HopState, HopEvent], tuple[HopAction, HopState]] = {}
    for state in _ANY_STATE:
        table[state, HopEvent.RELAY_FROM_CLIENT] = (HopAction.PEEL, state)
        table[state, HopEvent.RELAY_EARLY_FROM_CLIENT] = (HopAction.PEEL, state)
        table[state, HopEvent.DESTROY_FROM_CLIENT] = (HopAction.DESTROYED, HopState.CLOSED)
        table[state, HopEvent.DROP] = (HopAction.TAKE_DROP, state)
    for state in (*_EXTENDING, HopState.LAST_HOP):
        table[state, HopEvent.NOT_FOR_THIS_HOP] = (HopAction.TEARDOWN_INTEGRITY, HopState.CLOSED)
    for state in (HopState.AWAITING_CREATED, HopState.RELAYING):  # the states with a next hop
        table[state, HopEvent.DESTROY_FROM_NEXT] = (HopAction.DESTROYED, HopState.CLOSED)
    # Streams are served while the circuit has no next hop (today also while it dials one).
    table[HopState.LAST_HOP, HopEvent.STREAM] = (HopAction.SERVE_STREAM, HopState.LAST_HOP)
    table[HopState.DIALING, HopEvent.STREAM] = (HopAction.SERVE_STREAM, HopState.DIALING)
    table[HopState.LAST_HOP, HopEvent.EXTEND] = (HopAction.START_EXTEND, HopState.DIALING)
    table[HopState.DIALING, HopEvent.LINKED] = (HopAction.SEND_CREATE, HopState.AWAITING_CREATED)
    table[HopState.DIALING, HopEvent.LINK_FAILED] = (HopAction.TEARDOWN_CONNECT_FAILED, HopState.CLOSED)
    table[HopState.AWAITING_CREATED, HopEvent.CREATED_FROM_NEXT] = (
        HopAction.SEND_EXTENDED,
        HopState.RELAYING,
    )
    table[HopState.RELAYING, HopEvent.RELAY_FROM_NEXT] = (HopAction.PASS_BACKWARD, HopState.RELAYING)
    table[HopState.RELAYING, HopEvent.NOT_FOR_THIS_HOP] = (HopAction.PASS_FORWARD, HopState.RELAYING)
    return table


# Every (state, event) pair a circuit at a hop accepts; all others are refused.
TRANSITIONS = _table()

_CELL_EVENTS: dict[tuple[bool, int], HopEvent] = {
    (True, CellCommand.CREATE): HopEvent.CREATE_FROM_CLIENT,
    (True, CellCommand.CREATED): HopEvent.CREATED_FROM_CLIENT,
    (True, CellCommand.RELAY): HopEvent.RELAY_FROM_CLIENT,
    (True, CellCommand.RELAY_EARLY): HopEvent.RELAY_EARLY_FROM_CLIENT,
    (True, CellCommand.DESTROY): HopEvent.DESTROY_FROM_CLIENT,
    (False, CellCommand.CREATE): HopEvent.CREATE_FROM_NEXT,
    (False, CellCommand.CREATED): HopEvent.CREATED_FROM_NEXT,
    (False, CellCommand.RELAY): HopEvent.RELAY_FROM_NEXT,
    (False, CellCommand.RELAY_EARLY): HopEvent.RELAY_EARLY_FROM_NEXT,
    (False, CellCommand.DESTROY): HopEvent.DESTROY_FROM_NEXT,
}


class CircuitStateError(RemoteProtocolError):
    """The peer sent something the circuit's state does not accept (the hop destroys the circuit)."""

    def __init__(self, state: HopState, event: HopEvent) -> None:
        super().__init__(f"{event.value} is not accepted when {state.value}")
        self.state = state
        self.event = event


# The same table, indexed by int codes: a relay looks a step up for every cell it handles (two for a cell it
# passes forward), and a dict keyed by (state, event) hashes both enum members in Python each time.
for _code, _hop_state in enumerate(HopState):
    _hop_state.code = _code
for _code, _hop_event in enumerate(HopEvent):
    _hop_event.code = _code
_EVENT_CODES = len(HopEvent)
_STEPS: list[tuple[HopAction, HopState] | None] = [None] * (len(HopState) * _EVENT_CODES)
for (_state, _event), _step in TRANSITIONS.items():
    _STEPS[_state.code * _EVENT_CODES + _event.code] = _step


def transition(state: HopState, event: HopEvent) -> tuple[HopAction, HopState]:
    """What the hop does on `event` in `state`, and the state after it; CircuitStateError if refused."""
    step = _STEPS[state.code * _EVENT_CODES + event.code]
    if step is None:
        raise CircuitStateError(state, event)
    return step


def cell_event(command: int, *, from_client: bool) -> HopEvent:
    """The event a cell of an existing circuit is."""
    return _CELL_EVENTS.get((from_client, command), HopEvent.UNKNOWN_CELL)


@dataclass(eq=False)
class HopCircuit:
    """One circuit at a hop: its state, its layer, and its names on the links either side."""

    prev: CircuitRef
    layer: HopLayer
    last_active: float  # the last cell of any kind (the idle timeout)
    drops: TokenBucket  # DROP cells addressed to this hop
    state: HopState = HopState.LAST_HOP
    next: CircuitRef | None = None
    extend_started: float | None = None  # while DIALING or AWAITING_CREATED
    edge: CircuitEdge | None = None  # the local services' streams, once one is opened
    early_cells: int = 0  # RELAY_EARLY cells seen from the client side
    last_work: float = float("-inf")  # the last work, which protects it from eviction (circuit_hop._worked)

    def step(self, event: HopEvent) -> HopAction:
        """Move to the state the table names for `event`; returns the action to carry out."""
        action, self.state = transition(self.state, event)
        return action
