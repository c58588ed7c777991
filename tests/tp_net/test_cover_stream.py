"""The optional cover stream (tp_net.protocol.traffic_shaping.CoverSchedule), sans-IO: DROPs at the configured
Poisson rate on an idle circuit, none while it carries a request, and never past the cover's share of the
node's DROP budget, which a node enforces by tearing the circuit down."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from tests.tp_net.circuit_harness import Wire
from tp_gateway.overlay import CIRCUIT_KEEPALIVE_S, POOL_TICK_S
from tp_net.protocol.circuit_client import CircuitState
from tp_net.protocol.circuit_hop import DROP_CELLS_PER_CIRCUIT_BURST, DROP_CELLS_PER_CIRCUIT_RATE_PER_S
from tp_net.protocol.rate_limits import TokenBucket
from tp_net.protocol.traffic_shaping import (
    COVER_BURST_CELLS,
    COVER_CELLS_PER_S_MAX,
    CoverSchedule,
    CoverStream,
)

HOUR_S = 3600.0


def _run(schedule: CoverSchedule, seconds: float, *, start: float = 0.0, idle: bool = True) -> int:
    """Cells the schedule asks for when looked at every POOL_TICK_S (as the gateway pool does)."""
    steps = round(seconds / POOL_TICK_S)
    return sum(schedule.cells_due(start + n * POOL_TICK_S, idle=idle) for n in range(steps + 1))


@pytest.mark.parametrize("rate", [0.05, COVER_CELLS_PER_S_MAX / 2, COVER_CELLS_PER_S_MAX])
def test_an_idle_circuit_gets_cells_at_the_configured_rate(rate: float) -> None:
    schedule = CoverSchedule(CoverStream(rate_cells_per_s=rate), random.Random(7))
    cells = _run(schedule, HOUR_S)
    expected = rate * HOUR_S
    assert abs(cells - expected) < 4 * math.sqrt(expected)  # Poisson: within 4 standard deviations


def test_the_gaps_are_random_not_a_fixed_beat() -> None:
    schedule = CoverSchedule(CoverStream(rate_cells_per_s=0.1), random.Random(8))
    times = [t for t in range(int(HOUR_S)) for _ in range(schedule.cells_due(float(t), idle=True))]
    gaps = {b - a for a, b in itertools.pairwise(times)}
    assert len(gaps) > 10


def test_off_by_default_sends_nothing() -> None:
    schedule = CoverSchedule(CoverStream(), random.Random(9))
    assert _run(schedule, HOUR_S) == 0


def test_a_circuit_carrying_a_request_gets_no_cover_and_starts_again_after() -> None:
    schedule = CoverSchedule(CoverStream(rate_cells_per_s=COVER_CELLS_PER_S_MAX), random.Random(10))
    assert _run(schedule, 600.0) > 0
    assert _run(schedule, 600.0, start=601.0, idle=False) == 0
    # Idle again: a fresh gap from now, no catching up on the cells the request's time would have had.
    assert schedule.cells_due(1202.0, idle=True) == 0
    assert _run(schedule, 600.0, start=1203.0) < COVER_CELLS_PER_S_MAX * 600.0 * 1.5


@pytest.mark.parametrize("rate", [-0.1, COVER_CELLS_PER_S_MAX * 1.01, DROP_CELLS_PER_CIRCUIT_RATE_PER_S])
def test_a_rate_past_the_cover_share_is_refused(rate: float) -> None:
    with pytest.raises(ValueError):
        CoverStream(rate_cells_per_s=rate)


class _HurriedRandom(random.Random):
    """A schedule's worst case: every gap tiny, asking for far more cells than its share."""

    def expovariate(self, lambd: float) -> float:
        return 0.001


def test_the_cover_never_takes_more_than_its_share_of_the_drop_budget() -> None:
    schedule = CoverSchedule(CoverStream(rate_cells_per_s=COVER_CELLS_PER_S_MAX), _HurriedRandom(11))
    budget_cells = COVER_BURST_CELLS + COVER_CELLS_PER_S_MAX * HOUR_S
    assert _run(schedule, HOUR_S) <= budget_cells + 1


def test_the_node_keeps_a_circuit_whose_client_uses_every_drop_share_for_an_hour() -> None:
    """The worst a client sends on one circuit: the drop echoes' whole budget (what circuit_client allows
    them), a keepalive every CIRCUIT_KEEPALIVE_S, and a cover stream that asks for far more than its share.
    The node (each hop's DROP TokenBucket) must never tear it down; a cover share past what is left of the
    node's budget would."""
    wire = Wire(66)
    handle = wire.open_circuit(wire.add_path(3))
    echoes = TokenBucket(DROP_CELLS_PER_CIRCUIT_RATE_PER_S / 2, DROP_CELLS_PER_CIRCUIT_BURST // 2)
    cover = CoverSchedule(CoverStream(rate_cells_per_s=COVER_CELLS_PER_S_MAX), _HurriedRandom(12))
    last_keepalive = -math.inf
    sent = 0
    for second in range(int(HOUR_S)):
        now = float(second)
        wire.advance(now - wire.now)
        due = cover.cells_due(now, idle=True)
        while echoes.take(now):
            due += 1
        if now - last_keepalive > CIRCUIT_KEEPALIVE_S:
            last_keepalive = now
            due += 1
        for _ in range(due):
            handle.circuit.send_drop()
        sent += due
        wire.run()
        assert handle.circuit.state is CircuitState.OPEN, f"torn down at {now} s"
    assert sent > DROP_CELLS_PER_CIRCUIT_RATE_PER_S * HOUR_S * 0.7
