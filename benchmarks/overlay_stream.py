"""Row 3 of the suite: tokens/s of one long stream through the overlay (client library, a circuit through
three relay processes to the tp-node) vs the same paced FakeEngine called directly in this process,
interleaved A B B A. No HTTP on either arm: the row asks whether the overlay keeps up with the engine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from benchmarks.network import BenchNetwork
from benchmarks.results import RATIO_TARGET, Row, measured
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.trio.client import Circuit, ClientLink
from tp_net.trio.transport_ws import WebSocketDialer
from tp_node.engine import FakeEngine

Arm = Callable[[], Awaitable[float]]


async def interleaved(pairs: int, a: Arm, b: Arm, warmup: int) -> tuple[list[float], list[float]]:
    """`pairs` samples of each arm in the order A B B A A B ..., after `warmup` unrecorded rounds."""
    for _ in range(warmup):
        await a()
        await b()
    a_samples: list[float] = []
    b_samples: list[float] = []
    for index in range(pairs):
        for arm, samples in ((a, a_samples), (b, b_samples))[:: 1 if index % 2 == 0 else -1]:
            samples.append(await arm())
    return a_samples, b_samples


def _document(tokens: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": tokens}


async def _through(circuit: Circuit, tokens: int) -> float:
    """Tokens/s of one request through the circuit, counted from the node's usage."""
    start = time.perf_counter()
    final: Any = None
    async for chunk in circuit.request(INFERENCE_SERVICE, _document(tokens)):
        final = chunk
    return _rate(final, start, tokens)


async def _direct(engine: FakeEngine, tokens: int) -> float:
    start = time.perf_counter()
    final: Any = None
    async for chunk in engine.generate(_document(tokens)):
        final = chunk
    return _rate(final, start, tokens)


def _rate(final: Any, start: float, tokens: int) -> float:
    elapsed = time.perf_counter() - start
    counted = final["usage"]["completion_tokens"] if isinstance(final, dict) and "usage" in final else None
    if counted != tokens:
        raise RuntimeError(f"expected {tokens} completion tokens, the answer ended with {final!r}")
    return tokens / elapsed


async def stream_row(bench: BenchNetwork, pairs: int, tokens: int, warmup: int = 1) -> Row:
    engine = FakeEngine(token_delay_s=bench.token_delay_ms / 1000)
    async with trio.open_nursery() as nursery:
        path = bench.node_path()
        async with ClientLink.connect(WebSocketDialer(nursery), path[0]) as link:
            circuit = await link.build_circuit(path)
            overlay, direct = await interleaved(
                pairs, lambda: _through(circuit, tokens), lambda: _direct(engine, tokens), warmup
            )
        nursery.cancel_scope.cancel()
    ratios = [o / d for o, d in zip(overlay, direct, strict=True)]
    return measured(
        "stream",
        f"tokens/s of one {tokens}-token stream through 3 relays + node (client library)",
        "tokens/s",
        overlay,
        target=RATIO_TARGET,
        baseline=direct,
        baseline_title=f"the same FakeEngine ({bench.token_delay_ms:g} ms a token) called in this process",
        ratio=statistics.median(ratios),
        details={"ratio_min": min(ratios), "ratio_max": max(ratios)},
    )
