"""Rows of the benchmark suite: a measured value against its target, the run's metadata, and the table.

A row's `median`/`p95` are in its `unit`; `ratio` and `baseline` appear where the row was measured side by
side with a baseline in the same run. `met` is None when the row was not measured or has no target.
"""

from __future__ import annotations

import operator
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.stats import percentile

CPUINFO = Path("/proc/cpuinfo")
COMMIT_ENV = "TP_BENCH_COMMIT"  # names the commit where the tree has no git history (a device run's copy)
COMPARISONS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge}


@dataclass(frozen=True)
class Bound:
    """One condition of a target: `field` (median, p95 or ratio) `op` `limit`."""

    field: str
    op: str
    limit: float

    def holds(self, row: Row) -> bool | None:
        value = getattr(row, self.field)
        return None if value is None else COMPARISONS[self.op](value, self.limit)


@dataclass(frozen=True)
class Target:
    text: str
    bounds: tuple[Bound, ...]
    extra: Callable[[Row], bool] | None = None  # a condition beyond the bounds (e.g. every stream finished)

    def met(self, row: Row) -> bool | None:
        verdicts = [bound.holds(row) for bound in self.bounds]
        if row.median is None or None in verdicts:
            return None
        return all(verdicts) and (self.extra is None or self.extra(row))


@dataclass
class Row:
    name: str
    title: str
    unit: str
    median: float | None
    p95: float | None
    n: int
    target: Target | None = None
    ratio: float | None = None
    baseline: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None  # why it was not measured, or what failed

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "name": self.name,
            "title": self.title,
            "unit": self.unit,
            "median": _rounded(self.median),
            "p95": _rounded(self.p95),
            "n": self.n,
            "target": self.target.text if self.target else None,
            "met": self.target.met(self) if self.target else None,
        }
        if self.baseline is not None:
            obj["ratio"] = _rounded(self.ratio)
            obj["baseline"] = {key: _rounded(value) for key, value in self.baseline.items()}
        if self.reason is not None:
            obj["reason"] = self.reason
        if self.details:
            obj["details"] = {key: _rounded(value) for key, value in self.details.items()}
        return obj


def measured(
    name: str,
    title: str,
    unit: str,
    values: Sequence[float],
    *,
    target: Target | None = None,
    baseline: Sequence[float] | None = None,
    baseline_title: str = "",
    ratio: float | None = None,
    details: dict[str, Any] | None = None,
) -> Row:
    """A row summarising `values`, and its baseline's values measured alongside (if any)."""
    row = Row(name, title, unit, _median(values), percentile(list(values), 0.95), len(values), target)
    if baseline is not None:
        row.baseline = {
            "title": baseline_title,
            "median": _median(baseline),
            "p95": percentile(list(baseline), 0.95),
            "n": len(baseline),
        }
        row.ratio = ratio
    row.details = details or {}
    return row


def not_measured(name: str, title: str, unit: str, reason: str, target: Target | None = None) -> Row:
    return Row(name, title, unit, None, None, 0, target, reason=reason)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4 if abs(value) < 10 else 1)
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def machine() -> dict[str, Any]:
    """What the figures were measured on (Linux)."""
    model = ""
    if CPUINFO.exists():
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "gpu": _gpu_name(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _gpu_name() -> str | None:
    try:
        names = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return ", ".join(line.strip() for line in names.splitlines() if line.strip()) or None


def git_commit(root: Path) -> dict[str, Any]:
    """HEAD and whether the working tree had changes (the figures then measured those too)."""
    try:
        head = _git(root, "rev-parse", "HEAD")
        dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return {"commit": os.environ.get(COMMIT_ENV), "dirty": None}
    return {"commit": head, "dirty": dirty}


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def run_metadata(root: Path, command: str) -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "machine": machine(),
        "git": git_commit(root),
        "load_average_start": list(os.getloadavg()),
    }


OVERLAY_RATIO_MIN = 0.97
RATIO_TARGET = Target(f"overlay / direct >= {OVERLAY_RATIO_MIN}", (Bound("ratio", ">=", OVERLAY_RATIO_MIN),))


# --- the table ---------------------------------------------------------------------------------------------

COLUMNS = ("benchmark", "unit", "median", "p95", "n", "baseline median", "ratio", "target", "met")


def table_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    out = []
    for row in rows:
        baseline = row.get("baseline") or {}
        met = {True: "yes", False: "NO", None: "-"}[row["met"]]
        if row.get("reason") and row["median"] is None:
            met = f"not measured: {row['reason']}"
        out.append(
            [
                row["title"],
                row["unit"],
                _figure(row["median"]),
                _figure(row["p95"]),
                str(row["n"]),
                _figure(baseline.get("median")),
                _figure(row.get("ratio")),
                row["target"] or "",
                met,
            ]
        )
    return out


def _figure(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def text_table(rows: Sequence[dict[str, Any]]) -> str:
    cells = [list(COLUMNS), *table_rows(rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(line) + " |" for line in table_rows(rows)]
    return "\n".join(lines)
