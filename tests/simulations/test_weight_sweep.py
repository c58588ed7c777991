"""The measured-weight adversary sweep: honest near f*f, capacity inflation near honest, refusers near 0."""

from __future__ import annotations

from simulations.weight_sweep import sweep_point

FRACTION = 0.2
PREDICTION_FACTOR_MAX = 2.0  # the acceptance bound
REQUESTS = 2_000


def test_honest_adversary_is_near_f_squared_and_inflation_buys_nothing() -> None:
    honest = sweep_point("honest", FRACTION, requests=REQUESTS)
    inflated = sweep_point("inflation", FRACTION, requests=REQUESTS)
    assert abs(honest.predicted - FRACTION**2) < 0.01
    assert honest.compromise_rate <= PREDICTION_FACTOR_MAX * FRACTION**2
    assert inflated.measured_fraction_relays < 1.1 * FRACTION  # declaring 10^7 KB/s did not count
    assert inflated.compromise_rate <= PREDICTION_FACTOR_MAX * honest.predicted


def test_refuse_and_read_node_loses_its_share() -> None:
    point = sweep_point("refuse-and-read", FRACTION, requests=REQUESTS)
    assert point.measured_fraction_nodes < FRACTION / 10
    assert point.compromise_rate <= PREDICTION_FACTOR_MAX * FRACTION * FRACTION / 10
