"""The hop side of circuits, sans-IO: what a relay (and a GPU node, the last hop) does with cells.

A hop answers CREATE with CREATED (Noise NK against its onion key), peels its layer off forward cells and
adds it to backward cells, extends a circuit when the client asks (EXTEND -> CREATE on the next link ->
CREATED -> EXTENDED), serves streams for its own services (a GPU node's "inference"), and tears circuits down
with DESTROY in both directions. It never sees plaintext meant for another hop.

What a circuit accepts in each of its states is tp_net.protocol.hop_states' transition table; this module
carries out the table's actions and keeps the links and circuits. The local services' streams are
tp_net.protocol.hop_streams (`HopCore.streams`). The IO layer calls the methods below and carries out the
outputs (tp_net.protocol.hop_outputs).
"""

from __future__ import annotations

import enum
import itertools
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from tp_crypto.errors import RemoteProtocolError
from tp_crypto.onion import HopKey, HopLayer, answer_hop_handshake, requested_hop_key
from tp_net.protocol import codec
from tp_net.protocol.cells import (
    DIALER_ID_BIT,
    RELAY_EARLY_CELLS_PER_CIRCUIT_MAX,
    RELAY_PAYLOAD_BYTES,
    CellCommand,
    DestroyReason,
    destroy_cell,
    destroy_reason,
    handshake_cell,
    handshake_message,
    new_circuit_id,
    relay_cell,
)
from tp_net.protocol.extend_policy import ExtendPolicy
from tp_net.protocol.frames import Cell, Frame
from tp_net.protocol.hop_outputs import CircuitRef, ConnectTo, HopOutput, LinkId, SendCell
from tp_net.protocol.hop_states import HopAction, HopCircuit, HopEvent, HopState, cell_event
from tp_net.protocol.hop_streams import HopStreams, originate
from tp_net.protocol.rate_limits import CreateLimiter, IsListed, TokenBucket
from tp_net.protocol.relay_messages import (
    RelayBegin,
    RelayData,
    RelayDrop,
    RelayEnd,
    RelayExtend,
    RelayExtended,
    RelaySendme,
)

CIRCUITS_PER_LINK_MAX = 1024
# A CREATE (or an EXTEND's CREATE) on a link whose table is full takes the place of the link's circuit idle
# the longest, if that one has done no work for this long (work: see `_worked`; DROPs are not work). Keeping
# a full table of circuits younger than this takes CIRCUITS_PER_LINK_MAX / 4 s = 256 new circuits a second,
# more than one client's CREATE bucket (tp_net.protocol.rate_limits) allows at its entry.
CIRCUIT_EVICT_IDLE_MIN_S = 4.0
WORK_RESOLUTION_S = 0.25  # a circuit's last work is recorded this coarsely (a circuit's cells cost less)
PENDING_EXTENDS_MAX = 128  # circuits extending at once, all links together
PENDING_EXTENDS_PER_LINK_MAX = 32  # of those, circuits that came in on one link (one client cannot take all)
EXTEND_TIMEOUT_S = 10.0
EVICTION_LOOKS_MAX = 4  # circuits with open streams passed over (and counted as working) per eviction
CIRCUIT_IDLE_TIMEOUT_S = 600.0
# DROP (padding) cells are not flow-controlled, so each hop limits those addressed to it, per circuit: a
# client keeps an idle circuit alive with one a minute; a circuit sending past the burst loses the circuit.
DROP_CELLS_PER_CIRCUIT_RATE_PER_S = 1.0
DROP_CELLS_PER_CIRCUIT_BURST = 32

_STREAM_MESSAGES = (RelayBegin, RelayData, RelayEnd, RelaySendme)


class Side(enum.Enum):
    TOWARDS_CLIENT = "prev"
    AWAY_FROM_CLIENT = "next"


@dataclass(eq=False)
class _Link:
    peer_id: bytes | None
    we_dialed: bool
    circuits: dict[int, tuple[HopCircuit, Side]] = field(default_factory=dict)
    # The same circuits by their last work, the one idle the longest first (`_worked` moves one to the end):
    # the eviction candidate is found in O(1), never by a pass over a full table.
    by_work: OrderedDict[int, HopCircuit] = field(default_factory=OrderedDict)


@dataclass(frozen=True)
class _PendingConnect:
    circuit: HopCircuit
    handshake: bytes


class HopCore:
    """All circuits through one relay or GPU node."""

    def __init__(
        self,
        onion_keys: Sequence[bytes],
        *,
        rng: random.Random,
        can_extend: bool,
        services: Iterable[str] = (),
        identity_key: bytes | None = None,
        extend_policy: ExtendPolicy | None = None,
        is_listed: IsListed | None = None,
        observe: Callable[[bytes], None] | None = None,
    ) -> None:
        """`onion_keys`: private onion keys, newest first (older ones still answer during rotation).
        `identity_key`: the X25519 private key of the node's identity, which answers bootstrap
        handshakes (HopKey.IDENTITY) from clients that have no directory yet.
        `extend_policy`: where EXTEND may dial (tp-relay always has one); None dials the client's address
        as given (in-memory networks and the simulator, whose addresses are not ws:// URLs).
        `is_listed`: whether a node id is in the hop's current directory (the CREATE tier of its links, see
        tp_net.protocol.rate_limits); None when the hop has no directory (every proven node id is then a
        peer). `observe`: called with every RELAY body this hop holds (forward: its layer removed; backward:
        as received), for plaintext checks in tests and the simulator."""
        self.onion_keys = list(onion_keys)
        self.observe = observe
        self._identity_key = identity_key
        self._rng = rng
        self._can_extend = can_extend
        self.extend_policy = extend_policy
        self._links: dict[LinkId, _Link] = {}
        # The links of each proven node id, oldest first: an EXTEND finds its next hop without a pass over
        # every link (a relay may hold LINKS_MAX of them, tp_net.protocol.link_limits).
        self._peer_links: dict[bytes, list[LinkId]] = {}
        self._circuits: dict[CircuitRef, HopCircuit] = {}
        self.streams = HopStreams(self._circuits, frozenset(services))
        self._pending: dict[int, _PendingConnect] = {}
        # Circuits extending now (extend_started set), by the link they came in on: the pending-extend limits
        # read these counts at every EXTEND, which must not cost a pass over every circuit of a busy relay.
        self._extending: Counter[LinkId] = Counter()
        self._request_ids = itertools.count(1)
        self._creates = CreateLimiter(is_listed)

    # --- links --------------------------------------------------------------------------------

    def link_up(
        self, link: LinkId, peer_id: bytes | None, *, we_dialed: bool, peer_host: str | None = None
    ) -> None:
        """`peer_host`: the peer's source address, whose client links share a CREATE bucket."""
        self._forget_peer_link(self._links.get(link), link)
        self._links[link] = _Link(peer_id, we_dialed)
        if peer_id is not None:
            self._peer_links.setdefault(peer_id, []).append(link)
        self._creates.link_up(link, peer_id, peer_host)

    def link_down(self, link: LinkId) -> list[HopOutput]:
        """A link closed: every circuit through it ends, and the other side hears DESTROY."""
        info = self._links.pop(link, None)
        if info is None:
            return []
        self._forget_peer_link(info, link)
        self._creates.link_down(link)
        outputs: list[HopOutput] = []
        for circuit, _side in list(info.circuits.values()):
            outputs += self._teardown(circuit, DestroyReason.LINK_CLOSED)
        return outputs

    def link_to(self, node_id: bytes) -> LinkId | None:
        """A link whose peer proved `node_id` (the oldest), if any."""
        links = self._peer_links.get(node_id)
        return links[0] if links else None

    def _forget_peer_link(self, info: _Link | None, link: LinkId) -> None:
        if info is None or info.peer_id is None:
            return
        links = self._peer_links[info.peer_id]
        links.remove(link)
        if not links:
            del self._peer_links[info.peer_id]

    def peer_of(self, link: LinkId) -> bytes | None:
        """The node id the peer on `link` proved (None for an anonymous client or an unknown link)."""
        info = self._links.get(link)
        return info.peer_id if info else None

    def peer_listed(self, link: LinkId) -> bool:
        """Whether the peer on `link` is a relay or node the hop's directory lists (the peer CREATE tier)."""
        info = self._links.get(link)
        return info is not None and self._creates.listed(info.peer_id)

    def peers(self) -> list[bytes | None]:
        """The proven node id of the peer on each link (None: an anonymous client)."""
        return [info.peer_id for info in self._links.values()]

    @property
    def circuit_count(self) -> int:
        return len(self._circuits)

    def state_of(self, ref: CircuitRef) -> HopState | None:
        """The state of the circuit `ref` names (None once it is gone)."""
        circuit = self._circuits.get(ref)
        return circuit.state if circuit is not None else None

    def circuits_on(self, link: LinkId) -> int:
        info = self._links.get(link)
        return len(info.circuits) if info else 0

    # --- cells --------------------------------------------------------------------------------

    def receive_cell(self, link: LinkId, cell: Cell, now: float) -> list[HopOutput]:
        info = self._links.get(link)
        if info is None:
            return []
        entry = info.circuits.get(cell.circuit_id)
        if entry is None:
            if cell.command == CellCommand.CREATE:
                return self._create(link, info, cell, now)
            return []  # cells in flight for a circuit that is already gone
        circuit, side = entry
        try:
            event = cell_event(cell.command, from_client=side is Side.TOWARDS_CLIENT)
            action = circuit.step(event)  # a CREATE for a circuit id in use is refused here
            circuit.last_active = now
            return self._on_cell(circuit, action, side, cell, now)
        except RemoteProtocolError:
            return self._teardown(circuit, DestroyReason.PROTOCOL, notify_both=True)

    def connect_result(self, request_id: int, link: LinkId | None) -> list[HopOutput]:
        """The IO layer's answer to ConnectTo: the link to use, or None when the dial failed."""
        pending = self._pending.pop(request_id, None)
        if pending is None or self._circuits.get(pending.circuit.prev) is not pending.circuit:
            return []
        if link is None or link not in self._links:
            pending.circuit.step(HopEvent.LINK_FAILED)
            return self._teardown(pending.circuit, DestroyReason.CONNECT_FAILED, notify_both=True)
        return self._linked(pending.circuit, link, pending.handshake)

    def destroy_circuit(self, link: LinkId, circuit_id: int, reason: DestroyReason) -> list[HopOutput]:
        """Tear down the circuit that uses (link, circuit_id) on either side (e.g. a buffer limit hit)."""
        info = self._links.get(link)
        entry = info.circuits.get(circuit_id) if info else None
        return self._teardown(entry[0], reason, notify_both=True) if entry else []

    def expire(self, now: float) -> list[HopOutput]:
        """Tear down circuits idle too long or stuck extending."""
        outputs: list[HopOutput] = []
        for circuit in list(self._circuits.values()):
            idle = now - circuit.last_active > CIRCUIT_IDLE_TIMEOUT_S
            stuck = circuit.extend_started is not None and now - circuit.extend_started > EXTEND_TIMEOUT_S
            if idle or stuck:
                outputs += self._teardown(circuit, DestroyReason.TIMEOUT, notify_both=True)
        return outputs

    def send_drop(self, ref: CircuitRef) -> list[HopOutput]:
        """A DROP (dummy) cell from this hop to the client: relays cannot tell it from data."""
        circuit = self._circuits.get(ref)
        return self._originate(circuit, RelayDrop()) if circuit is not None else []

    # --- internals ----------------------------------------------------------------------------

    def _create(self, link: LinkId, info: _Link, cell: Cell, now: float) -> list[HopOutput]:
        circuit_id = cell.circuit_id
        peer_is_dialer = not info.we_dialed
        if bool(circuit_id & DIALER_ID_BIT) != peer_is_dialer:
            return [SendCell(link, destroy_cell(circuit_id, DestroyReason.PROTOCOL))]
        full = len(info.circuits) >= CIRCUITS_PER_LINK_MAX
        victim = self._eviction_candidate(info, now) if full else None
        if (full and victim is None) or not self._creates.take(link, now):
            return [SendCell(link, destroy_cell(circuit_id, DestroyReason.RESOURCE_LIMIT))]
        answer = self._answer_handshake(cell)
        if answer is None:
            return [SendCell(link, destroy_cell(circuit_id, DestroyReason.HANDSHAKE_FAILED))]
        outputs = self._teardown(victim, DestroyReason.RESOURCE_LIMIT) if victim is not None else []
        reply, layer = answer
        drops = TokenBucket(DROP_CELLS_PER_CIRCUIT_RATE_PER_S, DROP_CELLS_PER_CIRCUIT_BURST)
        circuit = HopCircuit(
            prev=(link, circuit_id), layer=layer, last_active=now, last_work=now, drops=drops
        )
        info.circuits[circuit_id] = (circuit, Side.TOWARDS_CLIENT)
        info.by_work[circuit_id] = circuit
        self._circuits[circuit.prev] = circuit
        return [*outputs, SendCell(link, handshake_cell(circuit_id, CellCommand.CREATED, reply))]

    def _eviction_candidate(self, info: _Link, now: float) -> HopCircuit | None:
        """The circuit a new one on the full link `info` may take the place of: the one idle the longest, if
        it has done no work for CIRCUIT_EVICT_IDLE_MIN_S. A circuit with open streams at this hop is working
        (a node's answer may take a while between the client's cells): it counts as worked now and the next
        is looked at, at most EVICTION_LOOKS_MAX of them, so a CREATE never costs a pass over the table."""
        for _ in range(EVICTION_LOOKS_MAX):
            if not info.by_work:
                return None
            circuit = next(iter(info.by_work.values()))
            if now - circuit.last_work < CIRCUIT_EVICT_IDLE_MIN_S:
                return None
            if circuit.edge is None or not circuit.edge.stream_count:
                return circuit
            self._worked(circuit, now)
        return None

    def _worked(self, circuit: HopCircuit, now: float) -> None:
        """The circuit did work: a stream message for this hop, a cell back from the next hop (a relay cannot
        read what it passes forward, which may be a later hop's DROP), or an extend. DROP and padding cells,
        which a stranger sends for free, are not work: they keep a circuit from the idle timeout, not from
        eviction. Recorded at most every WORK_RESOLUTION_S: a relay passes most cells back within that."""
        if now - circuit.last_work < WORK_RESOLUTION_S:
            return
        self._record_work(circuit, now)

    def _record_work(self, circuit: HopCircuit, now: float) -> None:
        """`now` is the circuit's last work: it moves to the end of its links' idle order."""
        circuit.last_work = now
        for ref in (circuit.prev, circuit.next):
            if ref is not None:
                info = self._links.get(ref[0])
                if info is not None and ref[1] in info.by_work:
                    info.by_work.move_to_end(ref[1])

    def _answer_handshake(self, cell: Cell) -> tuple[bytes, HopLayer] | None:
        try:
            message = handshake_message(cell)
        except RemoteProtocolError:
            return None
        try:
            kind = requested_hop_key(message)
        except RemoteProtocolError:
            return None
        keys = self.onion_keys if kind is HopKey.ONION else [self._identity_key] if self._identity_key else []
        for key in keys:
            try:
                return answer_hop_handshake(key, message)
            except RemoteProtocolError:
                continue
        return None

    def _on_cell(
        self, circuit: HopCircuit, action: HopAction, side: Side, cell: Cell, now: float
    ) -> list[HopOutput]:
        """Carry out the table's action for a cell of an existing circuit."""
        if action is HopAction.DESTROYED:
            return self._teardown(circuit, destroy_reason(cell), notify_both=False, skip=side)
        if action is HopAction.SEND_EXTENDED:
            extended = RelayExtended(handshake_message(cell))
            extended.check()  # a reply too long for a relay message is the next hop's fault
            self._extend_ended(circuit)
            self._worked(circuit, now)
            return self._originate(circuit, extended)
        if action is HopAction.PASS_BACKWARD:
            self._worked(circuit, now)
            if self.observe is not None:
                self.observe(cell.body)
            body = circuit.layer.backward.wrap(cell.body)
            return [SendCell(circuit.prev[0], relay_cell(circuit.prev[1], body))]
        assert action is HopAction.PEEL, action  # the table's only other action for a cell
        return self._peel(circuit, cell, now)

    def _peel(self, circuit: HopCircuit, cell: Cell, now: float) -> list[HopOutput]:
        """A forward cell: this hop's layer comes off; the body is for this hop or goes on."""
        early = self._count_early(circuit, cell)
        body = circuit.layer.forward.unwrap(cell.body)
        if self.observe is not None:
            self.observe(body)
        payload = circuit.layer.forward.open(body)
        if payload is not None:
            outputs: list[HopOutput] = []
            for message in codec.decode_relay_messages(payload):
                if circuit.state is HopState.CLOSED:
                    break  # an earlier message in the cell ended the circuit
                outputs += self._handle_message(circuit, message, now, early=early)
            return outputs
        if circuit.step(HopEvent.NOT_FOR_THIS_HOP) is HopAction.PASS_FORWARD:
            assert circuit.next is not None  # RELAYING has a next hop
            return [SendCell(circuit.next[0], relay_cell(circuit.next[1], body, early=early))]
        # The end of the circuit and nobody's cell: it was modified (or replayed) on the way.
        return self._teardown(circuit, DestroyReason.INTEGRITY, notify_both=True)

    @staticmethod
    def _count_early(circuit: HopCircuit, cell: Cell) -> bool:
        """Whether a cell from the client side is RELAY_EARLY; each counts against the circuit's extend
        budget (its length)."""
        early = cell.command == CellCommand.RELAY_EARLY
        if early:
            circuit.early_cells += 1
            if circuit.early_cells > RELAY_EARLY_CELLS_PER_CIRCUIT_MAX:
                raise RemoteProtocolError("more RELAY_EARLY cells than a circuit may carry")
        return early

    def _handle_message(
        self, circuit: HopCircuit, message: Frame, now: float, *, early: bool = False
    ) -> list[HopOutput]:
        action = circuit.step(_message_event(message, early=early))
        if action is HopAction.TAKE_DROP:
            if not circuit.drops.take(now):
                raise RemoteProtocolError("DROP cells beyond the circuit's budget")
            return []
        if action is HopAction.START_EXTEND:
            assert isinstance(message, RelayExtend)
            return self._extend(circuit, message, now)
        assert action is HopAction.SERVE_STREAM, action  # the table's only other action for a message
        self._worked(circuit, now)
        return self.streams.receive(circuit, message)

    def _extend(self, circuit: HopCircuit, message: RelayExtend, now: float) -> list[HopOutput]:
        """The circuit is DIALING now (the table moved it): check, then find or dial the next hop."""
        if not self._can_extend:
            raise RemoteProtocolError("EXTEND not allowed on this circuit")
        if message.node_id == self._links[circuit.prev[0]].peer_id:
            raise RemoteProtocolError("EXTEND back to the previous hop")
        on_link = self._extending[circuit.prev[0]]  # the one asking is not counted yet
        if on_link >= PENDING_EXTENDS_PER_LINK_MAX or self._extending.total() >= PENDING_EXTENDS_MAX:
            return self._teardown(circuit, DestroyReason.RESOURCE_LIMIT, notify_both=True)
        circuit.extend_started = now
        self._extending[circuit.prev[0]] += 1
        link = self.link_to(message.node_id)
        if link is not None:  # a linked node (a GPU node on its own link) or relay: no dial
            return self._linked(circuit, link, message.handshake)
        address = message.address
        if self.extend_policy is not None:
            address = self.extend_policy.dial_address(message.node_id, address)
        if address is None:
            circuit.step(HopEvent.LINK_FAILED)
            return self._teardown(circuit, DestroyReason.CONNECT_FAILED, notify_both=True)
        request_id = next(self._request_ids)
        self._pending[request_id] = _PendingConnect(circuit, message.handshake)
        return [ConnectTo(request_id, message.node_id, address)]

    def _extend_ended(self, circuit: HopCircuit) -> None:
        """The circuit no longer extends (extended, or gone): it leaves the pending-extend counts."""
        if circuit.extend_started is None:
            return
        circuit.extend_started = None
        link = circuit.prev[0]
        self._extending[link] -= 1
        if not self._extending[link]:
            del self._extending[link]

    def _linked(self, circuit: HopCircuit, link: LinkId, handshake: bytes) -> list[HopOutput]:
        """A link to the next hop is up: CREATE goes on it (unless the link has no circuit id left)."""
        info = self._links[link]
        asked = (
            circuit.extend_started
        )  # when the client asked: the time of its last work (and of now, or less)
        assert asked is not None  # DIALING
        outputs: list[HopOutput] = []
        if len(info.circuits) >= CIRCUITS_PER_LINK_MAX:
            victim = self._eviction_candidate(info, asked)
            if victim is None:
                return self._teardown(circuit, DestroyReason.RESOURCE_LIMIT, notify_both=True)
            outputs = self._teardown(victim, DestroyReason.RESOURCE_LIMIT)
        circuit.step(HopEvent.LINKED)
        circuit_id = new_circuit_id(self._rng, link_dialer=info.we_dialed, in_use=info.circuits)
        info.circuits[circuit_id] = (circuit, Side.AWAY_FROM_CLIENT)
        info.by_work[circuit_id] = circuit
        circuit.next = (link, circuit_id)
        self._worked(circuit, asked)
        return [*outputs, SendCell(link, handshake_cell(circuit_id, CellCommand.CREATE, handshake))]

    def _originate(self, circuit: HopCircuit, message: Frame) -> list[HopOutput]:
        """A message from this hop to the client."""
        return originate(circuit, codec.encode_relay_payload(message, RELAY_PAYLOAD_BYTES))

    def _teardown(
        self,
        circuit: HopCircuit,
        reason: DestroyReason,
        *,
        notify_both: bool = True,
        skip: Side | None = None,
    ) -> list[HopOutput]:
        """Forget the circuit; DESTROY goes to each side except `skip`; local streams end."""
        circuit.state = HopState.CLOSED
        self._extend_ended(circuit)
        if self._circuits.pop(circuit.prev, None) is None:
            return []
        outputs: list[HopOutput] = []
        for side, ref in ((Side.TOWARDS_CLIENT, circuit.prev), (Side.AWAY_FROM_CLIENT, circuit.next)):
            if ref is None:
                continue
            link = self._links.get(ref[0])
            if link is not None:
                link.circuits.pop(ref[1], None)
                link.by_work.pop(ref[1], None)
                if notify_both or side is not skip:
                    outputs.append(SendCell(ref[0], destroy_cell(ref[1], reason)))
        return outputs + self.streams.close(circuit)


def _message_event(message: Frame, *, early: bool) -> HopEvent:
    """The event a relay message for this hop is."""
    if isinstance(message, RelayDrop):
        return HopEvent.DROP
    if isinstance(message, RelayExtend):
        return HopEvent.EXTEND if early else HopEvent.EXTEND_NOT_EARLY
    if isinstance(message, _STREAM_MESSAGES):
        return HopEvent.STREAM
    return HopEvent.OTHER_MESSAGE
