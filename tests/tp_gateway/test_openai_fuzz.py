"""Garbage into the parsers and the response builders yields only ApiError; what is accepted is sound."""

from __future__ import annotations

import base64
import copy
import os
import struct
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tp_gateway.openai_api import (
    ApiCall,
    ApiError,
    ChatCompletionCollector,
    ChatCompletionStream,
    embeddings_response,
    parse_chat,
    parse_completion,
    parse_embedding,
)

EXAMPLES = int(os.environ.get("TP_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(
        ["user", "assistant", "tool", "text", "function", "auto", "none", "required", "json_schema"]
    )
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=10,
)
# Cheaper than json_values, for the many fields of the near-valid bodies.
wrong_values = (
    scalars | st.lists(scalars, max_size=2) | st.dictionaries(st.text(max_size=4), scalars, max_size=2)
)


texts = st.text(max_size=12)
names = st.text(alphabet="abcxyz_-", min_size=1, max_size=8)
parts = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": texts}), min_size=1, max_size=3)
contents = texts | parts
tool_calls = st.lists(
    st.fixed_dictionaries(
        {
            "id": names,
            "type": st.just("function"),
            "function": st.fixed_dictionaries({"name": names, "arguments": texts}),
        }
    ),
    min_size=1,
    max_size=2,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "developer", "user"]), "content": contents},
        optional={"name": names},
    )
    | st.fixed_dictionaries({"role": st.just("assistant"), "content": contents})
    | st.fixed_dictionaries({"role": st.just("assistant"), "content": st.none(), "tool_calls": tool_calls})
    | st.fixed_dictionaries({"role": st.just("tool"), "content": contents, "tool_call_id": names}),
    min_size=1,
    max_size=4,
)
tools = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {"name": names},
                optional={
                    "parameters": st.dictionaries(names, json_values, max_size=3),
                    "description": texts,
                },
            ),
        }
    ),
    min_size=1,
    max_size=2,
)
formats = st.sampled_from([{"type": "text"}, {"type": "json_object"}]) | st.fixed_dictionaries(
    {
        "type": st.just("json_schema"),
        "json_schema": st.fixed_dictionaries(
            {"name": names, "schema": st.dictionaries(names, json_values, max_size=3)}
        ),
    }
)
generation = {
    "max_tokens": st.integers(1, 100_000),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "presence_penalty": st.integers(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "seed": st.integers(-(2**63), 2**63),
    "stop": st.text(min_size=1, max_size=4) | st.lists(st.text(min_size=1, max_size=4), max_size=4),
    "n": st.just(1),
    "stream": st.booleans(),
    "user": texts,
}
chat_bodies = st.fixed_dictionaries(
    {"model": names, "messages": messages},
    optional={
        **generation,
        "logprobs": st.just(False),
        "max_completion_tokens": st.integers(1, 100_000),
        "tools": tools,
        "tool_choice": st.sampled_from(["none", "auto", "required"]),
        "response_format": formats,
    },
)
streamed = st.fixed_dictionaries(
    {
        "stream": st.just(True),
        "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
    }
)


def with_streaming(bodies: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return bodies | st.builds(lambda body, stream: {**body, **stream}, bodies, streamed)


chat_bodies = with_streaming(chat_bodies)
completion_bodies = st.fixed_dictionaries(
    {"model": names, "prompt": texts | st.lists(texts, min_size=1, max_size=1)}, optional=generation
)
completion_bodies = with_streaming(completion_bodies)
embedding_bodies = st.fixed_dictionaries(
    {"model": names, "input": st.text(min_size=1) | st.lists(st.text(min_size=1), min_size=1, max_size=3)},
    optional={"encoding_format": st.sampled_from(["float", "base64"])},
)


def _corrupt(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """`value` with one spot in it replaced by a wrong value or one map entry removed; at depth 0 the spot
    is inside `value` (a body stays a map, a response a list of documents)."""
    keys = (
        list(value) if isinstance(value, dict) else list(range(len(value))) if isinstance(value, list) else []
    )
    if not keys or (depth > 0 and draw(st.integers(0, 3)) == 0):
        return draw(wrong_values)
    # Hypothesis favours index 0; keep "model" (one trivial check that runs first) out of that spot.
    keys.sort(key=lambda k: k == "model")
    key = keys[draw(st.integers(0, len(keys) - 1))]
    if isinstance(value, dict) and draw(st.integers(0, 5)) == 0:
        del value[key]
    else:
        value[key] = _corrupt(draw, value[key], depth + 1)
    return value


@st.composite
def with_corruption(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> tuple[Any, Any]:
    """A plausible value and a copy of it corrupted in one spot."""
    value = draw(values)
    return value, _corrupt(draw, copy.deepcopy(value))


try:
    from tp_node.inference import parse_request

    NODE_CHECKS = True
except ImportError:  # the node's inference module is not in every checkout yet
    NODE_CHECKS = False


def parse_or_refuse(parser: Callable[[object], ApiCall], body: object) -> ApiCall | None:
    try:
        return parser(body)
    except ApiError as error:
        assert error.status == 400 and error.type == "invalid_request_error"
        assert error.param is None or isinstance(error.param, str)
        return None


def check_accepted(call: ApiCall | None) -> None:
    """An accepted call's document travels as msgpack and the node's own checks accept it."""
    if call is None:
        return
    document = call.document()
    assert msgpack.unpackb(msgpack.packb(document)) == document
    if not NODE_CHECKS:
        return
    parse_request(document)  # the node accepts whatever the gateway accepted


@FUZZ
@given(json_values)
def test_any_json_into_any_parser_only_raises_api_errors(body: object) -> None:
    for parser in (parse_chat, parse_completion, parse_embedding):
        check_accepted(parse_or_refuse(parser, body))


@FUZZ
@given(with_corruption(chat_bodies))
def test_plausible_and_corrupted_chat_bodies(bodies: tuple[dict[str, Any], Any]) -> None:
    for body in bodies:
        check_accepted(parse_or_refuse(parse_chat, body))


@FUZZ
@given(with_corruption(completion_bodies), with_corruption(embedding_bodies))
def test_plausible_and_corrupted_completion_and_embedding_bodies(
    completions: tuple[dict[str, Any], Any], embeddings: tuple[dict[str, Any], Any]
) -> None:
    for body in completions:
        check_accepted(parse_or_refuse(parse_completion, body))
    for body in embeddings:
        check_accepted(parse_or_refuse(parse_embedding, body))


def finals(*reasons: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda reason, prompt, completion: {
            "finish_reason": reason,
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        },
        st.sampled_from(reasons),
        st.integers(0, 2**20),
        st.integers(0, 2**20),
    )


@st.composite
def chat_responses(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A well-behaved node's answer: text pieces, tool calls (a start, then arguments), a final chunk."""
    chunks: list[dict[str, Any]] = [
        {"text": text} for text in draw(st.lists(st.text(min_size=1), max_size=3))
    ]
    for index in range(draw(st.integers(0, 2))):
        function = {"name": draw(names), "arguments": draw(texts)}
        chunks.append(
            {
                "tool_calls": [
                    {"index": index, "id": f"call_{index}", "type": "function", "function": function}
                ]
            }
        )
        chunks += [
            {"tool_calls": [{"index": index, "function": {"arguments": a}}]}
            for a in draw(st.lists(texts, max_size=2))
        ]
    return [*chunks, draw(finals("stop", "length", "tool_calls"))]


@st.composite
def embedding_responses(draw: st.DrawFn) -> list[dict[str, Any]]:
    size = draw(st.integers(1, 4))
    vector = st.lists(st.floats(-(2.0**100), 2.0**100, width=32), min_size=size, max_size=size)
    vectors = draw(st.lists(vector, min_size=1, max_size=3))
    order = draw(st.permutations(range(len(vectors))))
    return [*({"embedding": vectors[i], "index": i} for i in order), draw(finals("stop"))]


def consume_chat(documents: list[Any], include_usage: bool) -> dict[str, Any]:
    stream = ChatCompletionStream("m", "chatcmpl-1", 1, include_usage)
    collector = ChatCompletionCollector("m", "chatcmpl-1", 1)
    for document in documents:
        for obj in stream.feed(document):
            ChatCompletionChunk.model_validate(obj)
        collector.feed(document)
    result = collector.result()
    ChatCompletion.model_validate(result)
    return result


def consume_embeddings(documents: list[Any], encoding_format: str) -> dict[str, Any]:
    """The response with its vectors decoded as the SDK decodes base64 ones, checked against the SDK."""
    response = embeddings_response("m", documents, encoding_format=encoding_format)
    for item in response["data"]:
        if encoding_format == "base64":
            raw = base64.b64decode(item["embedding"])
            item["embedding"] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    CreateEmbeddingResponse.model_validate(response)
    assert [item["index"] for item in response["data"]] == list(range(len(response["data"])))
    return response


def consumed_or_refused(
    consume: Callable[[list[Any], Any], dict[str, Any]], documents: Any, option: Any
) -> None:
    try:
        consume(documents, option)
    except ApiError as error:
        assert error.status in (400, 404, 429, 502)


@FUZZ
@given(with_corruption(chat_responses()), st.booleans())
def test_chat_responses_are_rebuilt_faithfully_and_garbage_is_refused(
    responses: tuple[list[dict[str, Any]], Any], include_usage: bool
) -> None:
    documents, corrupted = responses
    message = consume_chat(documents, include_usage)["choices"][0]["message"]
    assert (message["content"] or "") == "".join(chunk.get("text", "") for chunk in documents)
    arguments = [call["function"]["arguments"] for call in message.get("tool_calls", [])]
    assert "".join(arguments) == "".join(
        call["function"]["arguments"] for chunk in documents for call in chunk.get("tool_calls", [])
    )
    consumed_or_refused(consume_chat, corrupted, include_usage)


@FUZZ
@given(with_corruption(embedding_responses()), st.sampled_from(["float", "base64"]))
def test_embeddings_are_rebuilt_faithfully_and_garbage_is_refused(
    responses: tuple[list[dict[str, Any]], Any], encoding: str
) -> None:
    documents, corrupted = responses
    response = consume_embeddings(documents, encoding)
    sent = {chunk["index"]: chunk["embedding"] for chunk in documents if "embedding" in chunk}
    # Exact even through base64: the vectors are float32 values.
    assert [item["embedding"] for item in response["data"]] == [sent[index] for index in range(len(sent))]
    consumed_or_refused(consume_embeddings, corrupted, encoding)


@pytest.mark.parametrize("parser", [parse_chat, parse_completion, parse_embedding])
def test_deep_nesting_is_refused_not_a_crash(parser: Callable[[object], ApiCall]) -> None:
    deep: Any = "x"
    for _ in range(500):
        deep = [deep]
    with pytest.raises(ApiError):
        parser({"model": "m", "messages": deep, "prompt": deep, "input": deep})
