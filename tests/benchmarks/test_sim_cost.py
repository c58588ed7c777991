"""The simulator's cost curve: its scaling, its per-simulated-second projection, its sampling profiler
(no simulation runs here: a scaled run takes minutes)."""

from __future__ import annotations

import time

from benchmarks.sim_cost import FULL_REQUESTS_S, after_warmup, scaled
from benchmarks.stack_sampler import StackSampler, package_of


def test_a_scaled_run_keeps_scale_10ks_shares_and_rate() -> None:
    scenario = scaled(30_000, 60.0)
    assert (scenario.relays, scenario.gpu_nodes, scenario.clients) == (900, 300, 28_800)
    assert scenario.duration_s == 700.0 + 60.0 + 60.0
    assert scenario.requests == 500  # one request per machine per simulated hour


def test_the_projection_uses_the_cpu_while_requests_come() -> None:
    scenario = scaled(1000, 100.0)  # requests from 700 to 800 s, drain to 860 s
    progress = [
        {"simulated_s": 600.0, "cpu_s": 50.0},  # warm-up: not part of the rate
        {"simulated_s": 710.0, "cpu_s": 100.0},
        {"simulated_s": 790.0, "cpu_s": 140.0},
        {"simulated_s": 860.0, "cpu_s": 150.0},  # the drain: measured, not at the rate
    ]
    figures = after_warmup(progress, scenario)
    assert figures["cpu_per_simulated_s"] == 0.5
    assert (figures["cpu_at_warmup_s"], figures["drain_cpu_s"]) == (100.0, 10.0)
    assert figures["projected_full_hour_cpu_s"] == round(100.0 + 0.5 * FULL_REQUESTS_S + 10.0)
    cut_short = after_warmup(progress[:3], scenario)  # killed before the drain: the drain at the rate
    assert cut_short["drain_cpu_s"] == 0.5 * scenario.drain_s
    assert after_warmup(progress[:2], scenario) == {}  # one point past the warm-up: no rate


def _spin_here(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_the_sampler_sees_where_the_main_thread_spends_its_time() -> None:
    sampler = StackSampler(interval_s=0.002)
    sampler.start()
    _spin_here(0.3)
    sampler.phase("later")
    _spin_here(0.1)
    sampler.stop()
    summary = sampler.summary()
    assert sampler.samples >= 20
    assert set(summary) == {"interval_s", "start", "later"}
    run, later = summary["start"], summary["later"]
    assert isinstance(run, dict) and run["samples"] > 0
    assert isinstance(later, dict) and later["samples"] > 0  # after phase(): counted in the new phase
    own_top = run["own_top"]
    assert isinstance(own_top, dict)
    assert next(iter(own_top)).endswith("test_sim_cost.py:_spin_here")
    assert own_top[next(iter(own_top))] > 0.5
    assert package_of("/x/site-packages/trio/_core/_run.py") == "trio"
    assert package_of("/x/lib/python3.11/json/encoder.py") == "other"
