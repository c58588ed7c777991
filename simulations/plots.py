"""PNG plots of a run with matplotlib's Agg renderer (figures made without pyplot: no display, no global
state): latency CDF, success over time, load per GPU node, and the measured compromise rate against f^2."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simulations.runner import RunResult
from simulations.weight_sweep import SweepPoint

PLOT_DPI = 100
FIGURE_SIZE_IN = (6.4, 4.0)


def write_plots(runs: Sequence[RunResult], out: Path) -> list[Path]:
    """Write the plots for `runs` (one run, or a sweep) into `out`; returns their paths."""
    main = runs[0]
    return [
        _latency_cdf(main, out / "latency_cdf.png"),
        _success_over_time(main, out / "success_over_time.png"),
        _load_per_node(main, out / "load_per_node.png"),
        _compromise(runs, out / "compromise_rate.png"),
    ]


def _figure() -> tuple[Figure, Any]:
    figure = Figure(figsize=FIGURE_SIZE_IN)
    FigureCanvasAgg(figure)
    return figure, figure.subplots()


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    # No software/version stamp in the file: the same run gives the same bytes.
    figure.savefig(path, dpi=PLOT_DPI, metadata={"Software": None})
    return path


def _latency_cdf(run: RunResult, path: Path) -> Path:
    figure, axes = _figure()
    ok = [r for r in run.records if r.outcome == "ok"]
    for label, values in (
        ("time to first token", [r.ttft_s for r in ok if r.ttft_s is not None]),
        ("total", [r.total_s for r in ok if r.total_s is not None]),
        ("circuit build", [r.build_s for r in run.records if r.build_s is not None]),
    ):
        ordered = sorted(values)
        if ordered:
            axes.step(
                ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], where="post", label=label
            )
    axes.set_xlabel("seconds (simulated)")
    axes.set_ylabel("share of requests")
    axes.set_title("Latency CDF")
    axes.legend()
    return _save(figure, path)


def _success_over_time(run: RunResult, path: Path) -> Path:
    figure, axes = _figure()
    points = [p for p in run.report["requests"]["success_over_time"] if p["success"] is not None]
    axes.plot([p["t_s"] for p in points], [p["success"] for p in points], marker="o")
    axes.set_ylim(0, 1.05)
    axes.set_xlabel("simulated time (s)")
    axes.set_ylabel("success rate")
    axes.set_title("Requests that got an answer, over time")
    return _save(figure, path)


def _load_per_node(run: RunResult, path: Path) -> Path:
    figure, axes = _figure()
    counts = sorted(run.report["load"]["per_node"].values(), reverse=True)
    axes.bar(range(len(counts)), counts)
    axes.set_xlabel("GPU node (most loaded first)")
    axes.set_ylabel("requests answered")
    axes.set_title("Load per GPU node")
    return _save(figure, path)


def _compromise(runs: Sequence[RunResult], path: Path) -> Path:
    figure, axes = _figure()
    points = [r.report["anonymity"] for r in runs if r.report["anonymity"]["compromise_rate"] is not None]
    fractions = [p["hostile_fraction"] for p in points]
    axes.plot(fractions, [p["compromise_rate"] for p in points], marker="o", label="measured")
    top = max([*fractions, 0.3])
    grid = [top * i / 50 for i in range(51)]
    axes.plot(grid, [f * f for f in grid], linestyle="--", label="f² baseline")
    axes.set_xlabel("hostile share of relays (f)")
    axes.set_ylabel("circuits with hostile guard and last relay")
    axes.set_title("Compromise rate vs adversary fraction")
    axes.legend()
    return _save(figure, path)


def attack_sweep_plot(points: Sequence[SweepPoint], out: Path) -> Path:
    """Compromise rate of each attack against the adversary's measured relay share, with f² and 2·f²."""
    figure, axes = _figure()
    for attack in dict.fromkeys(p.attack for p in points):
        mine = sorted((p for p in points if p.attack == attack), key=lambda p: p.measured_fraction_relays)
        axes.plot(
            [p.measured_fraction_relays for p in mine],
            [p.compromise_rate for p in mine],
            marker="o",
            label=attack,
        )
    top = max([p.measured_fraction_relays for p in points] + [0.3])
    grid = [top * i / 50 for i in range(51)]
    axes.plot(grid, [f * f for f in grid], linestyle="--", color="black", label="f²")
    axes.plot(grid, [2 * f * f for f in grid], linestyle=":", color="black", label="2·f² (acceptance bound)")
    axes.set_xlabel("adversary's share of the measured relay weight (f)")
    axes.set_ylabel("requests with its guard and its node")
    axes.set_title("Compromise rate vs measured share, per attack")
    axes.legend(fontsize="small")
    return _save(figure, out / "compromise_vs_measured.png")
