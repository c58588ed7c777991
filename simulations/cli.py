"""Console script tp-sim: run a scenario and write report.json and PNG plots.

    tp-sim --scenario smoke --seed 1 --out sim-out
    tp-sim --config my.toml --seed 7 --out sim-out
    tp-sim --attack-sweep [--quick] --seed 1 --out sim-out/attacks

The attack sweep (simulations.weight_sweep) prints its table and writes attack_sweep.json and
compromise_vs_measured.png.

Exit status 0 when the run finished with every invariant holding, 1 when an invariant broke (the seed and
the event are printed; report.json is not written), 2 for a bad scenario or config file.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from simulations.config import SCENARIOS, ConfigError, Scenario, load_config
from simulations.invariants import SimulationViolation
from simulations.metrics import report_json

PROGRESS_BAR_WIDTH = 40
REPORT_FILE = "report.json"
ATTACK_SWEEP_FILE = "attack_sweep.json"


class ProgressBar:
    """A one-line progress bar on a terminal stream (stderr)."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self._stream = stream
        self._label = label
        self._started = time.monotonic()
        self._shown = -1

    def __call__(self, fraction: float) -> None:
        percent = int(fraction * 100)
        if percent == self._shown:
            return
        self._shown = percent
        filled = int(fraction * PROGRESS_BAR_WIDTH)
        bar = "#" * filled + "." * (PROGRESS_BAR_WIDTH - filled)
        elapsed = time.monotonic() - self._started
        self._stream.write(f"\r{self._label} [{bar}] {percent:3d}% {elapsed:6.1f} s")
        if percent >= 100:
            self._stream.write("\n")
        self._stream.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tp-sim",
        description="Simulate a token.place network (the real node code) under virtual time.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--scenario", choices=sorted(SCENARIOS), help="a built-in scenario")
    source.add_argument("--config", type=Path, help="a scenario file (TOML or JSON, same fields)")
    source.add_argument(
        "--attack-sweep",
        action="store_true",
        help="compromise rate against the adversary's measured share, per attack (simulations.weight_sweep)",
    )
    parser.add_argument("--quick", action="store_true", help="with --attack-sweep: a small sweep (seconds)")
    parser.add_argument("--seed", type=int, default=1, help="fixes every random choice (default 1)")
    parser.add_argument("--out", type=Path, required=True, help="directory for report.json and the plots")
    parser.add_argument("--no-plots", action="store_true", help="write report.json only")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    # The checker's own test: one relay is broken on purpose and stores plaintext (see runner.run_once).
    parser.add_argument("--leaky-relay", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.attack_sweep:
        return _attack_sweep(args)
    try:
        scenario = SCENARIOS[args.scenario] if args.scenario else load_config(args.config)
        scenario.validate()
    except ConfigError as exc:
        print(f"tp-sim: {exc}", file=sys.stderr)
        return 2
    return _run(scenario, args)


def _run(scenario: Scenario, args: argparse.Namespace) -> int:
    from simulations.runner import run_scenario  # the node code loads only once the arguments are good

    progress = None if args.quiet else ProgressBar(sys.stderr, f"{scenario.name} seed {args.seed}")
    try:
        result = run_scenario(scenario, args.seed, progress, leaky_relay=args.leaky_relay)
    except SimulationViolation as violation:
        print(
            f"\ntp-sim: INVARIANT VIOLATED, seed {violation.seed}, t={violation.time_s:.3f} s: "
            f"{violation.event}",
            file=sys.stderr,
        )
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / REPORT_FILE).write_text(report_json(result.report), encoding="utf-8")
    if not args.no_plots:
        from simulations.plots import write_plots

        write_plots(result.runs, args.out)
    print(f"tp-sim: wrote {args.out / REPORT_FILE}", file=sys.stderr)
    return 0


def _attack_sweep(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from simulations.weight_sweep import sweep, table

    points = sweep(quick=args.quick, seed=args.seed)
    print(table(points))
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"seed": args.seed, "quick": args.quick, "points": [dataclasses.asdict(p) for p in points]}
    (args.out / ATTACK_SWEEP_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if not args.no_plots:
        from simulations.plots import attack_sweep_plot

        attack_sweep_plot(points, args.out)
    print(f"tp-sim: wrote {args.out / ATTACK_SWEEP_FILE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
