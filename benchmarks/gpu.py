"""GPU row of the suite: streamed tokens/s through three relay processes to a `tp-node --engine llama`
process vs llama-cpp-python called directly in this process, interleaved A B B A in the same run.

    .venv/bin/python -m benchmarks.suite --only gpu --model PATH      # on the device machine
    .venv/bin/python -m benchmarks.suite --only gpu --model tiny      # the tiny test model on the CPU

Both arms load the same GGUF (so it must fit twice in GPU memory), run greedy, and so generate the same
tokens: the pair's ratio is direct seconds / overlay seconds. benchmarks/gpu_device.sh is the device run.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import trio

from benchmarks.engine import Direct, request
from benchmarks.results import RATIO_TARGET, Row, measured
from tp_dev.local_network import local_network
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.trio.client import ClientLink
from tp_net.trio.transport_ws import WebSocketDialer
from tp_node.testing.tiny_model import write_tiny_model

TINY = "tiny"
N_CTX = 2048


async def gpu_row(model: str, rounds: int, tokens: int, n_gpu_layers: int) -> Row:
    with tempfile.TemporaryDirectory() as scratch:
        path = write_tiny_model(Path(scratch) / "tiny.gguf") if model == TINY else Path(model)
        overlay, direct, counted = await _interleaved(path, Path(scratch), rounds, tokens, n_gpu_layers)
    ratios = [d / o for o, d in zip(overlay, direct, strict=True)]
    name = "the tiny test model on the CPU" if model == TINY else path.name
    return measured(
        "gpu",
        f"streamed tokens/s, 3 relays + tp-node (llama) vs llama-cpp-python directly, {name}",
        "tokens/s",
        [counted / seconds for seconds in overlay],
        target=RATIO_TARGET,
        baseline=[counted / seconds for seconds in direct],
        baseline_title="llama-cpp-python create_chat_completion(stream=True) on a dedicated thread",
        ratio=statistics.median(ratios),
        details={"model": name, "tokens": counted, "n_gpu_layers": n_gpu_layers, "n_ctx": N_CTX},
    )


async def _interleaved(
    model: Path, scratch: Path, rounds: int, tokens: int, n_gpu_layers: int
) -> tuple[list[float], list[float], int]:
    """Seconds per request of each arm, and the completion tokens each generated."""
    node_args = ["--engine", "llama", "--model", str(model), "--n-ctx", str(N_CTX)]
    node_args += ["--n-gpu-layers", str(n_gpu_layers)]
    config = {"model_path": str(model), "n_ctx": N_CTX, "n_gpu_layers": n_gpu_layers, "verbose": False}
    direct = Direct(config)
    overlay_s: list[float] = []
    direct_s: list[float] = []
    counts: set[int] = set()
    try:
        async with (
            local_network(scratch / "network", node_args=node_args, log_level="warning") as network,
            trio.open_nursery() as nursery,
        ):
            path = network.path()
            async with ClientLink.connect(WebSocketDialer(nursery), path[0]) as link:
                circuit = await link.build_circuit(path)

                async def through_overlay() -> None:
                    start = time.perf_counter()
                    async for chunk in circuit.request(INFERENCE_SERVICE, request(tokens)):
                        final = chunk
                    overlay_s.append(time.perf_counter() - start)
                    counts.add(int(final["usage"]["completion_tokens"]))

                async def directly() -> None:
                    rate, _ = await direct.run(tokens)
                    direct_s.append(tokens / rate)

                await through_overlay()  # warm-up, both arms
                await directly()
                overlay_s.clear()
                direct_s.clear()
                for index in range(rounds):
                    order = (through_overlay, directly) if index % 2 == 0 else (directly, through_overlay)
                    for arm in order:
                        await arm()
            nursery.cancel_scope.cancel()
    finally:
        direct.close()
    if len(counts) != 1:
        raise RuntimeError(f"the node generated different token counts: {sorted(counts)}")
    return overlay_s, direct_s, counts.pop()
