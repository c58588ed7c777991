from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations.cli import main
from tests.simulations.scenarios import TINY

PLOTS = ("latency_cdf.png", "success_over_time.png", "load_per_node.png", "compromise_rate.png")


def test_smoke_scenario_writes_a_sorted_report_and_the_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--scenario", "smoke", "--seed", "1", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.json").read_text()
    report = json.loads(text)
    assert report["scenario"] == "smoke"
    assert report["requests"]["success_rate"] == 1.0
    assert text == json.dumps(report, sort_keys=True, indent=2) + "\n"
    for name in PLOTS:
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    assert "100%" in capsys.readouterr().err  # the progress bar


def test_a_broken_relay_makes_the_cli_print_the_seed_and_the_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(
        json.dumps(
            {
                "relays": TINY.relays,
                "gpu_nodes": 2,
                "clients": 4,
                "requests": 4,
                "duration_s": 100.0,
                "warmup_s": 60.0,
                "drain_s": 15.0,
            }
        )
    )
    out = tmp_path / "out"
    # A seed whose clients put the leaky relay on a path (simulated authorities measure nothing, so every
    # relay weighs the same; seed 9 drew none once the Overlay chose by document weights).
    assert main(["--config", str(config), "--seed", "1", "--out", str(out), "--quiet", "--leaky-relay"]) == 1
    err = capsys.readouterr().err
    assert "INVARIANT VIOLATED, seed 1" in err
    assert "stored plaintext" in err
    assert not (out / "report.json").exists()


def test_a_bad_config_is_refused_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("relays = 10\n[network]\nlatency = 3\n")
    assert main(["--config", str(config), "--out", str(tmp_path)]) == 2
    assert "network.latency" in capsys.readouterr().err
