"""The translation layer end to end through the official OpenAI SDK, over an in-memory HTTP transport.

`FakeGateway` is the HTTP side in miniature (no circuits: a scripted node answers): it shows how the
pieces fit, and the SDK's own parsing is the judge of what comes out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
import pytest

from tp_gateway.openai_api import (
    SSE_DONE,
    ApiCall,
    ApiError,
    ChatCompletionCollector,
    ChatCompletionStream,
    CompletionCollector,
    CompletionStream,
    embeddings_response,
    invalid_json,
    json_bytes,
    model_list,
    model_not_found,
    model_object,
    parse_chat,
    parse_completion,
    parse_embedding,
    sse_error,
    sse_event,
)

MODELS = {"tiny-llama": 1_700_000_000, "tiny-embed": 1_700_000_001}
Node = Callable[[dict[str, Any]], list[dict[str, Any]]]
Stream = ChatCompletionStream | CompletionStream
Collector = ChatCompletionCollector | CompletionCollector


def final(reason: str = "stop") -> dict[str, Any]:
    return {"finish_reason": reason, "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}


class FakeGateway:
    """Routes like the gateway, with `node` standing in for the overlay; records the documents sent."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.documents: list[dict[str, Any]] = []
        self.bodies: list[Any] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        try:
            return self._route(request)
        except ApiError as error:  # everything before the first byte of a response
            return httpx2.Response(error.status, content=json_bytes(error.to_json()))

    def _route(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path.removeprefix("/v1")
        if request.method == "GET" and path == "/models":
            return self._json(model_list(MODELS))
        if request.method == "GET" and path.startswith("/models/"):
            model_id = path.removeprefix("/models/")
            if model_id not in MODELS:
                raise model_not_found(model_id)
            return self._json(model_object(model_id, MODELS[model_id]))
        try:
            body = json.loads(request.content)
        except ValueError:
            raise invalid_json() from None
        self.bodies.append(body)
        if path == "/embeddings":
            call = parse_embedding(body)
            encoding, count = call.encoding_format, call.input_count
            return self._json(
                embeddings_response(call.model, self._ask(call), encoding_format=encoding, input_count=count)
            )
        if path == "/chat/completions":
            return self._generate(parse_chat(body), ChatCompletionStream, ChatCompletionCollector)
        return self._generate(parse_completion(body), CompletionStream, CompletionCollector)

    def _ask(self, call: ApiCall) -> list[dict[str, Any]]:
        if call.model not in MODELS:
            raise model_not_found(call.model)
        self.documents.append(call.document())
        return self.node(call.document())

    def _generate(
        self, call: ApiCall, stream_type: Callable[..., Stream], collector_type: Callable[..., Collector]
    ) -> httpx2.Response:
        chunks = self._ask(call)
        ids = (call.model, "cmpl-test", 1_700_000_002)
        if not call.stream:
            collector = collector_type(*ids)
            for chunk in chunks:
                collector.feed(chunk)
            return self._json(collector.result())
        stream = stream_type(*ids, include_usage=call.include_usage)
        events = list(self._events(stream, chunks))  # raises an ApiError met before the first event
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=b"".join(events))

    @staticmethod
    def _events(stream: Stream, chunks: list[dict[str, Any]]) -> Iterator[bytes]:
        try:
            for chunk in chunks:
                yield from map(sse_event, stream.feed(chunk))
        except ApiError as error:
            if not stream.started:
                raise
            yield sse_error(error)  # after the first event: end the stream with the error, no [DONE]
            return
        yield SSE_DONE

    @staticmethod
    def _json(obj: dict[str, Any]) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=json_bytes(obj))


def client_for(node: Node) -> tuple[openai.OpenAI, FakeGateway]:
    gateway = FakeGateway(node)
    http = httpx2.Client(transport=httpx2.MockTransport(gateway))
    return openai.OpenAI(
        api_key="unused", base_url="http://gateway/v1", http_client=http, max_retries=0
    ), gateway


def answering(*chunks: dict[str, Any]) -> Node:
    return lambda document: list(chunks)


HELLO = answering({"text": "Hel"}, {"text": "lo"}, final())
MESSAGES: Any = [{"role": "user", "content": "hi"}]


def test_models_are_listed_and_retrieved() -> None:
    client, _ = client_for(HELLO)
    assert [(m.id, m.owned_by) for m in client.models.list()] == [
        ("tiny-embed", "token.place"),
        ("tiny-llama", "token.place"),
    ]
    assert client.models.retrieve("tiny-llama").created == 1_700_000_000
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("nope")
    assert caught.value.code == "model_not_found"


def test_a_chat_completion() -> None:
    client, gateway = client_for(HELLO)
    completion = client.chat.completions.create(
        model="tiny-llama", messages=MESSAGES, temperature=0.2, user="me"
    )
    assert completion.choices[0].message.content == "Hello"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 6
    assert gateway.documents == [
        {"kind": "chat", "model": "tiny-llama", "messages": MESSAGES, "temperature": 0.2}
    ]


def test_a_streamed_chat_completion_with_usage() -> None:
    client, _ = client_for(HELLO)
    chunks = list(
        client.chat.completions.create(
            model="tiny-llama", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert (
        chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    )


TOOL_NODE = answering(
    {
        "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a"'}}
        ]
    },
    {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
    final("tool_calls"),
)
TOOLS: Any = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def test_tool_calls_pass_through() -> None:
    client, gateway = client_for(TOOL_NODE)
    completion = client.chat.completions.create(
        model="tiny-llama", messages=MESSAGES, tools=TOOLS, tool_choice="auto"
    )
    (call,) = completion.choices[0].message.tool_calls or []
    assert call.type == "function"
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "f", '{"a": 1}')
    assert completion.choices[0].finish_reason == "tool_calls"
    assert gateway.documents[0]["tools"] == TOOLS and gateway.documents[0]["tool_choice"] == "auto"


def test_streamed_tool_calls_pass_through() -> None:
    client, _ = client_for(TOOL_NODE)
    stream = client.chat.completions.create(model="tiny-llama", messages=MESSAGES, tools=TOOLS, stream=True)
    deltas = [call for chunk in stream for call in chunk.choices[0].delta.tool_calls or []]
    assert deltas[0].id == "call_1" and deltas[0].function is not None and deltas[0].function.name == "f"
    assert "".join(d.function.arguments or "" for d in deltas if d.function) == '{"a": 1}'


def test_an_error_after_the_first_token_ends_the_stream_with_an_api_error() -> None:
    client, _ = client_for(
        answering({"text": "Hel"}, {"error": {"code": "internal_error", "message": "boom"}})
    )
    stream = client.chat.completions.create(model="tiny-llama", messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIError, match="boom") as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["Hel"]
    assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "server_error"


@pytest.mark.parametrize(
    ("node_error", "exception", "status"),
    [
        ({"code": "invalid_max_tokens", "message": "too many"}, openai.BadRequestError, 400),
        ({"code": "model_not_found", "message": "not here"}, openai.NotFoundError, 404),
        ({"code": "overloaded", "message": "busy"}, openai.RateLimitError, 429),
        ({"code": "content_policy_violation", "message": "no"}, openai.BadRequestError, 400),
        ({"code": "internal_error", "message": "boom"}, openai.APIStatusError, 502),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_node_error_before_the_first_token_is_an_http_error(
    node_error: dict[str, str], exception: type[openai.APIStatusError], status: int, stream: bool
) -> None:
    client, _ = client_for(answering({"error": node_error}))
    with pytest.raises(exception) as caught:
        list(client.chat.completions.create(model="tiny-llama", messages=MESSAGES, stream=stream))
    assert caught.value.status_code == status


def test_validation_errors_reach_the_sdk_with_their_param() -> None:
    client, gateway = client_for(HELLO)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny-llama", messages=MESSAGES, n=9)
    assert (caught.value.param, caught.value.code) == ("n", "integer_above_max_value")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="unknown", messages=MESSAGES)
    assert gateway.documents == []


def test_completions_stream_and_not() -> None:
    client, gateway = client_for(HELLO)
    assert client.completions.create(model="tiny-llama", prompt="Say").choices[0].text == "Hello"
    texts = [
        c.choices[0].text for c in client.completions.create(model="tiny-llama", prompt="Say", stream=True)
    ]
    assert texts == ["Hel", "lo", ""]
    assert gateway.documents[0] == {
        "kind": "completion",
        "model": "tiny-llama",
        "prompt": "Say",
        "max_tokens": 16,
    }


EMBEDDINGS = answering(
    {"embedding": [0.5, -0.25], "index": 1}, {"embedding": [1.0, 2.0], "index": 0}, final()
)


@pytest.mark.parametrize("encoding_format", [openai.omit, "float"])
def test_embeddings_in_the_sdks_default_base64_and_as_floats(encoding_format: Any) -> None:
    client, gateway = client_for(EMBEDDINGS)
    response = client.embeddings.create(model="tiny-embed", input=["a", "b"], encoding_format=encoding_format)
    assert [item.embedding for item in response.data] == [[1.0, 2.0], [0.5, -0.25]]
    assert response.usage.prompt_tokens == 4
    assert gateway.bodies[0]["encoding_format"] == ("float" if encoding_format == "float" else "base64")
    assert gateway.documents == [{"kind": "embedding", "model": "tiny-embed", "input": ["a", "b"]}]


def test_a_body_that_is_not_json() -> None:
    gateway = FakeGateway(HELLO)
    response = gateway(httpx2.Request("POST", "http://gateway/v1/chat/completions", content=b"{nope"))
    assert response.status_code == 400
    assert json.loads(response.content)["error"]["type"] == "invalid_request_error"
