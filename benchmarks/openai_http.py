"""Timed OpenAI-style requests over HTTP (blocking httpx: the benchmarks run them on a worker thread, so
both arms of a comparison pay the same client costs)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

MODEL_READY_TIMEOUT_S = 60.0
READY_POLL_S = 0.2
MESSAGES = [{"role": "user", "content": "How private is this?"}]


@dataclass(frozen=True)
class Timing:
    first_token_ms: float
    total_ms: float
    completion_tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / (self.total_ms / 1000)


def chat_body(model: str, max_tokens: int, *, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": MESSAGES, "max_tokens": max_tokens, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def stream_chat(client: httpx.Client, base_url: str, body: dict[str, Any]) -> Timing:
    """A streamed chat completion: time to the first content, to the end, and the tokens it counted."""
    start = time.perf_counter()
    first = 0.0
    tokens = 0
    with client.stream("POST", f"{base_url}/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            choices = event.get("choices") or [{}]
            if not first and choices[0].get("delta", {}).get("content"):
                first = time.perf_counter() - start
            if event.get("usage"):
                tokens = int(event["usage"]["completion_tokens"])
    if not first:
        raise RuntimeError(f"no content streamed from {base_url}")
    return Timing(first * 1000, (time.perf_counter() - start) * 1000, tokens)


def complete_chat(client: httpx.Client, base_url: str, body: dict[str, Any]) -> Timing:
    """A chat completion that is not streamed: the whole request's latency."""
    start = time.perf_counter()
    response = client.post(f"{base_url}/chat/completions", json=body).raise_for_status()
    total = (time.perf_counter() - start) * 1000
    return Timing(total, total, int(response.json()["usage"]["completion_tokens"]))


def wait_for_model(
    client: httpx.Client,
    base_url: str,
    *,
    warm_circuit: bool = True,
    timeout_s: float = MODEL_READY_TIMEOUT_S,
) -> str:
    """The first model the server lists, once it has a warm circuit to a node if `warm_circuit` (a gateway;
    the direct server has no circuits)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        models = client.get(f"{base_url}/models").json().get("data", [])
        warm = client.get(f"{base_url}/health").json().get("pooled_circuits") or not warm_circuit
        if models and warm:
            return str(models[0]["id"])
        time.sleep(READY_POLL_S)
    raise TimeoutError(f"{base_url} listed no model with a warm circuit within {timeout_s} s")
