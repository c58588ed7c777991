"""`n`, `logprobs` and `logit_bias` in the llama engine, on the tiny model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import llama_cpp
import pytest

from tp_net.protocol.inference_contract import EngineError
from tp_node.llama_engine import LlamaEngine, ModelConfig, open_llama_engine

N_CTX = 512
MESSAGES = [{"role": "user", "content": "Say hello to the world, twice!"}]


@pytest.fixture
async def engine(tiny_model_path: Path) -> AsyncIterator[LlamaEngine]:
    async with open_llama_engine([ModelConfig(tiny_model_path, model_id="tiny", n_ctx=N_CTX)]) as opened:
        yield opened


async def ask(engine: LlamaEngine, request: dict[str, Any]) -> list[dict[str, Any]]:
    return [chunk async for chunk in engine.generate(request)]


async def test_n_choices_are_generations_of_their_own_each_ended_and_the_last_with_all_usage(
    engine: LlamaEngine,
) -> None:
    chunks = await ask(engine, {"messages": MESSAGES, "n": 3, "max_tokens": 6, "seed": 7})
    assert all(chunk["choice"] in (0, 1, 2) for chunk in chunks)
    ends = [chunk for chunk in chunks if "finish_reason" in chunk]
    assert [end["choice"] for end in ends] == [0, 1, 2] and chunks[-1] is ends[-1]
    assert ["usage" in end for end in ends] == [False, False, True]
    texts = ["".join(c.get("text", "") for c in chunks if c["choice"] == i) for i in range(3)]
    assert len(set(texts)) > 1  # seeds 7, 8, 9
    assert ends[-1]["usage"]["completion_tokens"] == 18


async def test_logprobs_are_the_models_and_travel_with_their_text(engine: LlamaEngine) -> None:
    chunks = await ask(engine, {"messages": MESSAGES, "logprobs": 4, "max_tokens": 8, "temperature": 0})
    pieces = [chunk for chunk in chunks if "text" in chunk]
    entries = [entry for piece in pieces for entry in piece["logprobs"]]
    assert "".join(entry["token"] for entry in entries) == "".join(piece["text"] for piece in pieces)
    for entry in entries:
        top = entry["top_logprobs"]
        assert len(top) == 4 and [t["logprob"] for t in top] == sorted(
            (t["logprob"] for t in top), reverse=True
        )
        assert top[0] == {"token": entry["token"], "logprob": entry["logprob"]}  # greedy: the most likely
        assert entry["logprob"] < 0


async def test_logit_bias_steers_the_model_as_llama_cpp_does(
    engine: LlamaEngine, tiny_model_path: Path
) -> None:
    request = {"kind": "completion", "prompt": "hello", "max_tokens": 6, "temperature": 0}
    chunks = await ask(engine, {**request, "logit_bias": {"7": 100}})
    with closing(llama_cpp.Llama(model_path=str(tiny_model_path), n_ctx=N_CTX, verbose=False)) as llm:
        direct = llm.create_completion("hello", max_tokens=6, temperature=0, logit_bias={7: 100.0})
        unbiased = llm.create_completion("hello", max_tokens=6, temperature=0)
    text = "".join(chunk.get("text", "") for chunk in chunks)
    assert text == direct["choices"][0]["text"] != unbiased["choices"][0]["text"]


async def test_a_logit_bias_beyond_the_vocabulary_is_refused_before_generation(engine: LlamaEngine) -> None:
    with pytest.raises(EngineError) as refused:
        await ask(engine, {"messages": MESSAGES, "logit_bias": {"999999": 1}})
    assert refused.value.code == "invalid_logit_bias"
