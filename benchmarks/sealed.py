"""The sealed row of the suite: time to first token of a sealed request (tp_gateway.sealed_client: seal to
the node, tp-gateway forwards, the node opens and seals each chunk, the client opens them) against the same
streamed chat through the same gateway in the clear, interleaved A B B A; the row is the paired difference.

    .venv/bin/python -m benchmarks.suite --only sealed_ttft
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx

from benchmarks.gateway import HTTP_TIMEOUT_S, SHORT_MAX_TOKENS, interleaved
from benchmarks.network import BenchNetwork
from benchmarks.openai_http import Timing, chat_body, stream_chat
from benchmarks.results import Row, measured
from tp_gateway.sealed_client import SecureChatCompletion

PLAIN_TITLE = "the same streamed chat through the same gateway, not sealed"


def sealed_ttft_row(bench: BenchNetwork, pairs: int, warmup: int) -> Row:
    body = chat_body(bench.model, SHORT_MAX_TOKENS, stream=True)
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
        chat = SecureChatCompletion(
            bench.gateway_url, bootstrap=bench.network.bootstrap_file, http_client=http
        )
        sealed, plain = interleaved(
            pairs,
            lambda: _sealed_stream(chat, body),
            lambda: stream_chat(http, bench.gateway_url, body),
            warmup,
        )
    added = [s.first_token_ms - p.first_token_ms for s, p in zip(sealed, plain, strict=True)]
    through = [s.first_token_ms for s in sealed]
    baseline = [p.first_token_ms for p in plain]
    return measured(
        "sealed_ttft",
        "time to first token added by sealing (HPKE to the node, sealed chunks), same gateway and path",
        "ms",
        added,
        baseline=baseline,
        baseline_title=PLAIN_TITLE,
        ratio=statistics.median(through) / statistics.median(baseline),
        details={"sealed_ttft_ms_median": statistics.median(through)},
    )


def _sealed_stream(chat: SecureChatCompletion, body: dict[str, Any]) -> Timing:
    start = time.perf_counter()
    first = 0.0
    tokens = 0
    chunks = chat.create(**body)
    assert not isinstance(chunks, dict)
    for chunk in chunks:
        choices = chunk.get("choices") or [{}]
        if not first and choices[0].get("delta", {}).get("content"):
            first = time.perf_counter() - start
        if chunk.get("usage"):
            tokens = int(chunk["usage"]["completion_tokens"])
    if not first:
        raise RuntimeError("no content streamed in sealed mode")
    return Timing(first * 1000, (time.perf_counter() - start) * 1000, tokens)
