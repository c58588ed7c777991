"""From a finished run to the report: success, latencies, circuit builds, load spread, anonymity.

Floats are rounded to FLOAT_DIGITS decimals and keys sorted (report_json), so a report is byte-identical
for a seed on any machine.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from simulations.adversary import Coalition
from simulations.clients import RequestRecord

FLOAT_DIGITS = 6
QUANTILES = (0.5, 0.9, 0.99)
SUCCESS_BUCKETS = 20  # success-over-time points


def quantiles(values: Sequence[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    summary: dict[str, float | None] = {"count": float(len(ordered))}
    for q in QUANTILES:
        summary[f"p{round(q * 100)}"] = _quantile(ordered, q) if ordered else None
    summary["max"] = ordered[-1] if ordered else None
    summary["mean"] = sum(ordered) / len(ordered) if ordered else None
    return summary


def _quantile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def request_metrics(records: Sequence[RequestRecord], start_s: float, end_s: float) -> dict[str, Any]:
    ok = [r for r in records if r.outcome == "ok"]
    outcomes = Counter(r.outcome for r in records)
    width = (end_s - start_s) / SUCCESS_BUCKETS
    over_time = []
    for bucket in range(SUCCESS_BUCKETS):
        inside = [
            r for r in records if start_s + bucket * width <= r.start_s < start_s + (bucket + 1) * width
        ]
        share = sum(r.outcome == "ok" for r in inside) / len(inside) if inside else None
        over_time.append({"t_s": start_s + (bucket + 0.5) * width, "requests": len(inside), "success": share})
    built = [r.build_s for r in records if r.build_s is not None]
    return {
        "requests": len(records),
        "succeeded": len(ok),
        "success_rate": len(ok) / len(records) if records else None,
        "outcomes": dict(sorted(outcomes.items())),
        "ttft_s": quantiles([r.ttft_s for r in ok if r.ttft_s is not None]),
        "total_s": quantiles([r.total_s for r in ok if r.total_s is not None]),
        "circuit_build_s": quantiles(built),
        "circuit_builds": len(built),
        "circuit_build_failures": sum(r.failed_builds for r in records),
        "pooled_circuits_used": sum(1 for r in records if r.pooled),
        "retried_requests": sum(1 for r in records if r.attempts > 1),
        "success_over_time": over_time,
    }


def load_spread(records: Sequence[RequestRecord]) -> dict[str, Any]:
    per_node = Counter(r.node for r in records if r.outcome == "ok")
    counts = sorted(per_node.values())
    mean = sum(counts) / len(counts) if counts else 0.0
    spread = math.sqrt(sum((c - mean) ** 2 for c in counts) / len(counts)) / mean if counts and mean else None
    return {
        "per_node": dict(sorted(per_node.items())),
        "nodes_used": len(counts),
        "min": counts[0] if counts else 0,
        "max": counts[-1] if counts else 0,
        "coefficient_of_variation": spread,
    }


def anonymity(
    records: Sequence[RequestRecord], hostile_ids: set[bytes], relay_ids: set[bytes], coalition: Coalition
) -> dict[str, Any]:
    """Share of the requests' circuits whose guard and last relay are both hostile, against the f^2
    baseline, and what the coalition could link from its own logs (checked against the truth)."""
    circuits = [r for r in records if r.circuit_s is not None]
    both = sum(1 for r in circuits if r.guard in hostile_ids and r.last_relay in hostile_ids)
    fraction = len(hostile_ids) / len(relay_ids) if relay_ids else 0.0
    linked = coalition.linked_pairs()
    truth = {(r.client, r.node) for r in circuits}
    per_relay = {relay: len({client for client, _ in pairs}) for relay, pairs in sorted(linked.items())}
    pairs = {(client, node_id.hex()[:16]) for found in linked.values() for client, node_id in found}
    return {
        "hostile_fraction": fraction,
        "baseline_f_squared": fraction**2,
        "circuits": len(circuits),
        "compromised_circuits": both,
        "compromise_rate": both / len(circuits) if circuits else None,
        "linked_clients_per_hostile_guard": per_relay,
        "linked_pairs": len(pairs),
        "linked_pairs_true": len(pairs & truth),
        "clients": len({r.client for r in circuits}),
    }


def _stable(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        rounded = round(value, FLOAT_DIGITS)
        return 0.0 if rounded == 0 else rounded
    if isinstance(value, dict):
        return {str(k): _stable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_stable(v) for v in value]
    return value


def report_json(report: dict[str, Any]) -> str:
    return json.dumps(_stable(report), sort_keys=True, indent=2) + "\n"
