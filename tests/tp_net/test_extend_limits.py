"""EXTEND at the hop, sans-IO: the RELAY_EARLY budget (circuit length, loops), fair pending-extend slots,
and the extend policy (only listed relays, at their listed address; a linked node needs no listing)."""

from __future__ import annotations

import random
import time

import pytest

from tests.tp_net.circuit_harness import CLIENT, CircuitHandle, Wire
from tp_crypto.errors import LocalProtocolError
from tp_crypto.identity import Identity
from tp_crypto.noise import generate_keypair
from tp_crypto.onion import layer_from_secrets
from tp_net.protocol import circuit_hop
from tp_net.protocol.cells import (
    DIALER_ID_BIT,
    RELAY_EARLY_CELLS_PER_CIRCUIT_MAX,
    CellCommand,
    DestroyReason,
    destroy_reason,
    relay_cell,
)
from tp_net.protocol.circuit_client import CIRCUIT_HOPS_MAX, CircuitClosed, ClientCircuit, HopInfo
from tp_net.protocol.circuit_hop import HopCore, Side
from tp_net.protocol.extend_policy import ExtendPolicy
from tp_net.protocol.frames import CELL_BODY_BYTES, Frame
from tp_net.protocol.hop_outputs import SendCell
from tp_net.protocol.hop_states import HopCircuit
from tp_net.protocol.link_limits import LINKS_MAX
from tp_net.protocol.rate_limits import TokenBucket
from tp_net.protocol.relay_messages import RelayDrop, RelayExtend


def send_from_client(wire: Wire, handle: CircuitHandle, message: Frame, *, early: bool) -> None:
    """A misbehaving client: a correctly layered cell to the last hop, early or not."""
    wire.run()
    circuit = handle.circuit
    wire.send(CLIENT, handle.link, circuit._relay_to(circuit.hops_built - 1, message, early=early))
    wire.run()


def extend_to(wire: Wire, name: str) -> RelayExtend:
    hop = wire.hops[name]
    return RelayExtend(hop.node_id, hop.address, hop.info().handshake().first_message())


def loop_wire(seed: int) -> Wire:
    """r0 -> r1 -> r2 -> r0: three relays, each linked to the next, so a path may go round and round."""
    wire = Wire(seed)
    for name in ("r0", "r1", "r2"):
        wire.add_hop(name)
    wire.connect("r0", "r1")
    wire.connect("r1", "r2")
    wire.connect("r2", "r0")
    return wire


# --- RELAY_EARLY: the extend budget --------------------------------------------------------------


def test_the_client_sends_each_extend_early_and_hops_forward_it_early() -> None:
    wire = loop_wire(1)
    handle = wire.open_circuit(["r0", "r1", "r2"])
    assert handle.built
    extends_by_link: dict[tuple[str, str], list[int]] = {}
    for d in wire.trace:
        if d.cell.command in (CellCommand.RELAY, CellCommand.RELAY_EARLY) and d.dst != CLIENT:
            extends_by_link.setdefault((d.src, d.dst), []).append(d.cell.command)
    assert extends_by_link[(CLIENT, "r0")] == [CellCommand.RELAY_EARLY] * 2
    assert extends_by_link[("r0", "r1")] == [CellCommand.RELAY_EARLY]  # r1's EXTEND, passed on as early


def destroys_from(wire: Wire, hop: str) -> list[DestroyReason]:
    """Reasons of the DESTROY cells `hop` sent the client (not the client's own closing)."""
    return [
        destroy_reason(d.cell)
        for d in wire.trace
        if d.src == hop and d.dst == CLIENT and d.cell.command == CellCommand.DESTROY
    ]


def test_extend_in_a_plain_relay_cell_is_refused() -> None:
    wire = loop_wire(2)
    handle = wire.open_circuit(["r0"])
    send_from_client(wire, handle, extend_to(wire, "r1"), early=False)
    assert destroys_from(wire, "r0") == [DestroyReason.PROTOCOL]
    assert not [d for d in wire.trace if d.cell.command == CellCommand.CREATE and d.dst == "r1"]
    assert handle.closed == [CircuitClosed(DestroyReason.PROTOCOL)]
    assert wire.circuit_total() == 0


def test_a_loop_of_the_longest_length_builds() -> None:
    wire = loop_wire(3)
    path = ["r0", "r1", "r2"] * 3
    handle = wire.open_circuit(path[:CIRCUIT_HOPS_MAX])
    assert handle.built
    assert CIRCUIT_HOPS_MAX == RELAY_EARLY_CELLS_PER_CIRCUIT_MAX + 1


def test_the_client_refuses_a_longer_circuit() -> None:
    wire = loop_wire(4)
    infos = [wire.hops[f"r{i % 3}"].info() for i in range(CIRCUIT_HOPS_MAX + 1)]
    with pytest.raises(LocalProtocolError):
        ClientCircuit(infos, 1 << 30 | 5)


def test_one_extend_past_the_budget_destroys_the_circuit_at_the_relays() -> None:
    wire = loop_wire(5)
    path = [f"r{i % 3}" for i in range(CIRCUIT_HOPS_MAX)]
    handle = wire.open_circuit(path)
    assert handle.built
    cells_before = len(wire.trace)
    next_hop = f"r{CIRCUIT_HOPS_MAX % 3}"
    send_from_client(wire, handle, extend_to(wire, next_hop), early=True)  # a ninth hop
    assert destroys_from(wire, "r0") == [DestroyReason.PROTOCOL]
    assert handle.closed == [CircuitClosed(DestroyReason.PROTOCOL)]
    assert wire.circuit_total() == 0
    # The guard stopped it: the over-budget cell went no further than r0.
    late = wire.trace[cells_before:]
    assert not [d for d in late if d.cell.command == CellCommand.RELAY_EARLY and d.src != CLIENT]


def test_early_cells_past_the_budget_are_refused_whatever_they_carry() -> None:
    wire = loop_wire(6)
    handle = wire.open_circuit(["r0", "r1"])  # r0 has seen one early cell: r1's EXTEND
    for _ in range(RELAY_EARLY_CELLS_PER_CIRCUIT_MAX - 1):
        send_from_client(wire, handle, RelayDrop(), early=True)
    assert handle.closed == []
    send_from_client(wire, handle, RelayDrop(), early=True)
    assert destroys_from(wire, "r0") == [DestroyReason.PROTOCOL]
    assert handle.closed == [CircuitClosed(DestroyReason.PROTOCOL)]
    assert wire.circuit_total() == 0


def test_relay_early_from_the_next_hop_is_a_protocol_error() -> None:
    wire = loop_wire(7)
    handle = wire.open_circuit(["r0", "r1"])
    link = wire.link_between("r0", "r1")
    (r0_out,) = [
        circuit_id
        for circuit_id, (_, side) in wire.hops["r0"].core._links[link].circuits.items()
        if side is circuit_hop.Side.AWAY_FROM_CLIENT
    ]
    wire.send("r1", link, relay_cell(r0_out, bytes(CELL_BODY_BYTES), early=True))
    wire.run()
    assert handle.closed == [CircuitClosed(DestroyReason.PROTOCOL)]


# --- fair pending extends ------------------------------------------------------------------------


def test_one_link_cannot_take_every_pending_extend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(circuit_hop, "PENDING_EXTENDS_PER_LINK_MAX", 2)
    monkeypatch.setattr(circuit_hop, "PENDING_EXTENDS_MAX", 4)
    wire = Wire(10)
    wire.add_hop("r0")
    wire.add_hop("r1")
    wire.connect_mode = "hold"  # dials that never finish: the attacker's address accepts and never answers
    attacker = wire.client_link("r0")
    hogs = [wire.open_circuit(["r0", "r1"], link=attacker) for _ in range(3)]
    assert [h.closed for h in hogs[:2]] == [[], []]
    assert hogs[2].closed == [CircuitClosed(DestroyReason.RESOURCE_LIMIT)]
    honest = [wire.open_circuit(["r0", "r1"]) for _ in range(2)]  # each on its own link
    assert [h.closed for h in honest] == [[], []]
    assert len(wire.held_connects) == 4
    late = wire.open_circuit(["r0", "r1"])  # the global bound still holds
    assert late.closed == [CircuitClosed(DestroyReason.RESOURCE_LIMIT)]
    wire.release_connects()
    wire.run()
    assert [h.built for h in honest] == [True, True]


def test_the_per_link_cap_is_well_below_the_global_one() -> None:
    assert circuit_hop.PENDING_EXTENDS_PER_LINK_MAX * 4 <= circuit_hop.PENDING_EXTENDS_MAX


def test_pending_extends_that_never_complete_time_out_and_free_their_slots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(circuit_hop, "PENDING_EXTENDS_PER_LINK_MAX", 2)
    wire = Wire(11)
    wire.add_hop("r0")
    wire.add_hop("r1")
    wire.connect_mode = "hold"
    link = wire.client_link("r0")
    stuck = [wire.open_circuit(["r0", "r1"], link=link) for _ in range(2)]
    wire.advance(circuit_hop.EXTEND_TIMEOUT_S * 1.1)
    wire.run()
    assert [h.closed for h in stuck] == [[CircuitClosed(DestroyReason.TIMEOUT)]] * 2
    wire.held_connects.clear()
    wire.connect_mode = "auto"
    assert wire.open_circuit(["r0", "r1"], link=link).built


# --- the extend policy at the hop ----------------------------------------------------------------


def policy_wire(seed: int, listed: dict[str, str] | None) -> Wire:
    wire = Wire(seed)
    wire.add_hop("r0")
    wire.add_hop("r1", address="ws://r1.example.net:7000/")
    wire.add_hop("r1b", address="ws://r1b.example.net:7000/")
    wire.add_hop("node", can_extend=False, services=("inference",), address=None)
    wire.connect("node", "r0")  # a GPU node behind NAT: only its own link reaches it
    table = None if listed is None else {wire.hops[name].node_id: address for name, address in listed.items()}
    wire.hops["r0"].core.extend_policy = ExtendPolicy(lambda: table)
    return wire


def test_a_relay_dials_only_the_address_its_directory_lists() -> None:
    wire = policy_wire(20, {"r1": "ws://r1.example.net:7000/"})
    lying = wire.hops["r1"].info()
    lying = type(lying)(lying.node_id, lying.onion_key, "ws://127.0.0.1:22/admin/delete")
    handle = wire.open_circuit(["r0", lying])
    assert handle.built
    assert [request.address for _, request in wire.connects] == ["ws://r1.example.net:7000/"]


def test_a_relay_refuses_to_extend_to_an_unlisted_node() -> None:
    wire = policy_wire(21, {"r1": "ws://r1.example.net:7000/"})
    handle = wire.open_circuit(["r0", "r1b"])
    assert handle.closed == [CircuitClosed(DestroyReason.CONNECT_FAILED)]
    assert wire.connects == []


def test_a_relay_without_a_directory_dials_nobody() -> None:
    wire = policy_wire(22, None)
    handle = wire.open_circuit(["r0", "r1"])
    assert handle.closed == [CircuitClosed(DestroyReason.CONNECT_FAILED)]
    assert wire.connects == []


def test_a_node_on_its_own_link_needs_no_listing() -> None:
    wire = policy_wire(23, None)
    handle = wire.open_circuit(["r0", "node"])
    assert handle.built
    assert wire.connects == []


def test_a_listed_private_address_is_refused() -> None:
    wire = policy_wire(24, {"r1": "ws://192.168.1.10:7000/"})
    handle = wire.open_circuit(["r0", "r1"])
    assert handle.closed == [CircuitClosed(DestroyReason.CONNECT_FAILED)]
    assert wire.connects == []


def test_finished_and_failed_extends_free_their_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pending-extend counts follow every way out of extending: EXTENDED sent, the circuit destroyed
    while it dials, the dial failing."""
    monkeypatch.setattr(circuit_hop, "PENDING_EXTENDS_PER_LINK_MAX", 1)
    wire = Wire(12)
    for name in ("r0", "r1", "r2"):
        wire.add_hop(name)
    wire.connect("r0", "r1")
    link = wire.client_link("r0")
    for _ in range(3):  # each extends over the link that is up, and is done before the next
        assert wire.open_circuit(["r0", "r1"], link=link).built
    wire.connect_mode = "hold"
    held = wire.open_circuit(["r0", "r2"], link=link)
    assert wire.open_circuit(["r0", "r2"], link=link).closed == [CircuitClosed(DestroyReason.RESOURCE_LIMIT)]
    held.events += held.circuit.destroy()
    wire.run()
    wire.connect_mode = "fail"
    failed = wire.open_circuit(["r0", "r2"], link=link)
    assert failed.closed == [CircuitClosed(DestroyReason.CONNECT_FAILED)]
    assert wire.open_circuit(["r0", "r1"], link=link).built
    assert not wire.hops["r0"].core._extending  # nothing extends now: no count left behind


def _thread_cpu_of_extends(circuits: int, links: int = 0) -> float:
    """The least CPU (s) one EXTEND took at a guard that holds `circuits` other (idle) circuits and `links`
    other client links, up before the link to the next hop."""
    guard_key, guard_public = generate_keypair()
    middle = HopInfo(Identity.generate().node_id, generate_keypair()[1], "ws://127.0.0.1:2/")
    guard = HopInfo(Identity.generate().node_id, guard_public, "ws://127.0.0.1:1/")
    core = HopCore([guard_key], rng=random.Random(1), can_extend=True)
    for link in range(links):
        core.link_up(10_000 + link, None, we_dialed=False, peer_host=f"10.1.{link // 250}.{link % 250}")
    core.link_up(0, middle.node_id, we_dialed=True)
    layer = layer_from_secrets(bytes(32), bytes(32))
    for index in range(circuits):  # idle circuits on client links, as a busy relay holds them
        link, circuit_id = 1 + index // 1000, DIALER_ID_BIT | index
        if index % 1000 == 0:
            core.link_up(link, None, we_dialed=False, peer_host=f"10.0.{link}.1")
        idle = HopCircuit((link, circuit_id), layer, 0.0, TokenBucket(1.0, 1))
        core._circuits[idle.prev] = idle
        core._links[link].circuits[circuit_id] = (idle, Side.TOWARDS_CLIENT)
    core.link_up(100, None, we_dialed=False, peer_host="127.0.0.1")
    least = float("inf")
    for index in range(30):
        client = ClientCircuit([guard, middle], DIALER_ID_BIT | (1 << 20) | index)
        (created,) = core.receive_cell(100, client.outgoing_cells()[0], float(index))
        assert isinstance(created, SendCell)
        client.receive_cell(created.cell)
        (extend,) = client.outgoing_cells()
        start = time.thread_time()
        core.receive_cell(100, extend, float(index))
        least = min(least, time.thread_time() - start)
        client.destroy()
        for cell in client.outgoing_cells():
            core.receive_cell(100, cell, float(index))
    return least


def test_an_extend_costs_the_same_at_a_relay_with_many_circuits() -> None:
    """The pending-extend limits are counted, not recounted: an EXTEND once walked every circuit of the
    relay (~0.3 ms more per EXTEND at 10,000 circuits, and a client with many circuits made every build
    through the relay slower)."""
    assert _thread_cpu_of_extends(20_000) < 4 * _thread_cpu_of_extends(0)


def test_an_extend_costs_the_same_at_a_relay_with_many_links() -> None:
    """The next hop's link is looked up by its node id: an EXTEND once walked every link of the relay
    (~0.2 ms more per EXTEND at 4,000 links; a relay takes up to LINKS_MAX)."""
    assert _thread_cpu_of_extends(0, links=LINKS_MAX) < 4 * _thread_cpu_of_extends(0)


def test_the_next_hop_is_the_oldest_link_up_to_its_node_id() -> None:
    core = HopCore([generate_keypair()[0]], rng=random.Random(1), can_extend=True)
    peer = Identity.generate().node_id
    core.link_up(1, None, we_dialed=False)
    core.link_up(2, peer, we_dialed=True)
    core.link_up(3, peer, we_dialed=False)
    assert core.link_to(peer) == 2
    core.link_down(2)
    assert core.link_to(peer) == 3
    core.link_up(3, Identity.generate().node_id, we_dialed=False)  # the same link id, another peer
    assert core.link_to(peer) is None
