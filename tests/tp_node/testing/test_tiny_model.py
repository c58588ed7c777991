"""The tiny random-weight model is deterministic and llama-cpp-python runs it."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest

from tp_node.testing.tiny_model import TEXT_PIECES, write_tiny_model

MESSAGES = [
    {"role": "system", "content": "You are a test model."},
    {"role": "user", "content": "Say hello to the world, twice!"},
]
MAX_TOKENS = 32


def _load(model_path: pathlib.Path) -> Any:
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(model_path), n_ctx=256, n_threads=1, seed=1234, verbose=False)


def _greedy_chat(model_path: pathlib.Path) -> dict[str, Any]:
    with closing(_load(model_path)) as llm:
        completion: dict[str, Any] = llm.create_chat_completion(
            messages=MESSAGES, temperature=0, max_tokens=MAX_TOKENS
        )
    return completion


def _streamed_deltas(model_path: pathlib.Path) -> Iterator[dict[str, Any]]:
    with closing(_load(model_path)) as llm:
        for chunk in llm.create_chat_completion(
            messages=MESSAGES, temperature=0, max_tokens=MAX_TOKENS, stream=True
        ):
            yield chunk["choices"][0]


def test_same_seed_writes_identical_bytes(tmp_path: pathlib.Path) -> None:
    first = write_tiny_model(tmp_path / "a.gguf", seed=7).read_bytes()
    second = write_tiny_model(tmp_path / "b.gguf", seed=7).read_bytes()
    other_seed = write_tiny_model(tmp_path / "c.gguf", seed=8).read_bytes()
    assert first == second
    assert first != other_seed
    assert len(first) < 1_000_000


def test_fixture_model_matches_default_seed(tiny_model_path: pathlib.Path, tmp_path: pathlib.Path) -> None:
    fresh = write_tiny_model(tmp_path / "fresh.gguf")
    assert tiny_model_path.read_bytes() == fresh.read_bytes()


def test_llama_cpp_loads_vocabulary_and_template(tiny_model_path: pathlib.Path) -> None:
    with closing(_load(tiny_model_path)) as llm:
        assert llm.n_vocab() == 259 + len(TEXT_PIECES)
        assert llm.token_bos() == 1
        assert llm.token_eos() == 2
        assert "tokenizer.chat_template" in llm.metadata
        tokens = llm.tokenize(b"the world", add_bos=False)
        assert llm.detokenize(tokens) == b" the world"


def test_greedy_chat_is_deterministic_printable_and_runs_to_length(
    tiny_model_path: pathlib.Path,
) -> None:
    first = _greedy_chat(tiny_model_path)
    second = _greedy_chat(tiny_model_path)
    content = first["choices"][0]["message"]["content"]
    assert content == second["choices"][0]["message"]["content"]
    assert content.strip()
    assert content.isprintable()
    assert first["choices"][0]["finish_reason"] == "length"
    assert first["usage"]["completion_tokens"] == MAX_TOKENS


def test_streaming_yields_per_token_chunks_matching_the_whole(
    tiny_model_path: pathlib.Path,
) -> None:
    whole = _greedy_chat(tiny_model_path)["choices"][0]["message"]["content"]
    choices = list(_streamed_deltas(tiny_model_path))
    pieces = [choice["delta"].get("content") or "" for choice in choices]
    assert sum(1 for piece in pieces if piece) > MAX_TOKENS // 2
    assert "".join(pieces) == whole
    assert choices[-1]["finish_reason"] == "length"
