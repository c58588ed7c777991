"""A deterministic in-memory wire for the sans-IO circuit cores (a fake network, not mocks).

`Wire` owns HopCores (relays, GPU nodes) and ClientCircuits, gives every link a global id, and carries out
what the cores ask for: a `SendCell` goes into the queue of its link towards the other end, a `ConnectTo`
is answered by making a link (`link_up` on both sides) and calling `connect_result`, a `ServiceEvent` is
recorded on its node. `run()` delivers queued cells, one at a time, until nothing moves. The next link to
deliver on is picked with the wire's seeded `random.Random` (cells stay in order on each link direction), so
one seed fixes the whole run.

Tests can intercept any cell with a tap: `wire.tap(fn)`; `fn(delivery)` returns the cells to deliver in its
place (the same cell, a modified one, none to drop it, two to duplicate it, a held one to reorder).
Every delivered cell is kept in `wire.trace` for invariant checks (privacy: no plaintext on any link).
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from tp_crypto.identity import Identity
from tp_crypto.noise import generate_keypair
from tp_crypto.noise_primitives import x25519_public
from tp_crypto.onion import HopHandshakeClient, HopLayer, answer_hop_handshake
from tp_net.protocol import codec
from tp_net.protocol.cells import (
    RELAY_PAYLOAD_BYTES,
    CellCommand,
    handshake_cell,
    handshake_message,
    new_circuit_id,
    relay_cell,
)
from tp_net.protocol.circuit_client import CircuitBuilt, CircuitClosed, CircuitEvent, ClientCircuit, HopInfo
from tp_net.protocol.circuit_hop import HopCore
from tp_net.protocol.frames import Cell, Frame
from tp_net.protocol.hop_outputs import CircuitRef, ConnectTo, HopOutput, SendCell, ServiceEvent
from tp_net.protocol.relay_messages import RelayExtend, RelayExtended
from tp_net.protocol.streams import EndReason, StreamData, StreamEnded, StreamEvent, StreamOpened

CLIENT = "client"
ConnectMode = Literal["auto", "fail", "hold"]


@dataclass(frozen=True)
class Delivery:
    """One cell on its way over `link` from `src` to `dst` (names of wire endpoints)."""

    link: int
    src: str
    dst: str
    cell: Cell


Tap = Callable[[Delivery], list[Cell]]


@dataclass(eq=False)
class HopNode:
    """A relay or GPU node on the wire: its keys, its HopCore and what its local service heard."""

    name: str
    identity: Identity
    onion_private: bytes
    onion_public: bytes
    core: HopCore
    address: str | None
    auto_consume: bool = True
    events: list[ServiceEvent] = field(default_factory=list)

    @property
    def node_id(self) -> bytes:
        return self.identity.node_id

    def info(self, *, onion_key: bytes | None = None) -> HopInfo:
        return HopInfo(self.node_id, onion_key or self.onion_public, self.address)

    def bootstrap_info(self) -> HopInfo:
        """What a client without a directory knows: the node id (its key answers) and the address."""
        return HopInfo(self.node_id, None, self.address)

    def stream_events(self, ref: CircuitRef | None = None) -> list[StreamEvent]:
        return [e.event for e in self.events if ref is None or e.circuit == ref]

    def refs(self) -> list[CircuitRef]:
        """Circuits (as this node names them) that its service heard of, in order of first event."""
        return list(dict.fromkeys(e.circuit for e in self.events))

    def received(self, ref: CircuitRef, stream_id: int) -> bytes:
        return b"".join(
            e.data for e in self.stream_events(ref) if isinstance(e, StreamData) and e.stream_id == stream_id
        )

    def ends(self, ref: CircuitRef, stream_id: int) -> list[int]:
        return [
            e.reason
            for e in self.stream_events(ref)
            if isinstance(e, StreamEnded) and e.stream_id == stream_id
        ]

    def opened(self, ref: CircuitRef | None = None) -> list[StreamOpened]:
        return [e for e in self.stream_events(ref) if isinstance(e, StreamOpened)]


@dataclass(eq=False)
class CircuitHandle:
    """A ClientCircuit on the wire, with every event it produced."""

    circuit: ClientCircuit
    link: int
    auto_consume: bool = True
    events: list[CircuitEvent] = field(default_factory=list)

    @property
    def built(self) -> bool:
        return any(isinstance(e, CircuitBuilt) for e in self.events)

    @property
    def closed(self) -> list[CircuitClosed]:
        return [e for e in self.events if isinstance(e, CircuitClosed)]

    def received(self, stream_id: int) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, StreamData) and e.stream_id == stream_id)

    def data_cells(self, stream_id: int) -> int:
        return sum(1 for e in self.events if isinstance(e, StreamData) and e.stream_id == stream_id)

    def ends(self, stream_id: int) -> list[int]:
        return [e.reason for e in self.events if isinstance(e, StreamEnded) and e.stream_id == stream_id]


class Wire:
    """The fake network. Endpoints are named; links have global ids; the client end is named CLIENT."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.hops: dict[str, HopNode] = {}
        self.links: dict[int, tuple[str, str]] = {}  # link id -> (dialer, listener)
        self.trace: list[Delivery] = []
        self.connect_mode: ConnectMode = "auto"
        self.connects: list[tuple[str, ConnectTo]] = []
        self.held_connects: list[tuple[str, ConnectTo]] = []
        self.in_flight_max = 0
        self._queues: dict[tuple[int, str], deque[Delivery]] = {}
        self._taps: list[Tap] = []
        self._client_circuits: dict[int, dict[int, CircuitHandle]] = {}
        self._next_link = 1

    # --- building the network -----------------------------------------------------------------

    def add_hop(
        self,
        name: str,
        *,
        can_extend: bool = True,
        services: Iterable[str] = (),
        address: str | None = "",
        extra_onion_keys: Sequence[bytes] = (),
        answers_bootstrap: bool = True,
    ) -> HopNode:
        """A relay (default) or a GPU node (`can_extend=False, services=(...), address=None`).
        `answers_bootstrap`: the hop answers handshakes made with its identity key (HopKey.IDENTITY)."""
        identity = Identity(self.rng.randbytes(32))
        onion_private = self.rng.randbytes(32)
        core = HopCore(
            [onion_private, *extra_onion_keys],
            rng=random.Random(self.rng.random()),
            can_extend=can_extend,
            services=services,
            identity_key=identity.x25519_private if answers_bootstrap else None,
        )
        node = HopNode(
            name,
            identity,
            onion_private,
            x25519_public(onion_private),
            core,
            f"mem://{name}" if address == "" else address,
        )
        self.hops[name] = node
        return node

    def add_path(self, relays: int, *, service: str = "inference") -> list[str]:
        """`relays` relays r0..r{n-1} linked in a chain, and a GPU node that dialed the last relay."""
        names = [f"r{i}" for i in range(relays)]
        for name in names:
            self.add_hop(name)
        for dialer, listener in itertools.pairwise(names):
            self.connect(dialer, listener)
        self.add_hop("node", can_extend=False, services=(service,), address=None)
        if names:
            self.connect("node", names[-1])
        return [*names, "node"]

    def connect(self, dialer: str, listener: str) -> int:
        """A link between two hops; each learns the other's proven node id."""
        link = self._new_link(dialer, listener)
        self.hops[dialer].core.link_up(link, self.hops[listener].node_id, we_dialed=True)
        self.hops[listener].core.link_up(link, self.hops[dialer].node_id, we_dialed=False)
        return link

    def client_link(self, guard: str) -> int:
        """A link from an anonymous client to `guard`."""
        link = self._new_link(CLIENT, guard)
        self.hops[guard].core.link_up(link, None, we_dialed=False)
        self._client_circuits[link] = {}
        return link

    def link_between(self, a: str, b: str) -> int:
        for link, ends in self.links.items():
            if set(ends) == {a, b}:
                return link
        raise KeyError(f"no link between {a} and {b}")

    def open_circuit(
        self,
        path: Sequence[str | HopInfo],
        *,
        link: int | None = None,
        circuit_id: int | None = None,
        run: bool = True,
    ) -> CircuitHandle:
        """Start building a client circuit along `path` (hop names, or HopInfos to lie about a hop)."""
        infos = [self.hops[hop].info() if isinstance(hop, str) else hop for hop in path]
        if link is None:
            guard = path[0] if isinstance(path[0], str) else self.hop_named(path[0].node_id).name
            link = self.client_link(guard)
        circuits = self._client_circuits[link]
        if circuit_id is None:
            circuit_id = new_circuit_id(self.rng, link_dialer=True, in_use=set(circuits))
        handle = CircuitHandle(ClientCircuit(infos, circuit_id), link)
        circuits[circuit_id] = handle
        if run:
            self.run()
        return handle

    def hop_named(self, node_id: bytes) -> HopNode:
        return next(node for node in self.hops.values() if node.node_id == node_id)

    # --- taps ---------------------------------------------------------------------------------

    def tap(self, fn: Tap) -> None:
        self._taps.append(fn)

    def clear_taps(self) -> None:
        self._taps.clear()

    # --- running ------------------------------------------------------------------------------

    def run(self, max_steps: int = 200_000) -> int:
        """Deliver cells until nothing is queued; returns how many were delivered."""
        steps = 0
        while True:
            self._flush_clients()
            keys = [key for key, queue in self._queues.items() if queue]
            if not keys:
                return steps
            if steps >= max_steps:
                raise AssertionError(f"the wire did not go quiet within {max_steps} cells")
            delivery = self._queues[self.rng.choice(keys)].popleft()
            steps += 1
            for cell in self._tapped(delivery):
                self._deliver(replace(delivery, cell=cell))

    def in_flight(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def advance(self, seconds: float) -> None:
        """Move time on and let every hop expire what timed out."""
        self.now += seconds
        for node in self.hops.values():
            self.route(node.name, node.core.expire(self.now))

    def cut(self, link: int) -> None:
        """The link closes: both ends hear it; cells still queued on it are lost."""
        ends = self.links.pop(link)
        for key in [key for key in self._queues if key[0] == link]:
            del self._queues[key]
        for end in ends:
            if end == CLIENT:
                for handle in self._client_circuits.pop(link).values():
                    handle.events += handle.circuit.link_lost()
            else:
                self.route(end, self.hops[end].core.link_down(link))

    def release_connects(self, link_for: Callable[[str, ConnectTo], int | None] | None = None) -> None:
        """Answer the ConnectTo requests held so far (by default as `auto` would)."""
        held, self.held_connects = self.held_connects, []
        for name, request in held:
            link = (link_for or self._auto_connect)(name, request)
            self.route(name, self.hops[name].core.connect_result(request.request_id, link))

    # --- the node-side application ------------------------------------------------------------

    def service_send(self, name: str, ref: CircuitRef, stream_id: int, data: bytes) -> None:
        self.route(name, self.hops[name].core.streams.send(ref, stream_id, data))

    def service_end(self, name: str, ref: CircuitRef, stream_id: int, reason: int = 0) -> None:
        self.route(name, self.hops[name].core.streams.end(ref, stream_id, EndReason(reason)))

    def service_consumed(self, name: str, ref: CircuitRef, stream_id: int, cells: int = 1) -> None:
        self.route(name, self.hops[name].core.streams.consumed(ref, stream_id, cells))

    def route(self, name: str, outputs: Iterable[HopOutput]) -> None:
        """Carry out what hop `name` asked for."""
        node = self.hops[name]
        consumed: list[tuple[CircuitRef, int]] = []
        for output in outputs:
            if isinstance(output, SendCell):
                self.send(name, output.link, output.cell)
            elif isinstance(output, ConnectTo):
                self._connect(name, output)
            else:
                node.events.append(output)
                if node.auto_consume and isinstance(output.event, StreamData):
                    consumed.append((output.circuit, output.event.stream_id))
        # Only after every output above is queued: cells are sealed in order, so they must go out in order.
        for ref, stream_id in consumed:
            self.route(name, node.core.streams.consumed(ref, stream_id, 1))

    def send(self, src: str, link: int, cell: Cell) -> None:
        """Queue a cell from endpoint `src` on `link` (dropped if the link is gone)."""
        ends = self.links.get(link)
        if ends is None:
            return
        assert src in ends, f"{src} sent on link {link}, which is not its own"
        cell.check()  # whatever a core sends is a well-formed cell of the one fixed size
        dst = ends[1] if ends[0] == src else ends[0]
        self._queues.setdefault((link, dst), deque()).append(Delivery(link, src, dst, cell))
        self.in_flight_max = max(self.in_flight_max, self.in_flight())

    # --- checks -------------------------------------------------------------------------------

    def cells_containing(self, needle: bytes) -> list[Delivery]:
        return [d for d in self.trace if needle in d.cell.body]

    def every_link_id(self) -> range:
        """Every link id ever given out (cut links included)."""
        return range(1, self._next_link)

    def circuit_total(self) -> int:
        return sum(node.core.circuit_count for node in self.hops.values())

    # --- internals ----------------------------------------------------------------------------

    def _new_link(self, dialer: str, listener: str) -> int:
        link = self._next_link
        self._next_link += 1
        self.links[link] = (dialer, listener)
        return link

    def _tapped(self, delivery: Delivery) -> list[Cell]:
        cells = [delivery.cell]
        for tap in self._taps:
            cells = [out for cell in cells for out in tap(replace(delivery, cell=cell))]
        return cells

    def _deliver(self, delivery: Delivery) -> None:
        if delivery.link not in self.links:
            return
        self.trace.append(delivery)
        if delivery.dst == CLIENT:
            handle = self._client_circuits[delivery.link].get(delivery.cell.circuit_id)
            if handle is None:
                return
            events = handle.circuit.receive_cell(delivery.cell)
            handle.events += events
            if handle.auto_consume:
                for event in events:
                    if isinstance(event, StreamData):
                        handle.circuit.edge.consumed(event.stream_id, 1)
            return
        core = self.hops[delivery.dst].core
        self.route(delivery.dst, core.receive_cell(delivery.link, delivery.cell, self.now))

    def _flush_clients(self) -> None:
        for link, circuits in self._client_circuits.items():
            for handle in circuits.values():
                for cell in handle.circuit.outgoing_cells():
                    self.send(CLIENT, link, cell)

    def _connect(self, name: str, request: ConnectTo) -> None:
        self.connects.append((name, request))
        if self.connect_mode == "hold":
            self.held_connects.append((name, request))
            return
        link = self._auto_connect(name, request) if self.connect_mode == "auto" else None
        self.route(name, self.hops[name].core.connect_result(request.request_id, link))

    def _auto_connect(self, name: str, request: ConnectTo) -> int | None:
        """Dial the hop at `request.address`; the link must prove `request.node_id`, as a real one would."""
        for target in self.hops.values():
            if target.address == request.address and target.node_id == request.node_id:
                return self.connect(name, target.name)
        return None


# --- a hand-driven path, for tests that need the raw layers ---------------------------------------


class ManualHops:
    """The hop side of a client circuit done by hand with the onion primitives (no HopCore).

    It answers a ClientCircuit's CREATE and EXTENDs as hops 0..n-1 would, and keeps each hop's layer, so
    a test can seal any payload from any hop to the client, or open what the client sends.
    """

    def __init__(self, onion_privates: Sequence[bytes]) -> None:
        self.onion_privates = list(onion_privates)
        self.layers: list[HopLayer] = []

    def answer_create(self, cell: Cell) -> Cell:
        reply, layer = answer_hop_handshake(self.onion_privates[0], handshake_message(cell))
        self.layers.append(layer)
        return handshake_cell(cell.circuit_id, CellCommand.CREATED, reply)

    def open_forward(self, cell: Cell) -> tuple[int, bytes | None]:
        """Peel as the hops would: (index of the hop that recognized it, payload) or (n, None)."""
        body = cell.body
        for index, layer in enumerate(self.layers):
            body = layer.forward.unwrap(body)
            payload = layer.forward.open(body)
            if payload is not None:
                return index, payload
        return len(self.layers), None

    def answer_extend(self, cell: Cell) -> Cell:
        """The client's EXTEND to the last hop, answered with EXTENDED from the new hop."""
        index, payload = self.open_forward(cell)
        assert payload is not None and index == len(self.layers) - 1
        extend = codec.decode_relay_payload(payload)
        assert isinstance(extend, RelayExtend)
        reply, layer = answer_hop_handshake(self.onion_privates[len(self.layers)], extend.handshake)
        cell_back = self.seal_back(cell.circuit_id, len(self.layers) - 1, RelayExtended(reply))
        self.layers.append(layer)
        return cell_back

    def seal_back_payload(self, circuit_id: int, hop_index: int, payload: bytes) -> Cell:
        """A backward cell whose payload (RELAY_PAYLOAD_BYTES) comes from hop `hop_index`."""
        body = self.layers[hop_index].backward.wrap(self.layers[hop_index].backward.seal(payload))
        for layer in reversed(self.layers[:hop_index]):
            body = layer.backward.wrap(body)
        return relay_cell(circuit_id, body)

    def seal_back(self, circuit_id: int, hop_index: int, message: Frame) -> Cell:
        return self.seal_back_payload(
            circuit_id, hop_index, codec.encode_relay_payload(message, RELAY_PAYLOAD_BYTES)
        )


def manual_build(
    hops: int, rng: random.Random, *, answered: int | None = None
) -> tuple[ClientCircuit, ManualHops, list[CircuitEvent]]:
    """A ClientCircuit of `hops` hops against ManualHops that answer the first `answered` (default all)."""
    privates = [rng.randbytes(32) for _ in range(hops)]
    infos = [HopInfo(rng.randbytes(32), x25519_public(p), f"mem://m{i}") for i, p in enumerate(privates)]
    client = ClientCircuit(infos, new_circuit_id(rng, link_dialer=True, in_use=set()))
    manual = ManualHops(privates)
    events: list[CircuitEvent] = []
    for index in range(hops if answered is None else answered):
        (cell,) = client.outgoing_cells()
        answer = manual.answer_create(cell) if index == 0 else manual.answer_extend(cell)
        events += client.receive_cell(answer)
    return client, manual, events


def client_layers(hops: int) -> tuple[list[HopLayer], list[HopLayer]]:
    """(client side, hop side) layers of `hops` fresh NK handshakes."""
    client_side: list[HopLayer] = []
    hop_side: list[HopLayer] = []
    for _ in range(hops):
        private, public = generate_keypair()
        handshake = HopHandshakeClient(public)
        reply, hop_layer = answer_hop_handshake(private, handshake.first_message())
        client_side.append(handshake.finish(reply))
        hop_side.append(hop_layer)
    return client_side, hop_side
