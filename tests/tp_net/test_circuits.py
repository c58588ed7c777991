"""ClientCircuit and HopCore together on the in-memory wire: building, streams, flow control, integrity,
teardown, limits and the privacy invariant."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

import pytest

from tests.tp_net.circuit_harness import CLIENT, CircuitHandle, Delivery, Wire, manual_build
from tp_crypto.errors import LocalProtocolError, ProtocolError
from tp_crypto.noise import generate_keypair
from tp_net.protocol import circuit_hop, streams
from tp_net.protocol.cells import (
    DIALER_ID_BIT,
    RELAY_DATA_BYTES_MAX,
    CellCommand,
    DestroyReason,
    destroy_cell,
    destroy_reason,
    handshake_cell,
    new_circuit_id,
)
from tp_net.protocol.circuit_client import CircuitBuilt, CircuitClosed, CircuitState, ClientCircuit, HopInfo
from tp_net.protocol.circuit_hop import CIRCUIT_IDLE_TIMEOUT_S, EXTEND_TIMEOUT_S
from tp_net.protocol.frames import CELL_BODY_BYTES, Cell, Frame
from tp_net.protocol.relay_messages import (
    SENDME_DIGEST_BYTES,
    RelayBegin,
    RelayData,
    RelayDrop,
    RelayEnd,
    RelayExtended,
    RelaySendme,
)
from tp_net.protocol.streams import (
    CIRCUIT_SENDME_CELLS,
    CIRCUIT_WINDOW_CELLS,
    STREAM_WINDOW_CELLS,
    EndReason,
    StreamData,
    StreamEnded,
)

SERVICE = "inference"


def three_relay_circuit(seed: int = 0) -> tuple[Wire, CircuitHandle]:
    wire = Wire(seed)
    handle = wire.open_circuit(wire.add_path(3))
    assert handle.built
    return wire, handle


def request(wire: Wire, handle: CircuitHandle, data: bytes, *, end: bool = True) -> int:
    edge = handle.circuit.edge
    sid = edge.open_stream(SERVICE)
    edge.send(sid, data)
    if end:
        edge.end(sid)
    wire.run()
    return sid


def only_ref(wire: Wire) -> tuple[int, int]:
    (ref,) = wire.hops["node"].refs()
    return ref


def assert_all_gone(wire: Wire) -> None:
    for node in wire.hops.values():
        assert node.core.circuit_count == 0, node.name
        for link in wire.every_link_id():
            assert node.core.circuits_on(link) == 0


def relay_from_client(wire: Wire, handle: CircuitHandle, message: Frame, hop: int = -1) -> None:
    """A misbehaving client: a correctly layered cell carrying any message, sent right now."""
    wire.run()  # nothing sealed earlier is still waiting, so this cell goes out in sealing order
    circuit = handle.circuit
    wire.send(CLIENT, handle.link, circuit._relay_to(hop % circuit.hops_built, message))
    wire.run()


def destroys(wire: Wire) -> list[tuple[str, str, DestroyReason]]:
    return [
        (d.src, d.dst, destroy_reason(d.cell)) for d in wire.trace if d.cell.command == CellCommand.DESTROY
    ]


# --- building -------------------------------------------------------------------------------------


@pytest.mark.parametrize("hops", [1, 2, 3, 4])
def test_circuits_of_one_to_four_hops_build_and_carry_a_request(hops: int) -> None:
    wire = Wire(hops)
    path = wire.add_path(hops - 1)
    handle = wire.open_circuit(path)
    assert [e for e in handle.events if isinstance(e, CircuitBuilt)] == [CircuitBuilt()]
    assert handle.circuit.state is CircuitState.OPEN
    assert handle.circuit.hops_built == hops
    assert [wire.hops[name].core.circuit_count for name in path] == [1] * hops
    sid = request(wire, handle, b"ping" * 300)
    ref = only_ref(wire)
    assert wire.hops["node"].received(ref, sid) == b"ping" * 300
    wire.service_send("node", ref, sid, b"pong" * 300)
    wire.service_end("node", ref, sid)
    wire.run()
    assert handle.received(sid) == b"pong" * 300
    assert handle.ends(sid) == [EndReason.DONE]
    assert [e for e in handle.events if isinstance(e, CircuitBuilt)] == [CircuitBuilt()]


def test_a_circuit_of_four_relays_builds() -> None:
    wire = Wire(5)
    names = [f"r{i}" for i in range(4)]
    for name in names:
        wire.add_hop(name)
    handle = wire.open_circuit(names)  # no links between relays yet: each extend dials by address
    assert handle.built
    assert [request.node_id for _, request in wire.connects] == [wire.hops[n].node_id for n in names[1:]]
    assert [request.address for _, request in wire.connects] == [f"mem://{n}" for n in names[1:]]


def test_building_takes_one_round_trip_per_hop() -> None:
    wire, handle = three_relay_circuit()
    on_client_link = [d for d in wire.trace if d.link == handle.link]
    # Each EXTEND goes in a RELAY_EARLY cell; the answers come back as plain RELAY cells.
    assert [d.cell.command for d in on_client_link if d.src == CLIENT] == [CellCommand.CREATE] + [
        CellCommand.RELAY_EARLY
    ] * 3
    assert [d.cell.command for d in on_client_link if d.dst == CLIENT] == [CellCommand.CREATED] + [
        CellCommand.RELAY
    ] * 3


def test_extending_over_an_existing_link_does_not_dial() -> None:
    wire, _ = three_relay_circuit()
    assert wire.connects == []


def test_a_path_must_have_one_to_eight_hops() -> None:
    _, public = generate_keypair()
    with pytest.raises(LocalProtocolError):
        ClientCircuit([], DIALER_ID_BIT | 2**31)
    with pytest.raises(LocalProtocolError):
        ClientCircuit([HopInfo(bytes(32), public)] * 9, DIALER_ID_BIT | 2**31)


@pytest.mark.parametrize("liar", [0, 1, 2, 3])
def test_a_hop_that_does_not_hold_the_onion_key_fails_the_build(liar: int) -> None:
    wire = Wire(liar)
    path = wire.add_path(3)
    _, other_key = generate_keypair()
    infos = [wire.hops[name].info() for name in path]
    infos[liar] = wire.hops[path[liar]].info(onion_key=other_key)
    handle = wire.open_circuit(infos)
    assert not handle.built
    assert handle.closed == [CircuitClosed(DestroyReason.HANDSHAKE_FAILED)]
    assert handle.circuit.hops_built == liar
    assert_all_gone(wire)


def test_a_previous_onion_key_still_works_during_rotation() -> None:
    wire = Wire(1)
    old_private, old_public = generate_keypair()
    wire.add_hop("r0", extra_onion_keys=[old_private])
    node = wire.hops["r0"]
    assert wire.open_circuit(["r0"]).built
    assert wire.open_circuit([node.info(onion_key=old_public)]).built
    assert node.core.circuit_count == 2


@pytest.mark.parametrize("bootstrap_hops", [[0], [0, 1, 2], [3], [0, 1, 2, 3]])
def test_bootstrap_circuits_use_the_identity_keys(bootstrap_hops: list[int]) -> None:
    wire = Wire(20)
    path = wire.add_path(3)
    infos = [
        wire.hops[name].bootstrap_info() if index in bootstrap_hops else wire.hops[name].info()
        for index, name in enumerate(path)
    ]
    handle = wire.open_circuit(infos)
    assert handle.built
    sid = request(wire, handle, b"hello")
    assert wire.hops["node"].received(only_ref(wire), sid) == b"hello"


def test_a_hop_that_does_not_answer_bootstrap_handshakes() -> None:
    wire = Wire(21)
    wire.add_hop("r0")
    wire.add_hop("r1", answers_bootstrap=False)
    wire.connect("r0", "r1")
    handle = wire.open_circuit(["r0", wire.hops["r1"].bootstrap_info()])
    assert handle.closed == [CircuitClosed(DestroyReason.HANDSHAKE_FAILED)]
    assert_all_gone(wire)


def test_a_malformed_key_in_the_path_fails_at_once() -> None:
    wire = Wire(22)
    path = wire.add_path(2)
    infos = [wire.hops[name].info() for name in path]
    for bad in (HopInfo(infos[2].node_id, b"short", None), HopInfo(b"not a node id", None, None)):
        with pytest.raises(ProtocolError):
            ClientCircuit([*infos[:2], bad], DIALER_ID_BIT | 2**31)
    assert wire.trace == []


def test_extend_to_an_unknown_node_without_address_fails_to_connect() -> None:
    wire = Wire(2)
    wire.add_path(2)
    _, key = generate_keypair()
    handle = wire.open_circuit(["r0", "r1", HopInfo(random.Random(1).randbytes(32), key, None)])
    assert handle.closed == [CircuitClosed(DestroyReason.CONNECT_FAILED)]
    assert wire.connects == []
    assert_all_gone(wire)


@pytest.mark.parametrize("mode", ["fail", "nobody there", "another node there"])
def test_a_failed_dial_fails_the_extend(mode: str) -> None:
    wire = Wire(3)
    wire.add_hop("r0")
    r1 = wire.add_hop("r1")
    wire.add_hop("r2")
    address = {"fail": r1.address, "nobody there": "mem://nowhere", "another node there": "mem://r2"}[mode]
    if mode == "fail":
        wire.connect_mode = "fail"
    handle = wire.open_circuit(["r0", HopInfo(r1.node_id, r1.onion_public, address)])
    assert [(name, request.node_id, request.address) for name, request in wire.connects] == [
        ("r0", r1.node_id, address)
    ]
    assert handle.closed == [CircuitClosed(DestroyReason.CONNECT_FAILED)]
    assert_all_gone(wire)
    assert wire.hops["r0"].core.link_to(r1.node_id) is None


def test_a_gpu_node_does_not_extend() -> None:
    wire = Wire(4)
    wire.add_path(2)
    handle = wire.open_circuit(["r0", "r1", "node", "r0"])
    assert handle.circuit.hops_built == 3
    assert handle.closed == [CircuitClosed(DestroyReason.PROTOCOL)]
    assert_all_gone(wire)


def test_extend_back_to_the_previous_hop_is_refused() -> None:
    wire = Wire(5)
    wire.add_path(2)
    handle = wire.open_circuit(["r0", "r1", "r0"])
    assert handle.circuit.hops_built == 2
    assert handle.closed == [CircuitClosed(DestroyReason.PROTOCOL)]
    assert_all_gone(wire)


def test_a_relay_can_be_the_last_hop_but_serves_no_streams() -> None:
    wire = Wire(6)
    wire.add_path(2)
    handle = wire.open_circuit(["r0", "r1"])
    assert handle.built
    request(wire, handle, b"hi")
    assert handle.closed == [CircuitClosed(DestroyReason.PROTOCOL)]
    assert_all_gone(wire)


# --- circuit ids ----------------------------------------------------------------------------------


def creates(wire: Wire, src: str, dst: str) -> list[int]:
    return [
        d.cell.circuit_id
        for d in wire.trace
        if d.cell.command == CellCommand.CREATE and (d.src, d.dst) == (src, dst)
    ]


def test_circuit_ids_follow_the_dialer_bit() -> None:
    wire, handle = three_relay_circuit(seed=8)
    assert handle.circuit.circuit_id & DIALER_ID_BIT  # the client dialed the guard
    assert all(cid & DIALER_ID_BIT for cid in creates(wire, "r0", "r1"))  # r0 dialed r1
    (to_node,) = creates(wire, "r2", "node")
    assert not to_node & DIALER_ID_BIT  # the node dialed r2; r2 is the listener there


def test_a_create_with_an_id_from_the_wrong_half_is_refused() -> None:
    wire = Wire(9)
    wire.add_hop("r0")
    link = wire.client_link("r0")
    wrong = new_circuit_id(random.Random(1), link_dialer=False, in_use=set())
    handle = wire.open_circuit(["r0"], link=link, circuit_id=wrong)
    assert handle.closed == [CircuitClosed(DestroyReason.PROTOCOL)]
    assert wire.hops["r0"].core.circuit_count == 0


def test_a_create_from_the_listener_with_a_dialer_id_is_refused() -> None:
    wire = Wire(10)
    wire.add_path(1)
    link = wire.link_between("node", "r0")
    # r0 is the listener of this link, so its ids must have the dialer bit clear; the node refuses this.
    wire.send("r0", link, handshake_cell(DIALER_ID_BIT | 2**31 | 5, CellCommand.CREATE, b"x" * 48))
    wire.run()
    assert destroys(wire) == [("node", "r0", DestroyReason.PROTOCOL)]
    assert wire.hops["node"].core.circuit_count == 0


def test_a_duplicate_create_id_tears_the_circuit_down() -> None:
    wire, handle = three_relay_circuit(seed=11)
    wire.send(CLIENT, handle.link, handshake_cell(handle.circuit.circuit_id, CellCommand.CREATE, b"y" * 48))
    wire.run()
    assert handle.closed == [CircuitClosed(DestroyReason.PROTOCOL)]
    assert_all_gone(wire)


def test_a_create_with_a_bad_handshake_length_is_refused() -> None:
    wire = Wire(12)
    wire.add_hop("r0")
    link = wire.client_link("r0")
    body = b"\xff\xff" + bytes(CELL_BODY_BYTES - 2)
    wire.send(CLIENT, link, Cell(DIALER_ID_BIT | 2**31, CellCommand.CREATE, body))
    wire.run()
    assert [reason for *_, reason in destroys(wire)] == [DestroyReason.HANDSHAKE_FAILED]
    assert wire.hops["r0"].core.circuit_count == 0


def test_a_created_with_an_oversized_handshake_tears_down() -> None:
    wire = Wire(13)
    wire.add_path(1)

    def oversize(d: Delivery) -> list[Cell]:
        if d.cell.command == CellCommand.CREATED and d.src == "node":
            return [handshake_cell(d.cell.circuit_id, CellCommand.CREATED, b"z" * 1000)]
        return [d.cell]

    wire.tap(oversize)
    handle = wire.open_circuit(["r0", "node"])
    assert handle.closed == [CircuitClosed(DestroyReason.PROTOCOL)]
    assert_all_gone(wire)


def test_two_circuits_share_links_independently() -> None:
    wire, first = three_relay_circuit(seed=14)
    second = wire.open_circuit(["r0", "r1", "r2", "node"], link=first.link)
    assert second.built
    assert wire.hops["r1"].core.circuit_count == 2
    assert wire.hops["r0"].core.circuits_on(first.link) == 2
    first.events += first.circuit.destroy()
    sid = request(wire, second, b"still here")
    assert wire.hops["r1"].core.circuit_count == 1
    (ref,) = wire.hops["node"].refs()
    assert wire.hops["node"].received(ref, sid) == b"still here"


# --- streams --------------------------------------------------------------------------------------


def test_a_large_request_and_response_arrive_whole_and_in_order() -> None:
    wire, handle = three_relay_circuit(seed=15)
    rng = random.Random(15)
    prompt, answer = rng.randbytes(200_000), rng.randbytes(200_000)
    sid = request(wire, handle, prompt)
    ref = only_ref(wire)
    assert wire.hops["node"].received(ref, sid) == prompt
    assert wire.hops["node"].ends(ref, sid) == [EndReason.DONE]
    wire.service_send("node", ref, sid, answer)
    wire.service_end("node", ref, sid)
    wire.run()
    assert handle.received(sid) == answer
    assert handle.data_cells(sid) == -(-len(answer) // RELAY_DATA_BYTES_MAX)
    assert handle.ends(sid) == [EndReason.DONE]
    assert not handle.circuit.edge.is_open(sid)
    assert wire.hops["node"].core.streams.queued_bytes(ref, sid) is None


def test_many_concurrent_streams_on_one_circuit() -> None:
    wire, handle = three_relay_circuit(seed=16)
    rng = random.Random(16)
    edge = handle.circuit.edge
    prompts = {edge.open_stream(SERVICE): rng.randbytes(rng.randint(1, 20_000)) for _ in range(40)}
    for sid, prompt in prompts.items():
        edge.send(sid, prompt)
        edge.end(sid)
    wire.run()
    node = wire.hops["node"]
    ref = only_ref(wire)
    assert [e.stream_id for e in node.opened(ref)] == list(prompts)
    for sid, prompt in prompts.items():
        assert node.received(ref, sid) == prompt
        wire.service_send("node", ref, sid, prompt[::-1])
        wire.service_end("node", ref, sid)
    wire.run()
    for sid, prompt in prompts.items():
        assert handle.received(sid) == prompt[::-1]
        assert handle.ends(sid) == [EndReason.DONE]
    assert edge.stream_count == 0
    # The replies were interleaved on the wire, not sent one stream after another.
    order = [e.stream_id for e in handle.events if isinstance(e, StreamData)]
    assert order != sorted(order)


def test_client_abort_reaches_the_service() -> None:
    wire, handle = three_relay_circuit(seed=17)
    sid = request(wire, handle, b"prompt")
    ref = only_ref(wire)
    wire.service_send("node", ref, sid, b"t" * 50_000)
    handle.circuit.edge.end(sid, EndReason.CANCELLED)  # after its own DONE: the usual cancel
    wire.run()
    node = wire.hops["node"]
    assert node.ends(ref, sid) == [EndReason.DONE, EndReason.CANCELLED]
    assert node.core.streams.queued_bytes(ref, sid) is None
    assert wire.hops["node"].core.circuit_count == 1  # only the stream ended


def test_service_abort_reaches_the_client() -> None:
    wire, handle = three_relay_circuit(seed=18)
    sid = request(wire, handle, b"prompt", end=False)
    ref = only_ref(wire)
    wire.service_end("node", ref, sid, EndReason.OVERLOADED)
    wire.run()
    assert handle.ends(sid) == [EndReason.OVERLOADED]
    assert not handle.circuit.edge.is_open(sid)
    assert handle.circuit.state is CircuitState.OPEN


def test_unknown_service_ends_the_stream_not_the_circuit() -> None:
    wire, handle = three_relay_circuit(seed=19)
    edge = handle.circuit.edge
    sid = edge.open_stream("no-such-thing")
    edge.send(sid, b"hello")
    wire.run()
    assert handle.ends(sid) == [EndReason.NO_SUCH_SERVICE]
    assert wire.hops["node"].events == []
    assert handle.circuit.state is CircuitState.OPEN
    good = request(wire, handle, b"ok")
    assert wire.hops["node"].received(only_ref(wire), good) == b"ok"


def test_data_after_end_tears_the_circuit_down() -> None:
    wire, handle = three_relay_circuit(seed=20)
    sid = request(wire, handle, b"prompt")
    relay_from_client(wire, handle, RelayData(sid, b"late"))
    assert handle.closed == [CircuitClosed(DestroyReason.PROTOCOL)]
    node = wire.hops["node"]
    assert node.ends(only_ref(wire), sid) == [EndReason.DONE, EndReason.CIRCUIT_CLOSED]
    assert_all_gone(wire)


def test_second_end_done_tears_the_circuit_down() -> None:
    wire, handle = three_relay_circuit(seed=21)
    sid = request(wire, handle, b"prompt")
    relay_from_client(wire, handle, RelayEnd(sid, EndReason.DONE))
    assert handle.closed == [CircuitClosed(DestroyReason.PROTOCOL)]
    assert_all_gone(wire)


def test_streams_end_with_circuit_closed_when_the_circuit_goes() -> None:
    wire, handle = three_relay_circuit(seed=22)
    sids = [request(wire, handle, b"p", end=False) for _ in range(3)]
    ref = only_ref(wire)
    handle.events += handle.circuit.destroy()
    wire.run()
    node = wire.hops["node"]
    for sid in sids:
        assert handle.ends(sid) == [EndReason.CIRCUIT_CLOSED]
        assert node.ends(ref, sid) == [EndReason.CIRCUIT_CLOSED]
    assert wire.hops["node"].core.streams.send(ref, sids[0], b"x") == []
    assert wire.hops["node"].core.streams.queued_bytes(ref, sids[0]) is None


# --- flow control ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stream_count", [1, 4])
def test_a_reader_that_never_consumes_bounds_what_the_node_sends(stream_count: int) -> None:
    wire, handle = three_relay_circuit(seed=23)
    handle.auto_consume = False
    sids = [request(wire, handle, b"prompt") for _ in range(stream_count)]
    ref = only_ref(wire)
    wire.in_flight_max = 0
    for round_ in range(5):  # the node's application keeps queueing; the path must not fill up
        for sid in sids:
            wire.service_send("node", ref, sid, b"r" * 1_000_000)
        wire.run()
        for sid in sids:
            assert handle.data_cells(sid) == STREAM_WINDOW_CELLS, round_
            queued = wire.hops["node"].core.streams.queued_bytes(ref, sid)
            assert queued == (round_ + 1) * 1_000_000 - STREAM_WINDOW_CELLS * RELAY_DATA_BYTES_MAX
    # In flight on the whole path: the windows' worth of DATA (all of it at once), plus a few control cells.
    window = min(CIRCUIT_WINDOW_CELLS, stream_count * STREAM_WINDOW_CELLS)
    assert window <= wire.in_flight_max <= window + 8
    assert handle.circuit.state is CircuitState.OPEN
    for sid in sids:
        handle.circuit.edge.consumed(sid, STREAM_WINDOW_CELLS)
    wire.run()
    for sid in sids:
        assert handle.data_cells(sid) == 2 * STREAM_WINDOW_CELLS


def test_a_slow_service_throttles_the_client() -> None:
    wire, handle = three_relay_circuit(seed=24)
    wire.hops["node"].auto_consume = False
    sid = request(wire, handle, b"q" * 1_000_000, end=False)
    ref = only_ref(wire)
    assert len(wire.hops["node"].received(ref, sid)) == STREAM_WINDOW_CELLS * RELAY_DATA_BYTES_MAX
    assert handle.circuit.edge.queued_bytes(sid) == 1_000_000 - STREAM_WINDOW_CELLS * RELAY_DATA_BYTES_MAX
    wire.service_consumed("node", ref, sid, STREAM_WINDOW_CELLS)
    wire.run()
    assert len(wire.hops["node"].received(ref, sid)) == 2 * STREAM_WINDOW_CELLS * RELAY_DATA_BYTES_MAX


@pytest.mark.parametrize("digest", [b"\x5a" * SENDME_DIGEST_BYTES, b""], ids=["forged", "replayed"])
def test_a_bad_circuit_sendme_tears_the_circuit_down(digest: bytes) -> None:
    wire, handle = three_relay_circuit(seed=25)
    sid = request(wire, handle, b"prompt")
    ref = only_ref(wire)
    wire.service_send("node", ref, sid, b"r" * RELAY_DATA_BYTES_MAX * 70)  # one SENDME group went out
    wire.run()
    if not digest:  # a replay of the honest ack, which the node already took: one ack too many
        digest = first_circuit_ack(handle)
    relay_from_client(wire, handle, RelaySendme(0, digest))
    assert handle.closed == [CircuitClosed(DestroyReason.PROTOCOL)]
    assert_all_gone(wire)


def first_circuit_ack(handle: CircuitHandle) -> bytes:
    """The digest of the client's first circuit SENDME (the first CIRCUIT_SENDME_CELLS DATA cells)."""
    digest = hashlib.blake2b(digest_size=SENDME_DIGEST_BYTES)
    for event in [e for e in handle.events if isinstance(e, StreamData)][:CIRCUIT_SENDME_CELLS]:
        digest.update(event.data)
    return digest.digest()


@pytest.mark.parametrize("cells", [STREAM_WINDOW_CELLS, STREAM_WINDOW_CELLS + 1])
def test_a_peer_exceeding_the_stream_window_tears_the_circuit_down(cells: int) -> None:
    wire, handle = three_relay_circuit(seed=26)
    wire.hops["node"].auto_consume = False
    sid = request(wire, handle, b"", end=False)
    handle.circuit.edge._streams[sid].package_window = 10 * STREAM_WINDOW_CELLS  # a client ignoring it
    handle.circuit.edge.send(sid, b"y" * RELAY_DATA_BYTES_MAX * cells)
    wire.run()
    if cells == STREAM_WINDOW_CELLS:
        assert handle.circuit.state is CircuitState.OPEN
        assert len(wire.hops["node"].received(only_ref(wire), sid)) == RELAY_DATA_BYTES_MAX * cells
    else:
        assert handle.closed == [CircuitClosed(DestroyReason.PROTOCOL)]
        assert_all_gone(wire)


# --- integrity over the wire ----------------------------------------------------------------------

PATH_LINKS = [("client", "r0"), ("r0", "r1"), ("r1", "r2"), ("r2", "node")]
BITS = [0, 15, 2 * 8 + 3, 18 * 8, 500 * 8 + 1, CELL_BODY_BYTES * 8 - 1]


def flip_first_relay_cell(src: str, dst: str, bit: int) -> Callable[[Delivery], list[Cell]]:
    done = False

    def tap(d: Delivery) -> list[Cell]:
        nonlocal done
        if done or (d.src, d.dst) != (src, dst) or d.cell.command != CellCommand.RELAY:
            return [d.cell]
        done = True
        body = bytearray(d.cell.body)
        body[bit // 8] ^= 1 << (bit % 8)
        return [Cell(d.cell.circuit_id, d.cell.command, bytes(body))]

    return tap


@pytest.mark.parametrize("bit", BITS)
@pytest.mark.parametrize("link", PATH_LINKS, ids="-".join)
def test_a_flipped_bit_on_any_forward_link_ends_in_integrity_failure(link: tuple[str, str], bit: int) -> None:
    wire, handle = three_relay_circuit(seed=bit)
    wire.tap(flip_first_relay_cell(*link, bit))
    prompt = b"P" * 5000
    sid = request(wire, handle, prompt)
    assert handle.closed == [CircuitClosed(DestroyReason.INTEGRITY)]
    received = wire.hops["node"].received(only_ref(wire), sid) if wire.hops["node"].events else b""
    assert prompt.startswith(received)
    assert len(received) < len(prompt)
    assert_all_gone(wire)


@pytest.mark.parametrize("target", [0, 1, 2])
def test_a_flipped_cell_for_a_middle_hop_is_caught_down_the_path(target: int) -> None:
    wire, handle = three_relay_circuit(seed=30 + target)
    wire.tap(flip_first_relay_cell(*PATH_LINKS[target], 100))
    handle.circuit.send_drop(target)
    wire.run()
    assert handle.closed == [CircuitClosed(DestroyReason.INTEGRITY)]
    assert_all_gone(wire)


@pytest.mark.parametrize("bit", BITS)
@pytest.mark.parametrize("link", PATH_LINKS, ids="-".join)
def test_a_flipped_bit_on_any_backward_link_ends_in_integrity_failure(
    link: tuple[str, str], bit: int
) -> None:
    wire, handle = three_relay_circuit(seed=bit + 1)
    sid = request(wire, handle, b"prompt")
    ref = only_ref(wire)
    wire.tap(flip_first_relay_cell(link[1], link[0], bit))
    answer = b"A" * 5000
    wire.service_send("node", ref, sid, answer)
    wire.service_end("node", ref, sid)
    wire.run()
    assert handle.closed == [CircuitClosed(DestroyReason.INTEGRITY)]
    assert answer.startswith(handle.received(sid))
    assert len(handle.received(sid)) < len(answer)
    assert_all_gone(wire)


def misdeliver(kind: str, src: str, dst: str) -> Callable[[Delivery], list[Cell]]:
    """Drop, duplicate or swap the first two RELAY cells from src to dst."""
    seen: list[Cell] = []

    def tap(d: Delivery) -> list[Cell]:
        if (d.src, d.dst) != (src, dst) or d.cell.command != CellCommand.RELAY or len(seen) >= 2:
            return [d.cell]
        seen.append(d.cell)
        if kind == "drop":
            return [] if len(seen) == 1 else [d.cell]
        if kind == "duplicate":
            return [d.cell, d.cell] if len(seen) == 1 else [d.cell]
        return [] if len(seen) == 1 else [d.cell, seen[0]]  # reorder

    return tap


@pytest.mark.parametrize("kind", ["drop", "duplicate", "reorder"])
@pytest.mark.parametrize("link", [("client", "r0"), ("r1", "r2"), ("r2", "node")], ids="-".join)
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_dropped_duplicated_or_reordered_cells_end_in_integrity_failure(
    direction: str, link: tuple[str, str], kind: str
) -> None:
    wire, handle = three_relay_circuit(seed=40)
    src, dst = link if direction == "forward" else link[::-1]
    wire.tap(misdeliver(kind, src, dst))
    sid = request(wire, handle, b"Q" * 5000)
    if direction == "backward":
        ref = only_ref(wire)
        wire.service_send("node", ref, sid, b"R" * 5000)
        wire.run()
    assert handle.closed == [CircuitClosed(DestroyReason.INTEGRITY)]
    assert_all_gone(wire)


# --- teardown -------------------------------------------------------------------------------------


def test_client_destroy_reaches_every_hop() -> None:
    wire, handle = three_relay_circuit(seed=50)
    request(wire, handle, b"p", end=False)
    assert handle.circuit.destroy() == [
        StreamEnded(1, EndReason.CIRCUIT_CLOSED),
        CircuitClosed(DestroyReason.REQUESTED),
    ]
    assert handle.circuit.destroy() == []
    wire.run()
    assert destroys(wire) == [
        (CLIENT, "r0", DestroyReason.REQUESTED),
        ("r0", "r1", DestroyReason.REQUESTED),
        ("r1", "r2", DestroyReason.REQUESTED),
        ("r2", "node", DestroyReason.REQUESTED),
    ]
    assert_all_gone(wire)
    assert wire.hops["node"].ends(only_ref(wire), 1) == [EndReason.CIRCUIT_CLOSED]


def test_destroy_while_building_reaches_the_hops_built() -> None:
    wire = Wire(51)
    wire.add_path(3)
    wire.connect_mode = "hold"
    wire.cut(wire.link_between("r1", "r2"))
    handle = wire.open_circuit(["r0", "r1", "r2", "node"])
    assert wire.held_connects and handle.circuit.hops_built == 2
    handle.events += handle.circuit.destroy()
    wire.run()
    assert_all_gone(wire)
    wire.release_connects()
    wire.run()
    assert_all_gone(wire)


@pytest.mark.parametrize("link", PATH_LINKS, ids="-".join)
def test_a_closed_link_tears_down_both_ways(link: tuple[str, str]) -> None:
    wire, handle = three_relay_circuit(seed=52)
    sid = request(wire, handle, b"p", end=False)
    ref = only_ref(wire)
    wire.cut(wire.link_between(*link))
    wire.run()
    assert handle.closed == [CircuitClosed(DestroyReason.LINK_CLOSED)]
    assert handle.ends(sid) == [EndReason.CIRCUIT_CLOSED]
    assert wire.hops["node"].ends(ref, sid) == [EndReason.CIRCUIT_CLOSED]
    assert_all_gone(wire)
    assert all(reason is DestroyReason.LINK_CLOSED for *_, reason in destroys(wire))


def test_idle_circuits_expire() -> None:
    wire, handle = three_relay_circuit(seed=53)
    wire.advance(CIRCUIT_IDLE_TIMEOUT_S * 0.7)
    wire.run()
    assert wire.circuit_total() == 4
    handle.circuit.send_drop()  # padding to the last hop keeps every hop alive
    wire.run()
    wire.advance(CIRCUIT_IDLE_TIMEOUT_S * 0.7)
    wire.run()
    assert wire.circuit_total() == 4
    wire.advance(CIRCUIT_IDLE_TIMEOUT_S * 0.31)
    wire.run()
    assert handle.closed == [CircuitClosed(DestroyReason.TIMEOUT)]
    assert_all_gone(wire)


def test_padding_to_the_guard_keeps_only_the_guard_alive() -> None:
    wire, handle = three_relay_circuit(seed=54)
    wire.advance(CIRCUIT_IDLE_TIMEOUT_S * 0.7)
    handle.circuit.send_drop(0)
    wire.run()
    wire.advance(CIRCUIT_IDLE_TIMEOUT_S * 0.7)
    wire.run()
    assert handle.closed == [CircuitClosed(DestroyReason.TIMEOUT)]
    assert_all_gone(wire)


@pytest.mark.parametrize("stuck", ["dial", "create"])
def test_stuck_extends_expire(stuck: str) -> None:
    wire = Wire(55)
    wire.add_hop("r0")
    wire.add_hop("r1")
    if stuck == "dial":
        wire.connect_mode = "hold"
    else:
        wire.connect("r0", "r1")
        wire.tap(lambda d: [] if d.cell.command == CellCommand.CREATE and d.dst == "r1" else [d.cell])
    handle = wire.open_circuit(["r0", "r1"])
    assert handle.circuit.hops_built == 1
    wire.advance(EXTEND_TIMEOUT_S * 0.9)
    wire.run()
    assert wire.hops["r0"].core.circuit_count == 1
    wire.advance(EXTEND_TIMEOUT_S * 0.2)
    wire.run()
    assert handle.closed == [CircuitClosed(DestroyReason.TIMEOUT)]
    assert_all_gone(wire)
    wire.release_connects()  # a dial that finishes late changes nothing
    wire.run()
    assert_all_gone(wire)


def test_destroy_circuit_at_a_middle_relay() -> None:
    wire, handle = three_relay_circuit(seed=56)
    sid = request(wire, handle, b"p", end=False)
    ref = only_ref(wire)
    r1 = wire.hops["r1"]
    link = wire.link_between("r0", "r1")
    (circuit_id,) = creates(wire, "r0", "r1")
    assert r1.core.destroy_circuit(link + 100, circuit_id, DestroyReason.RESOURCE_LIMIT) == []
    wire.route("r1", r1.core.destroy_circuit(link, circuit_id, DestroyReason.RESOURCE_LIMIT))
    wire.run()
    assert handle.closed == [CircuitClosed(DestroyReason.RESOURCE_LIMIT)]
    assert wire.hops["node"].ends(ref, sid) == [EndReason.CIRCUIT_CLOSED]
    assert_all_gone(wire)


def test_the_node_can_destroy_a_circuit_by_its_ref() -> None:
    wire, handle = three_relay_circuit(seed=57)
    request(wire, handle, b"p")
    link, circuit_id = only_ref(wire)
    wire.route("node", wire.hops["node"].core.destroy_circuit(link, circuit_id, DestroyReason.SHUTDOWN))
    wire.run()
    assert handle.closed == [CircuitClosed(DestroyReason.SHUTDOWN)]
    assert_all_gone(wire)


def test_cells_for_gone_circuits_and_unknown_links_are_ignored() -> None:
    wire, handle = three_relay_circuit(seed=58)
    body = bytes(CELL_BODY_BYTES)
    r0 = wire.hops["r0"].core
    assert r0.receive_cell(handle.link, Cell(DIALER_ID_BIT | 2**31 | 77, CellCommand.RELAY, body), 0.0) == []
    assert r0.receive_cell(999, handshake_cell(DIALER_ID_BIT | 2**31, CellCommand.CREATE, b""), 0.0) == []
    assert r0.link_down(999) == []
    assert r0.connect_result(12345, handle.link) == []
    handle.events += handle.circuit.destroy()
    wire.run()
    assert handle.circuit.receive_cell(destroy_cell(handle.circuit.circuit_id, DestroyReason.NONE)) == []
    assert r0.receive_cell(handle.link, Cell(handle.circuit.circuit_id, CellCommand.RELAY, body), 0.0) == []


def test_client_api_in_the_wrong_state() -> None:
    wire = Wire(59)
    wire.add_hop("r0")
    wire.add_hop("r1")
    wire.connect_mode = "hold"
    handle = wire.open_circuit(["r0", "r1"])
    with pytest.raises(LocalProtocolError):
        handle.circuit.send_drop()
    handle.events += handle.circuit.link_lost()
    assert handle.circuit.link_lost() == []
    assert handle.circuit.outgoing_cells() == []
    assert handle.closed == [CircuitClosed(DestroyReason.LINK_CLOSED)]


# --- limits ---------------------------------------------------------------------------------------


def test_circuits_per_link_limit_at_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(circuit_hop, "CIRCUITS_PER_LINK_MAX", 2)
    wire = Wire(60)
    wire.add_hop("r0")
    link = wire.client_link("r0")
    handles = [wire.open_circuit(["r0"], link=link) for _ in range(3)]
    assert [h.built for h in handles] == [True, True, False]
    assert handles[2].closed == [CircuitClosed(DestroyReason.RESOURCE_LIMIT)]
    assert wire.hops["r0"].core.circuits_on(link) == 2


def test_circuits_per_link_limit_when_extending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(circuit_hop, "CIRCUITS_PER_LINK_MAX", 2)
    wire = Wire(61)
    wire.add_hop("r0")
    wire.add_hop("r1")
    wire.connect("r0", "r1")
    handles = [wire.open_circuit(["r0", "r1"]) for _ in range(3)]  # each on its own client link
    assert [h.built for h in handles] == [True, True, False]
    assert handles[2].closed == [CircuitClosed(DestroyReason.RESOURCE_LIMIT)]
    assert wire.hops["r0"].core.circuit_count == 2


def test_pending_extends_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(circuit_hop, "PENDING_EXTENDS_MAX", 2)
    wire = Wire(62)
    wire.add_hop("r0")
    wire.add_hop("r1")
    wire.connect_mode = "hold"
    link = wire.client_link("r0")
    handles = [wire.open_circuit(["r0", "r1"], link=link) for _ in range(3)]
    assert handles[2].closed == [CircuitClosed(DestroyReason.RESOURCE_LIMIT)]
    assert len(wire.held_connects) == 2
    wire.release_connects()
    wire.run()
    assert [h.built for h in handles] == [True, True, False]


def test_streams_per_circuit_limit_at_the_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "STREAMS_PER_CIRCUIT_MAX", 2)
    wire, handle = three_relay_circuit(seed=63)
    sids = [request(wire, handle, b"p", end=False) for _ in range(2)]
    with pytest.raises(LocalProtocolError):
        handle.circuit.edge.open_stream(SERVICE)
    relay_from_client(wire, handle, RelayBegin(9, SERVICE))  # a client that ignores the limit
    node = wire.hops["node"]
    assert [e.stream_id for e in node.opened()] == sids
    assert handle.circuit.state is CircuitState.OPEN  # refused with END OVERLOADED, not torn down
    ref = only_ref(wire)
    assert node.core.streams.queued_bytes(ref, 9) is None
    assert node.core.streams.queued_bytes(ref, sids[0]) == 0
    assert handle.ends(9) == []  # the client never opened 9, so its edge ignores that END


# --- privacy --------------------------------------------------------------------------------------

PROMPT_SENTINEL = b"PROMPT-SENTINEL-7f3a"
RESPONSE_SENTINEL = b"RESPONSE-SENTINEL-91c2"


def test_no_link_ever_carries_the_plaintext() -> None:
    wire, handle = three_relay_circuit(seed=70)
    prompt = PROMPT_SENTINEL * 3000
    sid = request(wire, handle, prompt)
    ref = only_ref(wire)
    answer = RESPONSE_SENTINEL * 3000
    wire.service_send("node", ref, sid, answer)
    wire.service_end("node", ref, sid)
    wire.run()
    # Both ends saw the plaintext (the check below is not vacuous) ...
    assert wire.hops["node"].received(ref, sid) == prompt
    assert handle.received(sid) == answer
    # ... and no cell on any link (client's and node's included) carried any piece of it.
    assert len(wire.trace) > 400
    for sentinel in (PROMPT_SENTINEL, RESPONSE_SENTINEL):
        for piece in (sentinel, sentinel[:8], sentinel[-8:]):
            assert wire.cells_containing(piece) == []


def test_what_a_relay_sees_differs_on_its_two_links() -> None:
    """The same cell entering and leaving a relay shares no bytes in place (no tagging by position)."""
    wire, handle = three_relay_circuit(seed=71)
    built = len(wire.trace)
    request(wire, handle, bytes(10_000))
    cells = [d for d in wire.trace[built:] if d.cell.command == CellCommand.RELAY]
    into = [d.cell.body for d in cells if (d.src, d.dst) == ("r0", "r1")]
    out = [d.cell.body for d in cells if (d.src, d.dst) == ("r1", "r2")]
    assert len(into) == len(out) > 5
    for before, after in zip(into, out, strict=True):
        same = sum(a == b for a, b in zip(before, after, strict=True))
        assert same < CELL_BODY_BYTES // 64


# --- the client against hand-driven hops ----------------------------------------------------------


def test_padding_from_a_middle_hop_is_ignored_but_stream_messages_are_not() -> None:
    client, manual, events = manual_build(3, random.Random(80))
    assert events == [CircuitBuilt()]
    assert client.receive_cell(manual.seal_back(client.circuit_id, 1, RelayDrop())) == []
    assert client.state is CircuitState.OPEN
    events = client.receive_cell(manual.seal_back(client.circuit_id, 1, RelayEnd(1, 0)))
    assert events == [CircuitClosed(DestroyReason.PROTOCOL)]
    assert [c.command for c in client.outgoing_cells()] == [CellCommand.DESTROY]


@pytest.mark.parametrize("answered", [0, 1, 2])
def test_handshake_replies_out_of_turn_close_the_circuit(answered: int) -> None:
    client, manual, _ = manual_build(2, random.Random(81), answered=answered)
    if answered == 0:
        events = client.receive_cell(handshake_cell(client.circuit_id, CellCommand.CREATE, b""))
    elif answered == 1:  # a second CREATED, or an EXTENDED from nobody's handshake
        events = client.receive_cell(handshake_cell(client.circuit_id, CellCommand.CREATED, b"x" * 48))
    else:
        events = client.receive_cell(manual.seal_back(client.circuit_id, 1, RelayExtended(b"x" * 48)))
    assert events[-1] == CircuitClosed(DestroyReason.PROTOCOL)
    assert client.state is CircuitState.CLOSED
    assert client.receive_cell(destroy_cell(client.circuit_id, DestroyReason.NONE)) == []


def test_a_cell_moved_to_another_circuit_is_caught() -> None:
    wire, first = three_relay_circuit(seed=82)
    second = wire.open_circuit(["r0", "r1", "r2", "node"], link=first.link)
    moved = False

    def move(d: Delivery) -> list[Cell]:
        nonlocal moved
        if moved or d.src != CLIENT or d.cell.circuit_id != first.circuit.circuit_id:
            return [d.cell]
        moved = True
        return [Cell(second.circuit.circuit_id, d.cell.command, d.cell.body)]

    wire.tap(move)
    # Long enough for several cells: the ones after the moved one no longer verify on the first circuit.
    request(wire, first, b"meant for the first circuit" * 100)
    assert second.closed == [CircuitClosed(DestroyReason.INTEGRITY)]
    assert first.closed == [CircuitClosed(DestroyReason.INTEGRITY)]
    assert_all_gone(wire)


def test_a_short_request_travels_in_one_cell_per_hop() -> None:
    wire, handle = three_relay_circuit(seed=90)
    from_client: list[Cell] = []

    def count(d: Delivery) -> list[Cell]:
        if d.src == CLIENT and d.cell.circuit_id == handle.circuit.circuit_id:
            from_client.append(d.cell)
        return [d.cell]

    wire.tap(count)
    request(wire, handle, b"a short prompt")  # BEGIN, DATA and END share one cell
    assert len(from_client) == 1
    assert handle.closed == []
