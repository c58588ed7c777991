"""The authority's measurer over real circuits (in-memory transport, real relay and GPU node code)."""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import trio

from tests.tp_net.directory_factories import T0, document, network_of, signed_document, signed_relay
from tp_crypto.identity import Identity
from tp_net.protocol.bandwidth_weights import MeasurementScheduler, Outcome, Probe, Sample, TargetKind
from tp_net.protocol.descriptors import ModelOffer, NodeDescriptor, RelayDescriptor
from tp_net.protocol.directory import Directory, SignedDocument
from tp_net.protocol.path_selection import LOCAL_NETWORK_RULES
from tp_net.trio.directory_client import DIRECTORY_SERVICE
from tp_net.trio.transport_memory import MemoryNetwork
from tp_node.engine import FAKE_MODEL_ID, FakeEngine
from tp_node.inference import EngineError
from tp_node.measurer import CircuitProber, run_measurer, served_directory
from tp_node.relay import Relay
from tp_node.testing.memory_network import InProcessNetwork, in_process_network

DOCUMENT_BYTES = 40_000


async def _directory_service(request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
    yield {"document": bytes(DOCUMENT_BYTES)}


def _serving_relay(
    index: int, identity: Identity, onion_keys: list[bytes], net: MemoryNetwork, rng: random.Random
) -> Relay:
    return Relay(
        identity, onion_keys, dialer=net.dialer(), rng=rng, services={DIRECTORY_SERVICE: _directory_service}
    )


class RefusingEngine(FakeEngine):
    """Reads the request, then says it is overloaded (a refuse-and-read node)."""

    async def generate(self, request: Mapping[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        raise EngineError("overloaded", "busy")
        yield {}  # pragma: no cover


def _directory(net: InProcessNetwork) -> Directory:
    relays = {
        hop.node_id: RelayDescriptor(
            hop.node_id, hop.address or "", (hop.onion_key,), 100, "", "1", 0, 10**10
        )
        for hop in net.relay_hops
    }
    offer = ModelOffer(FAKE_MODEL_ID, bytes(32), 1, "F32", 2048, 4, 0)
    node = NodeDescriptor(
        net.node_hop.node_id,
        (net.node_hop.onion_key,),
        (net.relay_hops[-1].node_id,),
        (offer,),
        "1",
        0,
        10**10,
    )
    return Directory("memnet", 0, 1, 10**10, relays, {node.node_id: node})


async def test_a_node_is_measured_with_a_real_request() -> None:
    async with in_process_network(relay_count=3, make_relay=_serving_relay) as net:
        prober = CircuitProber(net.network.dialer(), random.Random(1), LOCAL_NETWORK_RULES)
        sample = await prober.probe(Probe(net.node_hop.node_id, TargetKind.NODE), _directory(net))
    assert sample.outcome is Outcome.ANSWERED
    assert sample.rate > 0


async def test_a_refusing_node_is_measured_as_overloaded() -> None:
    async with in_process_network(relay_count=3, make_relay=_serving_relay, engine=RefusingEngine()) as net:
        prober = CircuitProber(net.network.dialer(), random.Random(2), LOCAL_NETWORK_RULES)
        sample = await prober.probe(Probe(net.node_hop.node_id, TargetKind.NODE), _directory(net))
    assert sample == Sample(Outcome.OVERLOADED)


async def test_a_relay_is_measured_by_the_bytes_it_forwards() -> None:
    async with in_process_network(relay_count=3, make_relay=_serving_relay) as net:
        prober = CircuitProber(net.network.dialer(), random.Random(3), LOCAL_NETWORK_RULES)
        sample = await prober.probe(Probe(net.relay_hops[0].node_id, TargetKind.RELAY), _directory(net))
    assert sample.outcome is Outcome.ANSWERED
    assert sample.rate > 0


async def test_run_measurer_hands_weights_to_the_authority() -> None:
    recorded: list[dict[bytes, int]] = []
    async with in_process_network(relay_count=3, make_relay=_serving_relay) as net:
        directory = _directory(net)
        prober = CircuitProber(net.network.dialer(), random.Random(4), LOCAL_NETWORK_RULES)
        scheduler = MeasurementScheduler(3600, random.Random(5))
        with trio.move_on_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_measurer, scheduler, lambda: directory, recorded.append, prober)
                while not recorded or len(recorded[-1]) < len(directory.relays) + len(directory.nodes):
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
    assert set(recorded[-1]) == set(directory.relays) | set(directory.nodes)
    assert all(weight > 0 for weight in recorded[-1].values())


def test_the_served_document_is_verified_once_per_body() -> None:
    identities, trust = network_of(3, 2)
    body = document([signed_relay(1), signed_relay(2)]).encode()
    served: list[SignedDocument | None] = [None]
    current = served_directory(lambda: served[0], trust, wall_clock=lambda: T0)
    assert current() is None
    served[0] = signed_document(body, identities)
    first = current()
    assert first is not None and len(first.relays) == 2
    assert current() is first  # the same document: not verified again
    served[0] = signed_document(body, identities[:1])  # one signature: below the threshold
    assert current() is None


class _RaisingProber:
    """A probe that fails the way a link torn down mid-probe does: an exception group, not a plain error."""

    async def probe(self, probe: Probe, directory: Directory) -> Sample:
        raise ExceptionGroup("link lost", [RuntimeError("circuit closed")])


async def test_whatever_a_probe_raises_costs_only_its_sample() -> None:
    directory = Directory("memnet", 0, 1, 10**10, {}, {})
    relay_id = bytes(32)
    directory.relays[relay_id] = RelayDescriptor(
        relay_id, "ws://10.0.0.1:1/", (bytes(32),), 100, "", "1", 0, 1
    )
    recorded: list[dict[bytes, int]] = []
    scheduler = MeasurementScheduler(3600, random.Random(6))
    with trio.move_on_after(2):
        await run_measurer(scheduler, lambda: directory, recorded.append, _RaisingProber())
    assert recorded and recorded[0] == {relay_id: 0}  # a failed sample, and the measurer still runs
