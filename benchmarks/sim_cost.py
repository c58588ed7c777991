"""The simulator's cost curve: wall time, CPU and peak memory of `tp-sim` runs of scale-10k's layout scaled
to N machines, each run in a child process of its own (so its CPU and max RSS are its own).

    .venv/bin/python -m benchmarks.sim_cost --machines 1000,3000 [--requests-s 600] [--profile DIR]

A run keeps scale-10k's shares (3 % relays, 3 of them authorities; 1 % GPU nodes with 3 home relays each;
96 % clients), its warm-up (700 s simulated for the first directory document) and its request rate (one
request per machine per simulated hour), over --requests-s simulated seconds of requests (scale-10k: 3,600)
plus its 60 s drain. With --profile DIR each run is a second child under cProfile (slower, so its figures are
not the row's) and the profile's top functions and its time by package are printed.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import os
import pstats
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from simulations.config import SCENARIOS, Scenario

BASE = "scale-10k"
BASE_MACHINES = 10_000
REQUESTS_PER_MACHINE_HOUR = 1.0
SEED = 1
PROFILE_TOP = 25
PACKAGES = ("trio", "tp_net", "tp_crypto", "tp_node", "tp_gateway", "simulations", "nacl", "cryptography")


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


def _child(machines: int, requests_s: float, profile: Path | None) -> None:
    from simulations.runner import run_once

    scenario = scaled(machines, requests_s)
    scenario.validate()
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    run = run_once(scenario, SEED, None)
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
    print(json.dumps({"scenario": dataclasses.asdict(scenario), "report": summary}, default=str))


def measure(machines: int, requests_s: float, profile: Path | None = None) -> dict[str, Any]:
    """One child run: wall seconds, CPU seconds (user, system) and max RSS (MB) from its rusage."""
    command = [sys.executable, "-m", "benchmarks.sim_cost", "--child", str(machines)]
    command += ["--requests-s", str(requests_s)] + (["--profile-file", str(profile)] if profile else [])
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"tp-sim run of {machines} machines exited with {process.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {
        "machines": machines,
        "simulated_s": result["scenario"]["duration_s"],
        "requests": result["scenario"]["requests"],
        "report": result["report"],
        "wall_s": round(time.monotonic() - started, 1),
        "cpu_user_s": round(usage.ru_utime, 1),
        "cpu_system_s": round(usage.ru_stime, 1),
        "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "load_average_end": os.getloadavg(),
    }


def by_package(profile: Path) -> tuple[dict[str, float], list[str]]:
    """The profile's own time (tottime) by package, as shares, and its top functions by own time."""
    stats = pstats.Stats(str(profile))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values())
    shares: dict[str, float] = defaultdict(float)
    for (filename, _, _), entry in raw.items():
        package = next((name for name in PACKAGES if f"/{name}/" in filename), "other")
        shares[package] += entry[2] / total
    top = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:PROFILE_TOP]
    lines = [f"{entry[2] / total:6.1%} {Path(key[0]).name}:{key[1]} {key[2]}" for key, entry in top]
    return dict(sorted(shares.items(), key=lambda item: -item[1])), lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sim_cost", description=__doc__)
    parser.add_argument("--machines", default="1000,3000", help="comma-separated machine counts")
    parser.add_argument("--requests-s", type=float, default=600.0, help="simulated seconds of requests")
    parser.add_argument("--profile", type=Path, help="also profile each size, profiles written here")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profile-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.requests_s, args.profile_file)
        return
    for machines in sorted(int(text) for text in args.machines.split(",")):
        print(json.dumps(measure(machines, args.requests_s)), flush=True)
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            path = args.profile / f"scale-{machines}.prof"
            profiled = measure(machines, args.requests_s, path)
            shares, top = by_package(path)
            print(json.dumps({"profiled": profiled, "own_time_by_package": shares}), flush=True)
            print("\n".join(top), flush=True)


if __name__ == "__main__":
    main()
