"""Issue 23's acceptance: the official SDK against a real gateway process on a real local network (three
relays, a tp-node with the tiny random llama model): n, logprobs with top_logprobs, logit_bias, tool_choice
"auto" with two tools, "required", and a two-turn tool conversation, each streamed and not. Every response
is parsed again with the SDK's own pydantic models (model_validate), which the SDK itself skips.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionToolParam

from tests.integration.gateway_network import BackgroundGateway, RunningGateway, running_gateway

MODEL = "tiny"
MESSAGES: list[Any] = [{"role": "user", "content": "What is the weather and the time?"}]
WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 8}},
            "required": ["city"],
        },
    },
}
CLOCK: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "integer"}}, "required": ["zone"]},
    },
}
TOOLS = [WEATHER, CLOCK]
CALL_TOKENS = 400  # a call is spelled one byte token per character by the tiny model


@pytest.fixture(scope="module")
def gateway(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    node_args = ["--engine", "llama", "--model", str(tiny_model_path), "--model-id", MODEL, "--n-ctx", "2048"]
    background = BackgroundGateway(
        partial(running_gateway, tmp_path_factory.mktemp("api-surface"), node_args=node_args)
    )
    running = background.start()
    try:
        yield running
    finally:
        background.close()


@pytest.fixture
def client(gateway: RunningGateway) -> Iterator[OpenAI]:
    with OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=60) as sdk:
        yield sdk


def chat(client: OpenAI, **options: Any) -> ChatCompletion:
    """A chat completion, parsed again, strictly, from the raw JSON."""
    raw = client.chat.completions.with_raw_response.create(model=MODEL, **options)
    return ChatCompletion.model_validate(json.loads(raw.http_response.text))


def chat_stream(client: OpenAI, **options: Any) -> list[ChatCompletionChunk]:
    with client.chat.completions.create(model=MODEL, stream=True, **options) as stream:
        return [ChatCompletionChunk.model_validate(chunk.model_dump()) for chunk in stream]


def streamed(chunks: list[ChatCompletionChunk], n: int = 1) -> tuple[list[str], dict[int, str]]:
    """(each choice's text, each choice's finish_reason)."""
    texts, ends = [""] * n, {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                ends[choice.index] = choice.finish_reason
    return texts, ends


def streamed_calls(chunks: list[ChatCompletionChunk]) -> list[dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.id or ""
            call["name"] += (delta.function.name or "") if delta.function else ""
            call["arguments"] += (delta.function.arguments or "") if delta.function else ""
    return [calls[index] for index in sorted(calls)]


def test_n_three_choices_streamed_and_not(client: OpenAI) -> None:
    whole = chat(client, messages=MESSAGES, n=3, max_tokens=8, seed=5)
    assert [choice.index for choice in whole.choices] == [0, 1, 2]
    assert all(choice.message.content for choice in whole.choices)
    texts, ends = streamed(chat_stream(client, messages=MESSAGES, n=3, max_tokens=8, seed=5), 3)
    assert texts == [choice.message.content for choice in whole.choices]  # same seeds, same answers
    assert ends == {0: "length", 1: "length", 2: "length"}


def test_logprobs_with_five_alternatives_streamed_and_not(client: OpenAI) -> None:
    options: dict[str, Any] = {"messages": MESSAGES, "logprobs": True, "top_logprobs": 5, "max_tokens": 8}
    whole = chat(client, temperature=0, **options)
    (choice,) = whole.choices
    assert choice.logprobs is not None and choice.logprobs.content
    assert "".join(entry.token for entry in choice.logprobs.content) == choice.message.content
    assert all(len(entry.top_logprobs) == 5 for entry in choice.logprobs.content)
    chunks = chat_stream(client, temperature=0, **options)
    entries = [
        e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content or []
    ]
    assert [e.token for e in entries] == [e.token for e in choice.logprobs.content]
    completion = client.completions.with_raw_response.create(
        model=MODEL, prompt="The", logprobs=3, max_tokens=5
    )
    parsed = Completion.model_validate(json.loads(completion.http_response.text))
    assert parsed.choices[0].logprobs is not None and parsed.choices[0].logprobs.tokens


def test_logit_bias_streamed_and_not(client: OpenAI) -> None:
    options: dict[str, Any] = {"messages": MESSAGES, "max_tokens": 6, "temperature": 0}
    plain = chat(client, **options).choices[0].message.content
    biased = chat(client, logit_bias={"300": 100}, **options).choices[0].message.content
    assert biased != plain
    assert streamed(chat_stream(client, logit_bias={"300": 100}, **options))[0] == [biased]


@pytest.mark.parametrize("seed", [1, 2])
def test_auto_with_two_tools_gives_text_or_well_formed_calls_streamed_and_not(
    client: OpenAI, seed: int
) -> None:
    options: dict[str, Any] = {"messages": MESSAGES, "tools": TOOLS, "tool_choice": "auto", "seed": seed}
    whole = chat(client, max_tokens=CALL_TOKENS, **options)
    message = whole.choices[0].message
    for call in message.tool_calls or []:
        assert call.function.name in ("get_weather", "get_time") and json.loads(call.function.arguments)
    assert message.content or message.tool_calls
    chunks = chat_stream(client, max_tokens=CALL_TOKENS, **options)
    assert streamed(chunks)[0][0] == (message.content or "")
    assert [c["name"] for c in streamed_calls(chunks)] == [c.function.name for c in message.tool_calls or []]


def test_required_and_a_two_turn_tool_conversation_streamed_and_not(client: OpenAI) -> None:
    options: dict[str, Any] = {"tools": TOOLS, "parallel_tool_calls": False, "max_tokens": CALL_TOKENS}
    whole = chat(client, messages=MESSAGES, tool_choice="required", seed=3, **options)
    (call,) = whole.choices[0].message.tool_calls or []
    assert whole.choices[0].finish_reason == "tool_calls" and json.loads(call.function.arguments)
    chunks = chat_stream(client, messages=MESSAGES, tool_choice="required", seed=3, **options)
    (streamed_call,) = streamed_calls(chunks)
    assert (streamed_call["name"], streamed_call["arguments"]) == (
        call.function.name,
        call.function.arguments,
    )
    follow_up = [
        *MESSAGES,
        whole.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 12:00"},
    ]
    second = chat(client, messages=follow_up, seed=4, **options)
    assert second.choices[0].message.content or second.choices[0].message.tool_calls
    assert streamed(chat_stream(client, messages=follow_up, seed=4, **options))[1]
