"""Node chunks -> OpenAI objects, checked against the official SDK's models; node errors -> API errors."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest
from openai.types import Completion, CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tp_gateway.openai_api import (
    SSE_DONE,
    ApiError,
    ChatCompletionCollector,
    ChatCompletionStream,
    CompletionCollector,
    CompletionStream,
    body_too_large,
    embeddings_response,
    invalid_api_key,
    invalid_json,
    model_list,
    model_not_found,
    model_object,
    no_capacity,
    node_error_to_api,
    sse_error,
    sse_event,
    unknown_route,
    upstream_failure,
)

SECRET = "the secret output 4711"
IDS = ("tiny-llama", "chatcmpl-abc", 1_700_000_000)


def final(reason: str = "stop", prompt: int = 5, completion: int = 3) -> dict[str, Any]:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return {"finish_reason": reason, "usage": usage}


def call_start(index: int, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    function = {"name": name, "arguments": arguments}
    return {"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": function}]}


def call_more(index: int, arguments: str) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}


TEXT_RESPONSE = [{"text": "Hel"}, {"text": "lo"}, final()]
TOOL_RESPONSE = [
    call_start(0, "call_1", "get_weather", '{"ci'),
    call_start(1, "call_2", "get_time", ""),
    call_more(0, 'ty": "Oslo"}'),
    call_more(1, "{}"),
    final("tool_calls"),
]


def stream_chat(chunks: list[dict[str, Any]], include_usage: bool = False) -> list[dict[str, Any]]:
    stream = ChatCompletionStream(*IDS, include_usage=include_usage)
    objects = [obj for chunk in chunks for obj in stream.feed(chunk)]
    assert stream.finished
    for obj in objects:
        ChatCompletionChunk.model_validate(obj)
        assert (obj["id"], obj["model"], obj["created"]) == ("chatcmpl-abc", "tiny-llama", 1_700_000_000)
    return objects


def collect_chat(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    collector = ChatCompletionCollector(*IDS)
    for chunk in chunks:
        collector.feed(chunk)
    result = collector.result()
    ChatCompletion.model_validate(result)
    return result


def test_a_chat_stream_says_the_role_first_then_the_text_then_why_it_stopped() -> None:
    objects = stream_chat(TEXT_RESPONSE)
    assert [obj["choices"][0]["delta"] for obj in objects] == [
        {"role": "assistant", "content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert [obj["choices"][0]["finish_reason"] for obj in objects] == [None, None, "stop"]
    assert all("usage" not in obj for obj in objects)


def test_with_include_usage_one_more_chunk_carries_the_usage_and_no_choices() -> None:
    objects = stream_chat(TEXT_RESPONSE, include_usage=True)
    assert len(objects) == 4
    assert all(obj["usage"] is None for obj in objects[:-1])
    assert objects[-1]["choices"] == []
    assert objects[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def test_an_empty_answer_still_says_the_role() -> None:
    (only,) = stream_chat([final("length")])
    assert only["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert only["choices"][0]["finish_reason"] == "length"


def test_tool_call_deltas_stream_in_openais_shape() -> None:
    objects = stream_chat(TOOL_RESPONSE)
    deltas = [obj["choices"][0]["delta"] for obj in objects]
    assert deltas[0]["role"] == "assistant"
    assert deltas[0]["tool_calls"] == TOOL_RESPONSE[0]["tool_calls"]
    assert deltas[2] == {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]}
    assert objects[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_the_collector_joins_the_text() -> None:
    result = collect_chat(TEXT_RESPONSE)
    assert result["object"] == "chat.completion"
    assert result["choices"][0]["message"] == {"role": "assistant", "content": "Hello", "refusal": None}
    assert result["choices"][0]["finish_reason"] == "stop"
    assert result["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def test_the_collector_assembles_tool_calls_from_their_deltas() -> None:
    message = collect_chat(TOOL_RESPONSE)["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        },
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]


def test_tool_calls_assemble_by_index_whatever_order_they_start_in() -> None:
    chunks = [call_start(1, "b", "g", "2"), call_start(0, "a", "f", "1"), {"text": "t"}, final("tool_calls")]
    message = collect_chat(chunks)["choices"][0]["message"]
    assert [call["id"] for call in message["tool_calls"]] == ["a", "b"]
    assert message["content"] == "t"


def test_an_empty_chat_answer_has_empty_content() -> None:
    assert collect_chat([final()])["choices"][0]["message"]["content"] == ""


def validate_completion_chunk(obj: dict[str, Any]) -> None:
    """OpenAI streams `finish_reason: null` though the SDK's model (shared with the non-stream object)
    requires a reason; the SDK parses stream chunks without validating, so check the rest."""
    choices = [{**choice, "finish_reason": choice["finish_reason"] or "stop"} for choice in obj["choices"]]
    Completion.model_validate({**obj, "choices": choices})


@pytest.mark.parametrize("include_usage", [False, True])
def test_a_completion_stream(include_usage: bool) -> None:
    stream = CompletionStream(*IDS, include_usage=include_usage)
    objects = [obj for chunk in TEXT_RESPONSE for obj in stream.feed(chunk)]
    for obj in objects:
        validate_completion_chunk(obj)
        assert obj["object"] == "text_completion"
    texts = [obj["choices"][0]["text"] for obj in objects if obj["choices"]]
    assert texts == ["Hel", "lo", ""]
    assert objects[2]["choices"][0]["finish_reason"] == "stop"
    if include_usage:
        assert objects[-1]["choices"] == [] and objects[-1]["usage"]["total_tokens"] == 8
        assert all(obj["usage"] is None for obj in objects[:-1])
    else:
        assert len(objects) == 3 and all("usage" not in obj for obj in objects)


def test_a_completion_collected() -> None:
    collector = CompletionCollector(*IDS)
    for chunk in [{"text": "a"}, {"text": "b"}, final("length")]:
        collector.feed(chunk)
    result = collector.result()
    Completion.model_validate(result)
    assert result["choices"] == [{"index": 0, "text": "ab", "logprobs": None, "finish_reason": "length"}]
    assert result["usage"]["completion_tokens"] == 3


MALFORMED = [
    ["not a map"],
    [{"something": "else"}],
    [{"text": 5}],
    [{"tool_calls": []}],
    [{"tool_calls": [{"index": 0}]}],
    [call_more(0, "x")],  # arguments before the call started
    [call_start(0, "a", "f", ""), call_start(0, "b", "f", "")],  # started twice
    [call_start(-1, "a", "f", "")],
    [call_start(0, "", "f", "")],
    [call_start(0, "a", "", "")],
    [{"tool_calls": [{"index": 0, "id": "a", "type": "custom", "function": {"name": "f"}}]}],
    [{"embedding": [1.0], "index": 0}],
    [{"finish_reason": "stop"}],
    [{"finish_reason": "stop", "usage": {"prompt_tokens": -1, "completion_tokens": 0}}],
    [{"finish_reason": "stop", "usage": {"prompt_tokens": 1.5, "completion_tokens": 0}}],
    [{"finish_reason": "exploded", "usage": final()["usage"]}],
    [final(), {"text": "late"}],
]


@pytest.mark.parametrize("chunks", MALFORMED)
def test_a_malformed_node_response_is_an_upstream_error(chunks: list[Any]) -> None:
    for consumer in (ChatCompletionStream(*IDS), ChatCompletionCollector(*IDS)):
        with pytest.raises(ApiError) as caught:
            for chunk in chunks:
                consumer.feed(chunk)
        assert (caught.value.status, caught.value.code) == (502, "upstream_error")


def test_completions_take_no_tool_calls() -> None:
    with pytest.raises(ApiError, match="toolcalls chunk in a completion response"):
        CompletionStream(*IDS).feed(TOOL_RESPONSE[0])
    with pytest.raises(ApiError, match="unknown finish_reason"):
        CompletionCollector(*IDS).feed(final("tool_calls"))


def test_a_response_that_ends_early_cannot_be_collected() -> None:
    collector = ChatCompletionCollector(*IDS)
    collector.feed({"text": SECRET})
    assert not collector.finished
    with pytest.raises(ApiError) as caught:
        collector.result()
    assert caught.value.status == 502 and SECRET not in caught.value.message


def test_an_error_document_mid_stream_becomes_its_api_error() -> None:
    stream = ChatCompletionStream(*IDS)
    assert not stream.started
    stream.feed({"text": SECRET})
    assert stream.started
    with pytest.raises(ApiError) as caught:
        stream.feed({"error": {"code": "internal_error", "message": "the model failed"}})
    assert caught.value.status == 502
    event = sse_error(caught.value)
    assert event.startswith(b"data: {") and event.endswith(b"\n\n")
    assert json.loads(event[6:])["error"]["type"] == "server_error"


def test_a_collector_stops_a_node_that_never_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tp_gateway.openai_responses.COLLECTED_CHARS_MAX", 10)
    collector = ChatCompletionCollector(*IDS)
    collector.feed({"text": "0123456789"})
    with pytest.raises(ApiError, match="larger than the gateway collects"):
        collector.feed({"text": "!"})


EMBEDDINGS = [
    {"embedding": [0.5, -1.0], "index": 1},
    {"embedding": [0.25, 2.0], "index": 0},
    final(prompt=4, completion=0),
]


def test_embeddings_are_sorted_by_index_with_usage() -> None:
    response = embeddings_response("emb", EMBEDDINGS, input_count=2)
    CreateEmbeddingResponse.model_validate(response)
    assert [item["embedding"] for item in response["data"]] == [[0.25, 2.0], [0.5, -1.0]]
    assert [item["index"] for item in response["data"]] == [0, 1]
    assert response["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert response["model"] == "emb"


def test_embeddings_in_base64_are_little_endian_float32() -> None:
    response = embeddings_response("emb", EMBEDDINGS, encoding_format="base64")
    raw = base64.b64decode(response["data"][1]["embedding"])
    assert struct.unpack("<2f", raw) == (0.5, -1.0)


@pytest.mark.parametrize(
    "chunks",
    [
        EMBEDDINGS[:2],  # no final chunk
        [EMBEDDINGS[0], final()],  # index 0 missing
        [EMBEDDINGS[1], EMBEDDINGS[1], final()],
        [EMBEDDINGS[1], {"embedding": [1.0], "index": 1}, final()],
        [{"embedding": [float("nan")], "index": 0}, final()],
        [{"embedding": [1e39], "index": 0}, final()],
        [{"embedding": [], "index": 0}, final()],
        [{"embedding": [True], "index": 0}, final()],
        [{"text": "x"}, final()],
        [{"embedding": [1.0], "index": 0}, final("tool_calls")],
    ],
)
def test_bad_embeddings_are_an_upstream_error(chunks: list[dict[str, Any]]) -> None:
    with pytest.raises(ApiError) as caught:
        embeddings_response("emb", chunks)
    assert caught.value.status == 502


def test_embeddings_must_match_the_input_count() -> None:
    with pytest.raises(ApiError, match="missing"):
        embeddings_response("emb", EMBEDDINGS, input_count=3)


def test_models_are_owned_by_token_place() -> None:
    Model.model_validate(model_object("tiny", 1_700_000_000))
    listed = model_list({"b": 2, "a": 1})
    assert listed["object"] == "list"
    assert [(model["id"], model["created"], model["owned_by"]) for model in listed["data"]] == [
        ("a", 1, "token.place"),
        ("b", 2, "token.place"),
    ]
    for model in listed["data"]:
        Model.model_validate(model)


def test_sse_framing() -> None:
    assert sse_event({"a": "é"}) == b'data: {"a":"\\u00e9"}\n\n'
    assert SSE_DONE == b"data: [DONE]\n\n"
    with pytest.raises(ValueError, match="JSON compliant"):
        sse_event({"x": float("nan")})


# Errors.


def test_an_api_error_is_openais_error_object() -> None:
    error = ApiError(400, "Bad.", param="model", code="invalid_value")
    assert error.to_json() == {
        "error": {
            "message": "Bad.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "invalid_value",
        }
    }
    assert str(error) == "Bad."


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (invalid_json(), 400, "invalid_request_error"),
        (invalid_api_key(), 401, "authentication_error"),
        (model_not_found("x"), 404, "invalid_request_error"),
        (unknown_route("GET", "/v1/nothing"), 404, "invalid_request_error"),
        (body_too_large(1024), 413, "invalid_request_error"),
        (ApiError(429, "slow down"), 429, "rate_limit_error"),
        (ApiError(500, "bug"), 500, "server_error"),
        (upstream_failure("the circuit died."), 502, "server_error"),
        (no_capacity(), 503, "server_error"),
    ],
)
def test_error_types_follow_the_status(error: ApiError, status: int, kind: str) -> None:
    assert (error.status, error.type) == (status, kind)


@pytest.mark.parametrize(
    ("code", "status", "param", "api_code", "retry_elsewhere"),
    [
        ("invalid_max_tokens", 400, "max_tokens", "invalid_max_tokens", False),
        ("invalid_tool_choice", 400, "tool_choice", "invalid_tool_choice", False),
        ("invalid_messages", 400, "messages", "invalid_messages", False),
        ("invalid_kind", 400, None, "invalid_kind", False),
        ("invalid_request", 400, None, "invalid_request", False),
        ("bad_request", 400, None, "bad_request", False),
        ("context_length_exceeded", 400, None, "context_length_exceeded", False),
        ("unknown_model", 404, "model", "model_not_found", True),
        ("model_not_found", 404, "model", "model_not_found", True),
        ("overloaded", 429, None, "overloaded", True),
        ("content_policy_violation", 400, None, "content_policy_violation", False),
        ("internal_error", 502, None, "upstream_error", True),
        ("moderation_failed", 502, None, "upstream_error", True),
        ("unknown_field", 502, None, "upstream_error", True),
        ("something new", 502, None, "upstream_error", True),
    ],
)
def test_node_errors_map_to_api_errors(
    code: str, status: int, param: str | None, api_code: str, retry_elsewhere: bool
) -> None:
    error = node_error_to_api(code, "why")
    assert (error.status, error.param, error.code, error.retry_elsewhere) == (
        status,
        param,
        api_code,
        retry_elsewhere,
    )
    assert "why" in error.message


def test_a_nodes_error_text_is_cut_short_and_printable() -> None:
    error = node_error_to_api("internal_error\n\x1b[31m", "x" * 1000 + "\x00")
    assert len(error.message) < 300
    assert all(char.isprintable() for char in error.message)
    assert node_error_to_api("overloaded", "").message.endswith("no reason given.")


@pytest.mark.parametrize("error", [None, "boom", {"code": 5, "message": ["x"]}, {}])
def test_a_malformed_error_document_is_still_an_upstream_error(error: object) -> None:
    with pytest.raises(ApiError) as caught:
        ChatCompletionStream(*IDS).feed({"error": error})
    assert caught.value.status == 502


def test_model_not_found_shows_a_bounded_printable_id() -> None:
    error = model_not_found("m\n" + "x" * 500)
    assert "\n" not in error.message and len(error.message) < 300
    assert error.param == "model" and error.code == "model_not_found"
