"""Fuzzing the circuit cores: whatever cells arrive, in whatever state, HopCore and ClientCircuit never raise
(a protocol error becomes a teardown), and the relay message and document decoders raise only
RemoteProtocolError."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass, replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tp_net.circuit_harness import CLIENT, CircuitHandle, Delivery, Wire, manual_build
from tp_crypto.errors import RemoteProtocolError
from tp_crypto.onion import layer_from_secrets
from tp_net.protocol import codec
from tp_net.protocol.cells import RELAY_PAYLOAD_BYTES, CellCommand, relay_cell
from tp_net.protocol.circuit_client import CircuitClosed, CircuitState, ClientCircuit
from tp_net.protocol.circuit_hop import CIRCUIT_IDLE_TIMEOUT_S
from tp_net.protocol.frames import (
    CELL_BODY_BYTES,
    CELL_COMMAND_MAX,
    CIRCUIT_ID_MAX,
    CIRCUIT_ID_MIN,
    Cell,
    Frame,
)
from tp_net.protocol.relay_messages import (
    RelayBegin,
    RelayData,
    RelayDrop,
    RelayEnd,
    RelayExtend,
    RelayExtended,
    RelaySendme,
)

EXAMPLES = int(os.environ.get("TP_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

stream_ids = st.integers(-2, 2**16 + 1) | st.sampled_from([0, 1, 2, 3])
relay_messages: st.SearchStrategy[Frame] = st.one_of(
    st.builds(
        RelayExtend,
        st.binary(min_size=30, max_size=34),
        st.none() | st.text(max_size=40),
        st.binary(max_size=300),
    ),
    st.builds(RelayExtended, st.binary(max_size=300)),
    st.builds(RelayBegin, stream_ids, st.sampled_from(["inference", "", "other"]) | st.text(max_size=70)),
    st.builds(RelayData, stream_ids, st.binary(max_size=900)),
    st.builds(RelayEnd, stream_ids, st.integers(-1, 300)),
    st.builds(RelaySendme, stream_ids, st.binary(max_size=20)),
    st.just(RelayDrop()),
)


def payload_from(message: Frame) -> bytes:
    try:
        return codec.encode_relay_payload(message, RELAY_PAYLOAD_BYTES)
    except Exception:  # an unencodable field (say, a negative length); garbage instead
        return bytes(RELAY_PAYLOAD_BYTES)


payloads = st.one_of(
    st.binary(min_size=RELAY_PAYLOAD_BYTES, max_size=RELAY_PAYLOAD_BYTES),
    relay_messages.map(payload_from),
)


def length_prefixed(length: int) -> st.SearchStrategy[bytes]:
    """What a CREATE/CREATED body starts with: a length prefix (any value), then anything."""
    rest = st.binary(min_size=CELL_BODY_BYTES - 2, max_size=CELL_BODY_BYTES - 2)
    return rest.map(lambda b: length.to_bytes(2, "big") + b)


# Handshake lengths around the limits: a hop handshake (49), a relay message's (256), the cell's (1022).
_LENGTH_EDGES = [0, 1, 48, 49, 50, 255, 256, 257, 999, 1000, 1006, 1021, 1022, 1023, 2**16 - 1]
handshake_bodies = st.one_of(
    st.integers(0, CELL_BODY_BYTES + 64), st.sampled_from(_LENGTH_EDGES), st.integers(990, 1030)
).flatmap(length_prefixed)
bodies = st.one_of(
    st.binary(min_size=CELL_BODY_BYTES, max_size=CELL_BODY_BYTES),
    st.binary(max_size=40).map(lambda b: b + bytes(CELL_BODY_BYTES - len(b))),
    handshake_bodies,
)
commands = st.sampled_from([int(c) for c in CellCommand] * 3 + [0, 5, CELL_COMMAND_MAX])


# --- HopCore --------------------------------------------------------------------------------------


@dataclass
class Scenario:
    wire: Wire
    full: CircuitHandle  # client - r0 - r1 - node, a stream open
    pending: CircuitHandle  # client - r0 - (dialing r2)
    short: CircuitHandle  # client - r0
    waiting: CircuitHandle  # client - r1 - (CREATE sent to the node, which never got it)
    lost: list[Delivery]

    def seen(self) -> list[Delivery]:
        """Cells the hops received so far: their (hop, link, circuit id) are the live ones. A lost CREATE
        counts as an answer the sender waits for."""
        deliveries = [d for d in self.wire.trace if d.dst != CLIENT] + [
            replace(d, dst=d.src) for d in self.lost
        ]
        return list({(d.dst, d.link, d.cell.circuit_id): d for d in deliveries}.values())


def scenario(seed: int) -> Scenario:
    wire = Wire(seed)
    wire.add_path(2)
    wire.add_hop("r2")
    full = wire.open_circuit(["r0", "r1", "node"])
    sid = full.circuit.edge.open_stream("inference")
    full.circuit.edge.send(sid, b"prompt" * 300)
    wire.run()
    ref = wire.hops["node"].refs()[0]
    wire.service_send("node", ref, sid, b"reply" * 300)
    wire.connect_mode = "hold"
    pending = wire.open_circuit(["r0", "r2"], link=full.link)
    short = wire.open_circuit(["r0"])
    lost: list[Delivery] = []

    def lose_create(d: Delivery) -> list[Cell]:
        if d.cell.command == CellCommand.CREATE and (d.src, d.dst) == ("r1", "node"):
            lost.append(d)
            return []
        return [d.cell]

    wire.tap(lose_create)
    waiting = wire.open_circuit(["r1", "node"])
    wire.clear_taps()
    assert full.built and short.built and pending.circuit.hops_built == waiting.circuit.hops_built == 1
    assert len(lost) == 1
    return Scenario(wire, full, pending, short, waiting, lost)


def check_hop_invariants(wire: Wire) -> None:
    for node in wire.hops.values():
        core = node.core
        entries = sum(core.circuits_on(link) for link in wire.every_link_id())
        # Every circuit is on its previous link and at most one next link; nothing is left dangling.
        assert core.circuit_count <= entries <= 2 * core.circuit_count, node.name


answer_commands = st.sampled_from([CellCommand.CREATED, CellCommand.DESTROY, CellCommand.RELAY])
mutations = st.lists(st.tuples(st.integers(0, CELL_BODY_BYTES - 1), st.integers(1, 255)), max_size=4)
slots = st.sampled_from(range(64))  # which live (hop, link, circuit) a cell goes to, resolved when it is sent

# A cell on a live (hop, link, circuit): any command, a fresh body or (None) the last one seen there, mutated.
on_live = st.tuples(st.just("live"), slots, commands, st.none() | bodies, mutations)
# An answer on a live (hop, link, circuit), with a handshake-like body.
answer: st.SearchStrategy[tuple[Any, ...]] = st.tuples(
    st.just("live"), slots, answer_commands, handshake_bodies, st.just([])
)
anywhere = st.builds(
    lambda hop, link, circuit_id, command, body: ("cell", hop, link, Cell(circuit_id, command, body)),
    st.sampled_from(["r0", "r1", "node", "r2"]),
    st.integers(0, 8),
    st.integers(CIRCUIT_ID_MIN, CIRCUIT_ID_MAX),
    commands,
    bodies,
)
hop_actions = st.one_of(
    on_live,
    answer,
    anywhere,
    st.tuples(st.just("layered"), st.sampled_from(["full", "short"]), st.integers(0, 2), payloads),
    st.tuples(st.just("cut"), st.integers(1, 8)),
    st.tuples(st.just("time"), st.sampled_from([1.0, 11.0, 601.0])),
    st.just(("release",)),
)


def on_live_circuit(s: Scenario, action: tuple[Any, ...]) -> tuple[str, int, Cell]:
    _, slot, command, body, flips = action
    seen = s.seen()
    old = seen[slot % len(seen)]
    out = bytearray(old.cell.body if body is None else body)
    for position, xor in flips:
        out[position] ^= xor
    return old.dst, old.link, Cell(old.cell.circuit_id, command, bytes(out))


def apply(s: Scenario, action: tuple[Any, ...]) -> None:
    wire = s.wire
    kind = action[0]
    if kind in ("cell", "live"):
        target, link, cell = action[1:] if kind == "cell" else on_live_circuit(s, action)
        wire.route(target, wire.hops[target].core.receive_cell(link, cell, wire.now))
    elif kind == "layered":
        _, which, hop, payload = action
        handle = s.full if which == "full" else s.short
        if handle.circuit.state is CircuitState.OPEN and handle.link in wire.links:
            layers = handle.circuit._layers
            index = hop % len(layers)
            body = layers[index].forward.seal(payload)
            for layer in reversed(layers[: index + 1]):
                body = layer.forward.wrap(body)
            wire.send(CLIENT, handle.link, relay_cell(handle.circuit.circuit_id, body))
    elif kind == "cut":
        if action[1] in wire.links:
            wire.cut(action[1])
    elif kind == "time":
        wire.advance(action[1])
    else:
        wire.release_connects()
    wire.run()


@FUZZ
@given(st.integers(0, 2**32), st.data())
def test_hop_cores_survive_any_cells_in_any_state(seed: int, data: st.DataObject) -> None:
    s = scenario(seed)
    actions = data.draw(st.lists(hop_actions, min_size=1, max_size=5))
    for action in actions:
        apply(s, action)
        check_hop_invariants(s.wire)
    # Whatever happened, the clients' destroys and then the idle timeout clear every hop (a replayed
    # CREATE makes a circuit nobody owns: it waits for the timeout).
    for handle in (s.full, s.pending, s.short, s.waiting):
        handle.events += handle.circuit.destroy()
    s.wire.release_connects()
    s.wire.run()
    s.wire.advance(CIRCUIT_IDLE_TIMEOUT_S + 1)
    s.wire.run()
    assert s.wire.circuit_total() == 0


@FUZZ
@given(st.integers(0, 2**32), st.data())
def test_any_answer_on_a_live_circuit_is_handled(seed: int, data: st.DataObject) -> None:
    """One cell, on a (hop, link, circuit) in use, where a handshake reply or a DESTROY could come."""
    s = scenario(seed)
    apply(s, data.draw(answer))
    check_hop_invariants(s.wire)


@FUZZ
@given(st.integers(0, 2**32), st.lists(st.tuples(commands, bodies), min_size=1, max_size=4))
def test_a_fresh_hop_survives_any_cells(seed: int, cells: list[tuple[int, bytes]]) -> None:
    wire = Wire(seed)
    wire.add_hop("r0")
    link = wire.client_link("r0")
    rng = random.Random(seed)
    for command, body in cells:
        cell = Cell(
            rng.choice([CIRCUIT_ID_MIN, CIRCUIT_ID_MAX, rng.randint(CIRCUIT_ID_MIN, CIRCUIT_ID_MAX)]),
            command,
            body,
        )
        wire.route("r0", wire.hops["r0"].core.receive_cell(link, cell, 0.0))
        wire.run()
    assert wire.hops["r0"].core.circuit_count == 0  # nobody can complete a handshake by chance


# --- ClientCircuit --------------------------------------------------------------------------------


@st.composite
def client_in_some_state(draw: st.DrawFn) -> tuple[ClientCircuit, Any, int]:
    rng = random.Random(draw(st.integers(0, 2**32)))
    hops = draw(st.integers(1, 4))
    answered = draw(st.integers(0, hops))
    client, manual, _ = manual_build(hops, rng, answered=answered)
    assert (client.state is CircuitState.OPEN) == (answered == hops)
    if client.state is CircuitState.OPEN:
        for _ in range(draw(st.integers(0, 3))):
            sid = client.edge.open_stream("inference")
            client.edge.send(sid, b"x" * draw(st.integers(0, 3000)))
        client.outgoing_cells()
    if draw(st.booleans()) and draw(st.booleans()):
        client.destroy()
    return client, manual, answered


@st.composite
def client_inputs(draw: st.DrawFn, answered: int) -> tuple[str, Any, Any]:
    if answered and draw(st.booleans()):
        return ("sealed", draw(st.integers(0, answered - 1)), draw(payloads))
    command = draw(commands)
    return ("raw", command, draw(bodies))


@FUZZ
@given(client_in_some_state(), st.data())
def test_client_circuits_survive_any_cells_in_any_state(
    state: tuple[ClientCircuit, Any, int], data: st.DataObject
) -> None:
    client, manual, answered = state
    was_closed = client.state is CircuitState.CLOSED
    for _ in range(data.draw(st.integers(1, 5))):
        kind, a, b = data.draw(client_inputs(answered))
        if kind == "sealed":
            cell = manual.seal_back_payload(client.circuit_id, a, b)
        else:
            cell = Cell(client.circuit_id, a, b)
        events = client.receive_cell(cell)
        if was_closed:
            assert events == []
        closed = [e for e in events if isinstance(e, CircuitClosed)]
        assert len(closed) <= 1
        if closed:
            assert client.state is CircuitState.CLOSED
        for out in client.outgoing_cells():
            out.check()
            assert out.circuit_id == client.circuit_id


def _flip(body: bytes, bit: int) -> bytes:
    return body[: bit // 8] + bytes([body[bit // 8] ^ (1 << bit % 8)]) + body[bit // 8 + 1 :]


def _accepted_by(
    secrets: list[tuple[bytes, bytes]], target: int, position: int, bit: int | None, forward: bool
) -> list[int]:
    """Carry a cell for hop `target` along its way with fresh layers, `bit` (when given) flipped before hop
    `position` (or, backward, after it): the hops (forward) or client layers (backward) that accept it."""
    client = [layer_from_secrets(f, b) for f, b in secrets]
    hop_side = [layer_from_secrets(f, b) for f, b in secrets]
    payload = random.Random(target).randbytes(RELAY_PAYLOAD_BYTES)
    accepted = []
    if forward:
        body = client[target].forward.seal(payload)
        for layer in reversed(client[: target + 1]):
            body = layer.forward.wrap(body)
        for index in range(len(secrets)):
            if index == position and bit is not None:
                body = _flip(body, bit)
            body = hop_side[index].forward.unwrap(body)
            if hop_side[index].forward.open(body) == payload:
                accepted.append(index)
                break
        return accepted
    body = hop_side[target].backward.wrap(hop_side[target].backward.seal(payload))
    for index in range(target - 1, -1, -1):
        if index == position - 1 and bit is not None:
            body = _flip(body, bit)
        body = hop_side[index].backward.wrap(body)
    if position == 0 and bit is not None:
        body = _flip(body, bit)
    for index, layer in enumerate(client):
        body = layer.backward.unwrap(body)
        if layer.backward.open(body) == payload:
            accepted.append(index)
            break
    return accepted


@FUZZ
@given(st.integers(0, 2**32), st.integers(1, 5), st.data())
def test_any_single_bit_flip_anywhere_is_caught(seed: int, hops: int, data: st.DataObject) -> None:
    """Onion layers only: a cell for hop `target`, a bit flipped before hop `position` (or, backward,
    after it), is accepted by nobody on the rest of the way; the same cell unflipped (the positive control)
    is accepted by its own hop, and only there."""
    rng = random.Random(seed)
    secrets = [(rng.randbytes(64), rng.randbytes(64)) for _ in range(hops)]
    target = data.draw(st.integers(0, hops - 1))
    position = data.draw(st.integers(0, target))
    bit = data.draw(st.integers(0, CELL_BODY_BYTES * 8 - 1))
    forward = data.draw(st.booleans())
    assert _accepted_by(secrets, target, position, None, forward) == [target]
    assert _accepted_by(secrets, target, position, bit, forward) == []


# --- decoders -------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=1200))
def test_relay_payload_decoder_raises_only_protocol_errors(data: bytes) -> None:
    try:
        message = codec.decode_relay_payload(data)
    except RemoteProtocolError:
        return
    message.check()


@FUZZ
@given(relay_messages, st.data())
def test_mutated_relay_payloads_raise_only_protocol_errors(message: Frame, data: st.DataObject) -> None:
    payload = bytearray(payload_from(message))
    for _ in range(data.draw(st.integers(0, 6))):
        payload[data.draw(st.integers(0, 60))] = data.draw(st.integers(0, 255))
    try:
        decoded = codec.decode_relay_payload(bytes(payload))
    except RemoteProtocolError:
        return
    decoded.check()
    assert codec.decode_relay_payload(codec.encode_relay_payload(decoded, RELAY_PAYLOAD_BYTES)) == decoded


documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


@FUZZ
@given(documents, st.data())
def test_document_decoder_raises_only_protocol_errors(document: Any, data: st.DataObject) -> None:
    encoded = bytearray(codec.encode_document(document))
    decoded = codec.decode_document(bytes(encoded))
    assert decoded == document
    for _ in range(data.draw(st.integers(1, 6))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    with contextlib.suppress(RemoteProtocolError):
        codec.decode_document(bytes(encoded[:cut]))


@FUZZ
@given(st.binary(max_size=2000))
def test_document_decoder_on_random_bytes(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        codec.decode_document(data)
