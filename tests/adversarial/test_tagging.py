"""Tagging attack (issue 18 item 5): two colluding relays mark a cell and unmark it further down the path.

With XOR (stream cipher) layers a guard could flip a bit of a forward cell and the node's home relay flip
the same bit back: the node got the exact cell the client sent, so circuits through both colluders lived and
all others died, a confirmation that the two sit on one circuit (backward the same, home relay flips, guard
flips back). Each layer is now a tweakable wide-block permutation of the whole body (tp_crypto.wide_block):
the next hop that adds or removes a layer turns a changed cell into noise that no later relay can repair,
the hop the cell is for fails its tag and the circuit ends with DESTROY(INTEGRITY), and the relays between
see nothing different.

Mutations tried: `OnionDirection.wrap`/`unwrap` as the old XOR keystream (a ChaCha20 `update`): the
colluder tests fail (the request and the answer arrive; the node's plaintext is the original), as they do
on main's code (the relay-runtime pair: DID NOT RAISE); the wide-block hash rounds made identities
(`_Hash.mixed` returning `left`): the marks in the payload survive and the middle relay sees the clear
header.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from tests.tp_net.circuit_harness import CircuitHandle, Delivery, Wire
from tests.tp_node.test_relay_network import TamperingRelay, a_request_the_tampering_ends
from tp_crypto.identity import Identity
from tp_crypto.onion import ONION_HEADER_BYTES, HopLayer, layer_from_secrets
from tp_net.protocol.cells import RELAY_PAYLOAD_BYTES, CellCommand, DestroyReason
from tp_net.protocol.circuit_client import CircuitClosed
from tp_net.protocol.frames import CELL_BODY_BYTES, Cell
from tp_net.protocol.streams import StreamData
from tp_net.trio.transport_memory import MemoryNetwork
from tp_node.engine import FakeEngine
from tp_node.relay import Relay
from tp_node.testing.memory_network import in_process_network

# Where the colluders mark: recognized bytes, tag, first payload byte, deep in the payload, the last bit.
BITS = [0, 2 * 8 + 3, ONION_HEADER_BYTES * 8, 500 * 8 + 1, CELL_BODY_BYTES * 8 - 1]
GUARD, MIDDLE, HOME, NODE, CLIENT = "r0", "r1", "r2", "node", "client"
PROMPT = b"a prompt the colluders never see " * 40
ANSWER = b"an answer the colluders never see " * 40


def flip(body: bytes, bit: int) -> bytes:
    out = bytearray(body)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def colluders(bit: int, *links: tuple[str, str]) -> Callable[[Delivery], list[Cell]]:
    """A tap: the first RELAY cell on each of `links` (src, dst) gets `bit` flipped, once per link."""
    pending = set(links)

    def tap(delivery: Delivery) -> list[Cell]:
        link = (delivery.src, delivery.dst)
        if link not in pending or delivery.cell.command != CellCommand.RELAY:
            return [delivery.cell]
        pending.discard(link)
        cell = delivery.cell
        return [Cell(cell.circuit_id, cell.command, flip(cell.body, bit))]

    return tap


def circuit(seed: int) -> tuple[Wire, CircuitHandle]:
    """Client -> guard r0 -> middle r1 -> home relay r2 -> GPU node."""
    wire = Wire(seed)
    handle = wire.open_circuit(wire.add_path(3))
    assert handle.built
    return wire, handle


def send_prompt(wire: Wire, handle: CircuitHandle) -> int:
    edge = handle.circuit.edge
    stream = edge.open_stream("inference")
    edge.send(stream, PROMPT)
    edge.end(stream)
    wire.run()
    return stream


def node_heard(wire: Wire) -> bytes:
    return b"".join(event.data for event in wire.hops[NODE].stream_events() if isinstance(event, StreamData))


def assert_every_hop_dropped_it(wire: Wire) -> None:
    for hop in wire.hops.values():
        assert hop.core.circuit_count == 0, hop.name


# --- (a) the colluders' mark does not survive: the hop the cell is for destroys the circuit ----------------


def test_control_an_untouched_circuit_carries_the_prompt_and_the_answer() -> None:
    wire, handle = circuit(seed=1)
    stream = send_prompt(wire, handle)
    assert node_heard(wire) == PROMPT
    (ref,) = wire.hops[NODE].refs()
    wire.service_send(NODE, ref, stream, ANSWER)
    wire.run()
    assert handle.received(stream) == ANSWER
    assert handle.closed == []


@pytest.mark.parametrize("bit", BITS)
def test_guard_marks_and_home_relay_unmarks_forward_the_node_destroys_integrity(bit: int) -> None:
    wire, handle = circuit(seed=bit)
    # The guard flips a bit of what it sends on; the home relay flips it back before the node.
    wire.tap(colluders(bit, (GUARD, MIDDLE), (HOME, NODE)))
    send_prompt(wire, handle)
    assert handle.closed == [CircuitClosed(DestroyReason.INTEGRITY)]
    assert node_heard(wire) == b""
    assert_every_hop_dropped_it(wire)


@pytest.mark.parametrize("bit", BITS)
def test_home_relay_marks_and_guard_unmarks_backward_the_client_destroys_integrity(bit: int) -> None:
    wire, handle = circuit(seed=100 + bit)
    stream = send_prompt(wire, handle)
    assert node_heard(wire) == PROMPT
    (ref,) = wire.hops[NODE].refs()
    # The home relay flips a bit of the node's answer; the guard flips it back before the client.
    wire.tap(colluders(bit, (HOME, MIDDLE), (GUARD, CLIENT)))
    wire.service_send(NODE, ref, stream, ANSWER)
    wire.run()
    assert handle.closed == [CircuitClosed(DestroyReason.INTEGRITY)]
    assert handle.received(stream) == b""
    assert_every_hop_dropped_it(wire)


@pytest.mark.parametrize("direction", ["forward", "backward"])
async def test_colluding_relay_processes_mark_and_unmark_and_the_circuit_dies(direction: str) -> None:
    """The same pair in the real relay and node code (trio runtimes, links, the in-memory transport): the
    guard and the home relay each flip the same bit of the same request (or answer) cell."""
    colluders_: dict[int, TamperingRelay] = {}

    def make_relay(
        index: int, identity: Identity, keys: list[bytes], net: MemoryNetwork, rng: random.Random
    ) -> Relay:
        if index not in (0, 2):
            return Relay(identity, keys, dialer=net.dialer(), rng=rng)
        colluders_[index] = TamperingRelay(identity, keys, dialer=net.dialer(), rng=rng)
        return colluders_[index]

    engine = FakeEngine()
    async with in_process_network(make_relay=make_relay, engine=engine) as net:
        hops = net.path()
        for position, relay in colluders_.items():
            relay.bit = 500 * 8 + 1
            if direction == "forward":  # the request's first cell (EXTENDs went in RELAY_EARLY cells)
                relay.victim_peer, relay.nth = hops[position + 1].node_id, 1
            else:  # the node's second cell, after the EXTENDEDs each relays back
                relay.victim_peer = None if position == 0 else hops[position - 1].node_id
                relay.nth = 3 - position + 2
        await a_request_the_tampering_ends(net, engine)
        assert all(relay.sent >= relay.nth for relay in colluders_.values())  # both marks were made


# --- (b) nobody learns anything from the cell's content ------------------------------------------------


def twin_layers(hops: int, seed: int) -> tuple[list[HopLayer], list[HopLayer], list[HopLayer]]:
    """Client layers and two identical sets of hop layers (to replay one circuit tagged and untagged)."""
    rng = random.Random(seed)
    secrets = [(rng.randbytes(64), rng.randbytes(64)) for _ in range(hops)]

    def layers() -> list[HopLayer]:
        return [layer_from_secrets(forward, backward) for forward, backward in secrets]

    return layers(), layers(), layers()


def differing_bits(a: bytes, b: bytes) -> int:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


@pytest.mark.parametrize("bit", BITS)
def test_a_colluding_node_sees_noise_and_cannot_undo_the_mark(bit: int) -> None:
    """The node (the hop the cell is for) colludes too: what it unwraps is unrelated to the true cell in
    about half of its bits, so flipping the guard's bit back (or any one bit) never makes the tag verify."""
    client, honest, tagged = twin_layers(4, seed=bit)
    payload = random.Random(bit).randbytes(RELAY_PAYLOAD_BYTES)
    body = client[3].forward.seal(payload)
    for layer in reversed(client):
        body = layer.forward.wrap(body)
    plain, marked = body, body
    for index in range(4):
        plain = honest[index].forward.unwrap(plain)
        marked = tagged[index].forward.unwrap(marked)
        if index == 0:
            marked = flip(marked, bit)  # the guard marks what it sends on
        if index == 2:
            marked = flip(marked, bit)  # the home relay unmarks what it sends on
        if index < 3:
            assert honest[index].forward.open(plain) is None  # for a later hop: forwarded, as the marked one
    assert honest[3].forward.open(plain) == payload
    assert 0.40 < differing_bits(plain, marked) / (CELL_BODY_BYTES * 8) < 0.60
    for guess in (bit, *random.Random(bit).sample(range(CELL_BODY_BYTES * 8), 32)):
        assert tagged[3].forward.open(flip(marked, guess)) is None
    assert tagged[3].forward.open(marked) is None


def bit_share(bodies: list[bytes], bit: int) -> float:
    return sum((body[bit // 8] >> (bit % 8)) & 1 for body in bodies) / len(bodies)


def test_a_middle_relay_cannot_tell_marked_cells_from_others() -> None:
    """The middle relay removes its layer from marked and unmarked cells alike: neither opens for it, and
    the bytes it sees pass the same simple statistics (the marked bit, all bits, byte values)."""
    cells = 400
    client, hops, _ = twin_layers(3, seed=7)
    rng = random.Random(7)
    seen: dict[bool, list[bytes]] = {False: [], True: []}
    for number in range(2 * cells):
        marked = number % 2 == 1
        body = client[2].forward.seal(rng.randbytes(RELAY_PAYLOAD_BYTES))
        for layer in reversed(client):
            body = layer.forward.wrap(body)
        body = hops[0].forward.unwrap(body)
        if marked:
            body = flip(body, BITS[3])  # the guard marks every other cell
        at_middle = hops[1].forward.unwrap(body)
        assert hops[1].forward.open(at_middle) is None
        seen[marked].append(at_middle)
        hops[2].forward.unwrap(at_middle)  # the last hop's tweak moves on as in a real circuit
    sigma = (0.25 / cells) ** 0.5
    for bodies in seen.values():
        for bit in (BITS[3], 0, 8 * 100 + 5):
            assert abs(bit_share(bodies, bit) - 0.5) < 4 * sigma, bit
        ones = sum(int.from_bytes(body, "big").bit_count() for body in bodies)
        total = cells * CELL_BODY_BYTES * 8
        assert abs(ones / total - 0.5) < 4 * (0.25 / total) ** 0.5
        counts = [0] * 256
        for body in bodies:
            for byte in body:
                counts[byte] += 1
        expected = cells * CELL_BODY_BYTES / 256
        chi_square = sum((count - expected) ** 2 / expected for count in counts)
        assert chi_square < 350  # 255 degrees of freedom: p < 1e-4 above 350
    assert abs(bit_share(seen[True], BITS[3]) - bit_share(seen[False], BITS[3])) < 6 * sigma
