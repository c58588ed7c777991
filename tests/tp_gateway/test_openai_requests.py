"""OpenAI request bodies -> node request documents, and every way a body is refused (sans-IO)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tp_gateway.openai_api import (
    ApiCall,
    ApiError,
    ChatCall,
    EmbeddingCall,
    parse_chat,
    parse_completion,
    parse_embedding,
)

SECRET = "the secret prompt 4711"
USER = {"role": "user", "content": SECRET}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object"}, "strict": True},
}
DROP = object()  # an override that removes the field


def chat(**fields: Any) -> dict[str, Any]:
    return _body({"model": "m", "messages": [USER]}, fields)


def completion(**fields: Any) -> dict[str, Any]:
    return _body({"model": "m", "prompt": SECRET}, fields)


def embedding(**fields: Any) -> dict[str, Any]:
    return _body({"model": "m", "input": SECRET}, fields)


def _body(base: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    body = {**base, **fields}
    return {name: value for name, value in body.items() if value is not DROP}


def test_a_minimal_chat_call_carries_only_what_was_asked() -> None:
    call = parse_chat(chat())
    assert isinstance(call, ChatCall)
    assert (call.model, call.stream, call.include_usage) == ("m", False, False)
    assert call.document() == {"kind": "chat", "model": "m", "messages": [USER]}


def test_every_chat_field_reaches_the_node_document() -> None:
    body = chat(
        messages=[
            {
                "role": "system",
                "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}],
            },
            {"role": "user", "content": SECRET, "name": "ann"},
            {
                "role": "assistant",
                "content": None,
                "refusal": None,  # what the SDK echoes back from an earlier answer: dropped
                "annotations": [],
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "content": "17", "tool_call_id": "c1"},
        ],
        max_completion_tokens=7,
        max_tokens=9,
        temperature=0.5,
        top_p=0.9,
        stop="\n",
        seed=-3,
        presence_penalty=1,
        frequency_penalty=-1.5,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
        user="someone@example.org",
        n=1,
        logprobs=False,
        logit_bias={},
        parallel_tool_calls=False,
        stream=True,
        stream_options={"include_usage": True},
    )
    call = parse_chat(body)
    assert (call.stream, call.include_usage) == (True, True)
    assert call.document() == {
        "kind": "chat",
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": SECRET, "name": "ann"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "content": "17", "tool_call_id": "c1"},
        ],
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["\n"],
        "seed": -3,
        "presence_penalty": 1.0,
        "frequency_penalty": -1.5,
        "tools": [
            {
                "type": "function",
                "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object"}},
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "w", "schema": {"type": "object"}},
        },
    }


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"response_format": {"type": "text"}}, {}),
        ({"response_format": {"type": "json_object"}}, {"response_format": {"type": "json_object"}}),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "w"}}},
            {"response_format": {"type": "json_object"}},
        ),
        ({"tools": [], "tool_choice": "none"}, {}),
        ({"tools": [WEATHER], "tool_choice": "required"}, {"tool_choice": "required"}),
        ({"stop": []}, {}),
        ({"stop": ["a", "b"]}, {"stop": ["a", "b"]}),
        ({"max_tokens": 5}, {"max_tokens": 5}),
        ({"stream": False, "temperature": None, "n": None}, {}),
    ],
)
def test_chat_fields_are_normalised(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    document = parse_chat(chat(**fields)).document()
    extra = {
        name: value for name, value in document.items() if name not in ("kind", "model", "messages", "tools")
    }
    assert extra == expected


def test_the_document_is_a_copy_and_the_repr_holds_no_prompt() -> None:
    call = parse_chat(chat())
    call.document()["messages"].clear()
    assert call.document()["messages"] == [USER]
    assert SECRET not in repr(call)


def test_a_completion_gets_openais_default_max_tokens() -> None:
    call = parse_completion(completion(stream=True, stream_options={}, echo=False, best_of=1, suffix=""))
    assert (call.stream, call.include_usage) == (True, False)
    assert call.document() == {"kind": "completion", "model": "m", "prompt": SECRET, "max_tokens": 16}
    assert parse_completion(completion(prompt=["one"], max_tokens=99)).document()["max_tokens"] == 99
    assert parse_completion(completion(prompt=["one"])).document()["prompt"] == "one"


def test_an_embedding_call_counts_its_inputs_and_keeps_the_encoding() -> None:
    call = parse_embedding(embedding(input=["a", "b"], encoding_format="base64", user="u"))
    assert isinstance(call, EmbeddingCall)
    assert (call.input_count, call.encoding_format, call.stream) == (2, "base64", False)
    assert call.document() == {"kind": "embedding", "model": "m", "input": ["a", "b"]}
    assert parse_embedding(embedding()).document()["input"] == [SECRET]
    assert parse_embedding(embedding()).encoding_format == "float"


Parser = Callable[[object], ApiCall]
DEEP: Any = {}
for _ in range(40):
    DEEP = {"x": DEEP}

# (parser, body, param, code): every refusal names the field and says why.
REFUSALS: list[tuple[Parser, object, str | None, str]] = [
    (parse_chat, [], None, "invalid_type"),
    (parse_chat, "text", None, "invalid_type"),
    (parse_chat, chat(model=DROP), "model", "missing_required_parameter"),
    (parse_chat, chat(model=None), "model", "missing_required_parameter"),
    (parse_chat, chat(model=3), "model", "invalid_type"),
    (parse_chat, chat(model=""), "model", "empty_string"),
    (parse_chat, chat(model="m" * 129), "model", "string_above_max_length"),
    (parse_chat, chat(messages=DROP), "messages", "missing_required_parameter"),
    (parse_chat, chat(messages=SECRET), "messages", "invalid_type"),
    (parse_chat, chat(messages=[]), "messages", "empty_array"),
    (parse_chat, chat(messages=[USER] * 1025), "messages", "array_above_max_length"),
    (parse_chat, chat(messages=[SECRET]), "messages[0]", "invalid_type"),
    (parse_chat, chat(messages=[{"content": SECRET}]), "messages[0].role", "missing_required_parameter"),
    (parse_chat, chat(messages=[{"role": "function", "content": "x"}]), "messages[0].role", "invalid_value"),
    (parse_chat, chat(messages=[{"role": "user"}]), "messages[0].content", "missing_required_parameter"),
    (parse_chat, chat(messages=[{"role": "assistant"}]), "messages[0].content", "missing_required_parameter"),
    (parse_chat, chat(messages=[{"role": "user", "content": 5}]), "messages[0].content", "invalid_type"),
    (parse_chat, chat(messages=[{"role": "user", "content": []}]), "messages[0].content", "empty_array"),
    (
        parse_chat,
        chat(messages=[{"role": "system", "content": [{"type": "image_url", "image_url": {}}]}]),
        "messages[0].content[0].type",
        "unsupported_value",
    ),
    (
        parse_chat,
        chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
        "messages[0].content[0].image_url.url",
        "missing_required_parameter",
    ),
    (
        parse_chat,
        chat(messages=[{"role": "user", "content": [{"type": "text", "text": 1}]}]),
        "messages[0].content[0].text",
        "invalid_type",
    ),
    (
        parse_chat,
        chat(messages=[{"role": "user", "content": "\ud800"}]),
        "messages[0].content",
        "invalid_value",
    ),
    (parse_chat, chat(messages=[{**USER, "name": 1}]), "messages[0].name", "invalid_type"),
    (
        parse_chat,
        chat(messages=[{"role": "tool", "content": "1"}]),
        "messages[0].tool_call_id",
        "missing_required_parameter",
    ),
    (
        parse_chat,
        chat(messages=[{"role": "assistant", "tool_calls": {}}]),
        "messages[0].tool_calls",
        "invalid_type",
    ),
    (
        parse_chat,
        chat(messages=[{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]}]),
        "messages[0].tool_calls[0].function.arguments",
        "missing_required_parameter",
    ),
    (
        parse_chat,
        chat(messages=[{"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "function": {}}]}]),
        "messages[0].tool_calls[0].type",
        "unsupported_value",
    ),
    (parse_chat, chat(stream="yes"), "stream", "invalid_type"),
    (parse_chat, chat(stream_options={"include_usage": True}), "stream_options", "invalid_value"),
    (parse_chat, chat(stream=True, stream_options=[]), "stream_options", "invalid_type"),
    (
        parse_chat,
        chat(stream=True, stream_options={"include_usage": 1}),
        "stream_options.include_usage",
        "invalid_type",
    ),
    (parse_chat, chat(n=9), "n", "integer_above_max_value"),
    (parse_chat, chat(n=0), "n", "integer_below_min_value"),
    (parse_chat, chat(n=1.0), "n", "invalid_type"),
    (parse_chat, chat(temperature=2.5), "temperature", "decimal_above_max_value"),
    (parse_chat, chat(temperature=-0.1), "temperature", "decimal_below_min_value"),
    (parse_chat, chat(temperature=float("nan")), "temperature", "invalid_value"),
    (parse_chat, chat(temperature="hot"), "temperature", "invalid_type"),
    (parse_chat, chat(temperature=True), "temperature", "invalid_type"),
    (parse_chat, chat(top_p=1.5), "top_p", "decimal_above_max_value"),
    (parse_chat, chat(presence_penalty=-3), "presence_penalty", "decimal_below_min_value"),
    (parse_chat, chat(frequency_penalty=10**400), "frequency_penalty", "decimal_above_max_value"),
    (parse_chat, chat(max_tokens=0), "max_tokens", "integer_below_min_value"),
    (parse_chat, chat(max_tokens=100_001), "max_tokens", "integer_above_max_value"),
    (parse_chat, chat(max_tokens=10.0), "max_tokens", "invalid_type"),
    (parse_chat, chat(max_completion_tokens=5, max_tokens="x"), "max_tokens", "invalid_type"),
    (parse_chat, chat(max_completion_tokens=-1), "max_completion_tokens", "integer_below_min_value"),
    (parse_chat, chat(seed=2**64), "seed", "integer_above_max_value"),
    (parse_chat, chat(seed="1"), "seed", "invalid_type"),
    (parse_chat, chat(stop=5), "stop", "invalid_type"),
    (parse_chat, chat(stop=""), "stop", "empty_string"),
    (parse_chat, chat(stop=["a"] * 5), "stop", "array_above_max_length"),
    (parse_chat, chat(stop=["a", 1]), "stop[1]", "invalid_type"),
    (parse_chat, chat(stop=["x" * 257]), "stop[0]", "string_above_max_length"),
    (parse_chat, chat(top_logprobs=2), "top_logprobs", "invalid_value"),
    (parse_chat, chat(logprobs=True, top_logprobs=21), "top_logprobs", "integer_above_max_value"),
    (parse_chat, chat(logprobs="yes"), "logprobs", "invalid_type"),
    (parse_chat, chat(logit_bias={"1": 101}), "logit_bias", "invalid_value"),
    (parse_chat, chat(logit_bias={"01": 1}), "logit_bias", "invalid_value"),
    (parse_chat, chat(logit_bias={str(n): 1 for n in range(301)}), "logit_bias", "invalid_value"),
    (parse_chat, chat(logit_bias=[1]), "logit_bias", "invalid_type"),
    (parse_chat, chat(functions=[{"name": "f"}]), "functions", "unsupported_value"),
    (parse_chat, chat(function_call="auto"), "function_call", "unsupported_value"),
    (parse_chat, chat(audio={"voice": "x"}), "audio", "unsupported_value"),
    (parse_chat, chat(web_search_options={}), "web_search_options", "unsupported_value"),
    (parse_chat, chat(modalities=["text", "audio"]), "modalities[1]", "invalid_value"),
    (parse_chat, chat(user=5), "user", "invalid_type"),
    (parse_chat, chat(metadata="x"), "metadata", "invalid_type"),
    (parse_chat, chat(store=1), "store", "invalid_type"),
    (parse_chat, chat(top_logprobs=True), "top_logprobs", "invalid_type"),
    (parse_chat, chat(tools={}), "tools", "invalid_type"),
    (parse_chat, chat(tools=[WEATHER] * 129), "tools", "array_above_max_length"),
    (parse_chat, chat(tools=[{"type": "custom", "custom": {}}]), "tools[0].type", "unsupported_value"),
    (parse_chat, chat(tools=[{"type": "function"}]), "tools[0].function", "missing_required_parameter"),
    (
        parse_chat,
        chat(tools=[{"type": "function", "function": {"name": "bad name"}}]),
        "tools[0].function.name",
        "invalid_value",
    ),
    (
        parse_chat,
        chat(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]),
        "tools[0].function.parameters",
        "invalid_type",
    ),
    (
        parse_chat,
        chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {"max": 2**70}}}]),
        "tools[0].function.parameters",
        "invalid_value",
    ),
    (
        parse_chat,
        chat(tools=[{"type": "function", "function": {"name": "f", "parameters": DEEP}}]),
        "tools[0].function.parameters",
        "invalid_value",
    ),
    (
        parse_chat,
        chat(tools=[{"type": "function", "function": {"name": "f", "description": 1}}]),
        "tools[0].function.description",
        "invalid_type",
    ),
    (parse_chat, chat(tool_choice="auto"), "tool_choice", "invalid_value"),
    (parse_chat, chat(tools=[WEATHER], tool_choice="always"), "tool_choice", "invalid_value"),
    (parse_chat, chat(tools=[WEATHER], tool_choice=1), "tool_choice", "invalid_type"),
    (
        parse_chat,
        chat(tools=[WEATHER], tool_choice={"type": "allowed_tools"}),
        "tool_choice.type",
        "unsupported_value",
    ),
    (
        parse_chat,
        chat(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "other"}}),
        "tool_choice.function.name",
        "invalid_value",
    ),
    (
        parse_chat,
        chat(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": ["x"]}}),
        "tool_choice.function.name",
        "invalid_type",
    ),
    (parse_chat, chat(response_format="json"), "response_format", "invalid_type"),
    (parse_chat, chat(response_format={"type": "yaml"}), "response_format.type", "invalid_value"),
    (
        parse_chat,
        chat(response_format={"type": "json_schema"}),
        "response_format.json_schema",
        "missing_required_parameter",
    ),
    (
        parse_chat,
        chat(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
        "response_format.json_schema.name",
        "missing_required_parameter",
    ),
    (
        parse_chat,
        chat(response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": True}}),
        "response_format.json_schema.schema",
        "invalid_type",
    ),
    (parse_completion, completion(prompt=DROP), "prompt", "missing_required_parameter"),
    (parse_completion, completion(prompt=5), "prompt", "invalid_type"),
    (parse_completion, completion(prompt=[]), "prompt", "empty_array"),
    (parse_completion, completion(prompt=["a", "b"]), "prompt", "unsupported_value"),
    (parse_completion, completion(prompt=[1, 2]), "prompt", "unsupported_value"),
    (parse_completion, completion(prompt=[[1, 2]]), "prompt", "unsupported_value"),
    (parse_completion, completion(echo=True), "echo", "unsupported_value"),
    (parse_completion, completion(suffix="end"), "suffix", "unsupported_value"),
    (parse_completion, completion(logprobs=21), "logprobs", "integer_above_max_value"),
    (parse_completion, completion(best_of=3), "best_of", "unsupported_value"),
    (parse_completion, completion(n=3, best_of=2), "best_of", "unsupported_value"),
    (parse_completion, completion(max_tokens=0), "max_tokens", "integer_below_min_value"),
    (parse_completion, completion(stream_options={"include_usage": True}), "stream_options", "invalid_value"),
    (parse_embedding, embedding(input=DROP), "input", "missing_required_parameter"),
    (parse_embedding, embedding(input=""), "input", "empty_string"),
    (parse_embedding, embedding(input=[]), "input", "empty_array"),
    (parse_embedding, embedding(input=["a"] * 257), "input", "array_above_max_length"),
    (parse_embedding, embedding(input=["a", ""]), "input[1]", "empty_string"),
    (parse_embedding, embedding(input=[1, 2]), "input[0]", "unsupported_value"),
    (parse_embedding, embedding(input={"text": "a"}), "input", "invalid_type"),
    (parse_embedding, embedding(encoding_format="int8"), "encoding_format", "invalid_value"),
    (parse_embedding, embedding(dimensions=64), "dimensions", "unsupported_value"),
    (parse_embedding, embedding(dimensions="64"), "dimensions", "invalid_type"),
    (parse_embedding, embedding(model=DROP), "model", "missing_required_parameter"),
]


@pytest.mark.parametrize(("parser", "body", "param", "code"), REFUSALS)
def test_a_bad_body_is_refused_naming_the_field(
    parser: Parser, body: object, param: str | None, code: str
) -> None:
    with pytest.raises(ApiError) as caught:
        parser(body)
    error = caught.value
    assert (error.status, error.type, error.param, error.code) == (400, "invalid_request_error", param, code)
    assert error.to_json()["error"]["param"] == param
    # The message names the field and never the value sent (which may be the prompt).
    assert param is None or f"'{param}'" in error.message
    assert SECRET not in error.message and "ann" not in error.message


def test_unknown_fields_are_ignored_as_openai_does() -> None:
    call = parse_chat(chat(some_future_field={"x": 1}, another=[1, 2]))
    assert "some_future_field" not in call.document()
    assert parse_embedding(embedding(whatever=1)).input_count == 1


def test_messages_say_what_is_allowed() -> None:
    with pytest.raises(ApiError, match=r"'system', 'developer', 'user', 'assistant', 'tool'"):
        parse_chat(chat(messages=[{"role": "function", "content": "x"}]))
    with pytest.raises(ApiError, match=r"Expected a value <= 2"):
        parse_chat(chat(temperature=3))
    with pytest.raises(ApiError, match=r"Expected a value <= 8"):
        parse_chat(chat(n=9))
    with pytest.raises(ApiError, match=r"got a string instead"):
        parse_chat(chat(messages=SECRET))


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize("levels", range(20, 34))
def test_a_json_value_the_gateway_accepts_fits_the_nodes_document_depth(levels: int) -> None:
    """Tool parameters and response schemas: the gateway refuses (400) exactly what would make the node's
    document nest deeper than the codec allows, instead of sending a request every node refuses."""
    from tp_net.protocol.codec import decode_document, encode_document
    from tp_net.protocol.errors import ProtocolError

    schema = {"name": "s", "schema": _nested(levels)}
    bodies = [
        chat(tools=[{"type": "function", "function": {"name": "f", "parameters": _nested(levels)}}]),
        chat(response_format={"type": "json_schema", "json_schema": schema}),
    ]
    for body in bodies:
        try:
            document = parse_chat(body).document()
        except ApiError as refused:
            assert refused.status == 400 and "nested too deeply" in str(refused.message)
            continue
        try:
            decode_document(encode_document(document))
        except ProtocolError as exc:
            pytest.fail(f"the gateway accepted a document the node refuses: {exc}")
    tools_body = bodies[0]
    if levels <= 26:  # the deepest the node's document takes under a tool
        parse_chat(tools_body)
