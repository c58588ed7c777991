"""A relay's memory bounds, enforced (HopRuntime): cells a circuit queues on a link beyond
CIRCUIT_QUEUE_CELLS_MAX cost that circuit, and a link whose queue passes LINK_QUEUE_CELLS_MAX sheds its
largest circuit (whose queued cells go with it). Only a client ignoring flow control gets there, so the
clients here ignore their windows; the link from the middle relay to the next one stalls (its sends wait on
a gate), as a slow or hostile peer would."""

from __future__ import annotations

import random

import trio

from tp_crypto.identity import Identity
from tp_net.protocol.cells import RELAY_DATA_BYTES_MAX, DestroyReason
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.trio.client import Circuit, ClientLink, Stream
from tp_net.trio.hop_runtime import CIRCUIT_QUEUE_CELLS_MAX, LINK_QUEUE_CELLS_MAX
from tp_net.trio.transport import Channel, Dialer
from tp_net.trio.transport_memory import MemoryNetwork
from tp_node.relay import Relay
from tp_node.testing.memory_network import InProcessNetwork, RelayFactory, in_process_network

UNLIMITED = 10**9


class Gate:
    def __init__(self) -> None:
        self.closed = False
        self.opened = trio.Event()


class GatedChannel:
    """Sends wait while the gate is closed; receiving is untouched."""

    def __init__(self, inner: Channel, gate: Gate) -> None:
        self._inner = inner
        self._gate = gate

    async def send_message(self, message: bytes) -> None:
        while self._gate.closed:
            await self._gate.opened.wait()
        await self._inner.send_message(message)

    async def receive_message(self) -> bytes:
        return await self._inner.receive_message()

    async def aclose(self) -> None:
        await self._inner.aclose()


class GatedDialer:
    def __init__(self, inner: Dialer, gate: Gate) -> None:
        self._inner = inner
        self._gate = gate

    async def dial(self, address: str) -> Channel:
        return GatedChannel(await self._inner.dial(address), self._gate)


def _stalling_middle(gate: Gate) -> RelayFactory:
    def make_relay(
        index: int, identity: Identity, keys: list[bytes], net: MemoryNetwork, rng: random.Random
    ) -> Relay:
        dialer: Dialer = GatedDialer(net.dialer(), gate) if index == 1 else net.dialer()
        return Relay(identity, keys, dialer=dialer, rng=rng)

    return make_relay


async def _flood(circuit: Circuit, cells: int) -> Stream:
    """Send `cells` DATA cells on a new stream at once, ignoring the circuit's and the stream's windows."""
    stream = await circuit.open_stream(INFERENCE_SERVICE)
    edge = circuit.core.edge
    edge._package_window = UNLIMITED
    edge._streams[stream.stream_id].package_window = UNLIMITED
    await stream.send(b"x" * (RELAY_DATA_BYTES_MAX * cells))
    return stream


async def _settle(net: InProcessNetwork) -> None:
    """Let the relays take in everything in flight."""
    for _ in range(20):
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(0.01)


async def test_a_circuit_past_its_queue_bound_on_a_stalled_link_is_destroyed() -> None:
    gate = Gate()
    async with in_process_network(make_relay=_stalling_middle(gate)) as net:
        hops = net.path()
        middle = net.relays[1]
        async with ClientLink.connect(net.network.dialer(), hops[0]) as link:
            circuit = await link.build_circuit(hops)
            gate.closed = True
            await _flood(circuit, 4 * CIRCUIT_QUEUE_CELLS_MAX)
            with trio.fail_after(10):
                while circuit.is_open:
                    await circuit.wait_changed()
            assert circuit.close_reason is DestroyReason.RESOURCE_LIMIT
            await _settle(net)
            assert middle.core.circuit_count == 0
            # What the middle relay queued for the circuit never passed the bound.
            assert middle.queued_cells() <= CIRCUIT_QUEUE_CELLS_MAX + 1
            gate.closed = False
            gate.opened.set()
            # The relays serve the next (honest) circuit.
            honest = await link.build_circuit(hops)
            with trio.fail_after(10):
                answer = [
                    m async for m in honest.request(INFERENCE_SERVICE, {"prompt": "hi", "max_tokens": 2})
                ]
            assert answer[-1].get("finish_reason") or answer


async def test_an_over_full_link_sheds_its_largest_circuit_and_keeps_the_others() -> None:
    gate = Gate()
    # Each circuit stays under its own bound; together they pass the link's.
    per_circuit = CIRCUIT_QUEUE_CELLS_MAX - 64
    circuits_needed = LINK_QUEUE_CELLS_MAX // per_circuit + 3
    async with in_process_network(make_relay=_stalling_middle(gate)) as net:
        hops = net.path()
        middle = net.relays[1]
        async with ClientLink.connect(net.network.dialer(), hops[0]) as link:
            circuits = [await link.build_circuit(hops) for _ in range(circuits_needed)]
            gate.closed = True
            # The first circuit queues the most; it is the one to go.
            await _flood(circuits[0], per_circuit)
            await _settle(net)
            for circuit in circuits[1:]:
                await _flood(circuit, per_circuit - 32)
                await _settle(net)
            closed = [c for c in circuits if not c.is_open]
            assert closed, "no circuit was shed"
            assert circuits[0] in closed
            assert all(c.close_reason is DestroyReason.RESOURCE_LIMIT for c in closed)
            assert len(closed) < len(circuits)
            assert middle.queued_cells() <= LINK_QUEUE_CELLS_MAX + 1
            gate.closed = False
            gate.opened.set()
