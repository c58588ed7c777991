"""A whole token.place network in one process, on the in-memory transport, running the real relay and
GPU node code: for tests that need to look inside relays (buffers, what they see) or make one misbehave."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from tp_crypto.identity import Identity
from tp_crypto.noise import generate_keypair
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.sealed import SealingKey
from tp_net.protocol.traffic_shaping import RESPONSE_SHAPING_DEFAULT, ResponseShaping
from tp_net.trio.transport import Dialer
from tp_net.trio.transport_memory import MemoryNetwork
from tp_node.engine import Engine, FakeEngine
from tp_node.gpu_node import GpuNode, HomeRelay
from tp_node.relay import Relay

RelayFactory = Callable[[int, Identity, list[bytes], MemoryNetwork, random.Random], Relay]


def honest_relay(
    index: int, identity: Identity, onion_keys: list[bytes], net: MemoryNetwork, rng: random.Random
) -> Relay:
    return Relay(identity, onion_keys, dialer=net.dialer(), rng=rng)


@dataclass
class InProcessNetwork:
    network: MemoryNetwork
    relays: list[Relay]
    relay_hops: list[HopInfo]
    node: GpuNode
    node_hop: HopInfo

    def path(self) -> list[HopInfo]:
        return [*self.relay_hops, self.node_hop]


@asynccontextmanager
async def in_process_network(
    *,
    relay_count: int = 3,
    make_relay: RelayFactory = honest_relay,
    engine: Engine | None = None,
    seed: int = 1,
    wrap_node_dialer: Callable[[Dialer], Dialer] | None = None,
    sealing_keys: list[SealingKey] | None = None,
    shaping: ResponseShaping = RESPONSE_SHAPING_DEFAULT,
) -> AsyncIterator[InProcessNetwork]:
    """Relays at mem://relayN; one GPU node homed on the last relay."""
    rng = random.Random(seed)
    network = MemoryNetwork()
    relays, hops = [], []
    async with trio.open_nursery() as nursery:
        for index in range(relay_count):
            identity = Identity(rng.randbytes(32))
            private, public = generate_keypair()
            relay = make_relay(index, identity, [private], network, rng)
            address = await nursery.start(relay.serve, network.listener(f"mem://relay{index}"))
            relays.append(relay)
            hops.append(HopInfo(identity.node_id, public, address))
        node_identity = Identity(rng.randbytes(32))
        node_private, node_public = generate_keypair()
        node = GpuNode(
            node_identity,
            [node_private],
            home_relays=[HomeRelay(hops[-1].node_id, hops[-1].address or "")],
            engine=engine or FakeEngine(),
            dialer=wrap_node_dialer(network.dialer()) if wrap_node_dialer else network.dialer(),
            rng=rng,
            sealing_keys=None if sealing_keys is None else (lambda: sealing_keys),
            shaping=shaping,
        )
        nursery.start_soon(node.run)
        await node.linked.wait()
        while relays[-1].core.link_to(node_identity.node_id) is None:
            await trio.sleep(0.001)
        yield InProcessNetwork(network, relays, hops, node, HopInfo(node_identity.node_id, node_public))
        nursery.cancel_scope.cancel()
