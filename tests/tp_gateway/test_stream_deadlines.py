"""Request deadlines (tp_net.protocol.stream_deadlines, applied by the gateway): a silent path is given up
within the first-chunk deadline (the gateway then fails over) or, once chunks flow, within the inter-chunk
deadline, and its circuit is destroyed so no later request takes it from the pool. Fake clock, fake
circuit."""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import trio
import trio.testing

from tests.tp_net.directory_factories import (
    NETWORK,
    NODE_SEED_BASE,
    RELAY_SEED_BASE,
    T0,
    identity,
    node_descriptor,
    relay_descriptor,
)
from tp_gateway.overlay import Overlay, _Pooled, _within_deadlines
from tp_net.protocol.bootstrap_config import Bootstrap
from tp_net.protocol.cells import DestroyReason
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.descriptors import RelayDescriptor
from tp_net.protocol.directory import Directory
from tp_net.protocol.stream_deadlines import (
    CHUNK_GAP_DEADLINE_S,
    FIRST_CHUNK_DEADLINE_S,
    HOP_ALLOWANCE_S,
    PATH_ALLOWANCE_CEILING_S,
    PATH_ALLOWANCE_FLOOR_S,
    PATH_ALLOWANCE_ROUND_TRIPS,
    path_round_trip_s,
    stream_deadlines,
)
from tp_net.trio.client import Circuit

HOPS = 4  # guard, middle, home relay, node
FIRST_S = FIRST_CHUNK_DEADLINE_S + HOPS * HOP_ALLOWANCE_S
GAP_S = CHUNK_GAP_DEADLINE_S + HOPS * HOP_ALLOWANCE_S


@dataclass
class _Core:
    path: tuple[object, ...] = (None,) * HOPS


@dataclass
class FakeCircuit:
    """Answers with `chunks` chunks `gap_s` apart, then falls silent forever (or ends, if `ends`)."""

    chunks: int
    gap_s: float = 0.1
    ends: bool = False
    core: _Core = field(default_factory=_Core)
    built_in_s: float | None = None
    destroyed: list[DestroyReason] = field(default_factory=list)

    async def request(self, service: str, document: Any) -> AsyncGenerator[Any, None]:
        for n in range(self.chunks):
            await trio.sleep(self.gap_s)
            yield {"n": n}
        if not self.ends:
            await trio.sleep_forever()

    def destroy(self, reason: DestroyReason = DestroyReason.REQUESTED) -> None:
        self.destroyed.append(reason)


async def _drain(circuit: FakeCircuit, silent: list[Circuit] | None = None) -> list[Any]:
    """The answer's messages; circuits reported silent go to `silent`."""
    received: list[Any] = []
    silent = [] if silent is None else silent
    answer = _within_deadlines(cast(Circuit, circuit), "inference", {}, silent.append)
    async with aclosing(answer) as messages:
        async for message in messages:
            received.append(message)
    return received


def test_deadlines_grow_with_the_path() -> None:
    deadlines = stream_deadlines(HOPS)
    assert (deadlines.first_chunk_s, deadlines.chunk_gap_s) == (FIRST_S, GAP_S)
    assert stream_deadlines(HOPS + 1).chunk_gap_s > GAP_S
    with pytest.raises(ValueError):
        stream_deadlines(0)


def test_a_timed_build_sizes_the_allowance_from_the_path_between_floor_and_ceiling() -> None:
    # 4 hops at 80 ms a link: the build took 80 + 160 + 240 + 320 ms, the path's round trip is 320 ms.
    assert path_round_trip_s(HOPS, 0.8) == pytest.approx(0.32)
    wan = stream_deadlines(HOPS, 0.8)
    assert wan.chunk_gap_s == pytest.approx(CHUNK_GAP_DEADLINE_S + PATH_ALLOWANCE_ROUND_TRIPS * 0.32)
    assert wan.first_chunk_s == pytest.approx(FIRST_CHUNK_DEADLINE_S + PATH_ALLOWANCE_ROUND_TRIPS * 0.32)
    loopback = stream_deadlines(HOPS, 0.01)
    assert loopback.chunk_gap_s == CHUNK_GAP_DEADLINE_S + PATH_ALLOWANCE_FLOOR_S < GAP_S
    assert stream_deadlines(HOPS, 60.0).chunk_gap_s == CHUNK_GAP_DEADLINE_S + PATH_ALLOWANCE_CEILING_S
    # 200 ms a link: longer than the untimed per-hop allowance
    assert stream_deadlines(HOPS, 2.0).chunk_gap_s > GAP_S


async def test_the_gateway_waits_as_long_as_the_path_it_measured(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A circuit's own build time sizes its deadlines: a far path is waited on longer than a near one."""
    for built_in_s in (0.01, 0.8, 2.0):
        gap_s = stream_deadlines(HOPS, built_in_s).chunk_gap_s
        steady = FakeCircuit(chunks=3, gap_s=gap_s * 0.95, ends=True, built_in_s=built_in_s)
        assert len(await _drain(steady)) == 3
        silent = FakeCircuit(chunks=1, built_in_s=built_in_s)
        started = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            await _drain(silent)
        assert trio.current_time() - started == pytest.approx(silent.gap_s + gap_s)


async def test_a_path_silent_before_the_first_chunk_is_given_up_and_its_circuit_destroyed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    circuit = FakeCircuit(chunks=0)
    started = trio.current_time()
    silent: list[Circuit] = []
    with pytest.raises(trio.TooSlowError):
        await _drain(circuit, silent)
    assert trio.current_time() - started == pytest.approx(FIRST_S)
    assert circuit.destroyed == [DestroyReason.TIMEOUT]
    assert silent == [circuit]


async def test_a_path_silent_mid_answer_is_given_up_within_the_gap_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    circuit = FakeCircuit(chunks=3, gap_s=GAP_S * 0.9)  # slow but steady chunks are fine
    started = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        await _drain(circuit)
    assert trio.current_time() - started == pytest.approx(3 * GAP_S * 0.9 + GAP_S)
    assert circuit.destroyed == [DestroyReason.TIMEOUT]


async def test_an_answer_that_ends_is_untouched(autojump_clock: trio.testing.MockClock) -> None:
    circuit = FakeCircuit(chunks=5, ends=True)
    silent: list[Circuit] = []
    assert await _drain(circuit, silent) == [{"n": n} for n in range(5)]
    assert circuit.destroyed == [] and silent == []


def test_pooled_circuits_through_a_hop_that_left_the_directory_are_retired() -> None:
    """A relay that fell silent drops out of the next document: pooled circuits through it take no more
    requests (the ones through listed hops stay in use)."""
    relays = [relay_descriptor(identity(RELAY_SEED_BASE + n), number=n) for n in range(1, 6)]
    node = node_descriptor(identity(NODE_SEED_BASE + 1))

    def directory(listed: list[RelayDescriptor]) -> Directory:
        return Directory(NETWORK, T0, T0 + 60, T0 + 120, {r.node_id: r for r in listed}, {node.node_id: node})

    overlay = Overlay(Bootstrap(NETWORK, 1, 300, ()), cast(Any, None), rng=random.Random(3))
    overlay.use_directory(directory(relays))
    pooled = []
    for path in (relays[0:3], relays[1:4]):
        hops = [HopInfo(r.node_id, r.onion_keys[0], r.address) for r in path]
        circuit = FakeCircuit(chunks=0, core=_Core((*hops, HopInfo(node.node_id, node.onion_keys[0]))))
        pooled.append(_Pooled(cast(Any, circuit), 0.0, 0.0))
    overlay._pool[node.node_id] = list(pooled)
    overlay.use_directory(directory([r for r in relays if r is not relays[0]]))
    assert [p.retired for p in pooled] == [True, False]
    overlay.use_directory(Directory(NETWORK, T0, T0 + 60, T0 + 120, {r.node_id: r for r in relays}, {}))
    assert pooled[1].retired  # the node itself left


def test_a_silent_path_retires_pooled_circuits_sharing_its_guard_or_middle_and_new_paths_avoid_them() -> None:
    relays = [HopInfo(bytes([n]) * 32, b"k" * 32, f"ws://r{n}.example.net:7000/") for n in range(5)]
    node = HopInfo(b"n" * 32, b"k" * 32)
    overlay = Overlay(Bootstrap(NETWORK, 1, 300, ()), cast(Any, None), rng=random.Random(4))
    paths = ([0, 1, 2], [3, 1, 4], [3, 4, 0], [4, 3, 2])
    circuits = [FakeCircuit(chunks=0, core=_Core((*[relays[i] for i in p], node))) for p in paths]
    pooled = [_Pooled(cast(Any, circuit), 0.0, 0.0) for circuit in circuits]
    overlay._pool[node.node_id] = list(pooled)
    silent = FakeCircuit(chunks=0, core=_Core((relays[1], relays[2], relays[4], node)))
    overlay._retire_circuits_sharing(cast(Circuit, silent))
    # Guard or middle shared: retired; sharing only the home relay (the last relay) or the node is no reason.
    assert [p.retired for p in pooled] == [True, True, False, False]
    assert overlay._recently_silent() == {relays[1].node_id, relays[2].node_id}
