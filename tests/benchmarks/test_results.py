"""Rows, targets and the table of the benchmark suite (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.results import (
    COMMIT_ENV,
    RATIO_TARGET,
    Bound,
    Target,
    git_commit,
    machine,
    markdown_table,
    measured,
    not_measured,
    text_table,
)

AT_MOST_5 = Target(
    "added median <= 5 ms, p95 <= 10 ms", (Bound("median", "<=", 5.0), Bound("p95", "<=", 10.0))
)


def test_a_row_meets_its_target_only_when_every_bound_holds() -> None:
    fast = measured("ttft", "added", "ms", [1.0, 2.0, 3.0], target=AT_MOST_5).to_json()
    slow_tail = measured("ttft", "added", "ms", [1.0] * 19 + [50.0] * 2, target=AT_MOST_5).to_json()
    assert (fast["met"], fast["median"], fast["n"]) == (True, 2.0, 3)
    assert (slow_tail["median"], slow_tail["p95"], slow_tail["met"]) == (1.0, 50.0, False)


def test_a_ratio_row_carries_its_baseline() -> None:
    row = measured(
        "stream", "s", "tokens/s", [1940.0, 1960.0], target=RATIO_TARGET,
        baseline=[2000.0, 1990.0], baseline_title="direct", ratio=0.98,
    ).to_json()  # fmt: skip
    assert row["met"] is True
    assert row["ratio"] == 0.98
    assert row["baseline"] == {"title": "direct", "median": 1995.0, "p95": 2000.0, "n": 2}
    assert (
        measured("stream", "s", "tokens/s", [1.0], target=RATIO_TARGET, baseline=[1.0], ratio=0.9).to_json()[
            "met"
        ]
        is False
    )


def test_an_extra_condition_can_fail_a_row_whose_bounds_hold() -> None:
    target = Target("all done", (Bound("median", "<=", 150.0),), extra=lambda row: row.details["done"])
    assert measured("m", "m", "MB", [40.0], target=target, details={"done": True}).to_json()["met"] is True
    assert measured("m", "m", "MB", [40.0], target=target, details={"done": False}).to_json()["met"] is False


def test_a_row_not_measured_says_why_and_meets_nothing() -> None:
    row = not_measured("gpu", "GPU", "tokens/s", "no GPU device lent to this session", RATIO_TARGET).to_json()
    assert (row["median"], row["met"], row["n"]) == (None, None, 0)
    assert row["reason"] == "no GPU device lent to this session"
    assert "not measured: no GPU device lent to this session" in text_table([row])


def test_tables_show_every_row() -> None:
    rows = [
        measured("circuit", "3-hop circuit build", "ms", [9.0, 11.0], target=AT_MOST_5).to_json(),
        measured("forward", "cells forwarded", "cells/s", [22_800.0]).to_json(),
    ]
    text = text_table(rows).splitlines()
    assert len(text) == 4
    assert text[2].startswith("3-hop circuit build") and text[2].endswith("NO")
    assert "22,800" in text[3]
    markdown = markdown_table(rows).splitlines()
    assert markdown[0].startswith("| benchmark | unit | median")
    assert (
        markdown[2]
        == "| 3-hop circuit build | ms | 10.0 | 11.0 | 2 |  |  | added median <= 5 ms, p95 <= 10 ms | NO |"
    )


def test_the_run_metadata_names_the_machine_and_the_commit() -> None:
    info = machine()
    assert isinstance(info["cpu_count"], int) and info["cpu_count"] >= 1
    assert info["cpu_model"]
    commit = git_commit(Path(__file__).resolve().parents[2])
    assert commit["commit"] is None or len(commit["commit"]) == 40


def test_outside_a_git_tree_the_commit_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(COMMIT_ENV, "ab" * 20)
    assert git_commit(tmp_path) == {"commit": "ab" * 20, "dirty": None}
