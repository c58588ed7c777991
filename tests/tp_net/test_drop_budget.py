"""DROP (padding) cells are not flow-controlled, so every hop limits the DROPs addressed to it per circuit
(DROP_CELLS_PER_CIRCUIT_BURST, refilled at DROP_CELLS_PER_CIRCUIT_RATE_PER_S); a client past it loses the
circuit at that hop, which tears it down along the whole path."""

from __future__ import annotations

import pytest

from tests.tp_net.circuit_harness import Wire
from tp_net.protocol.cells import DestroyReason
from tp_net.protocol.circuit_client import CircuitClosed, CircuitState
from tp_net.protocol.circuit_hop import DROP_CELLS_PER_CIRCUIT_BURST, DROP_CELLS_PER_CIRCUIT_RATE_PER_S

TARGETS = [0, 1, 3]  # the guard, a middle relay, the GPU node


@pytest.mark.parametrize("target", TARGETS)
def test_drops_past_the_burst_lose_the_circuit_at_the_hop_they_are_for(target: int) -> None:
    wire = Wire(60 + target)
    handle = wire.open_circuit(wire.add_path(3))
    for _ in range(DROP_CELLS_PER_CIRCUIT_BURST):
        handle.circuit.send_drop(target)
    wire.run()
    assert handle.circuit.state is CircuitState.OPEN
    handle.circuit.send_drop(target)
    wire.run()
    assert handle.closed == [CircuitClosed(DestroyReason.PROTOCOL)]
    assert all(node.core.circuit_count == 0 for node in wire.hops.values())


def test_the_drop_budget_refills_at_its_rate() -> None:
    wire = Wire(64)
    handle = wire.open_circuit(wire.add_path(3))
    for _ in range(DROP_CELLS_PER_CIRCUIT_BURST):
        handle.circuit.send_drop()
    wire.run()
    wire.advance(10 / DROP_CELLS_PER_CIRCUIT_RATE_PER_S)
    for _ in range(10):
        handle.circuit.send_drop()
    wire.run()
    assert handle.circuit.state is CircuitState.OPEN
    handle.circuit.send_drop()
    wire.run()
    assert handle.closed == [CircuitClosed(DestroyReason.PROTOCOL)]


def test_one_keepalive_a_minute_never_runs_out() -> None:
    wire = Wire(65)
    handle = wire.open_circuit(wire.add_path(3))
    for _ in range(3 * DROP_CELLS_PER_CIRCUIT_BURST):
        wire.advance(60.0)
        handle.circuit.send_drop()
        wire.run()
    assert handle.circuit.state is CircuitState.OPEN
