"""The cover stream's harness (benchmarks.traffic.cover) on one seeded simulated hour per setting: the idle
link is no longer silent, the cover's cells are what its rate says, the node keeps the circuit (the harness
asserts it), and the conversation's start still shows (what a low-rate cover cannot hide)."""

from __future__ import annotations

import math

from benchmarks.traffic.cover import HOUR_S, run
from tp_net.protocol.traffic_shaping import COVER_CELLS_PER_S_MAX, COVER_STREAM_OFF, CoverStream


def test_the_cover_stream_fills_the_idle_link_but_not_the_start_of_a_conversation() -> None:
    off = run(COVER_STREAM_OFF, 5)
    on = run(CoverStream(rate_cells_per_s=COVER_CELLS_PER_S_MAX), 5)
    expected = COVER_CELLS_PER_S_MAX * HOUR_S
    assert abs(on.cover_cells - expected) < 5 * math.sqrt(expected)
    assert on.idle_cells > off.idle_cells + 0.8 * expected
    assert off.silent_windows > 0.7
    assert on.silent_windows < 0.2
    assert off.start_error_s <= 1.0 and on.start_error_s <= 1.0
