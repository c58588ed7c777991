"""JSON schemas become llama.cpp grammars whose x{m,n} is m..n copies of x: response_format and tool
schemas are bounded (SCHEMA_REPEAT_MAX each, SCHEMA_REPEATS_TOTAL_MAX together, SCHEMA_VALUES_MAX values)
when the node parses the request, before any grammar is built, and by the gateway with the same rule."""

from __future__ import annotations

from typing import Any

import pytest

from tp_gateway.openai_errors import ApiError
from tp_gateway.openai_requests import parse_chat
from tp_net.protocol.inference_contract import (
    SCHEMA_REPEAT_MAX,
    SCHEMA_REPEATS_TOTAL_MAX,
    SCHEMA_VALUES_MAX,
    EngineError,
)
from tp_node.inference import parse_request

MESSAGES = [{"role": "user", "content": "hi"}]


def strings(count: int, max_length: int) -> dict[str, Any]:
    properties = {f"p{n}": {"type": "string", "maxLength": max_length} for n in range(count)}
    return {"type": "object", "properties": properties}


TOO_LARGE = [
    {"type": "string", "maxLength": SCHEMA_REPEAT_MAX + 1},
    {"type": "string", "maxLength": float("nan")},  # msgpack carries NaN; it compares false with anything
    {"type": "array", "items": {"type": "array", "minItems": 10**9}},
    {"type": "string", "pattern": f"^a{{{SCHEMA_REPEAT_MAX + 1}}}$"},
    {"type": "string", "pattern": f"^a{{1,{SCHEMA_REPEAT_MAX + 1}}}$"},
    strings(SCHEMA_REPEATS_TOTAL_MAX // SCHEMA_REPEAT_MAX + 1, SCHEMA_REPEAT_MAX),
    {"type": "object", "enum": list(range(SCHEMA_VALUES_MAX))},
]
FITS = [
    {"type": "string", "maxLength": SCHEMA_REPEAT_MAX, "pattern": "^a{1,40}$"},
    strings(SCHEMA_REPEATS_TOTAL_MAX // SCHEMA_REPEAT_MAX, SCHEMA_REPEAT_MAX),
    {"type": "object", "enum": list(range(SCHEMA_VALUES_MAX - 4))},
]


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def tool(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "f", "parameters": schema}}


@pytest.mark.parametrize("schema", TOO_LARGE)
def test_a_schema_that_would_make_a_huge_grammar_is_refused_by_node_and_gateway(
    schema: dict[str, Any],
) -> None:
    node_cases: list[tuple[dict[str, Any], str]] = [
        ({"messages": MESSAGES, "response_format": response_format(schema)}, "invalid_response_format"),
        (
            {"messages": MESSAGES, "response_format": {"type": "json_object", "schema": schema}},
            "invalid_response_format",
        ),
        ({"messages": MESSAGES, "tools": [tool(schema)]}, "invalid_tools"),
    ]
    for document, code in node_cases:
        with pytest.raises(EngineError) as caught:
            parse_request(document)
        assert caught.value.code == code
    gateway_cases: list[tuple[dict[str, Any], str]] = [
        ({"response_format": response_format(schema)}, "response_format"),
        ({"tools": [tool(schema)]}, "tools"),
    ]
    for fields, param in gateway_cases:
        with pytest.raises(ApiError) as refused:
            parse_chat({"model": "m", "messages": MESSAGES, **fields})
        assert refused.value.status == 400 and (refused.value.param or "").startswith(param)


@pytest.mark.parametrize("schema", FITS)
def test_a_schema_within_the_bounds_passes_both(schema: dict[str, Any]) -> None:
    call = parse_chat({"model": "m", "messages": MESSAGES, "response_format": response_format(schema)})
    assert parse_request(call.document()).response_format == {"type": "json_object", "schema": schema}
    call = parse_chat({"model": "m", "messages": MESSAGES, "tools": [tool(schema)]})
    assert parse_request(call.document()).tools[0]["function"]["parameters"] == schema


def test_the_bounds_of_all_tools_add_up() -> None:
    half = strings(SCHEMA_REPEATS_TOTAL_MAX // SCHEMA_REPEAT_MAX // 2 + 1, SCHEMA_REPEAT_MAX)
    with pytest.raises(EngineError, match="add up"):
        parse_request(
            {
                "messages": MESSAGES,
                "tools": [tool(half), {**tool(half), "function": {"name": "g", "parameters": half}}],
            }
        )
