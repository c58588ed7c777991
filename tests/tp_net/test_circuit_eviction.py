"""A link whose circuit table is full (CIRCUITS_PER_LINK_MAX) lets a new circuit take the place of the one
idle the longest, if that one has done no work for CIRCUIT_EVICT_IDLE_MIN_S, sans-IO: at the GPU node's
CREATE and at a relay's EXTEND towards it. Work is a stream message for the hop, a cell back from the next
hop, an extend; DROPs are not, and open streams at the hop protect a circuit. The evicted circuit is
destroyed both ways with RESOURCE_LIMIT."""

from __future__ import annotations

import pytest

from tests.tp_net.circuit_harness import CircuitHandle, Wire
from tp_net.protocol import circuit_hop
from tp_net.protocol.cells import DestroyReason
from tp_net.protocol.circuit_client import CircuitClosed, CircuitState
from tp_net.protocol.circuit_hop import CIRCUIT_EVICT_IDLE_MIN_S
from tp_net.protocol.hop_outputs import CircuitRef

SERVICE = "inference"
TABLE = 3  # CIRCUITS_PER_LINK_MAX in these tests (unless one says otherwise)
RESOURCE_LIMIT = [CircuitClosed(DestroyReason.RESOURCE_LIMIT)]


@pytest.fixture(autouse=True)
def small_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(circuit_hop, "CIRCUITS_PER_LINK_MAX", TABLE)


def full_table(wire: Wire, path: list[str], *, direct: bool) -> list[CircuitHandle]:
    """TABLE circuits along `path`, one a second: on one client link to the node (`direct`: its CREATE
    table), or each on its own link to the first relay (the relay's table for its link to the node)."""
    link = wire.client_link(path[0]) if direct else None
    handles = []
    for _ in range(TABLE):
        handles.append(wire.open_circuit(path, link=link))
        wire.advance(1.0)
    assert all(h.built for h in handles)
    return handles


def node_ref(wire: Wire) -> CircuitRef:
    """The node's circuit whose service heard of it last (the one a test just sent a request on)."""
    return wire.hops["node"].refs()[-1]


def answered_request(wire: Wire, handle: CircuitHandle) -> None:
    """A request on `handle` that the node answers at once: stream work, and no stream left open."""
    edge = handle.circuit.edge
    sid = edge.open_stream(SERVICE)
    edge.send(sid, b"a request")
    edge.end(sid)
    wire.run()
    wire.service_end("node", node_ref(wire), sid)
    wire.run()


def open_states(handles: list[CircuitHandle]) -> list[bool]:
    return [h.circuit.state is CircuitState.OPEN for h in handles]


def node_wire(seed: int) -> tuple[Wire, list[str]]:
    wire = Wire(seed)
    return wire, wire.add_path(1)  # r0 and the node, which dialed r0


# --- at the node's CREATE ------------------------------------------------------------------------


def test_a_full_link_gives_the_circuit_idle_the_longest_to_a_new_one() -> None:
    wire, _ = node_wire(1)
    handles = full_table(wire, ["node"], direct=True)
    wire.advance(CIRCUIT_EVICT_IDLE_MIN_S)
    newcomer = wire.open_circuit(["node"], link=handles[0].link)
    assert newcomer.built
    assert handles[0].closed == RESOURCE_LIMIT
    assert open_states(handles) == [False, True, True]
    assert wire.hops["node"].core.circuits_on(handles[0].link) == TABLE


def test_no_circuit_idle_for_the_minimum_refuses_the_new_one() -> None:
    wire, _ = node_wire(2)
    handles = full_table(wire, ["node"], direct=True)  # the oldest has been idle TABLE s
    wire.advance(CIRCUIT_EVICT_IDLE_MIN_S - TABLE - 0.5)
    newcomer = wire.open_circuit(["node"], link=handles[0].link)
    assert newcomer.closed == RESOURCE_LIMIT
    assert open_states(handles) == [True] * TABLE


def test_stream_cells_are_work_and_protect_a_circuit() -> None:
    wire, _ = node_wire(3)
    handles = full_table(wire, ["node"], direct=True)
    answered_request(wire, handles[0])
    wire.advance(CIRCUIT_EVICT_IDLE_MIN_S)
    assert wire.open_circuit(["node"], link=handles[0].link).built
    assert open_states(handles) == [True, False, True]  # the second is now the one idle the longest


def test_drops_are_not_work() -> None:
    wire, _ = node_wire(4)
    handles = full_table(wire, ["node"], direct=True)
    handles[0].circuit.send_drop()  # a keepalive: it stays open, but idle
    wire.run()
    wire.advance(CIRCUIT_EVICT_IDLE_MIN_S)
    assert wire.open_circuit(["node"], link=handles[0].link).built
    assert open_states(handles) == [False, True, True]


def test_an_open_stream_at_the_hop_protects_a_circuit() -> None:
    wire, _ = node_wire(5)
    handles = full_table(wire, ["node"], direct=True)
    edge = handles[0].circuit.edge
    edge.send(edge.open_stream(SERVICE), b"a long answer is being made")
    wire.run()
    wire.advance(4 * CIRCUIT_EVICT_IDLE_MIN_S)  # the node thinks; the client sends nothing
    assert wire.open_circuit(["node"], link=handles[0].link).built
    assert open_states(handles) == [True, False, True]


# --- at a relay's EXTEND towards the node --------------------------------------------------------


def test_an_extend_to_a_full_link_evicts_there_and_the_node_hears_it() -> None:
    wire, path = node_wire(6)
    handles = full_table(wire, path, direct=False)
    wire.advance(CIRCUIT_EVICT_IDLE_MIN_S)
    newcomer = wire.open_circuit(path)
    assert newcomer.built
    assert handles[0].closed == RESOURCE_LIMIT
    assert open_states(handles) == [False, True, True]
    to_node = wire.link_between("r0", "node")
    assert wire.hops["r0"].core.circuits_on(to_node) == TABLE
    assert wire.hops["node"].core.circuit_count == TABLE  # the DESTROY reached the node too


def test_an_extend_to_a_full_link_is_refused_when_none_is_idle_enough() -> None:
    wire, path = node_wire(7)
    handles = full_table(wire, path, direct=False)
    newcomer = wire.open_circuit(path)
    assert newcomer.closed == RESOURCE_LIMIT
    assert open_states(handles) == [True] * TABLE


def test_at_a_relay_cells_back_from_the_node_are_work() -> None:
    wire, path = node_wire(8)
    handles = full_table(wire, path, direct=False)
    edge = handles[0].circuit.edge
    sid = edge.open_stream(SERVICE)
    edge.send(sid, b"a request")
    wire.run()
    wire.service_send("node", node_ref(wire), sid, b"tokens")
    wire.service_end("node", node_ref(wire), sid)
    edge.end(sid)
    wire.run()
    wire.advance(CIRCUIT_EVICT_IDLE_MIN_S)
    assert wire.open_circuit(path).built
    assert open_states(handles) == [True, False, True]


def test_at_a_relay_forward_cells_are_not_work() -> None:
    """A relay cannot read what it passes on: a DROP for the node looks like a request to it."""
    wire, path = node_wire(9)
    handles = full_table(wire, path, direct=False)
    handles[0].circuit.send_drop()
    wire.run()
    wire.advance(CIRCUIT_EVICT_IDLE_MIN_S)
    assert wire.open_circuit(path).built
    assert open_states(handles) == [False, True, True]


def test_eviction_looks_at_a_few_circuits_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Circuits with open streams are passed over at most EVICTION_LOOKS_MAX per CREATE (each then counts as
    working, so the next CREATE looks further): a CREATE costs O(1) however full the table is."""
    looks = circuit_hop.EVICTION_LOOKS_MAX
    monkeypatch.setattr(circuit_hop, "CIRCUITS_PER_LINK_MAX", looks + 2)
    wire, _ = node_wire(10)
    link = wire.client_link("node")
    handles = [wire.open_circuit(["node"], link=link) for _ in range(looks + 2)]
    for handle in handles[:-1]:  # all but the newest have a stream open
        handle.circuit.edge.send(handle.circuit.edge.open_stream(SERVICE), b"busy")
    wire.run()
    wire.advance(1.0)
    answered_request(wire, handles[-1])  # the newest did work last, and has no stream open
    wire.advance(CIRCUIT_EVICT_IDLE_MIN_S)
    assert wire.open_circuit(["node"], link=link).closed == RESOURCE_LIMIT
    assert wire.open_circuit(["node"], link=link).built
    assert open_states(handles) == [True] * (looks + 1) + [False]
