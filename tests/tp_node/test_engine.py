"""The fake engine follows the same request and response documents as the llama engine."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import trio

from tests.tp_node.chunk_shapes import assert_well_formed, text_of, tool_arguments
from tp_net.protocol.inference_contract import EngineError
from tp_node.engine import FAKE_MAX_TOKENS_DEFAULT, FakeEngine, fake_token

CHAT = {"messages": [{"role": "user", "content": "hello"}]}


async def ask(engine: FakeEngine, request: dict[str, Any]) -> list[dict[str, Any]]:
    return [chunk async for chunk in engine.generate(request)]


async def test_one_chunk_per_token_then_usage() -> None:
    chunks = await ask(FakeEngine(), {**CHAT, "max_tokens": 5})
    seed = hashlib.blake2b(b"hello", digest_size=8).digest()
    assert [chunk["text"] for chunk in chunks[:-1]] == [fake_token(seed, i) for i in range(5)]
    assert chunks[-1] == {
        "finish_reason": "length",
        "usage": {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6},
    }
    assert_well_formed(chunks)


async def test_default_length_and_the_completion_kind() -> None:
    chunks = await ask(FakeEngine(), {"kind": "completion", "model": "fake", "prompt": "hello"})
    assert len(chunks) == FAKE_MAX_TOKENS_DEFAULT + 1
    assert text_of(chunks) == text_of(await ask(FakeEngine(), CHAT))
    assert_well_formed(chunks, "completion")


async def test_a_stop_sequence_ends_the_output_before_it_even_across_chunks() -> None:
    full = text_of(await ask(FakeEngine(), {**CHAT, "max_tokens": 40}))
    words = full.split(" ")
    stop = f"{words[5]} {words[6]}"  # spans two fake tokens
    chunks = await ask(FakeEngine(), {**CHAT, "max_tokens": 40, "stop": [stop]})
    assert text_of(chunks) == full[: full.index(stop)]
    assert chunks[-1]["finish_reason"] == "stop"
    assert_well_formed(chunks)


async def test_a_named_tool_gets_a_tool_call_in_openai_shape() -> None:
    tools = [{"type": "function", "function": {"name": "lookup"}}]
    chunks = await ask(FakeEngine(), {**CHAT, "tools": tools, "tool_choice": "required"})
    assert chunks[0]["tool_calls"][0]["function"]["name"] == "lookup"
    assert tool_arguments(chunks) == {0: "{}"}
    assert chunks[-1]["finish_reason"] == "tool_calls"
    assert_well_formed(chunks)


async def test_embeddings_are_deterministic_vectors() -> None:
    chunks = await ask(FakeEngine(), {"kind": "embedding", "input": ["a b", "c"]})
    assert [chunk["index"] for chunk in chunks[:-1]] == [0, 1]
    assert (
        chunks[0]["embedding"]
        == (await ask(FakeEngine(), {"kind": "embedding", "input": "a b"}))[0]["embedding"]
    )
    assert chunks[0]["embedding"] != chunks[1]["embedding"]
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}
    assert_well_formed(chunks, "embedding")


async def test_bad_requests_and_unknown_models_are_refused() -> None:
    with pytest.raises(EngineError) as caught:
        await ask(FakeEngine(), {**CHAT, "max_tokens": 0})
    assert caught.value.code == "invalid_max_tokens"
    with pytest.raises(EngineError) as caught:
        await ask(FakeEngine(), {**CHAT, "model": "llama-70b"})
    assert caught.value.code == "model_not_found"


async def test_models_reports_live_load() -> None:
    engine = FakeEngine(token_delay_s=0.01, model_id="m")
    (idle,) = engine.models()
    assert (idle.model_id, idle.active_requests, idle.embedding) == ("m", 0, False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, engine, {**CHAT, "max_tokens": 3})
        await trio.sleep(0.015)
        assert engine.models()[0].active_requests == 1
    assert engine.models()[0].active_requests == 0


async def test_sub_millisecond_delay_keeps_its_rate() -> None:
    # Each sleep would wake a whole millisecond late: 400 tokens at 0.5 ms would take >= 0.4 s, not 0.2 s.
    start = trio.current_time()
    chunks = await ask(FakeEngine(token_delay_s=0.0005), {**CHAT, "max_tokens": 400})
    assert chunks[-1]["usage"]["completion_tokens"] == 400
    assert 0.2 <= trio.current_time() - start < 0.35
