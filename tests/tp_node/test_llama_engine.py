"""The llama engine on the tiny model, checked against llama-cpp-python used directly."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import llama_cpp
import pytest
import trio
import trio.testing

from tests.tp_node.chunk_shapes import assert_well_formed, text_of, tool_arguments
from tp_net.protocol.inference_contract import EngineError
from tp_node.gguf_header import ModelError
from tp_node.llama_engine import LlamaEngine, MeteredLlama, ModelConfig, open_llama_engine
from tp_node.testing.tiny_model import TEXT_PIECES

N_CTX = 512
SLOTS = 2
QUEUE = 6
MESSAGES = [
    {"role": "system", "content": "You are a test model."},
    {"role": "user", "content": "Say hello to the world, twice!"},
]
GREEDY = {"messages": MESSAGES, "temperature": 0, "max_tokens": 48}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def direct_llama(path: Path, **options: Any) -> Any:
    return closing(llama_cpp.Llama(model_path=str(path), n_ctx=N_CTX, verbose=False, **options))


def direct_chat(path: Path, **request: Any) -> dict[str, Any]:
    with direct_llama(path) as llm:
        result: dict[str, Any] = llm.create_chat_completion(**request)
    return result


@pytest.fixture
async def engine(tiny_model_path: Path) -> AsyncIterator[LlamaEngine]:
    config = ModelConfig(tiny_model_path, model_id="tiny", slots=SLOTS, queue_limit=QUEUE, n_ctx=N_CTX)
    async with open_llama_engine([config]) as opened:
        yield opened


async def ask(engine: LlamaEngine, request: dict[str, Any]) -> list[dict[str, Any]]:
    return [chunk async for chunk in engine.generate(request)]


async def test_greedy_chat_is_byte_identical_to_direct_llama_cpp(
    engine: LlamaEngine, tiny_model_path: Path
) -> None:
    chunks = await ask(engine, GREEDY)
    direct = direct_chat(tiny_model_path, messages=MESSAGES, temperature=0, max_tokens=48)
    with direct_llama(tiny_model_path) as llm:
        streamed = "".join(
            chunk["choices"][0]["delta"].get("content") or ""
            for chunk in llm.create_chat_completion(
                messages=MESSAGES, temperature=0, max_tokens=48, stream=True
            )
        )
    assert (
        text_of(chunks).encode() == direct["choices"][0]["message"]["content"].encode() == streamed.encode()
    )
    assert chunks[-1] == {"finish_reason": "length", "usage": direct["usage"]}
    assert_well_formed(chunks)


async def test_a_raw_completion_matches_direct_llama_cpp(engine: LlamaEngine, tiny_model_path: Path) -> None:
    chunks = await ask(
        engine, {"kind": "completion", "prompt": "the node", "temperature": 0, "max_tokens": 30}
    )
    with direct_llama(tiny_model_path) as llm:
        direct = llm.create_completion("the node", temperature=0, max_tokens=30)
    assert text_of(chunks) == direct["choices"][0]["text"]
    assert chunks[-1]["usage"] == direct["usage"]
    assert_well_formed(chunks, "completion")


async def test_a_stop_sequence_cuts_like_direct_llama_cpp(engine: LlamaEngine, tiny_model_path: Path) -> None:
    full = text_of(await ask(engine, GREEDY))
    stop = full[12:15]
    chunks = await ask(engine, {**GREEDY, "stop": [stop]})
    direct = direct_chat(tiny_model_path, messages=MESSAGES, temperature=0, max_tokens=48, stop=[stop])
    assert text_of(chunks) == direct["choices"][0]["message"]["content"] == full[: full.index(stop)]
    assert chunks[-1] == {"finish_reason": "stop", "usage": direct["usage"]}


async def test_seeded_sampling_is_reproducible_and_matches_direct(
    engine: LlamaEngine, tiny_model_path: Path
) -> None:
    sampled = {"messages": MESSAGES, "temperature": 1.0, "top_p": 1.0, "seed": 42, "max_tokens": 24}
    first, second = text_of(await ask(engine, sampled)), text_of(await ask(engine, sampled))
    direct = direct_chat(tiny_model_path, **sampled)
    assert first == second == direct["choices"][0]["message"]["content"]
    assert text_of(await ask(engine, {**sampled, "seed": 43})) != first


async def test_a_named_tool_streams_openai_tool_call_deltas(
    engine: LlamaEngine, tiny_model_path: Path
) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    request = {**GREEDY, "max_tokens": 20, "tools": [WEATHER], "tool_choice": named}
    chunks = await ask(engine, request)
    direct = direct_chat(
        tiny_model_path,
        messages=MESSAGES,
        temperature=0,
        max_tokens=20,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    (call,) = direct["choices"][0]["message"]["tool_calls"]
    assert tool_arguments(chunks) == {0: call["function"]["arguments"]}
    assert chunks[0]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert chunks[-1]["finish_reason"] == "tool_calls"
    assert_well_formed(chunks)


async def test_json_response_format_goes_through_the_grammar(
    engine: LlamaEngine, tiny_model_path: Path
) -> None:
    chunks = await ask(engine, {**GREEDY, "response_format": {"type": "json_object"}})
    direct = direct_chat(tiny_model_path, **GREEDY, response_format={"type": "json_object"})
    assert text_of(chunks) == direct["choices"][0]["message"]["content"]
    assert text_of(chunks).startswith("{")


async def test_embeddings_match_direct_mean_pooling(tiny_model_path: Path) -> None:
    config = ModelConfig(tiny_model_path, model_id="tiny-embed", embedding=True, n_ctx=N_CTX)
    async with open_llama_engine([config]) as engine:
        chunks = await ask(engine, {"kind": "embedding", "input": ["hello world", "the node"]})
        with pytest.raises(EngineError) as caught:
            await ask(engine, GREEDY)
        assert caught.value.code == "unsupported_kind"
    options = {
        "embedding": True,
        "pooling_type": llama_cpp.LLAMA_POOLING_TYPE_MEAN,
        "n_batch": N_CTX,
        "n_ubatch": N_CTX,
    }
    with direct_llama(tiny_model_path, **options) as llm:  # the engine embeds one input at a time
        direct = [llm.create_embedding(text) for text in ("hello world", "the node")]
    assert [chunk["embedding"] for chunk in chunks[:-1]] == [
        result["data"][0]["embedding"] for result in direct
    ]
    assert chunks[-1]["usage"]["prompt_tokens"] == sum(result["usage"]["prompt_tokens"] for result in direct)
    assert_well_formed(chunks, "embedding")


async def test_request_errors_name_what_was_wrong(engine: LlamaEngine) -> None:
    cases = [
        ({**GREEDY, "model": "other"}, "model_not_found"),
        ({"kind": "embedding", "input": "x"}, "unsupported_kind"),
        ({**GREEDY, "messages": [{"role": "user", "content": "word " * 2000}]}, "context_length_exceeded"),
        ({**GREEDY, "temperature": 9}, "invalid_temperature"),
    ]
    for request, code in cases:
        with pytest.raises(EngineError) as caught:
            await ask(engine, request)
        assert caught.value.code == code
    assert_well_formed(await ask(engine, {**GREEDY, "max_tokens": 2}))  # the slots still work


async def test_eight_requests_share_two_slots_and_a_ninth_is_refused(engine: LlamaEngine) -> None:
    prompts = [f"request {n}" for n in range(SLOTS + QUEUE)]
    expected = {prompt: text_of(await ask(engine, _greedy(prompt, 40))) for prompt in prompts[:2]}
    results: dict[str, list[dict[str, Any]]] = {}

    async def one(prompt: str) -> None:
        results[prompt] = await ask(engine, _greedy(prompt, 40))

    async with trio.open_nursery() as nursery:
        for prompt in prompts:
            nursery.start_soon(one, prompt)
        await trio.testing.wait_all_tasks_blocked()
        (info,) = engine.models()
        assert (info.active_requests, info.queued_requests) == (SLOTS, QUEUE)
        with pytest.raises(EngineError) as caught:
            await ask(engine, _greedy("one too many", 4))
        assert caught.value.code == "overloaded"
    assert sorted(results) == sorted(prompts)
    for prompt, chunks in results.items():
        assert_well_formed(chunks)
        assert chunks[-1]["usage"]["completion_tokens"] == 40
        if prompt in expected:
            assert text_of(chunks) == expected[prompt]
    (info,) = engine.models()
    assert (info.active_requests, info.queued_requests) == (0, 0)


def _greedy(prompt: str, max_tokens: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": max_tokens}


async def test_a_cancelled_request_frees_its_slot_at_once(tiny_model_path: Path) -> None:
    config = ModelConfig(tiny_model_path, slots=1, queue_limit=0, n_ctx=2048)
    async with open_llama_engine([config]) as engine:
        reference_start = time.perf_counter()
        await ask(engine, _greedy("go on", 200))
        token_s = (time.perf_counter() - reference_start) / 200
        chunks = engine.generate(_greedy("go on", 2000))  # ~10 s if it ran to the end
        await chunks.__anext__()
        cancelled_at = time.perf_counter()
        await chunks.aclose()
        with trio.fail_after(5):
            while engine.models()[0].active_requests:
                await trio.sleep(0.0002)
        freed_s = time.perf_counter() - cancelled_at
        assert_well_formed(await ask(engine, _greedy("next", 3)))
    print(f"slot freed {freed_s * 1000:.2f} ms after cancel (a token takes {token_s * 1000:.2f} ms here)")
    assert freed_s < 0.25


def test_generation_stops_within_one_token_of_cancel(tiny_model_path: Path) -> None:
    with closing(MeteredLlama(model_path=str(tiny_model_path), n_ctx=N_CTX, verbose=False)) as llm:
        cancel = threading.Event()
        llm.start_request(cancel)
        pieces = []
        for chunk in llm.create_completion("the", temperature=0, max_tokens=200, stream=True):
            pieces.append(chunk["choices"][0]["text"])
            if len(pieces) == 5:
                cancel.set()
                tokens_at_cancel = llm.completion_tokens
    assert tokens_at_cancel == 5
    assert llm.completion_tokens == tokens_at_cancel  # no token was generated after the cancel
    assert len([piece for piece in pieces if piece]) <= 6


async def test_close_stops_requests_in_flight_and_ends_every_thread(tiny_model_path: Path) -> None:
    threads_before = set(threading.enumerate())
    engine = await trio.to_thread.run_sync(
        LlamaEngine.load, [ModelConfig(tiny_model_path, slots=2, n_ctx=2048)]
    )
    assert len(set(threading.enumerate()) - threads_before) == 2
    chunks = engine.generate(_greedy("go on", 2000))
    await chunks.__anext__()
    started = time.perf_counter()
    await trio.to_thread.run_sync(engine.close)
    assert time.perf_counter() - started < 1.0
    with pytest.raises(StopAsyncIteration):
        while True:
            await chunks.__anext__()  # the stream just ends: no final chunk, it was stopped
    assert set(threading.enumerate()) == threads_before


async def test_models_describe_the_file_and_the_slots(engine: LlamaEngine, tiny_model_path: Path) -> None:
    (info,) = engine.models()
    assert info.model_id == "tiny"
    assert info.sha256 == hashlib.sha256(tiny_model_path.read_bytes()).hexdigest()
    with direct_llama(tiny_model_path) as llm:
        assert info.parameter_count == llama_cpp.llama_model_n_params(llm.model)
        assert llm.n_vocab() == 259 + len(TEXT_PIECES)
    assert (info.quantisation, info.context_length, info.embedding) == ("F32", N_CTX, False)
    assert (info.max_concurrent, info.queue_limit, info.active_requests, info.queued_requests) == (
        SLOTS,
        QUEUE,
        0,
        0,
    )


def _load(path: Path, **options: Any) -> str:
    with pytest.raises(ModelError) as caught:
        LlamaEngine.load([ModelConfig(path, **options)])
    return str(caught.value)


def test_unusable_models_and_settings_are_refused_clearly(tiny_model_path: Path, tmp_path: Path) -> None:
    assert "does not exist" in _load(tmp_path / "missing.gguf")
    (tmp_path / "notes.txt").write_text("not a model")
    assert "is not a GGUF file" in _load(tmp_path / "notes.txt")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_model_path.read_bytes()[:1000])
    assert "cut short" in _load(truncated)
    assert "slots must be in 1..64" in _load(tiny_model_path, slots=0)
    assert "n_ctx must be at least" in _load(tiny_model_path, n_ctx=8)
    assert "queue limit" in _load(tiny_model_path, queue_limit=-1)
    twice = [ModelConfig(tiny_model_path, model_id="x"), ModelConfig(tiny_model_path, model_id="x")]
    with pytest.raises(ModelError, match="same id"):
        LlamaEngine.load(twice)
