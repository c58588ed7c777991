"""Inference request checking and response chunk coalescing (sans-IO)."""

from __future__ import annotations

from typing import Any

import pytest

from tp_net.protocol.inference_contract import EngineError
from tp_node.inference import coalesce, parse_request, tool_call_arguments, tool_call_start

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
CLOCK_TOOL = {"type": "function", "function": {"name": "get_time"}}


def test_a_minimal_chat_request_gets_openai_defaults() -> None:
    request = parse_request(CHAT)
    assert request.kind == "chat"
    assert request.model is None
    assert request.messages == ({"role": "user", "content": "hi"},)
    assert (request.temperature, request.top_p, request.max_tokens, request.seed) == (1.0, 1.0, None, None)
    assert request.stop == () and request.tools == () and request.response_format is None


def test_every_chat_field_is_carried() -> None:
    request = parse_request(
        {
            "kind": "chat",
            "model": "m",
            "messages": [
                {
                    "role": "system",
                    "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}],
                },
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
                {"role": "tool", "content": "17", "tool_call_id": "c1"},
            ],
            "max_tokens": 5,
            "temperature": 0,
            "top_p": 0.5,
            "stop": "\n",
            "seed": 2**40,
            "presence_penalty": -1.5,
            "frequency_penalty": 2,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}},
            },
            "tools": [WEATHER_TOOL],
            "tool_choice": "auto",
        }
    )
    assert request.messages[0]["content"] == "be brief"
    assert request.messages[1]["content"] is None
    assert (request.max_tokens, request.temperature, request.top_p) == (5, 0.0, 0.5)
    assert request.stop == ("\n",) and request.seed == 2**40
    assert (request.presence_penalty, request.frequency_penalty) == (-1.5, 2.0)
    assert request.response_format == {"type": "json_object", "schema": {"type": "object"}}
    assert request.tool_choice == "auto"


def test_completion_and_embedding_requests() -> None:
    completion = parse_request({"kind": "completion", "model": "m", "prompt": "once", "stop": ["a", "b"]})
    assert (completion.kind, completion.prompt, completion.stop) == ("completion", "once", ("a", "b"))
    embedding = parse_request({"kind": "embedding", "input": ["one", "two"]})
    assert embedding.inputs == ("one", "two")
    assert parse_request({"kind": "embedding", "input": "one"}).inputs == ("one",)


def test_nulls_mean_defaults() -> None:
    nulls = dict.fromkeys(["max_tokens", "temperature", "top_p", "stop", "seed", "tools", "tool_choice"])
    request = parse_request({**CHAT, **nulls, "response_format": None})
    assert request == parse_request(CHAT)


def test_required_tool_choice_takes_any_number_of_tools_and_tools_alone_mean_auto() -> None:
    request = parse_request({**CHAT, "tools": [WEATHER_TOOL, CLOCK_TOOL], "tool_choice": "required"})
    assert request.tool_choice == "required" and request.named_tool() is None
    assert parse_request({**CHAT, "tools": [WEATHER_TOOL]}).tool_choice == "auto"
    assert (
        parse_request({**CHAT, "tools": [WEATHER_TOOL], "parallel_tool_calls": False}).parallel_tool_calls
        is False
    )


def test_texts_are_what_the_requester_wrote() -> None:
    assert parse_request(CHAT).texts() == ["hi"]
    assert parse_request({"kind": "completion", "prompt": "p"}).texts() == ["p"]
    assert parse_request({"kind": "embedding", "input": ["a", "b"]}).texts() == ["a", "b"]


BAD_REQUESTS: list[tuple[dict[str, Any], str]] = [
    ({"kind": "image", **CHAT}, "invalid_kind"),
    ({**CHAT, "model": ""}, "invalid_model"),
    ({**CHAT, "model": 7}, "invalid_model"),
    ({**CHAT, "stream": True}, "unknown_field"),
    ({"kind": "completion", "prompt": "p", "messages": []}, "unknown_field"),
    ({"kind": "embedding", "input": "x", "max_tokens": 3}, "unknown_field"),
    ({"kind": "completion", "prompt": "p", "tools": [WEATHER_TOOL]}, "unknown_field"),
    ({}, "invalid_messages"),
    ({"messages": []}, "invalid_messages"),
    ({"messages": "hi"}, "invalid_messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "invalid_messages"),
    ({"messages": [{"role": "user", "content": 3}]}, "invalid_messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "invalid_messages"),
    ({"messages": [{"role": "user", "content": "x", "extra": 1}]}, "invalid_messages"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}, "invalid_messages"),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": 5}]}, "invalid_messages"),
    ({"kind": "completion"}, "invalid_prompt"),
    ({"kind": "completion", "prompt": ["a"]}, "invalid_prompt"),
    ({"kind": "embedding", "input": []}, "invalid_input"),
    ({"kind": "embedding", "input": [""]}, "invalid_input"),
    ({"kind": "embedding", "input": [1]}, "invalid_input"),
    ({**CHAT, "max_tokens": 0}, "invalid_max_tokens"),
    ({**CHAT, "max_tokens": 1.5}, "invalid_max_tokens"),
    ({**CHAT, "max_tokens": True}, "invalid_max_tokens"),
    ({**CHAT, "max_tokens": 100_001}, "invalid_max_tokens"),
    ({**CHAT, "temperature": 2.5}, "invalid_temperature"),
    ({**CHAT, "temperature": float("nan")}, "invalid_temperature"),
    ({**CHAT, "temperature": "hot"}, "invalid_temperature"),
    ({**CHAT, "top_p": -0.1}, "invalid_top_p"),
    ({**CHAT, "presence_penalty": 3}, "invalid_presence_penalty"),
    ({**CHAT, "frequency_penalty": False}, "invalid_frequency_penalty"),
    ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "invalid_stop"),
    ({**CHAT, "stop": [""]}, "invalid_stop"),
    ({**CHAT, "stop": 3}, "invalid_stop"),
    ({**CHAT, "seed": 2**64}, "invalid_seed"),
    ({**CHAT, "seed": "1"}, "invalid_seed"),
    ({**CHAT, "response_format": {"type": "xml"}}, "invalid_response_format"),
    ({**CHAT, "response_format": {"type": "json_schema"}}, "invalid_response_format"),
    ({**CHAT, "response_format": "json"}, "invalid_response_format"),
    ({**CHAT, "tools": []}, "invalid_tools"),
    ({**CHAT, "tools": [{"type": "retrieval"}]}, "invalid_tools"),
    ({**CHAT, "tools": [{"type": "function", "function": {"name": "no spaces"}}]}, "invalid_tools"),
    ({**CHAT, "tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}, "invalid_tools"),
    ({**CHAT, "tool_choice": "auto"}, "invalid_tool_choice"),
    ({**CHAT, "tools": [WEATHER_TOOL], "tool_choice": "always"}, "invalid_tool_choice"),
    ({**CHAT, "tools": [WEATHER_TOOL], "parallel_tool_calls": 1}, "invalid_parallel_tool_calls"),
    (
        {**CHAT, "tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "other"}}},
        "invalid_tool_choice",
    ),
]


@pytest.mark.parametrize(("document", "code"), BAD_REQUESTS)
def test_a_bad_field_is_named_by_the_error_code(document: dict[str, Any], code: str) -> None:
    with pytest.raises(EngineError) as caught:
        parse_request(document)
    assert caught.value.code == code
    assert str(caught.value)


def test_an_unknown_field_name_is_quoted_but_cut_short() -> None:
    with pytest.raises(EngineError, match="is not part of a chat request") as caught:
        parse_request({**CHAT, "x" * 500: 1})
    assert len(str(caught.value)) < 150


def test_coalesce_joins_text_and_keeps_order() -> None:
    chunks = [{"text": "a"}, {"text": "b"}, tool_call_start(0, "c0", "f", "{"), {"text": "c"}]
    assert coalesce(chunks) == [{"text": "ab"}, tool_call_start(0, "c0", "f", "{"), {"text": "c"}]


def test_coalesce_merges_argument_pieces_of_one_call_and_lists_new_calls() -> None:
    chunks = [
        tool_call_start(0, "c0", "f", "{"),
        tool_call_arguments(0, '"a"'),
        tool_call_arguments(0, "}"),
        tool_call_start(1, "c1", "g", ""),
        tool_call_arguments(1, "{}"),
    ]
    merged = coalesce(chunks)
    assert merged == [
        {
            "tool_calls": [
                {"index": 0, "id": "c0", "type": "function", "function": {"name": "f", "arguments": '{"a"}'}},
                {"index": 1, "id": "c1", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ]
        }
    ]
    assert chunks[0] == tool_call_start(0, "c0", "f", "{")  # inputs are not modified


def test_coalesce_never_merges_the_final_chunk() -> None:
    final = {
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    assert coalesce([{"text": "a"}, final, {"text": "b"}]) == [{"text": "a"}, final, {"text": "b"}]
