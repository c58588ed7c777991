"""Request isolation (tp_gateway.isolation, the pool in tp_gateway.overlay): a pooled circuit carries the
requests of one isolation key only, rotates after REQUESTS_PER_CIRCUIT_MAX requests, and the pool stays
within POOL_KEYS_MAX keys and POOL_CIRCUITS_PER_KEY_MAX circuits a key. On trio's MockClock and the
in-memory transport, against the real relays and GPU node, which record the circuit each request came on."""

from __future__ import annotations

import json
from collections import defaultdict
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import trio

from tests.tp_gateway.test_client import ScriptedOverlay
from tests.tp_gateway.test_http_guard import CHAT, app_of, send
from tests.tp_gateway.test_overlay_deterministic import (
    REQUEST,
    Net,
    NodeSpec,
    RelaySpec,
    finished,
    overlay_on,
)
from tp_gateway.client import overlay_service
from tp_gateway.isolation import ANONYMOUS, Isolation, RecentKeys, api_key_isolation
from tp_gateway.overlay import (
    POOL_CIRCUITS_PER_KEY_MAX,
    POOL_KEYS_MAX,
    REQUESTS_PER_CIRCUIT_MAX,
    Overlay,
)
from tp_gateway.request_trace import RequestTrace
from tp_net.protocol.bootstrap_config import Bootstrap, BootstrapAuthority
from tp_net.protocol.hop_outputs import CircuitRef
from tp_node.engine import FAKE_MODEL_ID
from tp_node.gpu_node import GpuNode

ALICE = api_key_isolation("Bearer sk-alice")
BOB = api_key_isolation("Bearer sk-bob")


def record_requests(node: GpuNode) -> list[tuple[CircuitRef, str]]:
    """What the node can see: each request's circuit (its name at the node) and its prompt."""
    seen: list[tuple[CircuitRef, str]] = []
    respond = node.services._respond

    async def recording(key: tuple[CircuitRef, int], service: str, document: Any) -> None:
        seen.append((key[0], document["messages"][0]["content"]))
        await respond(key, service, document)

    node.services._respond = recording  # type: ignore[method-assign]
    return seen


def request_of(who: str) -> dict[str, Any]:
    return {**REQUEST, "messages": [{"role": "user", "content": who}]}


async def ask(overlay: Overlay, isolation: Isolation, who: str = "") -> RequestTrace:
    trace = RequestTrace()
    document = request_of(who)
    chunks = [c async for c in overlay.generate(FAKE_MODEL_ID, document, trace, isolation=isolation)]
    assert finished(chunks)
    return trace


def keys_per_circuit(seen: list[tuple[CircuitRef, str]]) -> dict[CircuitRef, set[str]]:
    carried: dict[CircuitRef, set[str]] = defaultdict(set)
    for circuit, who in seen:
        carried[circuit].add(who)
    return carried


def one_node_network(tmp_path: Path, pool_nodes_max: int = 0) -> AbstractAsyncContextManager[Net]:
    """Five relays, one GPU node homed at the last, guards the first three: every request goes to that
    node, so only isolation keeps keys apart."""
    return overlay_on(
        [RelaySpec()] * 5,
        [NodeSpec(home=4)],
        guards=[0, 1, 2],
        tmp_path=tmp_path,
        pool_nodes_max=pool_nodes_max,
    )


def usable_owners(overlay: Overlay) -> list[bytes | None]:
    now = trio.current_time()
    return [p.owner for entries in overlay._pool.values() for p in entries if p.usable(now)]


async def test_two_api_keys_never_arrive_on_one_circuit_at_the_node(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # Warm circuits to claim (pool_nodes_max), one node: everything goes to it, so only isolation separates.
    async with one_node_network(tmp_path, pool_nodes_max=8) as net:
        seen = record_requests(net.gpu_nodes[net.nodes[0].node_id])
        await trio.sleep(5)  # the pool is warm
        for _ in range(4):  # one after the other, then all at once
            for who, key in (("alice", ALICE), ("bob", BOB), ("anonymous", ANONYMOUS)):
                await ask(net.overlay, key, who)
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                for who, key in (("alice", ALICE), ("bob", BOB), ("anonymous", ANONYMOUS)):
                    nursery.start_soon(ask, net.overlay, key, who)
        assert len(seen) == 24
        carried = keys_per_circuit(seen)
        assert all(len(keys) == 1 for keys in carried.values()), carried
        assert {who for keys in carried.values() for who in keys} == {"alice", "bob", "anonymous"}
        # Requests of one key do share: the pool is still a pool.
        assert len(carried) < len(seen) / 2


async def test_a_circuit_rotates_after_requests_per_circuit_max(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with one_node_network(tmp_path, pool_nodes_max=8) as net:
        seen = record_requests(net.gpu_nodes[net.nodes[0].node_id])
        await trio.sleep(5)
        traces = [await ask(net.overlay, ALICE, "alice") for _ in range(REQUESTS_PER_CIRCUIT_MAX + 1)]
        circuits = [circuit for circuit, _ in seen]
        assert circuits[:REQUESTS_PER_CIRCUIT_MAX] == [circuits[0]] * REQUESTS_PER_CIRCUIT_MAX
        assert circuits[-1] != circuits[0]
        assert traces[-1].pooled  # the next circuit was a warm one: rotation costs the request no build
        await trio.sleep(2)  # the pool retires the spent circuit: the node sees it destroyed
        assert net.gpu_nodes[net.nodes[0].node_id].core.state_of(circuits[0]) is None


async def test_inventing_keys_never_widens_the_pool_past_pool_keys_max(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with one_node_network(tmp_path) as net:
        keys = [api_key_isolation(f"Bearer sk-invented-{n}") for n in range(POOL_KEYS_MAX + 8)]
        for key in keys:
            await ask(net.overlay, key)
        owners = usable_owners(net.overlay)
        assert len(owners) == POOL_KEYS_MAX and set(owners) == set(keys[-POOL_KEYS_MAX:])
        await trio.sleep(2)  # the retired ones are destroyed
        assert sum(len(entries) for entries in net.overlay._pool.values()) == POOL_KEYS_MAX
        # The least recently used key went first: a key in use keeps its circuit.
        await ask(net.overlay, keys[8])
        await ask(net.overlay, api_key_isolation("Bearer sk-one-more"))
        assert keys[8] in usable_owners(net.overlay) and keys[9] not in usable_owners(net.overlay)


async def test_one_key_holds_at_most_pool_circuits_per_key_max(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    nodes = [NodeSpec(home=3 + n % 2) for n in range(6)]
    async with overlay_on([RelaySpec()] * 5, nodes, guards=[0, 1, 2], tmp_path=tmp_path) as net:
        used = {(await ask(net.overlay, ALICE)).node_id for _ in range(24)}
        assert len(used) > POOL_CIRCUITS_PER_KEY_MAX  # the test asks more nodes than the bound
        assert usable_owners(net.overlay).count(ALICE) <= POOL_CIRCUITS_PER_KEY_MAX
        # Requests that overlap each build (no circuit of theirs yet): still within the bound after.
        async with trio.open_nursery() as nursery:
            for _ in range(3 * POOL_CIRCUITS_PER_KEY_MAX):
                nursery.start_soon(ask, net.overlay, BOB)
        assert usable_owners(net.overlay).count(BOB) <= POOL_CIRCUITS_PER_KEY_MAX


async def test_a_request_isolated_alone_has_a_circuit_to_itself_that_lives_until_it_ends(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # Sealed requests are isolated alone (isolation None). The circuit is retired as it is claimed; the pool
    # must not destroy it before the request's stream is open (trio shuffles which task runs first, so
    # many requests meet that moment).
    async with one_node_network(tmp_path, pool_nodes_max=8) as net:
        seen = record_requests(net.gpu_nodes[net.nodes[0].node_id])
        await trio.sleep(5)
        for _ in range(40):
            await ask(net.overlay, None, "sealed")
        assert len({circuit for circuit, _ in seen}) == len(seen) == 40
        await trio.sleep(2)
        now = trio.current_time()
        in_pool = [p for entries in net.overlay._pool.values() for p in entries if p.usable(now)]
        assert all(p.unclaimed for p in in_pool)  # none takes another request: only warm ones remain


def test_an_api_key_is_kept_only_as_a_digest_of_this_process() -> None:
    assert api_key_isolation("Bearer sk-alice") == ALICE != BOB
    assert api_key_isolation(None) == api_key_isolation("") == api_key_isolation("Bearer  ") == ANONYMOUS
    assert b"alice" not in ALICE and len(ALICE) != len(ANONYMOUS)


def test_recent_keys_drop_the_least_recently_used() -> None:
    keys = RecentKeys(2)
    assert keys.use(b"a") == [] and keys.use(b"b") == []
    assert keys.use(b"a") == [] and keys.use(b"c") == [b"b"]
    assert b"a" in keys and b"b" not in keys and len(keys) == 2


async def test_the_gateway_isolates_by_the_api_key_a_request_came_with() -> None:
    overlay = ScriptedOverlay()
    app = app_of(overlay)
    for header in ("Bearer sk-alice", "Bearer sk-bob", "Bearer sk-alice", None):
        headers = {"Content-Type": "application/json"}
        if header is not None:
            headers["Authorization"] = header
        status, _, _ = await send(
            app, "POST", "/v1/chat/completions", headers=headers, body=json.dumps(CHAT).encode()
        )
        assert status == 200
    assert overlay.isolations == [ALICE, BOB, ALICE, ANONYMOUS]


async def test_each_in_process_client_instance_has_an_overlay_and_a_pool_of_its_own() -> None:
    # Nothing answers at the authority's address: the overlays only start; what matters is that each
    # client instance's service opens an overlay of its own (its own pool), never a shared one.
    bootstrap = Bootstrap("isolation-net", 1, 300, (BootstrapAuthority(b"a" * 32, "ws://127.0.0.1:9/"),))
    async with trio.open_nursery() as nursery:
        first = await overlay_service(bootstrap, None)(nursery)
        second = await overlay_service(bootstrap, None)(nursery)
        assert first.ready is not second.ready and first.app is not second.app
        nursery.cancel_scope.cancel()
