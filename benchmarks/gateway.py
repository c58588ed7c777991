"""Gateway rows of the suite: chat completions through tp-gateway and three relay processes to a tp-node
(warm circuit pool), each paired with the same request to the direct server (benchmarks/direct_server.py:
the same HTTP app and FakeEngine, no overlay), interleaved A B B A so drift hits both arms alike.

    .venv/bin/python -m benchmarks.suite --only ttft,latency,stream
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from benchmarks.network import BenchNetwork
from benchmarks.openai_http import Timing, chat_body, complete_chat, stream_chat
from benchmarks.results import Bound, Row, Target, measured

T = TypeVar("T")
SHORT_MAX_TOKENS = 16
WARMUP_REQUESTS = 10
HTTP_TIMEOUT_S = 60.0
DIRECT_TITLE = "direct server: same HTTP app and FakeEngine, no overlay"

TTFT_TARGET = Target(
    "added median <= 5 ms, p95 <= 10 ms", (Bound("median", "<=", 5.0), Bound("p95", "<=", 10.0))
)
LATENCY_TARGET = Target("median <= 10 ms", (Bound("median", "<=", 10.0),))


def interleaved(pairs: int, a: Callable[[], T], b: Callable[[], T], warmup: int) -> tuple[list[T], list[T]]:
    """`pairs` samples of each arm in the order A B B A A B ..., after `warmup` unrecorded rounds."""
    for _ in range(warmup):
        a()
        b()
    a_samples, b_samples = [], []
    for index in range(pairs):
        if index % 2 == 0:
            a_samples.append(a())
            b_samples.append(b())
        else:
            b_samples.append(b())
            a_samples.append(a())
    return a_samples, b_samples


def ttft_row(bench: BenchNetwork, pairs: int, warmup: int = WARMUP_REQUESTS) -> Row:
    """Row 1: time to first token added by the overlay (paired difference, gateway minus direct)."""
    body = chat_body(bench.model, SHORT_MAX_TOKENS, stream=True)
    overlay, direct = _gateway_and_direct(bench, stream_chat, body, pairs, warmup)
    added = [o.first_token_ms - d.first_token_ms for o, d in zip(overlay, direct, strict=True)]
    through = [o.first_token_ms for o in overlay]
    baseline = [d.first_token_ms for d in direct]
    return measured(
        "ttft",
        "time to first token added by gateway + 3 relays + node (warm pool)",
        "ms",
        added,
        target=TTFT_TARGET,
        baseline=baseline,
        baseline_title=DIRECT_TITLE,
        ratio=statistics.median(through) / statistics.median(baseline),
        details=_arm("overlay_ttft_ms", through),
    )


def latency_row(bench: BenchNetwork, requests: int, warmup: int = WARMUP_REQUESTS) -> Row:
    """Row 2: sequential short chat completions (not streamed) through the gateway."""
    body = chat_body(bench.model, SHORT_MAX_TOKENS, stream=False)
    overlay, direct = _gateway_and_direct(bench, complete_chat, body, requests, warmup)
    through = [o.total_ms for o in overlay]
    baseline = [d.total_ms for d in direct]
    return measured(
        "latency",
        f"request latency, sequential {SHORT_MAX_TOKENS}-token chat completions, gateway + 3 relays",
        "ms",
        through,
        target=LATENCY_TARGET,
        baseline=baseline,
        baseline_title=DIRECT_TITLE,
        ratio=statistics.median(through) / statistics.median(baseline),
    )


def stream_http_row(bench: BenchNetwork, pairs: int, tokens: int, warmup: int = 1) -> Row:
    """Row 3 as an OpenAI client sees it: tokens/s of one long stream through the gateway vs the direct
    server (a paced FakeEngine on both); no target of its own, the HTTP layer bounds both arms."""
    body = chat_body(bench.model, tokens, stream=True)
    overlay, direct = _gateway_and_direct(bench, stream_chat, body, pairs, warmup)
    _check_counts(tokens, overlay + direct)
    ratios = [o.tokens_per_s / d.tokens_per_s for o, d in zip(overlay, direct, strict=True)]
    return measured(
        "stream_http",
        f"tokens/s of one {tokens}-token stream over HTTP, gateway + 3 relays + node",
        "tokens/s",
        [o.tokens_per_s for o in overlay],
        baseline=[d.tokens_per_s for d in direct],
        baseline_title=DIRECT_TITLE,
        ratio=statistics.median(ratios),
        details={"ratio_min": min(ratios), "ratio_max": max(ratios)},
    )


def _gateway_and_direct(
    bench: BenchNetwork,
    call: Callable[[httpx.Client, str, dict[str, Any]], Timing],
    body: dict[str, Any],
    count: int,
    warmup: int,
) -> tuple[list[Timing], list[Timing]]:
    """`count` calls through the gateway and as many to the direct server, interleaved (A/B), one client."""
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
        return interleaved(
            count,
            lambda: call(client, bench.gateway_url, body),
            lambda: call(client, bench.direct_url, body),
            warmup,
        )


def _check_counts(tokens: int, timings: list[Timing]) -> None:
    counts = {timing.completion_tokens for timing in timings}
    if counts != {tokens}:
        raise RuntimeError(f"expected {tokens} completion tokens in every stream, got {sorted(counts)}")


def _arm(prefix: str, values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {f"{prefix}_median": statistics.median(ordered), f"{prefix}_max": ordered[-1]}
