"""Sealed requests build a circuit each (PROTOCOL.md 8.1, 9): a run of them, and a stranger's burst of circuit
builds, against the CREATE limits of the real relays and GPU node (tp_net.protocol.rate_limits). On trio's
MockClock and the in-memory transport, so the rates are exact: the requests take no virtual time, and the
run is paced at SEALED_RUN_RATE_PER_S.

Before per-client limits (CREATE buckets per client at its entry, none on links from listed relays and
nodes), the gateway's one link to its guard had a 20/s bucket of 64 that a run of sealed requests at a quiet
machine's pace (benchmarks/sealed.py: ~25/s) emptied, and the node's link from its home relay had one bucket
(200/s, 512) for every client of the node, which a stranger's burst emptied for everyone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import trio

from tests.tp_gateway.test_overlay_deterministic import (
    LARGE_CAPACITY,
    REQUEST,
    Net,
    NodeSpec,
    RelaySpec,
    overlay_on,
)
from tp_gateway.overlay import OverlayError
from tp_net.protocol import rate_limits
from tp_net.protocol.cells import DestroyReason
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.path_selection import circuit_hops
from tp_net.protocol.sealed import ResponseOpener, seal_request, sealing_key_pair
from tp_net.protocol.traffic_shaping import RESPONSE_SHAPING_OFF
from tp_net.trio.client import Circuit, CircuitError, ClientLink

SEALING_KEY = sealing_key_pair(b"test_sealed_circuits sealing key")
# An honest client's run: more requests, faster, than the old per-link bucket allowed (20/s, burst 64).
SEALED_RUN_REQUESTS = 300
SEALED_RUN_RATE_PER_S = 30.0
# The stranger: links to the entries the network lets it use, each building this many circuits to the node,
# in all more than the old shared bucket on the node's home relay link (512).
STRANGER_LINKS = 10
STRANGER_CIRCUITS_PER_LINK = 60
OLD_SHARED_BURST = 512


def network(tmp_path: Path) -> Any:
    """Five relays (guards the first three), one sealed GPU node homed at the last, its response shaping
    off (as the benchmark that failed: answers take no virtual time)."""
    return overlay_on(
        [RelaySpec()] * 5,
        [NodeSpec(home=4)],
        guards=[0, 1, 2],
        tmp_path=tmp_path,
        sealing_key=SEALING_KEY,
        shaping=RESPONSE_SHAPING_OFF,
    )


async def sealed_answer(net: Net) -> list[Any]:
    """One sealed request through the overlay, opened as the client opens it: the node's messages."""
    node = net.nodes[0].node_id
    request = seal_request(node, SEALING_KEY.public, REQUEST, time.time() + 1)
    opener = ResponseOpener(request)
    messages = [opener.open(chunk) async for chunk in net.overlay.forward_sealed(node, request.data)]
    opener.finish()
    return [message for message in messages if message is not None]


async def test_a_run_of_sealed_requests_all_succeed(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with network(tmp_path) as net:
        failures: list[str] = []
        started = trio.current_time()
        for _ in range(SEALED_RUN_REQUESTS):
            try:
                messages = await sealed_answer(net)
            except OverlayError as exc:
                failures.append(str(exc))
            else:
                assert "finish_reason" in messages[-1]
            await trio.sleep(1 / SEALED_RUN_RATE_PER_S)
        assert failures == []
        pace = SEALED_RUN_REQUESTS / (trio.current_time() - started)
        assert pace > SEALED_RUN_RATE_PER_S * 0.9


def stranger_path(net: Net, index: int) -> list[HopInfo]:
    """An entry and a middle among relays 0-3 (the home relay is 4), then the node's home relay and the
    node."""
    entry, middle = net.relays[index % 4], net.relays[(index + 1) % 4]
    return circuit_hops([entry, middle, net.relays[4]], net.nodes[0])


async def test_a_strangers_burst_of_circuits_does_not_deny_an_honest_sealed_user(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with network(tmp_path) as net, trio.open_nursery() as nursery:
        dialer = net.overlay._dialer
        held: list[Circuit] = []
        links: list[ClientLink] = []
        for index in range(STRANGER_LINKS):
            path = stranger_path(net, index)
            link = await nursery.start(hold_link, dialer, path[0])
            links.append(link)
            for _ in range(STRANGER_CIRCUITS_PER_LINK):
                held.append(await link.build_circuit(path))  # within its entry's limit: all built
        assert len(held) > OLD_SHARED_BURST
        # The honest user's sealed requests still reach the node, while the stranger holds its circuits.
        for _ in range(3):
            assert "finish_reason" in (await sealed_answer(net))[-1]
        # The stranger is still limited where it is visible: at its entry, past a client's burst.
        path = stranger_path(net, 0)
        refused = None
        for _ in range(rate_limits.CLIENT_CREATE_BURST):
            try:
                held.append(await links[0].build_circuit(path))
            except CircuitError as exc:
                refused = exc.reason
                break
        assert refused is DestroyReason.RESOURCE_LIMIT
        nursery.cancel_scope.cancel()


async def hold_link(dialer: Any, guard: HopInfo, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with ClientLink.connect(dialer, guard) as link:
        task_status.started(link)
        await trio.sleep_forever()


async def test_a_sealed_request_whose_circuit_build_fails_is_built_again_around_the_relay(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # Relay 3 is listed, never runs, and is by far the heaviest middle: a sealed request's first build
    # draws it; nothing was sent yet, so the request is built again around it (as a plaintext one is).
    relays = [RelaySpec()] * 3 + [RelaySpec(alive=False, capacity=LARGE_CAPACITY), RelaySpec()]
    for seed in range(1, 4):
        async with overlay_on(
            relays,
            [NodeSpec(home=4)],
            guards=[0, 1, 2],
            tmp_path=tmp_path,
            seed=seed,
            sealing_key=SEALING_KEY,
        ) as net:
            assert "finish_reason" in (await sealed_answer(net))[-1]
            assert net.overlay.stats.circuit_build_failures >= 1
