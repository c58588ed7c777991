"""Scenarios: everything a simulation run depends on besides its seed.

A scenario is a frozen dataclass; the built-in ones are in SCENARIOS, and `load_config` reads the same fields
from a TOML or JSON file (unknown keys and wrong types are refused, naming the key). Nested tables: `network`,
`churn`, `adversary`, and a list of `partitions`.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tp_gateway.overlay import POOL_NODES_MAX

ADVERSARY_BEHAVIOURS = ("log", "drop", "delay", "tag", "replay")
ADMISSIONS = ("open", "invite")
REGIONS_DEFAULT = ("eu", "na", "asia", "sa")


class ConfigError(ValueError):
    """A scenario or config file is invalid; the message names the key."""


@dataclass(frozen=True)
class NetworkModel:
    """Links between machines: latency by region, bandwidth, loss, clock skew."""

    regions: tuple[str, ...] = REGIONS_DEFAULT
    same_region_latency_ms: float = 8.0
    cross_region_latency_ms: float = 70.0
    latency_jitter_sigma: float = 0.3  # a link's latency is base * lognormal(0, sigma), drawn once per link
    relay_uplink_mbps: float = 100.0
    node_uplink_mbps: float = 50.0
    client_uplink_mbps: float = 20.0
    link_drop_per_message: float = 0.0  # chance that a message breaks its link (a TCP reset)
    clock_skew_s_max: float = 0.0  # each machine's wall clock is off by uniform(-max, max)


@dataclass(frozen=True)
class Churn:
    relay_crashes_per_hour: float = 0.0  # per relay (authorities never crash)
    node_crashes_per_hour: float = 0.0  # per GPU node
    restart_after_s: float = 120.0  # a crashed machine comes back after about this long
    relays_joining: int = 0  # relays that join spread over the run


@dataclass(frozen=True)
class Partition:
    start_s: float
    end_s: float
    regions: tuple[str, ...]  # cut off from every other region while it lasts


@dataclass(frozen=True)
class Adversary:
    fraction: float = 0.0  # share of the relays that are hostile and collude
    behaviour: str = "log"
    sybil_at_s: float | None = None  # None: present from the start; else they join as a burst then
    delay_s: float = 2.0  # for "delay"
    meddle_chance: float = 0.2  # "drop": share of circuits blackholed; "tag"/"replay": share of cells


@dataclass(frozen=True)
class Scenario:
    name: str
    relays: int = 12
    gpu_nodes: int = 3
    clients: int = 8
    authorities: int = 3
    threshold: int = 2
    period_s: int = 60
    first_vote_after_s: float = 25.0  # the authorities' first vote is this long after the start
    duration_s: float = 240.0  # simulated time, from the start of the network
    warmup_s: float = 100.0  # no requests before this (the first directory document forms)
    requests: int = 40  # spread uniformly at random over [warmup_s, duration_s - drain_s]
    drain_s: float = 30.0
    max_tokens: int = 12
    token_delay_s: float = 0.02
    home_relays_per_node: int = 2
    admission: str = "open"
    relays_cache_directory: bool = True  # relays run refresh_documents (costly at scale)
    # The authorities run the real measurer (tp_node.measurer: test circuits and test requests over the
    # simulated network) and vote what it finds; off, every relay and node weighs the unmeasured weight.
    authorities_measure: bool = False
    memoize_verification: bool = False  # share identical signature checks across machines (scale)
    request_timeout_s: float = 60.0
    # The clients' gateways keep circuits warm to this many nodes (tp_gateway.overlay.POOL_NODES_MAX, as a
    # real gateway; 0: none, each request builds its circuit, which is then pooled and reused like any).
    client_pool_nodes: int = POOL_NODES_MAX
    check_interval_s: float = 5.0  # buffer bounds are checked this often
    network: NetworkModel = field(default_factory=NetworkModel)
    churn: Churn = field(default_factory=Churn)
    partitions: tuple[Partition, ...] = ()
    adversary: Adversary = field(default_factory=Adversary)
    sweep_fractions: tuple[float, ...] = ()  # non-empty: one run per adversary fraction

    def validate(self) -> None:
        _positive(self, ("relays", "gpu_nodes", "clients", "authorities", "period_s", "duration_s"))
        if not 1 <= self.threshold <= self.authorities:
            raise ConfigError(f"threshold {self.threshold} must be in 1..authorities ({self.authorities})")
        if self.relays < 3 + self.authorities and self.relays < 4:
            raise ConfigError(f"relays {self.relays}: a circuit needs at least 4 relays")
        if not 0 < self.first_vote_after_s < self.period_s / 2:
            raise ConfigError(f"first_vote_after_s {self.first_vote_after_s} must be in (0, period_s / 2)")
        if not 0 <= self.warmup_s < self.duration_s - self.drain_s:
            raise ConfigError(f"warmup_s {self.warmup_s} leaves no time for requests before the drain")
        if self.admission not in ADMISSIONS:
            raise ConfigError(f"admission {self.admission!r} is not one of {ADMISSIONS}")
        if self.adversary.behaviour not in ADVERSARY_BEHAVIOURS:
            raise ConfigError(
                f"adversary.behaviour {self.adversary.behaviour!r} not in {ADVERSARY_BEHAVIOURS}"
            )
        for fraction in (self.adversary.fraction, *self.sweep_fractions):
            if not 0 <= fraction < 1:
                raise ConfigError(f"adversary fraction {fraction} must be in [0, 1)")
        for partition in self.partitions:
            unknown = set(partition.regions) - set(self.network.regions)
            if unknown:
                raise ConfigError(f"partition names unknown regions {sorted(unknown)}")


def _positive(scenario: Scenario, names: tuple[str, ...]) -> None:
    for name in names:
        if getattr(scenario, name) <= 0:
            raise ConfigError(f"{name} must be positive, got {getattr(scenario, name)}")


SCENARIOS: dict[str, Scenario] = {
    "smoke": Scenario(
        "smoke",
        relays=10,
        clients=6,
        period_s=120,
        duration_s=150.0,
        warmup_s=65.0,
        drain_s=20.0,
        requests=30,
    ),
    "churn": Scenario(
        "churn",
        relays=30,
        gpu_nodes=5,
        clients=30,
        period_s=120,
        duration_s=600.0,
        warmup_s=90.0,
        requests=200,
        relays_cache_directory=False,
        network=NetworkModel(link_drop_per_message=2e-4, clock_skew_s_max=20.0),
        churn=Churn(
            relay_crashes_per_hour=3.0, node_crashes_per_hour=2.0, restart_after_s=90.0, relays_joining=6
        ),
        partitions=(Partition(300.0, 380.0, ("asia",)),),
    ),
    "adversary-sweep": Scenario(
        "adversary-sweep",
        relays=60,
        gpu_nodes=10,
        clients=300,
        period_s=300,
        duration_s=330.0,
        warmup_s=110.0,
        drain_s=20.0,
        requests=400,
        max_tokens=2,
        token_delay_s=0.0,
        relays_cache_directory=False,
        home_relays_per_node=3,
        client_pool_nodes=0,
        adversary=Adversary(behaviour="log"),
        sweep_fractions=(0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3),
    ),
    "scale-10k": Scenario(
        "scale-10k",
        relays=300,
        gpu_nodes=100,
        clients=9600,
        period_s=1800,
        first_vote_after_s=30.0,
        duration_s=700.0 + 3600.0,
        warmup_s=700.0,
        requests=10_000,
        drain_s=60.0,
        max_tokens=8,
        token_delay_s=0.05,
        home_relays_per_node=3,
        client_pool_nodes=0,
        relays_cache_directory=False,
        memoize_verification=True,
        check_interval_s=60.0,
    ),
}


def load_config(path: Path) -> Scenario:
    """A scenario from a TOML (.toml) or JSON file; `name` defaults to the file's stem."""
    try:
        text = path.read_text(encoding="utf-8")
        data: Any = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a table/object")
    data.setdefault("name", path.stem)
    scenario: Scenario = _build(Scenario, data, "")
    scenario.validate()
    return scenario


_NESTED: dict[str, type] = {"network": NetworkModel, "churn": Churn, "adversary": Adversary}


def _build(cls: type[Any], data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown key {where}{unknown[0]}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{where}{key}"
        if key in _NESTED:
            if not isinstance(value, dict):
                raise ConfigError(f"{name} must be a table")
            values[key] = _build(_NESTED[key], value, f"{name}.")
        elif key == "partitions":
            if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
                raise ConfigError(f"{name} must be a list of tables")
            values[key] = tuple(_build(Partition, p, f"{name}[{i}].") for i, p in enumerate(value))
        else:
            default = known[key].default
            values[key] = _scalar(name, value, None if default is dataclasses.MISSING else default)
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from exc


def _scalar(name: str, value: Any, default: Any) -> Any:
    if isinstance(value, list):
        return tuple(_scalar(name, item, None) for item in value)
    if default is None or isinstance(default, tuple):
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default)) and not isinstance(value, bool)
    if not ok:
        raise ConfigError(f"{name} must be of type {type(default).__name__}, got {value!r}")
    return value
