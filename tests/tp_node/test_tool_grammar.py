"""Tool calls by grammar (tp_node/tool_grammar.py) in the llama engine, on the tiny random model: its output
is random, so the grammar is what makes a call well formed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tp_net.protocol.inference_contract import SCHEMA_REPEAT_MAX, EngineError
from tp_node.llama_engine import LlamaEngine, ModelConfig, open_llama_engine
from tp_node.tool_grammar import parse_calls, plain_messages, tool_grammar

MESSAGES = [{"role": "user", "content": "What time is it?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 8}},
            "required": ["city"],
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "integer"}}, "required": ["zone"]},
    },
}
TOOLS = [WEATHER, CLOCK]


@pytest.fixture
async def engine(tiny_model_path: Path) -> AsyncIterator[LlamaEngine]:
    async with open_llama_engine([ModelConfig(tiny_model_path, model_id="tiny", n_ctx=2048)]) as opened:
        yield opened


async def ask(engine: LlamaEngine, request: dict[str, Any]) -> list[dict[str, Any]]:
    return [chunk async for chunk in engine.generate(request)]


def calls_of(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [call for chunk in chunks for call in chunk.get("tool_calls", ())]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_required_always_gives_well_formed_calls_of_the_given_tools(
    engine: LlamaEngine, seed: int
) -> None:
    request = {"messages": MESSAGES, "tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False}
    chunks = await ask(engine, {**request, "seed": seed, "max_tokens": 400})
    (call,) = calls_of(chunks)
    tool = {"get_weather": WEATHER, "get_time": CLOCK}[call["function"]["name"]]
    arguments = json.loads(call["function"]["arguments"])
    assert set(arguments) == set(tool["function"]["parameters"]["required"])  # type: ignore[index]
    assert call["id"].startswith("call_") and chunks[-1]["finish_reason"] == "tool_calls"


async def test_auto_gives_text_or_a_call_and_a_tool_result_turn_is_answered(engine: LlamaEngine) -> None:
    chunks = await ask(engine, {"messages": MESSAGES, "tools": TOOLS, "seed": 1, "max_tokens": 40})
    assert "".join(chunk.get("text", "") for chunk in chunks) or calls_of(chunks)
    follow_up = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "12:00"},
    ]
    chunks = await ask(engine, {"messages": follow_up, "tools": TOOLS, "seed": 1, "max_tokens": 20})
    assert chunks[-1]["finish_reason"] in ("stop", "length", "tool_calls")


def test_the_auto_grammar_allows_text_or_a_call_and_required_only_a_call() -> None:
    auto, required = tool_grammar(TOOLS, "auto", True), tool_grammar(TOOLS, "required", False)
    assert auto.startswith("root ::= calls | text") and "text ::= [^{]" in auto
    assert "\ntext ::=" not in required and "get_time" in required and "get_weather" in required


def test_calls_parse_only_when_whole() -> None:
    assert parse_calls('{"tool_calls": [{"name": "get_time", "arguments": {"zone": 1}}]}') == [
        ("get_time", '{"zone": 1}')
    ]
    assert parse_calls('{"tool_calls": [{"name": "get_ti') is None
    assert parse_calls("plain text") is None


def test_earlier_tool_turns_become_plain_roles() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": '{"zone": 1}'}}
    plain = plain_messages(
        [
            {"role": "system", "content": "be brief"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "12:00"},
        ],
        "TOOLS",
    )
    assert plain[0] == {"role": "system", "content": "be brief\n\nTOOLS"}
    assert json.loads(plain[1]["content"]) == {"tool_calls": [{"name": "get_time", "arguments": {"zone": 1}}]}
    assert (
        plain[2]["role"] == "user" and json.loads(plain[2]["content"])["tool_response"]["content"] == "12:00"
    )


async def test_a_schema_bound_that_would_blow_up_the_grammar_is_refused_before_it_is_built(
    engine: LlamaEngine,
) -> None:
    huge = {
        "type": "object",
        "properties": {"s": {"type": "array", "items": {"maxLength": SCHEMA_REPEAT_MAX + 1}}},
    }
    tool = {"type": "function", "function": {"name": "f", "parameters": huge}}
    with pytest.raises(EngineError) as refused:
        await ask(engine, {"messages": MESSAGES, "tools": [tool], "max_tokens": 4})
    assert refused.value.code == "invalid_tools"
