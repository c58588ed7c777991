"""A stranger holds a GPU node's circuit table (CIRCUITS_PER_LINK_MAX on the link from its home relay, which
carries every circuit to the node): the node and its home relay see no clients, so no per-client limit applies
there. It builds that many circuits through the home relay, within its entries' CREATE limits, and keeps them
open doing nothing. Before eviction every other client's circuit to the node was then refused with
DESTROY(RESOURCE_LIMIT) at the home relay's EXTEND; now a new circuit takes the place of the one idle the
longest (CIRCUIT_EVICT_IDLE_MIN_S, tp_net/protocol/circuit_hop.py), and an honest user's requests, sealed
and plain, succeed. On trio's MockClock and the in-memory transport (tests/tp_gateway harness)."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.tp_gateway.test_overlay_deterministic import ask, finished
from tests.tp_gateway.test_sealed_circuits import hold_link, network, sealed_answer, stranger_path
from tp_net.protocol import circuit_hop
from tp_net.protocol.circuit_client import CircuitState
from tp_net.protocol.circuit_hop import CIRCUIT_EVICT_IDLE_MIN_S, CIRCUITS_PER_LINK_MAX
from tp_net.trio.client import Circuit, CircuitError, ClientLink

STRANGER_LINKS = 16  # links to the four entries it may use (each a client of its own in memory)
STRANGER_CIRCUITS_PER_LINK = CIRCUITS_PER_LINK_MAX // STRANGER_LINKS  # within a client's CREATE burst
SMALL_TABLE = 16  # CIRCUITS_PER_LINK_MAX where the stranger churns through the whole table
DROP_INTERVAL_S = 1.5  # the stranger's DROPs on each circuit (the node's DROP budget refills at 1/s)


def home_link_circuits(net: Any) -> int:
    """Circuits on the home relay's link to the node (the table the stranger fills)."""
    home = net.running[net.relays[4].node_id].core
    link = home.link_to(net.nodes[0].node_id)
    assert link is not None
    return int(home.circuits_on(link))


async def keep_sending_drops(circuits: list[Circuit]) -> None:
    while True:
        for circuit in circuits:
            if circuit.core.state is not CircuitState.CLOSED:
                circuit.send_drop()
        await trio.sleep(DROP_INTERVAL_S)


async def test_a_stranger_holding_the_nodes_circuit_table_does_not_deny_an_honest_user(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with network(tmp_path) as net, trio.open_nursery() as nursery:
        dialer = net.overlay._dialer
        held: list[Circuit] = []
        for index in range(STRANGER_LINKS):
            path = stranger_path(net, index)
            link: ClientLink = await nursery.start(hold_link, dialer, path[0])
            for _ in range(STRANGER_CIRCUITS_PER_LINK):
                with suppress(CircuitError):  # the table is full of circuits younger than the minimum
                    held.append(await link.build_circuit(path))
        assert home_link_circuits(net) == CIRCUITS_PER_LINK_MAX
        # The stranger holds them, sending DROPs on every one (free for it, within the node's DROP budget):
        # they keep a circuit from the idle timeout, not from eviction.
        nursery.start_soon(keep_sending_drops, held)
        await trio.sleep(CIRCUIT_EVICT_IDLE_MIN_S + 1)
        for _ in range(3):
            assert "finish_reason" in (await sealed_answer(net))[-1]
        for _ in range(2):
            chunks, _trace = await ask(net.overlay)
            assert finished(chunks)
        # The stranger's oldest gave way (a sealed request's circuit then closes, and frees its place).
        assert any(circuit.core.state is CircuitState.CLOSED for circuit in held)
        nursery.cancel_scope.cancel()


async def test_an_honest_pooled_circuit_given_away_is_built_again_on_demand(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The honest gateway's pooled circuit, idle past the minimum, is evicted by a stranger's churn of new
    circuits: the next request builds another and succeeds."""
    monkeypatch.setattr(circuit_hop, "CIRCUITS_PER_LINK_MAX", SMALL_TABLE)
    async with network(tmp_path) as net, trio.open_nursery() as nursery:
        chunks, _trace = await ask(net.overlay)
        assert finished(chunks)
        built = net.overlay.stats.circuits_built
        await trio.sleep(CIRCUIT_EVICT_IDLE_MIN_S + 1)
        for index in range(2):  # a table's worth: the honest circuit, the only one older, gives way
            path = stranger_path(net, index)
            link: ClientLink = await nursery.start(hold_link, net.overlay._dialer, path[0])
            for _ in range(SMALL_TABLE // 2):
                await link.build_circuit(path)
        assert home_link_circuits(net) == SMALL_TABLE
        assert net.overlay.pooled_circuits == 0  # the DESTROY reached the gateway: nothing usable is pooled
        await trio.sleep(CIRCUIT_EVICT_IDLE_MIN_S + 1)  # the stranger's circuits idle past the minimum too
        for _ in range(2):
            chunks, _trace = await ask(net.overlay)
            assert finished(chunks)
        assert net.overlay.stats.circuits_built > built
        nursery.cancel_scope.cancel()
