"""Small scenarios for the tests (a few simulated minutes, a few seconds of wall time each)."""

from __future__ import annotations

import dataclasses

from simulations.config import SCENARIOS, Scenario

TINY = dataclasses.replace(
    SCENARIOS["smoke"],
    name="tiny",
    relays=8,
    gpu_nodes=2,
    clients=4,
    duration_s=100.0,
    warmup_s=70.0,
    drain_s=15.0,
    requests=8,
)


def tiny(**changes: object) -> Scenario:
    return dataclasses.replace(TINY, **changes)  # type: ignore[arg-type]
