"""A tiny random-weight multimodal projector GGUF for the tiny model (tp_node.testing.tiny_model): a
1-layer, 32-wide CLIP vision encoder with LLaVA's MLP projector onto the tiny model's 64-wide embeddings.

llama.cpp's mtmd loads it with the tiny model (`tp-node --mmproj`): a 28x28 image becomes 4 image tokens.
Its "vision" is noise, but the whole path runs: data URL, decoding, encoding, image tokens in the prompt.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import gguf
import numpy as np
import numpy.typing as npt

from tp_node.testing.tiny_model import EMBED_DIM as TEXT_EMBED_DIM
from tp_node.testing.tiny_model import gguf_main, write_gguf

# Part of cache keys: bump whenever the bytes written change.
TINY_PROJECTOR_VERSION = "1"
PROJECTOR_FILE_NAME = f"tiny-mmproj-v{TINY_PROJECTOR_VERSION}.gguf"

VISION_DIM = 32
VISION_FFN_DIM = 64
VISION_LAYERS = 1
VISION_HEADS = 2
PATCH_SIZE = 14
IMAGE_SIZE = 28
PROJECTOR_HIDDEN = 64
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2

Matrix = npt.NDArray[np.float32]


def _metadata(writer: gguf.GGUFWriter) -> None:
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "mlp")
    for key, value in {
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
        "embedding_length": VISION_DIM,
        "feed_forward_length": VISION_FFN_DIM,
        "projection_dim": TEXT_EMBED_DIM,
        "block_count": VISION_LAYERS,
        "attention.head_count": VISION_HEADS,
    }.items():
        writer.add_uint32(f"clip.vision.{key}", value)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_bool("clip.use_gelu", True)


def projector_tensors(seed: int) -> dict[str, Matrix]:
    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> Matrix:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def norm(size: int) -> dict[str, Matrix]:
        return {"weight": np.ones(size, np.float32), "bias": np.zeros(size, np.float32)}

    def linear(rows: int, columns: int) -> dict[str, Matrix]:
        return {"weight": weights(rows, columns), "bias": np.zeros(rows, np.float32)}

    parts: dict[str, dict[str, Matrix]] = {"v.pre_ln": norm(VISION_DIM)}
    for layer in range(VISION_LAYERS):
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            parts[f"v.blk.{layer}.{name}"] = linear(VISION_DIM, VISION_DIM)
        parts[f"v.blk.{layer}.ln1"] = norm(VISION_DIM)
        parts[f"v.blk.{layer}.ln2"] = norm(VISION_DIM)
        parts[f"v.blk.{layer}.ffn_up"] = linear(VISION_FFN_DIM, VISION_DIM)
        parts[f"v.blk.{layer}.ffn_down"] = linear(VISION_DIM, VISION_FFN_DIM)
    parts["mm.0"] = linear(PROJECTOR_HIDDEN, VISION_DIM)
    parts["mm.2"] = linear(TEXT_EMBED_DIM, PROJECTOR_HIDDEN)
    tensors = {
        "v.patch_embd.weight": weights(VISION_DIM, 3, PATCH_SIZE, PATCH_SIZE),
        "v.position_embd.weight": weights(IMAGE_TOKENS, VISION_DIM),
    }
    tensors.update(
        {f"{prefix}.{kind}": tensor for prefix, part in parts.items() for kind, tensor in part.items()}
    )
    return tensors


def write_tiny_projector(path: pathlib.Path, *, seed: int = 0) -> pathlib.Path:
    """Write the tiny projector to ``path`` (overwriting it; its folder is created) and return ``path``."""
    return write_gguf(path, "clip", _metadata, projector_tensors(seed))


def main(argv: Sequence[str] | None = None) -> None:
    gguf_main(
        argv,
        "Write a tiny random-weight projector GGUF (tiny model's).",
        PROJECTOR_FILE_NAME,
        write_tiny_projector,
    )


if __name__ == "__main__":
    main()
