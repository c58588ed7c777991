"""A tiny random-weight llama GGUF model for tests, demos and GPU smoke runs.

No real model weights can be downloaded where the tests run, so we write our own: a 2-layer,
64-wide llama with a SentencePiece-style vocabulary and a Jinja chat template. Its output is
gibberish but deterministic at temperature 0: enough to test the overlay end to end.

Only GPU-node and test installs use this module (the ``node`` extra brings ``gguf`` and numpy).
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Callable, Mapping, Sequence

import gguf
import numpy as np
import numpy.typing as npt

# Part of cache keys (see tests/conftest.py): bump whenever the bytes written change.
TINY_MODEL_VERSION = "1"
DEFAULT_FILE_NAME = f"tiny-llama-v{TINY_MODEL_VERSION}.gguf"

N_LAYERS = 2
EMBED_DIM = 64
N_HEADS = 4
N_KV_HEADS = 2
HEAD_DIM = EMBED_DIM // N_HEADS
FFN_DIM = 128
CONTEXT_LENGTH = 2048

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
CONTROL_TOKENS = ("<unk>", "<s>", "</s>")
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
# Ids below this are control or byte tokens, kept out of greedy output (see _output_weight).
FIRST_TEXT_ID = len(CONTROL_TOKENS) + len(BYTE_TOKENS)

SPACE = "\u2581"  # SentencePiece's word-boundary marker, decoded as a space.
# fmt: off
_WORDS = (
    "the", "a", "and", "of", "to", "in", "is", "it", "you", "that", "he", "was", "for", "on",
    "are", "as", "with", "his", "they", "I", "at", "be", "this", "have", "from", "or", "one",
    "had", "by", "word", "but", "not", "what", "all", "were", "we", "when", "your", "can", "said",
    "there", "use", "an", "each", "which", "she", "do", "how", "their", "if", "will", "up",
    "hello", "world", "token", "place", "node", "relay",
)
# fmt: on
_LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")
# No '<', '/' or '>': generated text must never spell the "</s>" stop string.
_PUNCTUATION = tuple(".,!?'-:;")
# Best-scored first: SentencePiece prefers merges into higher-scoring pieces. Deduplicated
# because llama.cpp aborts (GGML_ASSERT, not an exception) on a repeated token.
TEXT_PIECES = tuple(
    dict.fromkeys(
        [
            *(SPACE + word for word in _WORDS),
            *("ing", "ed", "er", "th", "an", "re"),
            SPACE,
            *(SPACE + letter for letter in _LETTERS[:8]),
            *_LETTERS,
            *_PUNCTUATION,
        ]
    )
)

# Rendered by llama-cpp-python's Jinja2ChatFormatter, which supplies bos_token and eos_token.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] or '' }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

Matrix = npt.NDArray[np.float32]


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types, in id order."""
    tokens = [*CONTROL_TOKENS, *BYTE_TOKENS, *TEXT_PIECES]
    scores = [0.0] * FIRST_TEXT_ID + [-float(rank) for rank in range(len(TEXT_PIECES))]
    token_types = (
        [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
        + [gguf.TokenType.BYTE] * len(BYTE_TOKENS)
        + [gguf.TokenType.NORMAL] * len(TEXT_PIECES)
    )
    return tokens, scores, [int(token_type) for token_type in token_types]


def _add_metadata(writer: gguf.GGUFWriter, vocab_size: int) -> None:
    writer.add_name("token.place tiny random llama")
    writer.add_context_length(CONTEXT_LENGTH)
    writer.add_embedding_length(EMBED_DIM)
    writer.add_block_count(N_LAYERS)
    writer.add_feed_forward_length(FFN_DIM)
    writer.add_head_count(N_HEADS)
    writer.add_head_count_kv(N_KV_HEADS)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)


def _add_tokenizer(writer: gguf.GGUFWriter) -> None:
    tokens, scores, token_types = vocabulary()
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(token_types)
    writer.add_unk_token_id(UNK_ID)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)


def _random(rng: np.random.Generator, rows: int, cols: int) -> Matrix:
    # Scaled by fan-in so activations keep unit size and the output depends on the whole context.
    scale = np.float32(1.0 / np.sqrt(cols))
    return rng.standard_normal((rows, cols), dtype=np.float32) * scale


def _output_weight(rng: np.random.Generator, vocab_size: int) -> Matrix:
    # Zero logits for control and byte tokens: the random text logits around them are large
    # (std ~8), so greedy decoding picks a printable piece and never emits </s>.
    weight = rng.standard_normal((vocab_size, EMBED_DIM), dtype=np.float32)
    weight[:FIRST_TEXT_ID] = 0.0
    return weight


def _layer_tensors(rng: np.random.Generator) -> dict[str, Matrix]:
    ones = np.ones(EMBED_DIM, dtype=np.float32)
    return {
        "attn_norm.weight": ones,
        "attn_q.weight": _random(rng, N_HEADS * HEAD_DIM, EMBED_DIM),
        "attn_k.weight": _random(rng, N_KV_HEADS * HEAD_DIM, EMBED_DIM),
        "attn_v.weight": _random(rng, N_KV_HEADS * HEAD_DIM, EMBED_DIM),
        "attn_output.weight": _random(rng, EMBED_DIM, N_HEADS * HEAD_DIM),
        "ffn_norm.weight": ones.copy(),
        "ffn_gate.weight": _random(rng, FFN_DIM, EMBED_DIM),
        "ffn_up.weight": _random(rng, FFN_DIM, EMBED_DIM),
        "ffn_down.weight": _random(rng, EMBED_DIM, FFN_DIM),
    }


def model_tensors(seed: int, vocab_size: int) -> dict[str, Matrix]:
    """All tensors in file order, drawn from one seeded generator so a seed fixes every byte."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, Matrix] = {
        "token_embd.weight": rng.standard_normal((vocab_size, EMBED_DIM), dtype=np.float32),
        "output_norm.weight": np.ones(EMBED_DIM, dtype=np.float32),
        "output.weight": _output_weight(rng, vocab_size),
    }
    for layer in range(N_LAYERS):
        for name, tensor in _layer_tensors(rng).items():
            tensors[f"blk.{layer}.{name}"] = tensor
    return tensors


def write_gguf(
    path: pathlib.Path,
    architecture: str,
    metadata: Callable[[gguf.GGUFWriter], None],
    tensors: Mapping[str, Matrix],
) -> pathlib.Path:
    """Write one GGUF file (overwriting ``path``; its folder is created): ``metadata`` adds the key-values,
    then ``tensors`` in order. The one writer of the tiny model and the tiny projector."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), architecture)
    try:
        metadata(writer)
        for name, tensor in tensors.items():
            writer.add_tensor(name, tensor)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


def write_tiny_model(path: pathlib.Path, *, seed: int = 0) -> pathlib.Path:
    """Write the tiny model to ``path`` (overwriting it; its folder is created) and return ``path``."""
    vocab_size = FIRST_TEXT_ID + len(TEXT_PIECES)

    def metadata(writer: gguf.GGUFWriter) -> None:
        _add_metadata(writer, vocab_size)
        _add_tokenizer(writer)

    return write_gguf(path, "llama", metadata, model_tensors(seed, vocab_size))


def gguf_main(
    argv: Sequence[str] | None,
    description: str,
    default_name: str,
    write: Callable[..., pathlib.Path],
) -> None:
    """The command line of a tiny GGUF writer: ``[OUT] [--seed N]``, then one line naming what it wrote."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("out", type=pathlib.Path, nargs="?", default=pathlib.Path(default_name))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    written = write(args.out, seed=args.seed)
    print(f"wrote {written} ({written.stat().st_size} bytes)")


def main(argv: Sequence[str] | None = None) -> None:
    gguf_main(argv, "Write a tiny random-weight llama GGUF model.", DEFAULT_FILE_NAME, write_tiny_model)


if __name__ == "__main__":
    main()
