"""The traffic harness on real processes (benchmarks.traffic.real): a small capture over tp_dev's local
network gives traces in the harness's format, one conversation each, that its classifier's features accept
(the AUPRC of such a run is in docs/BENCHMARKS.md, not asserted here)."""

from __future__ import annotations

from pathlib import Path

import trio

from benchmarks.traffic.__main__ import SETTINGS
from benchmarks.traffic.attack import features
from benchmarks.traffic.real import capture_real_async
from tp_net.protocol.frames import CELL_BODY_BYTES


async def test_a_real_capture_gives_one_guard_trace_per_conversation_in_the_harness_format(
    tmp_path: Path,
) -> None:
    setting = next(s for s in SETTINGS if s.name == "none")
    with trio.fail_after(120):
        conversations = await capture_real_async(setting, 1, 3, tmp_path)
    assert sorted(c.label for c in conversations) == [0, 1, 2]
    width = len(features([]))
    for conversation in conversations:
        trace = conversation.guard
        times = [t for t, _, _ in trace]
        assert times[0] == 0.0 and times == sorted(times)
        assert {d for _, d, _ in trace} == {1, -1}
        assert all(isinstance(n, int) and n > 0 for _, _, n in trace)
        # One conversation: its answer (at least a cell per token when nothing is shaped, several cells to
        # a message when they queue) came back.
        assert sum(n for _, d, n in trace if d == -1) > 50 * CELL_BODY_BYTES
        assert 0 < conversation.ttft_s < conversation.total_s
        assert len(features(trace)) == width
