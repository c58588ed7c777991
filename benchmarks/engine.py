"""Token streaming through the node's engine path vs llama-cpp-python used directly, in the same run.

    .venv/bin/python -m benchmarks.engine [--model PATH] [--tokens 300] [--rounds 12] [--n-gpu-layers -1]
                                          [--n-ctx 2048] [--handoff-ms 20] [--overlay | --overlay-only]

- direct: a dedicated thread that created its own Llama iterates create_chat_completion(stream=True) to the
  end (what an application embedding llama-cpp-python would do);
- engine: LlamaEngine.generate consumed by a trio task: the slot thread, the batched hand-off to trio and
  chunk coalescing, i.e. everything the node does before a chunk becomes stream cells;
- overlay (--overlay): the same request from a client through three tp-relay processes to a tp-node process.

The arms alternate (A B B A ...) so drift in machine speed hits both alike. tokens/s = completion tokens /
wall seconds from the request to the final chunk; the first token's latency is reported too. Greedy, so
every arm generates the same tokens. Without --model the tiny random-weight test model is used.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import llama_cpp
import trio

from tp_dev.local_network import local_network
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.trio.client import ClientLink
from tp_net.trio.transport_ws import WebSocketDialer
from tp_node.llama_engine import HANDOFF_INTERVAL_S, LlamaEngine, ModelConfig, open_llama_engine
from tp_node.slots import SlotWorker
from tp_node.testing.tiny_model import write_tiny_model

MESSAGES: list[Any] = [{"role": "user", "content": "Tell me a long story about relays and onions."}]
Sample = tuple[float, float]  # tokens/s, seconds to the first token


def request(tokens: int) -> dict[str, Any]:
    return {"messages": MESSAGES, "temperature": 0, "max_tokens": tokens}


def direct_run(llm: llama_cpp.Llama, tokens: int) -> Sample:
    llm.reset()  # type: ignore[no-untyped-call]  # evaluate the whole prompt, as the engine does
    start = time.perf_counter()
    first = 0.0
    chunks = llm.create_chat_completion(messages=MESSAGES, temperature=0, max_tokens=tokens, stream=True)
    for chunk in cast("Iterator[dict[str, Any]]", chunks):
        if not first and chunk["choices"][0]["delta"].get("content"):
            first = time.perf_counter() - start
    # Streamed chunks carry no usage; the engine arm checks the count is the same.
    return tokens / (time.perf_counter() - start), first


class Direct:
    """llama-cpp-python on its own dedicated thread (the thread that created the Llama, as in a slot)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.worker: SlotWorker[llama_cpp.Llama] = SlotWorker(
            "bench-direct", lambda: llama_cpp.Llama(**config), lambda llm: llm.close()
        )
        self.worker.wait_ready()

    async def run(self, tokens: int) -> Sample:
        done = threading.Event()
        result: list[Sample] = []

        def job(llm: llama_cpp.Llama) -> None:
            result.append(direct_run(llm, tokens))
            done.set()

        self.worker.submit(job)
        await trio.to_thread.run_sync(done.wait)
        return result[0]

    def close(self) -> None:
        self.worker.stop()
        self.worker.join()


async def engine_run(engine: LlamaEngine, tokens: int) -> Sample:
    start = time.perf_counter()
    first = 0.0
    async for chunk in engine.generate(request(tokens)):
        if not first and chunk.get("text"):
            first = time.perf_counter() - start
        final = chunk
    assert final["usage"]["completion_tokens"] == tokens, final
    return tokens / (time.perf_counter() - start), first


async def overlay_samples(model: Path, args: argparse.Namespace) -> list[Sample]:
    node_args = ["--engine", "llama", "--model", str(model), "--n-ctx", str(args.n_ctx)]
    node_args += ["--n-gpu-layers", str(args.n_gpu_layers)]
    samples = []
    with tempfile.TemporaryDirectory() as data_dir:
        async with local_network(Path(data_dir), node_args=node_args) as net, trio.open_nursery() as nursery:
            path = net.path()
            async with ClientLink.connect(WebSocketDialer(nursery), path[0]) as link:
                circuit = await link.build_circuit(path)
                for _ in range(args.rounds + 1):
                    start, first = time.perf_counter(), 0.0
                    async for chunk in circuit.request(INFERENCE_SERVICE, request(args.tokens)):
                        if not first and chunk.get("text"):
                            first = time.perf_counter() - start
                    samples.append((args.tokens / (time.perf_counter() - start), first))
            nursery.cancel_scope.cancel()
    return samples[1:]  # the first warms up


def summary(name: str, samples: list[Sample]) -> dict[str, Any]:
    rates = [rate for rate, _ in samples]
    return {
        "name": name,
        "unit": "tokens/s",
        "median": round(statistics.median(rates), 1),
        "min": round(min(rates), 1),
        "max": round(max(rates), 1),
        "first_token_ms_median": round(1000 * statistics.median(first for _, first in samples), 2),
        "n": len(samples),
    }


async def interleaved(model: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    config = ModelConfig(
        model, n_ctx=args.n_ctx, n_gpu_layers=args.n_gpu_layers, handoff_interval_s=args.handoff_ms / 1000
    )
    direct = Direct(
        {"model_path": str(model), "n_ctx": args.n_ctx, "n_gpu_layers": args.n_gpu_layers, "verbose": False}
    )
    arms: dict[str, list[Sample]] = {"direct": [], "engine": []}
    try:
        async with open_llama_engine([config]) as engine:
            run: dict[str, Callable[[], Any]] = {
                "direct": lambda: direct.run(args.tokens),
                "engine": lambda: engine_run(engine, args.tokens),
            }
            await run["direct"]()  # warm-up, both arms
            await run["engine"]()
            for round_ in range(args.rounds):
                order = ("direct", "engine") if round_ % 2 == 0 else ("engine", "direct")
                for arm in order:
                    arms[arm].append(await run[arm]())
    finally:
        direct.close()
    names = {"direct": "direct", "engine": f"engine (hand-off every {args.handoff_ms:g} ms)"}
    results = [summary(f"{names[arm]}, {args.tokens} tokens", samples) for arm, samples in arms.items()]
    ratios = [e[0] / d[0] for d, e in zip(arms["direct"], arms["engine"], strict=True)]
    results.append(
        {"name": "engine / direct", "unit": "ratio", "median": round(statistics.median(ratios), 4)}
    )
    return results


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or write_tiny_model(Path(scratch) / "tiny.gguf")
        results = [] if args.overlay_only else await interleaved(model, args)
        if args.overlay or args.overlay_only:
            results.append(
                summary(f"overlay (3 relays), {args.tokens} tokens", await overlay_samples(model, args))
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine", description=__doc__)
    parser.add_argument("--model", type=Path, help="a GGUF file (default: the tiny test model)")
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--n-gpu-layers", type=int, default=-1)
    parser.add_argument(
        "--handoff-ms", type=float, default=HANDOFF_INTERVAL_S * 1000, help="the engine's batch interval"
    )
    parser.add_argument("--overlay", action="store_true", help="also stream through 3 relay processes")
    parser.add_argument("--overlay-only", action="store_true", help="only the overlay arm")
    args = parser.parse_args()
    for result in trio.run(run, args):
        print(json.dumps(result))


if __name__ == "__main__":
    main()
