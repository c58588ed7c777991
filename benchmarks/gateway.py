"""Gateway latency: time to first token and total latency of chat completions through the gateway and a
3-relay circuit (warm pool), against the same engine called directly, interleaved A/B.

    .venv/bin/python -m benchmarks.gateway [--requests 200] [--max-tokens 16]

A local network of processes (3 authority relays, 2 relays, 1 GPU node with the fake engine) and a gateway
process; the benchmark streams chat completions with httpx, and calls a FakeEngine in this process as the
direct baseline.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from benchmarks.stats import summary
from tp_node.engine import FakeEngine
from tp_node.local_network import local_network
from tp_node.processes import python_process

READY_TIMEOUT_S = 60.0


def through_gateway(client: httpx.Client, base_url: str, body: dict[str, Any]) -> tuple[float, float]:
    start = time.perf_counter()
    first = 0.0
    with client.stream("POST", f"{base_url}/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if not first and choices[0].get("delta", {}).get("content"):
                first = time.perf_counter() - start
    return first * 1000, (time.perf_counter() - start) * 1000


async def direct(engine: FakeEngine, document: dict[str, Any]) -> tuple[float, float]:
    start = time.perf_counter()
    first = 0.0
    async for chunk in engine.generate(document):
        if not first and chunk.get("text"):
            first = time.perf_counter() - start
    return first * 1000, (time.perf_counter() - start) * 1000


def wait_for_model(client: httpx.Client, base_url: str) -> str:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        models = client.get(f"{base_url}/models").json().get("data", [])
        if models and client.get(f"{base_url}/health").json().get("pooled_circuits"):
            return str(models[0]["id"])
        time.sleep(0.5)
    raise SystemExit("the network did not come up")


async def run(requests: int, max_tokens: int) -> list[dict[str, Any]]:
    engine = FakeEngine()
    with tempfile.TemporaryDirectory() as state:
        async with local_network(Path(state), relay_count=5, log_level="warning") as network:
            args = ["tp_gateway.cli", "--listen", "127.0.0.1:0", "--bootstrap", str(network.bootstrap_file)]
            args += ["--data-dir", str(Path(state) / "gateway"), "--log-level", "warning"]
            async with python_process(args) as gateway:
                base_url = gateway.announcement["base_url"]
                with httpx.Client(timeout=30) as client:
                    model = await trio.to_thread.run_sync(wait_for_model, client, base_url)
                    messages = [{"role": "user", "content": "How private is this?"}]
                    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": True}
                    document = {
                        "kind": "chat",
                        "model": model,
                        "messages": messages,
                        "max_tokens": max_tokens,
                    }
                    for _ in range(10):  # warm up: pool built, caches hot
                        await trio.to_thread.run_sync(through_gateway, client, base_url, body)
                    gateway_times, direct_times = [], []
                    for _ in range(requests):  # interleaved A/B
                        gateway_times.append(
                            await trio.to_thread.run_sync(through_gateway, client, base_url, body)
                        )
                        direct_times.append(await direct(engine, document))
    results = [
        summary("time to first token, gateway + 3 relays + node", "ms", [t[0] for t in gateway_times]),
        summary("time to first token, engine called directly", "ms", [t[0] for t in direct_times]),
        summary("total latency, gateway + 3 relays + node", "ms", [t[1] for t in gateway_times]),
        summary("total latency, engine called directly", "ms", [t[1] for t in direct_times]),
    ]
    added = [g[0] - d[0] for g, d in zip(gateway_times, direct_times, strict=True)]
    results.append(summary("time to first token added by the overlay", "ms", added))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway", description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    for result in trio.run(run, args.requests, args.max_tokens):
        print(json.dumps(result))


if __name__ == "__main__":
    main()
