"""What a model needs in memory, and loading it with fewer GPU layers when all of them do not fit.

`memory_needed_bytes`: the GGUF's weights plus each slot's KV cache (f16 keys and values for every layer,
KV head and context token), which is what `--n-ctx` and `--slots` change. `with_fewer_layers`: the seeds'
memory guardrail: a load that fails with every layer on the GPU is tried again with half as many offloaded
layers, down to none (the CPU), and says how many it settled on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tp_node.gguf_header import ModelError

log = logging.getLogger(__name__)

KV_BYTES_PER_VALUE = 2  # llama.cpp's default KV cache type is f16
ALL_LAYERS = -1  # llama.cpp's n_gpu_layers for "every layer"

_T = TypeVar("_T")


@dataclass(frozen=True)
class ModelShape:
    layers: int
    kv_heads: int
    head_dim: int
    file_bytes: int

    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * KV_BYTES_PER_VALUE  # keys and values


def model_shape(path: Path) -> ModelShape:
    """Layer count and attention shape from the GGUF's metadata (needs the `gguf` package, node extra)."""
    import gguf

    reader = gguf.GGUFReader(str(path))

    def field(key: str) -> int:
        found = reader.fields.get(key)
        if found is None:
            raise ModelError(f"{path} has no {key} in its metadata")
        return int(found.contents())

    architecture = str(reader.fields["general.architecture"].contents())
    heads = field(f"{architecture}.attention.head_count")
    kv_key = f"{architecture}.attention.head_count_kv"
    kv_heads = field(kv_key) if kv_key in reader.fields else heads
    return ModelShape(
        layers=field(f"{architecture}.block_count"),
        kv_heads=kv_heads,
        head_dim=field(f"{architecture}.embedding_length") // heads,
        file_bytes=path.stat().st_size,
    )


def memory_needed_bytes(shape: ModelShape, n_ctx: int, slots: int, *, on_gpu: bool) -> int:
    """Each slot (a Llama each) has its own KV cache of n_ctx tokens, and on a GPU its own copy of the
    weights; on the CPU the slots share the file's pages (llama.cpp maps it)."""
    weights = shape.file_bytes * (slots if on_gpu else 1)
    return weights + slots * n_ctx * shape.kv_bytes_per_token()


def with_fewer_layers(load: Callable[[int], _T], requested: int, layers_total: int) -> tuple[_T, int]:
    """`load(n_gpu_layers)`, first as requested, then, while it fails with ModelError (llama.cpp cannot
    allocate), with half as many layers offloaded, down to 0. Returns what loaded and the layers used."""
    layers = layers_total if requested == ALL_LAYERS else min(requested, layers_total)
    attempt = requested
    while True:
        try:
            loaded = load(attempt)
        except ModelError:
            if layers == 0:
                raise
            layers //= 2
            log.warning(
                "the model did not load with %s layers on the GPU (out of memory?): retrying with %d of %d",
                "all" if attempt == ALL_LAYERS else attempt,
                layers,
                layers_total,
            )
            attempt = layers
            continue
        if attempt != requested:
            log.warning("loaded with %d of %d layers on the GPU, the rest on the CPU", attempt, layers_total)
        return loaded, attempt
