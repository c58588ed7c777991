"""The gateway's Overlay on trio's MockClock (autojump) and the in-memory transport, against the real relay
and GPU node code: failover, the avoid set, guards down, node backoff and pool upkeep, with virtual time
(the Overlay's clocks are trio.current_time), so hours of upkeep take a moment and every run is the same."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from tests.tp_net.directory_factories import T0, model_offer
from tp_crypto.identity import Identity
from tp_crypto.noise_primitives import x25519_public
from tp_gateway.overlay import (
    CIRCUIT_KEEPALIVE_S,
    CIRCUIT_MAX_AGE_S,
    GUARD_DOWN_S,
    POOL_CIRCUITS_PER_NODE,
    Overlay,
)
from tp_gateway.request_trace import RequestTrace
from tp_net.protocol.bootstrap_config import Bootstrap
from tp_net.protocol.descriptors import NodeDescriptor, RelayDescriptor
from tp_net.protocol.directory import Directory
from tp_net.protocol.path_selection import GuardStore
from tp_net.protocol.sealed import SealingKey
from tp_net.protocol.traffic_shaping import (
    COVER_CELLS_PER_S_MAX,
    COVER_STREAM_OFF,
    RESPONSE_SHAPING_DEFAULT,
    CoverStream,
    ResponseShaping,
)
from tp_net.trio.transport_memory import MemoryNetwork
from tp_node.engine import FAKE_MODEL_ID, FakeEngine
from tp_node.gpu_node import GpuNode, HomeRelay
from tp_node.relay import Relay

NETWORK = "overlay-test"
REQUEST = {"model": FAKE_MODEL_ID, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}
SMALL_CAPACITY = 1
LARGE_CAPACITY = 10_000  # a relay or node that weighted choices pick first (unless something avoids it)


@dataclass(frozen=True)
class RelaySpec:
    alive: bool = True
    capacity: int = SMALL_CAPACITY


@dataclass(frozen=True)
class NodeSpec:
    home: int  # index of its home relay
    alive: bool = True
    slots: int = 1


@dataclass
class Net:
    overlay: Overlay
    relays: list[RelayDescriptor]
    nodes: list[NodeDescriptor]
    running: dict[bytes, Relay]
    gpu_nodes: dict[bytes, GpuNode] = field(default_factory=dict)  # those running, by node id


@asynccontextmanager
async def overlay_on(
    relays: Sequence[RelaySpec],
    nodes: Sequence[NodeSpec],
    *,
    guards: Sequence[int],
    tmp_path: Path,
    pool_nodes_max: int = 0,
    seed: int = 1,
    cover: CoverStream = COVER_STREAM_OFF,
    sealing_key: SealingKey | None = None,
    shaping: ResponseShaping = RESPONSE_SHAPING_DEFAULT,
) -> AsyncIterator[Net]:
    """Relays at mem://relayN and GPU nodes (those not alive are listed but never run), a directory of
    them, and an Overlay pinned to `guards` (relay indexes, through its guard file) running its pool. With
    `sealing_key`, every node also serves sealed requests (PROTOCOL.md 9) with it; `shaping`: the nodes'."""
    rng = random.Random(seed)
    network = MemoryNetwork()
    relay_ids = [Identity(rng.randbytes(32)) for _ in relays]
    relay_keys = [rng.randbytes(32) for _ in relays]
    valid_until = T0 + 10**6
    descriptors = [
        RelayDescriptor(
            who.node_id, f"mem://relay{n}", (x25519_public(key),), spec.capacity, "", "1", T0, valid_until
        )
        for n, (who, key, spec) in enumerate(zip(relay_ids, relay_keys, relays, strict=True))
    ]
    node_ids = [Identity(rng.randbytes(32)) for _ in nodes]
    node_keys = [rng.randbytes(32) for _ in nodes]
    node_descriptors = [
        NodeDescriptor(
            who.node_id,
            (x25519_public(key),),
            (descriptors[spec.home].node_id,),
            (model_offer(FAKE_MODEL_ID, max_concurrent=spec.slots),),
            "1",
            T0,
            valid_until,
        )
        for who, key, spec in zip(node_ids, node_keys, nodes, strict=True)
    ]
    guard_file = tmp_path / "guards.json"
    GuardStore(guard_file).save([descriptors[g].node_id for g in guards])
    overlay = Overlay(
        Bootstrap(NETWORK, 1, 300, (), local=True),
        network.dialer(),
        rng=random.Random(f"{seed}:overlay"),
        guard_file=guard_file,
        monotonic=trio.current_time,
        wall_clock=lambda: T0 + trio.current_time(),
        pool_nodes_max=pool_nodes_max,
        cover=cover,
    )
    running: dict[bytes, Relay] = {}
    gpu_nodes: dict[bytes, GpuNode] = {}
    async with trio.open_nursery() as nursery:
        for n, spec in enumerate(relays):
            if spec.alive:
                relay = Relay(relay_ids[n], [relay_keys[n]], dialer=network.dialer(), rng=random.Random(n))
                await nursery.start(relay.serve, network.listener(descriptors[n].address))
                running[relay_ids[n].node_id] = relay
        for n, spec in enumerate(nodes):
            if spec.alive:
                home = descriptors[spec.home]
                node = GpuNode(
                    node_ids[n],
                    [node_keys[n]],
                    home_relays=[HomeRelay(home.node_id, home.address)],
                    engine=FakeEngine(),
                    dialer=network.dialer(),
                    rng=random.Random(100 + n),
                    sealing_keys=None if sealing_key is None else (lambda: [sealing_key]),
                    shaping=shaping,
                )
                gpu_nodes[node_ids[n].node_id] = node
                nursery.start_soon(node.run)
                await node.linked.wait()
        overlay.use_directory(
            Directory(
                NETWORK,
                T0,
                valid_until,
                valid_until,
                {r.node_id: r for r in descriptors},
                {d.node_id: d for d in node_descriptors},
                # the authorities' measured weights: here what each relay and node declares
                weights={
                    **{r.node_id: spec.capacity for r, spec in zip(descriptors, relays, strict=True)},
                    **{d.node_id: spec.slots for d, spec in zip(node_descriptors, nodes, strict=True)},
                },
            )
        )
        nursery.start_soon(overlay.run_pool)
        await trio.sleep(1)  # the nodes' home links are up
        yield Net(overlay, descriptors, node_descriptors, running, gpu_nodes)
        nursery.cancel_scope.cancel()


async def ask(overlay: Overlay) -> tuple[list[dict[str, object]], RequestTrace]:
    trace = RequestTrace()
    chunks = [chunk async for chunk in overlay.generate(FAKE_MODEL_ID, REQUEST, trace)]
    return chunks, trace


def finished(chunks: list[dict[str, object]]) -> bool:
    return bool(chunks) and "finish_reason" in chunks[-1]


async def test_a_request_fails_over_to_another_node_before_its_first_chunk(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # The dead node has far more free slots: it is nearly always the first choice.
    async with overlay_on(
        [RelaySpec()] * 5,
        [NodeSpec(home=4, alive=False, slots=1000), NodeSpec(home=4)],
        guards=[0, 1, 2],
        tmp_path=tmp_path,
    ) as net:
        for _ in range(4):
            chunks, trace = await ask(net.overlay)
            assert finished(chunks)
            assert trace.node_id == net.nodes[1].node_id
        assert trace.attempts == 2 and trace.circuit_failures == 1
        assert net.overlay.stats.requests == {"ok": 4}


async def test_a_relay_that_broke_an_attempt_is_avoided_by_the_next(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # Relay 3 is listed, never runs, and is by far the heaviest middle: without the avoid set every attempt
    # of a request would draw it again.
    relays = [RelaySpec()] * 3 + [RelaySpec(alive=False, capacity=LARGE_CAPACITY), RelaySpec()]
    for seed in range(1, 4):
        async with overlay_on(
            relays, [NodeSpec(home=4)], guards=[0, 1, 2], tmp_path=tmp_path, seed=seed
        ) as net:
            chunks, trace = await ask(net.overlay)
            assert finished(chunks)
            assert trace.attempts == 2 and net.relays[3].node_id not in trace.path


async def test_a_guard_that_cannot_be_dialed_is_left_out_for_guard_down_s(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    relays = [RelaySpec(alive=False), RelaySpec(), RelaySpec(), RelaySpec(), RelaySpec()]
    async with overlay_on(relays, [NodeSpec(home=4)], guards=[0, 1, 2], tmp_path=tmp_path) as net:
        down = net.relays[0].node_id
        chunks, trace = await ask(net.overlay)
        assert finished(chunks)
        assert (trace.attempts, trace.circuit_failures) == (2, 1)  # the first attempt dialed the dead guard
        assert trace.path[0] == net.relays[1].node_id
        # While it is down, new circuits take the next guard at once.
        await trio.sleep(GUARD_DOWN_S - 10)
        chunks, trace = await ask(net.overlay)
        assert finished(chunks) and trace.attempts == 1 and trace.path[0] != down
        # Then it is forgiven (it may be back): once the pooled circuits are too old, the next circuit tries
        # the first guard again.
        await trio.sleep(10 + 1)
        assert down not in net.overlay._guards_down
        await trio.sleep(CIRCUIT_MAX_AGE_S)
        chunks, trace = await ask(net.overlay)
        assert finished(chunks) and trace.attempts == 2


async def test_the_pool_keeps_circuits_warm_alive_and_young(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    nodes = [NodeSpec(home=3), NodeSpec(home=4)]
    async with overlay_on(
        [RelaySpec()] * 5, nodes, guards=[0, 1, 2], tmp_path=tmp_path, pool_nodes_max=8
    ) as net:
        overlay = net.overlay
        await trio.sleep(5)
        assert overlay.pooled_circuits == POOL_CIRCUITS_PER_NODE * len(nodes)
        built = overlay.stats.circuits_built
        # A request takes a pooled circuit: nothing is built for it; the pool replaces the warm circuit it
        # claimed (which carries its isolation key's requests only from now on).
        chunks, trace = await ask(overlay)
        assert finished(chunks) and trace.pooled
        await trio.sleep(1)
        assert overlay.stats.circuits_built == built + 1
        built += 1
        # Idle circuits carry a padding cell each CIRCUIT_KEEPALIVE_S (the guards see cells arrive).
        cells = sum(relay.cells_received for relay in net.running.values())
        await trio.sleep(CIRCUIT_KEEPALIVE_S + 2)
        assert sum(relay.cells_received for relay in net.running.values()) > cells
        assert overlay.stats.circuits_built == built
        # Circuits older than CIRCUIT_MAX_AGE_S are replaced; the pool stays full.
        await trio.sleep(CIRCUIT_MAX_AGE_S)
        assert overlay.stats.circuits_built >= built + POOL_CIRCUITS_PER_NODE * len(nodes)
        assert overlay.pooled_circuits == POOL_CIRCUITS_PER_NODE * len(nodes)


async def _idle_pool_cells(tmp_path: Path, cover: CoverStream, seconds: float) -> tuple[int, int]:
    """Cells the relays receive while a warm pool of 4 circuits idles `seconds`, and circuits built then."""
    async with overlay_on(
        [RelaySpec()] * 5,
        [NodeSpec(home=3), NodeSpec(home=4)],
        guards=[0, 1, 2],
        tmp_path=tmp_path,
        pool_nodes_max=8,
        cover=cover,
    ) as net:
        await trio.sleep(5)
        assert net.overlay.pooled_circuits == 4
        cells = sum(relay.cells_received for relay in net.running.values())
        built = net.overlay.stats.circuits_built
        await trio.sleep(seconds)
        received = sum(relay.cells_received for relay in net.running.values()) - cells
        return received, net.overlay.stats.circuits_built - built


async def test_the_pool_sends_the_cover_stream_on_idle_circuits_within_the_drop_budget(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    seconds = CIRCUIT_MAX_AGE_S - 100  # no circuit is replaced for its age meanwhile
    quiet, _ = await _idle_pool_cells(tmp_path / "off", COVER_STREAM_OFF, seconds)
    covered, rebuilt = await _idle_pool_cells(
        tmp_path / "on", CoverStream(rate_cells_per_s=COVER_CELLS_PER_S_MAX), seconds
    )
    # Each cover DROP crosses the guard, the middle and the home relay: 3 relays receive it.
    expected = 4 * COVER_CELLS_PER_S_MAX * seconds * 3
    assert 0.8 * expected < covered - quiet < 1.2 * expected
    assert rebuilt == 0  # no hop tore a circuit down for its DROPs


async def test_the_pool_backs_off_from_a_node_it_cannot_reach(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # Warming the dead node fails; it is tried again after 1, 2, 4, ... s (NodeBackoff), not every tick.
    nodes = [NodeSpec(home=4, alive=False), NodeSpec(home=4)]
    async with overlay_on(
        [RelaySpec()] * 5, nodes, guards=[0, 1, 2], tmp_path=tmp_path, pool_nodes_max=8
    ) as net:
        await trio.sleep(120)
        failures = net.overlay.stats.circuit_build_failures
        assert 5 <= failures <= 9, failures  # 1 + 2 + 4 + ... + 64 s: about 8 tries in 120 s
        assert net.overlay.pooled_circuits == POOL_CIRCUITS_PER_NODE
