"""Prometheus text exposition of the gateway's counters (no client library needed for a handful)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Metrics:
    http_requests: dict[tuple[str, int], int] = field(default_factory=dict)  # (route, status) -> count
    first_token_seconds_sum: float = 0.0
    first_token_seconds_count: int = 0

    def count_request(self, route: str, status: int) -> None:
        key = (route, status)
        self.http_requests[key] = self.http_requests.get(key, 0) + 1

    def observe_first_token(self, seconds: float) -> None:
        self.first_token_seconds_sum += seconds
        self.first_token_seconds_count += 1


def render(metrics: Metrics, gauges: Iterable[tuple[str, str, float]]) -> str:
    """The text format: HELP/TYPE lines, then samples."""
    lines = [
        "# HELP tp_gateway_http_requests_total HTTP requests by route and status.",
        "# TYPE tp_gateway_http_requests_total counter",
    ]
    for (route, status), count in sorted(metrics.http_requests.items()):
        lines.append(f'tp_gateway_http_requests_total{{route="{route}",status="{status}"}} {count}')
    lines += [
        "# HELP tp_gateway_first_token_seconds Time from request to the first token.",
        "# TYPE tp_gateway_first_token_seconds summary",
        f"tp_gateway_first_token_seconds_sum {metrics.first_token_seconds_sum}",
        f"tp_gateway_first_token_seconds_count {metrics.first_token_seconds_count}",
    ]
    for name, help_text, value in gauges:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
    return "\n".join(lines) + "\n"
