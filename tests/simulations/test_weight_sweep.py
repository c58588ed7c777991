"""The attack sweep over measured weights, through the real authority cores (simulations.weight_sweep): the
honest adversary near f*f, capacity inflation near honest, a refuse-and-read node near 0, a Sybil flood
admitted nowhere while honest newcomers are, and a byzantine authority that stops no document and moves no
weight. The acceptance bound is the issue's: at most 2x the rate the measured share predicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simulations.cli import ATTACK_SWEEP_FILE, main
from simulations.weight_sweep import ATTACKS, NEWCOMERS, QUICK_FRACTIONS, VOTING_PERIODS, sweep_point

FRACTION = 0.2
PREDICTION_FACTOR_MAX = 2.0  # the acceptance bound
MEASURED_SHARE_SLACK = 1.1  # the measured share may exceed the true one by the measurement noise only
REQUESTS = 2_000


def test_honest_adversary_is_near_f_squared_and_inflation_buys_nothing() -> None:
    honest = sweep_point("honest", FRACTION, requests=REQUESTS)
    inflated = sweep_point("inflation", FRACTION, requests=REQUESTS)
    assert abs(honest.predicted - FRACTION**2) < 0.01
    assert honest.compromise_rate <= PREDICTION_FACTOR_MAX * FRACTION**2
    assert inflated.measured_fraction_relays < MEASURED_SHARE_SLACK * FRACTION  # 10^7 KB/s did not count
    assert inflated.compromise_rate <= PREDICTION_FACTOR_MAX * honest.predicted


def test_refuse_and_read_node_loses_its_share() -> None:
    point = sweep_point("refuse-and-read", FRACTION, requests=REQUESTS)
    assert point.measured_fraction_nodes < FRACTION / 10
    assert point.compromise_rate <= PREDICTION_FACTOR_MAX * FRACTION * FRACTION / 10


def test_the_quick_attack_sweep_from_tp_sim_has_the_acceptance_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--attack-sweep", "--quick", "--seed", "1", "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert all(f"| {attack} |" in table for attack in ATTACKS)
    assert (tmp_path / "compromise_vs_measured.png").stat().st_size > 0
    points: list[dict[str, Any]] = json.loads((tmp_path / ATTACK_SWEEP_FILE).read_text())["points"]
    assert len(points) == len(ATTACKS) * len(QUICK_FRACTIONS)
    by = {(p["attack"], p["fraction"]): p for p in points}
    for point in points:
        f = point["fraction"]
        assert point["periods_signed"] == VOTING_PERIODS  # every attack: a document every period
        assert point["measured_fraction_relays"] < MEASURED_SHARE_SLACK * f
        assert point["sybils_admitted"] == 0
    top = max(QUICK_FRACTIONS)
    for attack in ("honest", "inflation", "sybil-flood", "byzantine-authority"):
        assert by[attack, top]["compromise_rate"] <= PREDICTION_FACTOR_MAX * top**2, attack
    refuser = by["refuse-and-read", top]
    assert refuser["measured_fraction_nodes"] < top / 10
    assert refuser["compromise_rate"] <= PREDICTION_FACTOR_MAX * top * top / 10
    flood = [p for p in points if p["attack"] == "sybil-flood"]
    assert all(p["newcomers_admitted"] == NEWCOMERS for p in flood)
    byzantine = [p for p in points if p["attack"] == "byzantine-authority"]
    assert all(p["measured_fraction_nodes"] < MEASURED_SHARE_SLACK * p["fraction"] for p in byzantine)
