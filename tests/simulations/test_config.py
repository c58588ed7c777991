from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from simulations.config import SCENARIOS, ConfigError, Partition, load_config


def test_builtin_scenarios_are_valid() -> None:
    for scenario in SCENARIOS.values():
        scenario.validate()
    assert set(SCENARIOS) == {"smoke", "churn", "adversary-sweep", "scale-10k"}
    scale = SCENARIOS["scale-10k"]
    assert scale.relays + scale.gpu_nodes + scale.clients >= 10_000
    assert scale.requests >= 10_000
    assert scale.duration_s - scale.warmup_s >= 3600
    assert max(SCENARIOS["adversary-sweep"].sweep_fractions) == pytest.approx(0.3)


def test_toml_and_json_configs_give_the_same_scenario(tmp_path: Path) -> None:
    toml = tmp_path / "mine.toml"
    toml.write_text(
        "relays = 20\nduration_s = 300\nsweep_fractions = [0.0, 0.1]\n"
        '[adversary]\nbehaviour = "tag"\n[[partitions]]\nstart_s = 10\nend_s = 20\nregions = ["eu"]\n'
    )
    json_file = tmp_path / "mine.json"
    json_file.write_text(
        '{"relays": 20, "duration_s": 300, "sweep_fractions": [0.0, 0.1], "adversary": {"behaviour": "tag"},'
        ' "partitions": [{"start_s": 10, "end_s": 20, "regions": ["eu"]}]}'
    )
    from_toml, from_json = load_config(toml), load_config(json_file)
    assert from_toml == from_json
    assert from_toml.name == "mine"
    assert from_toml.relays == 20
    assert from_toml.duration_s == 300.0
    assert from_toml.adversary.behaviour == "tag"
    assert from_toml.partitions == (Partition(10.0, 20.0, ("eu",)),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("relays = 'many'", "relays must be of type int"),
        ("colour = 1", "unknown key colour"),
        ("[churn]\nrelay_crashes_per_hour = true", "churn.relay_crashes_per_hour"),
        ("[adversary]\nbehaviour = 'bribe'", "adversary.behaviour"),
        ("threshold = 5", "threshold 5"),
        ("[[partitions]]\nstart_s = 1\nend_s = 2\nregions = ['mars']", "unknown regions"),
        ("relays = [", "cannot be read"),
    ],
)
def test_bad_configs_are_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_reports_config_section_loads_back_as_the_same_scenario(tmp_path: Path) -> None:
    scenario = SCENARIOS["churn"]
    path = tmp_path / "again.json"
    path.write_text(json.dumps(dataclasses.asdict(scenario)))
    assert load_config(path) == scenario
