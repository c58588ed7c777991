"""The real relay and GPU node code in one process on the in-memory transport: privacy, tampering and
flow-control properties that need a look inside the relays."""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import pytest
import trio

from tp_crypto.identity import Identity
from tp_net.protocol.cells import RELAY_DATA_BYTES_MAX, CellCommand
from tp_net.protocol.frames import Cell
from tp_net.protocol.hop_outputs import HopOutput, SendCell
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.protocol.traffic_shaping import RESPONSE_SHAPING_OFF
from tp_net.trio.client import CircuitError, ClientLink, StreamError
from tp_net.trio.hop_runtime import CIRCUIT_QUEUE_CELLS_MAX
from tp_net.trio.transport import Channel, Dialer
from tp_net.trio.transport_memory import MemoryNetwork
from tp_node.engine import FakeEngine
from tp_node.relay import Relay
from tp_node.testing.memory_network import InProcessNetwork, in_process_network

PROMPT_SENTINEL = "PROMPT-SENTINEL-7f3a"
RESPONSE_SENTINEL = "RESPONSE-SENTINEL-91c2"


class RecordingRelay(Relay):
    """An honest relay that keeps every cell body it decrypts (HopCore's observe hook: forward bodies with
    its onion layer removed, backward bodies as they arrive), i.e. all it could read of a circuit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[bytes] = []
        self.core.observe = self.seen.append


class SentinelEngine:
    async def generate(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        for _ in range(50):
            await trio.lowlevel.checkpoint()
            yield {"text": RESPONSE_SENTINEL}


async def ask(network_path: list[Any], dialer: Dialer, request: dict[str, Any]) -> list[Any]:
    async with ClientLink.connect(dialer, network_path[0]) as link:
        circuit = await link.build_circuit(network_path)
        return [chunk async for chunk in circuit.request(INFERENCE_SERVICE, request)]


async def test_no_relay_sees_the_prompt_or_the_response() -> None:
    relays: list[RecordingRelay] = []

    def make_relay(
        index: int, identity: Identity, keys: list[bytes], net: MemoryNetwork, rng: random.Random
    ) -> Relay:
        relay = RecordingRelay(identity, keys, dialer=net.dialer(), rng=rng)
        relays.append(relay)
        return relay

    # Unshaped, so that each token leaves in a cell of its own (more cells for the relays to look into).
    async with in_process_network(
        make_relay=make_relay, engine=SentinelEngine(), shaping=RESPONSE_SHAPING_OFF
    ) as net:
        request = {"messages": [{"role": "user", "content": PROMPT_SENTINEL * 40}], "max_tokens": 4}
        chunks = await ask(net.path(), net.network.dialer(), request)
        assert [chunk["text"] for chunk in chunks] == [RESPONSE_SENTINEL] * 50
        peers = [relay.core.peers() for relay in relays]
    # Each relay decrypted the forward cells (EXTENDs, BEGIN, the request) and saw the answer's cells pass.
    assert all(len(relay.seen) >= 20 for relay in relays), [len(relay.seen) for relay in relays]
    for sentinel in (PROMPT_SENTINEL.encode(), RESPONSE_SENTINEL.encode()):
        assert not any(sentinel in body for relay in relays for body in relay.seen)
    # The guard knows the client (anonymous link) but not the node; the home relay the reverse.
    for relay_peers in peers:
        assert not (None in relay_peers and net.node_hop.node_id in relay_peers)
    assert None in peers[0] and net.node_hop.node_id in peers[2]


class TamperingRelay(Relay):
    """Flips one bit of the n-th RELAY cell it sends towards `victim_peer` (None: the client)."""

    victim_peer: bytes | None = None
    nth: int = 0
    bit: int = 0
    sent = 0

    def apply(self, outputs: list[HopOutput]) -> None:
        super().apply([self._maybe_tamper(output) for output in outputs])

    def _maybe_tamper(self, output: HopOutput) -> HopOutput:
        if not isinstance(output, SendCell) or output.cell.command != CellCommand.RELAY:
            return output
        if self.core.peer_of(output.link) != self.victim_peer:
            return output
        self.sent += 1
        if self.sent != self.nth:
            return output
        body = bytearray(output.cell.body)
        body[self.bit // 8] ^= 1 << (self.bit % 8)
        return SendCell(output.link, Cell(output.cell.circuit_id, output.cell.command, bytes(body)))


@pytest.mark.parametrize("position", [0, 1, 2])
@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("bit", [3, 20 * 8 + 1, 600 * 8 + 7])
async def test_a_flipped_bit_at_any_hop_ends_the_circuit(position: int, direction: str, bit: int) -> None:
    tamperer: list[TamperingRelay] = []

    def make_relay(
        index: int, identity: Identity, keys: list[bytes], net: MemoryNetwork, rng: random.Random
    ) -> Relay:
        if index != position:
            return Relay(identity, keys, dialer=net.dialer(), rng=rng)
        relay = TamperingRelay(identity, keys, dialer=net.dialer(), rng=rng)
        tamperer.append(relay)
        return relay

    engine = FakeEngine()
    async with in_process_network(make_relay=make_relay, engine=engine) as net:
        hops = net.path()
        relay = tamperer[0]
        relay.bit = bit
        if direction == "forward":
            relay.victim_peer = hops[position + 1].node_id
            relay.nth = 3 - position  # the BEGIN cell, after the EXTENDs it forwards
        else:
            relay.victim_peer = None if position == 0 else hops[position - 1].node_id
            relay.nth = 3 - position + 2  # a DATA cell, after the EXTENDEDs it relays back
        await a_request_the_tampering_ends(net, engine)


async def a_request_the_tampering_ends(net: InProcessNetwork, engine: FakeEngine) -> None:
    """A request over `net.path()` that tampering relays break: it ends with a circuit or stream error, every
    chunk received before is the engine's own, and every relay lets the circuit go."""
    hops = net.path()
    request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 200}
    expected = [chunk async for chunk in engine.generate(request)]
    received: list[Any] = []
    with pytest.raises((CircuitError, StreamError)):
        async with ClientLink.connect(net.network.dialer(), hops[0]) as link:
            circuit = await link.build_circuit(hops)
            with trio.fail_after(10):
                async for chunk in circuit.request(INFERENCE_SERVICE, request):
                    received.append(chunk)
    assert received == expected[: len(received)]
    for relay in net.relays:
        with trio.fail_after(5):
            while relay.core.circuit_count:
                await trio.sleep(0.01)


class CountingEngine:
    """Produces `count` chunks of 200 bytes each and counts how many it has produced."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.produced = 0

    async def generate(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        for _ in range(self.count):
            await trio.lowlevel.checkpoint()
            self.produced += 1
            yield {"text": "x" * 200}


async def test_a_reader_that_stops_bounds_every_relay_buffer(autojump_clock: trio.abc.Clock) -> None:
    engine = CountingEngine(5000)
    async with in_process_network(engine=engine) as net:
        hops = net.path()
        async with ClientLink.connect(net.network.dialer(), hops[0]) as link:
            circuit = await link.build_circuit(hops)
            stream = await circuit.open_stream(INFERENCE_SERVICE)
            await stream.send_message({"messages": [{"role": "user", "content": "x"}]})
            stream.end()
            assert await stream.receive_data()
            await trio.sleep(30)  # the reader stops; the node would produce 5,000 chunks (1 MB)
            paused_at = engine.produced
            await trio.sleep(30)
            # Paused at about a stream window of cells plus the node's send buffer, far from the end.
            assert engine.produced == paused_at < engine.count // 4
            for relay in net.relays:
                assert relay.queued_cells() <= CIRCUIT_QUEUE_CELLS_MAX
            received = 1
            while await stream.receive_data():  # reading again resumes the stream; nothing is lost
                received += 1
            assert engine.produced == engine.count
            assert received * RELAY_DATA_BYTES_MAX >= engine.count * 200


class SlowLinkChannel:
    """A channel whose sends take a while (a busy link), so a fast engine outpaces it."""

    def __init__(self, inner: Channel) -> None:
        self._inner = inner

    async def send_message(self, message: bytes) -> None:
        await trio.sleep(0.001)
        await self._inner.send_message(message)

    async def receive_message(self) -> bytes:
        return await self._inner.receive_message()

    async def aclose(self) -> None:
        await self._inner.aclose()


class SlowDialer:
    def __init__(self, inner: Dialer) -> None:
        self._inner = inner

    async def dial(self, address: str) -> Channel:
        return SlowLinkChannel(await self._inner.dial(address))


async def test_tokens_made_while_the_link_is_busy_share_cells(autojump_clock: trio.abc.Clock) -> None:
    tokens = 300
    request = {"kind": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": tokens}
    # The node's link to its home relay is slow; the engine makes a token per scheduling round.
    async with in_process_network(engine=FakeEngine(), wrap_node_dialer=SlowDialer) as net:
        hops = net.path()
        sent_before = net.node.cells_sent
        async with ClientLink.connect(net.network.dialer(), hops[0]) as link:
            circuit = await link.build_circuit(hops)
            chunks = [chunk async for chunk in circuit.request(INFERENCE_SERVICE, request)]
        texts = [chunk["text"] for chunk in chunks if "text" in chunk]
        assert len(texts) == tokens  # every message arrives, in order and whole
        assert texts == [c["text"] for c in await _fake_chunks(request) if "text" in c]
        # Far fewer cells than tokens left the node: messages queued behind a busy link were batched.
        assert net.node.cells_sent - sent_before < tokens / 10


async def _fake_chunks(request: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [chunk async for chunk in FakeEngine().generate(request)]
