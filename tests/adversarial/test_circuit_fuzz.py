"""The circuit-level fuzzer: a hostile client drives arbitrary relay messages into live relays and a GPU node.

The real relay and node code run on the in-memory transport (tp_node.testing.memory_network). The attacker
builds a real circuit, then sends whatever hypothesis draws, sealed and layered for any hop of it: EXTEND to
any address and id, BEGIN/DATA/END/SENDME in any order on any stream, DROPs, garbage, honest and hostile
documents (deep, oversized, full of empty maps) to the inference service. The only acceptable outcomes:
 - no exception escapes a role (it would end the network's nursery and fail the example);
 - every cell the hops send back opens at one of the attacker's layers and decodes (a normal answer, an END
   with a reason, a DESTROY: a protocol error for that circuit, never a keystream out of step), and every
   whole request on a fresh stream gets its END or the circuit's DESTROY, never silence;
 - memory grows by at most MEMORY_PER_BYTE_SENT_MAX bytes per byte the attacker sent (flow-control level);
 - afterwards an honest request on a fresh circuit gets its full answer, and once both circuits are gone no
   hop keeps a circuit or a service request of theirs.

The three tests are three levels (stream, extend, flow control), so a failure says where to look.
Relays dial ws:// addresses with the real WebSocketDialer, but trio.open_tcp_stream is replaced by a fake
that runs trio's own address resolution (numeric hosts only, never DNS) and then a connection whose far side
has closed: the dialer's parsing and request line are real, no socket is opened.
`make fuzz` (TP_FUZZ_RANDOM=1, TP_FUZZ_EXAMPLES=...) explores further; tests/adversarial/notes-fuzz.md
records what it found.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tracemalloc
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tp_crypto.errors import LocalProtocolError, RemoteProtocolError
from tp_crypto.identity import Identity
from tp_crypto.onion import HopHandshakeClient
from tp_net.protocol import codec
from tp_net.protocol.cells import (
    RELAY_DATA_BYTES_MAX,
    RELAY_PAYLOAD_BYTES,
    CellCommand,
    DestroyReason,
    destroy_cell,
    destroy_reason,
)
from tp_net.protocol.circuit_client import ClientCircuit, HopInfo
from tp_net.protocol.frames import Cell, Frame
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.protocol.messages import encode_message
from tp_net.protocol.relay_messages import (
    STREAM_ID_MAX,
    RelayBegin,
    RelayData,
    RelayDrop,
    RelayEnd,
    RelayExtend,
    RelayExtended,
    RelaySendme,
)
from tp_net.protocol.traffic_shaping import RESPONSE_SHAPING_OFF
from tp_net.trio.client import Circuit, ClientLink
from tp_net.trio.link_pump import LinkPump
from tp_net.trio.transport import Channel, Dialer
from tp_net.trio.transport_memory import MemoryNetwork
from tp_net.trio.transport_ws import WebSocketDialer
from tp_node.engine import FakeEngine
from tp_node.relay import Relay
from tp_node.testing.memory_network import InProcessNetwork, in_process_network

EXAMPLES = int(os.environ.get("TP_FUZZ_EXAMPLES", "40"))
# A whole network per example: about 0.1 s (up to 3 s for the flow-control level, which sends up to 300 KB
# under tracemalloc, and gets an eighth of the examples); the deadline catches a hang.
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=30),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
EXAMPLE_TIMEOUT_S = 60.0
HONEST_REQUEST = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 6}
# Memory an example may add per byte the attacker sent, plus a fixed allowance (cells queued at the hops,
# crypto state, hypothesis' own bookkeeping). An honest request costs well under 8 bytes per byte.
MEMORY_PER_BYTE_SENT_MAX = 16
MEMORY_ALLOWANCE_BYTES = 4 * 1024 * 1024


# --- the fake socket layer under the real WebSocket dialer ---------------------------------------------


class _NoDns(trio.abc.HostnameResolver):
    """trio's hostname resolver hook: a name (not a numeric address) is never looked up."""

    async def getaddrinfo(  # noqa: PLR0917 (trio's signature)
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        await trio.lowlevel.checkpoint()
        raise socket.gaierror(socket.EAI_NONAME, "the fuzzer resolves no names")

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> tuple[str, str]:
        await trio.lowlevel.checkpoint()
        raise socket.gaierror(socket.EAI_NONAME, "the fuzzer resolves no names")


async def _open_closed_tcp_stream(host: str | bytes, port: int, **kwargs: Any) -> trio.abc.Stream:
    """trio.open_tcp_stream up to the connect: trio's address resolution (names refused by _NoDns), then a
    connection whose far side has already gone."""
    await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    near, far = trio.testing.memory_stream_pair()
    await far.aclose()
    return near


@contextlib.contextmanager
def no_sockets() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trio, "open_tcp_stream", _open_closed_tcp_stream)
        yield


class RoutingDialer:
    """mem:// addresses on the in-memory network, anything else through the WebSocket dialer."""

    def __init__(self, memory: Dialer) -> None:
        self._memory = memory
        self._ws = WebSocketDialer(dial_timeout_s=5.0)

    async def dial(self, address: str) -> Channel:
        if address.startswith("mem://"):
            return await self._memory.dial(address)
        return await self._ws.dial(address)


def fuzz_relay(index: int, identity: Identity, keys: list[bytes], net: MemoryNetwork, rng: Any) -> Relay:
    return Relay(identity, keys, dialer=RoutingDialer(net.dialer()), rng=rng)


# --- the attacker: a client circuit driven by hand -------------------------------------------------------


@dataclass(eq=False)
class Attacker:
    """The client end of one built circuit. Sends any relay payload to any of its hops (sealed and layered as
    a client would); peels and records what comes back without acting on it, so the attack goes on whatever
    the hops answer. A valid EXTEND to a known hop grows the circuit (loops included)."""

    link: ClientLink
    core: ClientCircuit
    destroyed: DestroyReason | int | None = None
    received: list[tuple[int, Frame]] = field(default_factory=list)
    unreadable: int = 0  # backward cells that open at no layer: the hops' keystream fell out of step
    malformed: int = 0  # opened, but not relay messages
    bytes_sent: int = 0
    pending_hop: HopHandshakeClient | None = None
    streams_used: set[int] = field(default_factory=set)
    requests: list[int] = field(default_factory=list)  # fresh streams a whole request was sent on

    @property
    def hops(self) -> int:
        return len(self.core._layers)

    def send_payload(self, hop: int, payload: bytes) -> None:
        if self.destroyed is not None or self.link.closed:
            return
        cell = self.core._relay_payload_to(hop % self.hops, payload)
        self.bytes_sent += len(cell.body)
        self.link.send_cells([cell])

    def send(self, hop: int, message: Frame) -> None:
        if isinstance(message, RelayBegin | RelayData | RelayEnd | RelaySendme):
            self.streams_used.add(message.stream_id)
        try:
            payload = codec.encode_relay_payload(message, RELAY_PAYLOAD_BYTES)
        except LocalProtocolError:  # does not fit a cell: what arrives is its first bytes
            payload = codec.encode_relay_payload(RelayDrop(), RELAY_PAYLOAD_BYTES)
        self.send_payload(hop, payload)

    def request(self, stream_id: int, data: bytes) -> None:
        """BEGIN inference, the data, END(DONE): a whole request, which check_answers expects answered when
        its stream is fresh."""
        if 1 <= stream_id <= STREAM_ID_MAX and stream_id not in self.streams_used:
            self.requests.append(stream_id)
        self.send(-1, RelayBegin(stream_id, INFERENCE_SERVICE))
        self.send_data(-1, stream_id, data)
        self.send(-1, RelayEnd(stream_id, 0))

    def send_data(self, hop: int, stream_id: int, data: bytes) -> None:
        """`data` as DATA messages of at most a cell each."""
        for start in range(0, len(data), RELAY_DATA_BYTES_MAX):
            self.send(hop, RelayData(stream_id, data[start : start + RELAY_DATA_BYTES_MAX]))

    def destroy(self) -> None:
        if self.destroyed is None and not self.link.closed:
            self.link.send_cells([destroy_cell(self.core.circuit_id, DestroyReason.REQUESTED)])
        self.destroyed = DestroyReason.REQUESTED

    def extend_to(self, hop: HopInfo) -> None:
        self.pending_hop = hop.handshake()
        self.send(-1, RelayExtend(hop.node_id, hop.address, self.pending_hop.first_message()))

    def receive(self, cell: Cell) -> None:
        if cell.command == CellCommand.DESTROY:
            self.destroyed = destroy_reason(cell)
            return
        if cell.command != CellCommand.RELAY or self.destroyed is not None:
            self.malformed += 1
            return
        index, payload = self.core._peel(cell.body)
        if payload is None:
            self.unreadable += 1
            return
        try:
            messages = codec.decode_relay_messages(payload)
        except RemoteProtocolError:
            self.malformed += 1
            return
        for message in messages:
            self.received.append((index, message))
            last = index == self.hops - 1
            if isinstance(message, RelayExtended) and last and self.pending_hop is not None:
                with contextlib.suppress(RemoteProtocolError):
                    self.core._layers.append(self.pending_hop.finish(message.handshake))
                self.pending_hop = None

    def link_lost(self) -> None:
        if self.destroyed is None:
            self.destroyed = DestroyReason.LINK_CLOSED

    def check_answers(self) -> None:
        """What the hops sent back was always readable (answers, ENDs, SENDMEs, a DESTROY), and every whole
        request on a fresh stream was answered: an END for it (after an answer, or with a reason) or the
        circuit's DESTROY, never silence."""
        assert self.unreadable == 0, f"{self.unreadable} backward cells opened at no layer"
        assert self.malformed == 0, f"{self.malformed} backward cells were not relay messages"
        if self.destroyed is None:
            ended = {m.stream_id for _, m in self.received if isinstance(m, RelayEnd)}
            unanswered = [sid for sid in self.requests if sid not in ended]
            assert not unanswered, f"requests on streams {unanswered} got no END and no DESTROY"


class AttackerLink(ClientLink):
    """A client link on which built circuits can be handed to an Attacker."""

    def __init__(self, pump: LinkPump, guard: HopInfo, rng: Any) -> None:
        super().__init__(pump, guard, rng)
        self.attackers: dict[int, Attacker] = {}

    def take_over(self, circuit: Circuit) -> Attacker:
        attacker = Attacker(self, circuit.core)
        self.forget(circuit.core.circuit_id)
        self.attackers[circuit.core.circuit_id] = attacker
        return attacker

    def _on_frames(self, frames: list[Frame]) -> None:
        others = []
        for frame in frames:
            attacker = self.attackers.get(frame.circuit_id) if isinstance(frame, Cell) else None
            if attacker is None:
                others.append(frame)
            else:
                assert isinstance(frame, Cell)
                attacker.receive(frame)
        super()._on_frames(others)

    def _lost(self) -> None:
        super()._lost()
        for attacker in self.attackers.values():
            attacker.link_lost()


# --- what the attacker sends -------------------------------------------------------------------------------


def framed(document_bytes: bytes) -> bytes:
    """A stream message around raw msgpack bytes (the 4-byte length, as tp_net.protocol.messages frames
    them)."""
    return len(document_bytes).to_bytes(4, "big") + document_bytes


def honest_request_bytes(content_bytes: int) -> bytes:
    content = "x" * content_bytes
    return encode_message({"messages": [{"role": "user", "content": content}], "max_tokens": 4})


def empty_maps(count: int) -> bytes:
    """An array of `count` empty maps: one byte each on the wire, a dict each once decoded."""
    return framed(b"\xdd" + count.to_bytes(4, "big") + b"\x80" * count)


def nested_arrays(depth: int) -> bytes:
    return framed(b"\x91" * depth + b"\xc0")


SPECIAL_DOCUMENTS = [
    (2**32 - 1).to_bytes(4, "big") + b"\x80",  # a length far over any limit
    framed(b"\x81\x01\x80"),  # a map with an integer key
    framed(b"\xc1"),  # msgpack's never-used byte
    framed(b"\x80") * 3,  # three documents on one stream
    encode_message([1, 2, 3]),  # a document that is no map
    encode_message({"messages": "no", "max_tokens": -1}),
]


def document_bytes(spec: tuple[str, Any]) -> bytes:
    """What a document spec (short to print when hypothesis reports an example) stands for."""
    kind, value = spec
    if kind == "honest":
        return honest_request_bytes(value)
    if kind == "empty_maps":
        return empty_maps(value)
    if kind == "nested":
        return nested_arrays(value)
    if kind == "framed":
        return framed(value)
    if kind == "special":
        index: int = value
        return SPECIAL_DOCUMENTS[index]
    raw: bytes = value  # "raw"
    return raw


documents = st.one_of(
    st.tuples(st.just("honest"), st.integers(0, 3000)),
    st.tuples(st.just("empty_maps"), st.integers(1, 4000)),
    st.tuples(st.just("nested"), st.integers(1, 3000)),
    st.tuples(st.just("raw"), st.binary(max_size=2000)),
    st.tuples(st.just("framed"), st.binary(max_size=200)),
    st.tuples(st.just("special"), st.integers(0, len(SPECIAL_DOCUMENTS) - 1)),
)
stream_ids = st.sampled_from([1, 2, 3]) | st.integers(-1, 2**16 + 1)
hops = st.just(-1) | st.integers(0, 7)  # -1: the last hop; others modulo the circuit's length
services = st.sampled_from([INFERENCE_SERVICE, "directory", "", "x" * 65]) | st.text(max_size=70)
HOSTILE_ADDRESSES = [
    "ws://a..b:80/",  # the IDNA step raises UnicodeError
    "ws://127.0.0.1:80/pâth",  # the request line is ASCII
    "ws://h:80/é",
    "ws://ä.example:80/",
    "ws://127.0.0.1:8000/admin/delete",
    "ws://localhost:1/",
    "ws://[::1]:9/",
    "ws://10.0.0.1:80/",
    "ws://169.254.169.254:80/latest",
    "ws://h:0/",
    "ws://h:99999/",
    "ws://:80/",
    "ws://h/",
    "ws://h:80/\r\nX-Injected: 1",
    "ws://a\x00b:80/",
    "ws://" + "a" * 64 + ".b:80/",
    "ws://" + "a" * 240 + ":1/",
    "http://h:80/",
    "mem://nowhere",
    "",
    "x" * 256,
    "x" * 257,
]
addresses = st.one_of(
    st.none(),
    st.sampled_from(HOSTILE_ADDRESSES),
    st.tuples(st.just("relay"), st.integers(0, 2)),  # a real relay's address
    st.builds("ws://{}:{}/{}".format, st.text(max_size=30), st.integers(-1, 70000), st.text(max_size=30)),
    st.text(max_size=300),
)
node_ids = st.one_of(
    st.tuples(st.just("relay"), st.integers(0, 2)),
    st.just(("node",)),
    st.binary(min_size=32, max_size=32),
    st.binary(max_size=40),
)
reasons = st.integers(0, 10) | st.integers(-1, 300)

stream_actions = st.one_of(
    st.tuples(st.just("begin"), hops, stream_ids, services),
    st.tuples(st.just("data"), hops, stream_ids, documents),
    st.tuples(st.just("end"), hops, stream_ids, reasons),
    st.tuples(st.just("sendme"), hops, stream_ids | st.just(0), st.binary(max_size=20)),
    st.tuples(st.just("drop"), hops, st.integers(1, 20)),
    st.tuples(
        st.just("payload"), hops, st.binary(min_size=RELAY_PAYLOAD_BYTES, max_size=RELAY_PAYLOAD_BYTES)
    ),
    st.tuples(st.just("request"), stream_ids, documents),  # BEGIN inference, the bytes, END: in one go
)
extend_actions = st.one_of(
    st.tuples(st.just("extend"), hops, node_ids, addresses, st.just("real") | st.binary(max_size=300)),
    st.tuples(st.just("extend_relay"), st.integers(0, 2)),  # a valid extend: loops included
    stream_actions,
)
flood_actions = st.one_of(
    st.tuples(st.just("request"), stream_ids, st.tuples(st.just("honest"), st.integers(0, 300_000))),
    st.tuples(st.just("request"), stream_ids, st.tuples(st.just("empty_maps"), st.integers(1, 300_000))),
    st.tuples(
        st.just("data"), st.just(-1), stream_ids, st.tuples(st.just("empty_maps"), st.integers(1, 300_000))
    ),
    st.tuples(
        st.just("data"),
        st.just(-1),
        stream_ids,
        st.tuples(st.just("raw"), st.binary(min_size=1, max_size=4000)),
    ),
    st.tuples(st.just("begin"), st.just(-1), stream_ids, st.just(INFERENCE_SERVICE)),
    st.tuples(st.just("drop"), hops, st.integers(1, 600)),
    st.tuples(st.just("sendme"), st.just(-1), stream_ids | st.just(0), st.binary(max_size=16)),
)


# --- running an example ----------------------------------------------------------------------------------


def resolve_address(net: InProcessNetwork, address: Any) -> str | None:
    if isinstance(address, tuple):
        return net.relay_hops[address[1]].address
    return address  # type: ignore[no-any-return]


def resolve_node_id(net: InProcessNetwork, node_id: Any) -> bytes:
    if isinstance(node_id, bytes):
        return node_id
    return net.node_hop.node_id if node_id[0] == "node" else net.relay_hops[node_id[1]].node_id


def known_hop(net: InProcessNetwork, node_id: bytes) -> HopInfo | None:
    return next((hop for hop in net.path() if hop.node_id == node_id), None)


def perform(net: InProcessNetwork, attacker: Attacker, action: tuple[Any, ...]) -> None:
    kind, *args = action
    if kind == "begin":
        hop, stream_id, service = args
        attacker.send(hop, RelayBegin(stream_id, service))
    elif kind == "data":
        hop, stream_id, spec = args
        attacker.send_data(hop, stream_id, document_bytes(spec) or b"\x00")
    elif kind == "end":
        hop, stream_id, reason = args
        attacker.send(hop, RelayEnd(stream_id, reason))
    elif kind == "sendme":
        hop, stream_id, digest = args
        attacker.send(hop, RelaySendme(stream_id, digest))
    elif kind == "drop":
        hop, count = args
        for _ in range(count):
            attacker.send(hop, RelayDrop())
    elif kind == "payload":
        hop, payload = args
        attacker.send_payload(hop, payload)
    elif kind == "request":
        stream_id, spec = args
        attacker.request(stream_id, document_bytes(spec) or b"\x00")
    elif kind == "extend":
        hop, node_id, address, handshake = args
        target = resolve_node_id(net, node_id)
        known = known_hop(net, target)
        if handshake == "real":
            handshake = (known or net.relay_hops[0]).handshake().first_message()
        attacker.send(hop, RelayExtend(target, resolve_address(net, address), handshake))
    elif kind == "extend_relay":
        attacker.extend_to(net.relay_hops[args[0]])
    else:
        raise AssertionError(f"unknown action {kind}")


async def settle() -> None:
    """Until every task of the network waits (the in-memory network has nothing in flight then)."""
    await trio.testing.wait_all_tasks_blocked(cushion=0.001)


def assert_nothing_left(net: InProcessNetwork) -> None:
    """Every circuit is gone from every hop, and with it every request a service was collecting."""
    for hop in [*net.relays, net.node]:
        assert hop.core.circuit_count == 0, f"{hop.core.circuit_count} circuits left"
        assert not hop.services._requests, f"{len(hop.services._requests)} service requests left"


async def honest_request_succeeds(net: InProcessNetwork) -> None:
    expected = [chunk async for chunk in FakeEngine().generate(HONEST_REQUEST)]
    async with ClientLink.connect(net.network.dialer(), net.relay_hops[0]) as link:
        circuit = await link.build_circuit(net.path())
        chunks = [chunk async for chunk in circuit.request(INFERENCE_SERVICE, HONEST_REQUEST)]
    assert chunks == expected


@asynccontextmanager
async def attacking(path_length: int) -> AsyncIterator[tuple[InProcessNetwork, Attacker]]:
    trio.socket.set_custom_hostname_resolver(_NoDns())
    async with (
        # Unshaped: settle() waits until every task is blocked, which a node waiting for its next response
        # tick (tp_net.protocol.traffic_shaping) already is before it answers.
        in_process_network(make_relay=fuzz_relay, shaping=RESPONSE_SHAPING_OFF) as net,
        AttackerLink.connect(net.network.dialer(), net.relay_hops[0]) as link,
    ):
        assert isinstance(link, AttackerLink)
        path = net.path()
        circuit = await link.build_circuit(path if path_length == len(path) else path[:path_length])
        yield net, link.take_over(circuit)


def run_example(
    path_length: int, actions: Sequence[tuple[Any, ...]], *, measure_memory: bool = False
) -> None:
    async def main() -> None:
        with trio.fail_after(EXAMPLE_TIMEOUT_S):
            async with attacking(path_length) as (net, attacker):
                await settle()
                if measure_memory:
                    tracemalloc.reset_peak()
                    before, _ = tracemalloc.get_traced_memory()
                for action in actions:
                    perform(net, attacker, action)
                    await settle()
                if measure_memory:
                    _, peak = tracemalloc.get_traced_memory()
                    bound = MEMORY_PER_BYTE_SENT_MAX * attacker.bytes_sent + MEMORY_ALLOWANCE_BYTES
                    assert peak - before <= bound, (
                        f"grew {peak - before} bytes for {attacker.bytes_sent} sent"
                    )
                attacker.check_answers()
                attacker.destroy()
                await honest_request_succeeds(net)
                await settle()
                assert_nothing_left(net)

    with no_sockets():
        if not measure_memory:
            trio.run(main)
            return
        tracemalloc.start()
        try:
            trio.run(main)
        finally:
            tracemalloc.stop()


# --- the tests ------------------------------------------------------------------------------------------


@FUZZ
@given(st.lists(stream_actions, min_size=1, max_size=8))
@example([("request", 1, ("honest", 100)), ("request", 1, ("honest", 100))])
@example(
    [
        ("data", -1, 5, ("raw", b"x")),
        ("begin", -1, 5, INFERENCE_SERVICE),
        ("end", -1, 5, 0),
        ("end", -1, 5, 3),
    ]
)
@example([("request", 2, ("nested", 3000)), ("sendme", -1, 0, b"\x00" * 16), ("drop", 1, 3)])
@example([("begin", 0, 1, INFERENCE_SERVICE), ("data", 2, 1, ("raw", b"x"))])
def test_stream_messages_in_any_order_cost_only_the_circuit(actions: list[tuple[Any, ...]]) -> None:
    """The attacker's circuit ends at the GPU node: streams opened, fed, ended and acked in any order."""
    run_example(4, actions)


@FUZZ
@given(st.integers(1, 3), st.lists(extend_actions, min_size=1, max_size=6))
@example(1, [("extend", -1, b"\x01" * 32, "ws://a..b:80/", b"")])
@example(1, [("extend", -1, b"\x01" * 32, "ws://127.0.0.1:80/pâth", b"")])
@example(2, [("extend_relay", 0), ("extend_relay", 1), ("extend_relay", 0), ("begin", -1, 1, "directory")])
@example(1, [("extend", -1, ("node",), None, "real"), ("request", 1, ("honest", 10))])
def test_extend_to_any_address_costs_only_the_circuit(
    path_length: int, actions: list[tuple[Any, ...]]
) -> None:
    """The attacker's circuit ends at a relay: EXTEND to any id and address, then anything else."""
    run_example(path_length, actions)


@settings(FUZZ, max_examples=max(1, EXAMPLES // 8))
@given(st.lists(flood_actions, min_size=1, max_size=4))
@example([("request", 1, ("honest", 70_000))])  # over 63 KB: more than 64 cells in one stream
@example([("data", -1, 1, ("empty_maps", 200_000)), ("data", -1, 2, ("empty_maps", 200_000))])
@example([("begin", -1, 1, INFERENCE_SERVICE), ("data", -1, 1, ("honest", 300_000))])
def test_flow_control_and_large_documents_stay_bounded(actions: list[tuple[Any, ...]]) -> None:
    """Past the windows, documents that decode to much more than their bytes, DROP floods: memory stays
    within MEMORY_PER_BYTE_SENT_MAX of what was sent, and a request within the windows is answered."""
    run_example(4, actions, measure_memory=True)
