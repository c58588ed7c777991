"""The simulator's cost curve: wall time, CPU and peak memory of `tp-sim` runs of scale-10k's layout scaled
to N machines, each run in a child process of its own (so its CPU and max RSS are its own).

    .venv/bin/python -m benchmarks.sim_cost --machines 1000,3000 [--requests-s 600] [--profile DIR]
        [--sample] [--budget-s SECONDS]

A run keeps scale-10k's shares (3 % relays, 3 of them authorities; 1 % GPU nodes with 3 home relays each;
96 % clients), its warm-up (700 s simulated for the first directory document) and its request rate (one
request per machine per simulated hour), over --requests-s simulated seconds of requests (scale-10k: 3,600)
plus its 60 s drain. With --profile DIR each run is a second child under cProfile (slower, so its figures are
not the row's) and the profile's top functions and its time by package are printed. With --sample the
measured run itself is profiled by sampling its stack (benchmarks.stack_sampler: cheap enough for 10k).

The child prints its progress (simulated seconds reached, its CPU and max RSS so far) every hundredth of
the run; from it a row gives the CPU per simulated second after the warm-up and what the full hour of
requests (scale-10k's 3,600 s) would cost at that rate. A run past --budget-s wall seconds is killed and
its row says how far it got.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import os
import pstats
import resource
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.stack_sampler import StackSampler, package_of
from simulations.config import SCENARIOS, Scenario

BASE = "scale-10k"
BASE_MACHINES = 10_000
REQUESTS_PER_MACHINE_HOUR = 1.0
FULL_REQUESTS_S = 3600.0  # scale-10k's hour of requests, what a scaled run's projection is for
SEED = 1
PROFILE_TOP = 25


def scaled(machines: int, requests_s: float) -> Scenario:
    """scale-10k's layout and rates, `machines` machines, `requests_s` simulated seconds of requests."""
    base = SCENARIOS[BASE]
    share = machines / BASE_MACHINES
    return dataclasses.replace(
        base,
        name=f"scale-{machines}",
        relays=round(base.relays * share),
        gpu_nodes=round(base.gpu_nodes * share),
        clients=round(base.clients * share),
        duration_s=base.warmup_s + requests_s + base.drain_s,
        requests=round(machines * REQUESTS_PER_MACHINE_HOUR * requests_s / 3600),
    )


def _progress_line(
    started: float, scenario: Scenario, sampler: StackSampler | None
) -> Callable[[float], None]:
    def progress(fraction: float) -> None:
        if sampler and fraction * scenario.duration_s >= scenario.warmup_s:
            sampler.phase("after_warmup")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        point = {
            "simulated_s": round(fraction * scenario.duration_s, 1),
            "wall_s": round(time.monotonic() - started, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
        }
        print(json.dumps({"progress": point}), flush=True)

    return progress


def _child(machines: int, requests_s: float, profile: Path | None, sample: bool) -> None:
    from simulations.runner import run_once

    started = time.monotonic()
    scenario = scaled(machines, requests_s)
    scenario.validate()
    profiler = cProfile.Profile() if profile else None
    sampler = StackSampler() if sample else None
    if profiler:
        profiler.enable()
    if sampler:
        sampler.start()
    run = run_once(scenario, SEED, _progress_line(started, scenario, sampler))
    if sampler:
        sampler.stop()
    if profiler and profile:
        profiler.disable()
        profiler.dump_stats(profile)
    report = run.report
    requests = report["requests"]
    summary = {
        "machines": report["machines"]["total"],
        "requests": requests["requests"],
        "succeeded": requests["succeeded"],
        "invariant_checks": report["invariant_checks"],
        "bytes_delivered": report["network"]["bytes_delivered"],
    }
    result = {"scenario": dataclasses.asdict(scenario), "report": summary}
    if sampler:
        result["sampled_profile"] = sampler.summary()
    print(json.dumps(result, default=str), flush=True)


def after_warmup(progress: list[dict[str, float]], scenario: Scenario) -> dict[str, float]:
    """CPU per simulated second while requests come (from the first progress point past the warm-up to
    the last one before the drain), and what a run with the full hour of requests would take: the same
    warm-up, 3,600 s at that rate, and the drain as measured (or at that rate, for a run cut short)."""
    requests_end_s = scenario.duration_s - scenario.drain_s
    past = [point for point in progress if point["simulated_s"] >= scenario.warmup_s]
    during = [point for point in past if point["simulated_s"] <= requests_end_s]
    if len(during) < 2:
        return {}
    first, last = during[0], during[-1]
    rate = (last["cpu_s"] - first["cpu_s"]) / (last["simulated_s"] - first["simulated_s"])
    ended = past[-1]["simulated_s"] >= scenario.duration_s
    drain_cpu_s = past[-1]["cpu_s"] - last["cpu_s"] if ended else rate * scenario.drain_s
    return {
        "cpu_at_warmup_s": first["cpu_s"],
        "cpu_per_simulated_s": round(rate, 3),
        "drain_cpu_s": round(drain_cpu_s, 1),
        "projected_full_hour_cpu_s": round(first["cpu_s"] + rate * FULL_REQUESTS_S + drain_cpu_s),
    }


def measure(
    machines: int,
    requests_s: float,
    profile: Path | None = None,
    *,
    sample: bool = False,
    budget_s: float | None = None,
) -> dict[str, Any]:
    """One child run: wall seconds, CPU seconds (user, system) and max RSS (MB) from its rusage; a run
    past `budget_s` is killed, and the row says how far it got."""
    command = [sys.executable, "-m", "benchmarks.sim_cost", "--child", str(machines)]
    command += ["--requests-s", str(requests_s)] + (["--profile-file", str(profile)] if profile else [])
    command += ["--sample"] if sample else []
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    killer = threading.Timer(budget_s, process.kill) if budget_s else None
    if killer:
        killer.start()
    progress: list[dict[str, float]] = []
    result: dict[str, Any] | None = None
    for line in process.stdout:
        message = json.loads(line)
        if "progress" in message:
            progress.append(message["progress"])
            print(f"scale-{machines}: {json.dumps(message['progress'])}", file=sys.stderr, flush=True)
        else:
            result = message
    _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage
    if killer:
        killer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    scenario = scaled(machines, requests_s)
    row: dict[str, Any] = {
        "machines": machines,
        "simulated_s": scenario.duration_s,
        "requests": scenario.requests,
        "completed": result is not None,
        "wall_s": round(time.monotonic() - started, 1),
        "cpu_user_s": round(usage.ru_utime, 1),
        "cpu_system_s": round(usage.ru_stime, 1),
        "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "load_average_end": os.getloadavg(),
        **after_warmup(progress, scenario),
        "progress": [[point["simulated_s"], point["cpu_s"], point["max_rss_mb"]] for point in progress],
    }
    if result is None:
        if not progress or process.returncode != -9:
            raise RuntimeError(f"tp-sim run of {machines} machines exited with {process.returncode}")
        row["reached"] = progress[-1]  # killed at the budget: how far it got
        return row
    row["report"] = result["report"]
    if "sampled_profile" in result:
        row["sampled_profile"] = result["sampled_profile"]
    return row


def by_package(profile: Path) -> tuple[dict[str, float], list[str]]:
    """The profile's own time (tottime) by package, as shares, and its top functions by own time."""
    stats = pstats.Stats(str(profile))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values())
    shares: dict[str, float] = defaultdict(float)
    for (filename, _, _), entry in raw.items():
        shares[package_of(filename)] += entry[2] / total
    top = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:PROFILE_TOP]
    lines = [f"{entry[2] / total:6.1%} {Path(key[0]).name}:{key[1]} {key[2]}" for key, entry in top]
    return dict(sorted(shares.items(), key=lambda item: -item[1])), lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sim_cost", description=__doc__)
    parser.add_argument("--machines", default="1000,3000", help="comma-separated machine counts")
    parser.add_argument("--requests-s", type=float, default=600.0, help="simulated seconds of requests")
    parser.add_argument("--profile", type=Path, help="also profile each size, profiles written here")
    parser.add_argument("--sample", action="store_true", help="profile the measured runs by sampling")
    parser.add_argument("--budget-s", type=float, help="kill a run past this many wall seconds")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profile-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.requests_s, args.profile_file, args.sample)
        return
    for machines in sorted(int(text) for text in args.machines.split(",")):
        row = measure(machines, args.requests_s, sample=args.sample, budget_s=args.budget_s)
        print(json.dumps(row), flush=True)
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            path = args.profile / f"scale-{machines}.prof"
            profiled = measure(machines, args.requests_s, path)
            shares, top = by_package(path)
            print(json.dumps({"profiled": profiled, "own_time_by_package": shares}), flush=True)
            print("\n".join(top), flush=True)


if __name__ == "__main__":
    main()
