"""The official OpenAI SDK in sealed mode (tp_gateway.sealed_transport) against the conformance cases of
tests/tp_gateway/test_openai_sdk.py (chat, completions, embeddings; sync and async): the same node answers,
sealed by a fake node behind the real gateway app, give the SDK the same objects and the same exceptions as
through the local gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, cast

import httpx
import openai
import pytest

from tests.tp_gateway.sealed_fakes import MODEL, SealingOverlay
from tests.tp_gateway.test_sealed_gateway import WAIT_S, Gateway
from tp_gateway.client import BASE_URL, AsyncOverlayTransport
from tp_gateway.sealed_transport import async_sealed_http_client, sealed_http_client

MESSAGES: Any = [{"role": "user", "content": "hi"}]
Script = list[dict[str, Any]]
ClientFor = Callable[[Script], tuple[openai.OpenAI, Gateway]]


def final(reason: str = "stop") -> dict[str, Any]:
    return {"finish_reason": reason, "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}


HELLO: Script = [{"text": "Hel"}, {"text": "lo"}, final()]
TOOL_NODE: Script = [
    {
        "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a"'}}
        ]
    },
    {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
    final("tool_calls"),
]
TOOLS: Any = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.fixture
def client_for() -> Iterator[ClientFor]:
    made: list[tuple[Gateway, Any]] = []

    def make(script: Script) -> tuple[openai.OpenAI, Gateway]:
        gateway = Gateway(SealingOverlay(script=script))
        http = sealed_http_client(BASE_URL, bootstrap=gateway.overlay.bootstrap, upstream=gateway.http)
        made.append((gateway, http))
        client = openai.OpenAI(
            api_key="unused", base_url=BASE_URL, http_client=cast(Any, http), max_retries=0
        )
        return client, gateway

    yield make
    for gateway, http in made:
        http.close()
        gateway.http.close()


def test_a_chat_completion(client_for: ClientFor) -> None:
    client, gateway = client_for(HELLO)
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0.2, user="me")
    assert completion.choices[0].message.content == "Hello"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 6
    assert gateway.overlay.documents == [
        {"kind": "chat", "model": MODEL, "messages": MESSAGES, "temperature": 0.2}
    ]


def test_a_streamed_chat_completion_with_usage(client_for: ClientFor) -> None:
    client, _ = client_for(HELLO)
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert (
        chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    )


def test_tool_calls_pass_through(client_for: ClientFor) -> None:
    client, gateway = client_for(TOOL_NODE)
    completion = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="auto"
    )
    (call,) = completion.choices[0].message.tool_calls or []
    assert call.type == "function"
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "f", '{"a": 1}')
    assert completion.choices[0].finish_reason == "tool_calls"
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS, stream=True)
    deltas = [call for chunk in stream for call in chunk.choices[0].delta.tool_calls or []]
    assert "".join(d.function.arguments or "" for d in deltas if d.function) == '{"a": 1}'
    assert gateway.overlay.documents[0]["tools"] == TOOLS


def test_an_error_after_the_first_token_ends_the_stream_with_an_api_error(client_for: ClientFor) -> None:
    client, _ = client_for([{"text": "Hel"}, {"error": {"code": "internal_error", "message": "boom"}}])
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIError, match="boom"):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["Hel"]


@pytest.mark.parametrize(
    ("code", "exception", "status"),
    [
        ("invalid_max_tokens", openai.BadRequestError, 400),
        ("model_not_found", openai.NotFoundError, 404),
        ("overloaded", openai.RateLimitError, 429),
        ("content_policy_violation", openai.BadRequestError, 400),
        ("internal_error", openai.APIStatusError, 502),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_node_error_before_the_first_token_is_an_http_error(
    client_for: ClientFor, code: str, exception: type[openai.APIStatusError], status: int, stream: bool
) -> None:
    client, _ = client_for([{"error": {"code": code, "message": "scripted failure"}}])
    with pytest.raises(exception) as caught:
        list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=stream))
    assert caught.value.status_code == status


def test_validation_errors_reach_the_sdk_with_their_param_before_anything_is_sent(
    client_for: ClientFor,
) -> None:
    client, gateway = client_for(HELLO)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, n=9)
    assert (caught.value.param, caught.value.code) == ("n", "integer_above_max_value")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="unknown", messages=MESSAGES)
    assert gateway.overlay.forwarded == []


COMPLETION_NODE: Script = [{"text": "Once"}, {"text": " upon"}, final("length")]
EMBEDDING_NODE: Script = [
    {"embedding": [0.5, -0.25], "index": 1},
    {"embedding": [1.0, 2.0], "index": 0},
    final(),
]


def test_a_text_completion_and_its_stream(client_for: ClientFor) -> None:
    client, gateway = client_for(COMPLETION_NODE)
    completion = client.completions.create(model=MODEL, prompt="Tell me", max_tokens=2)
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert (completion.choices[0].text, completion.choices[0].finish_reason) == ("Once upon", "length")
    assert completion.usage is not None and completion.usage.total_tokens == 6
    chunks = list(client.completions.create(model=MODEL, prompt="Tell me", max_tokens=2, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Once upon"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert [d["kind"] for d in gateway.overlay.documents] == ["completion", "completion"]
    assert gateway.overlay.documents[0]["prompt"] == "Tell me"


@pytest.mark.parametrize("encoding_format", [openai.omit, "float"])  # the SDK asks base64 unless told
def test_embeddings_are_sealed_too(client_for: ClientFor, encoding_format: Any) -> None:
    client, gateway = client_for(EMBEDDING_NODE)
    response = client.embeddings.create(model=MODEL, input=["a", "b"], encoding_format=encoding_format)
    assert [item.embedding for item in response.data] == [[1.0, 2.0], [0.5, -0.25]]
    assert gateway.overlay.documents == [{"kind": "embedding", "model": MODEL, "input": ["a", "b"]}]
    assert not any(b'"input"' in body for body in gateway.bodies)  # only sealed bytes went to the gateway


def test_a_node_sending_more_embeddings_than_inputs_is_refused(client_for: ClientFor) -> None:
    flood: Script = [{"embedding": [1.0], "index": 0}] * 3 + [final()]
    client, _ = client_for(flood)
    with pytest.raises(openai.APIStatusError, match="more embeddings than inputs") as caught:
        client.embeddings.create(model=MODEL, input="a")
    assert caught.value.status_code == 502


def test_other_requests_pass_through_unsealed(client_for: ClientFor) -> None:
    client, gateway = client_for(HELLO)
    assert [model.id for model in client.models.list()] == [MODEL]
    assert gateway.overlay.forwarded == []


def test_a_post_that_cannot_be_sealed_is_refused_before_it_is_sent(client_for: ClientFor) -> None:
    client, gateway = client_for(HELLO)
    with pytest.raises(openai.NotFoundError) as caught:
        client.moderations.create(input="a secret that must not travel in the clear")
    assert caught.value.code == "not_sealable"
    assert not any(b"secret" in body for body in gateway.bodies)


def test_the_async_sdk_answers_completions_chat_and_embeddings_sealed() -> None:
    # Under asyncio, as tests/tp_gateway/test_client.py: the SDK leaves a stream's body unread after [DONE],
    # which trio's async-generator finalizer reports as a warning (an error here).
    gateway = Gateway(SealingOverlay(script=COMPLETION_NODE))

    async def use() -> list[Any]:
        upstream = httpx.AsyncClient(transport=AsyncOverlayTransport(gateway.thread), timeout=WAIT_S)
        http = async_sealed_http_client(BASE_URL, bootstrap=gateway.overlay.bootstrap, upstream=upstream)
        async with http:
            client = openai.AsyncOpenAI(
                api_key="unused", base_url=BASE_URL, http_client=cast(Any, http), max_retries=0
            )
            completion = await client.completions.create(model=MODEL, prompt="Tell me")
            stream = await client.completions.create(model=MODEL, prompt="Tell me", stream=True)
            async with stream:
                streamed = "".join([c.choices[0].text async for c in stream if c.choices])
            gateway.overlay.script = HELLO
            chat = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
            gateway.overlay.script = EMBEDDING_NODE
            embedded = await client.embeddings.create(model=MODEL, input=["a", "b"], encoding_format="float")
        vectors = [item.embedding for item in embedded.data]
        return [completion.choices[0].text, streamed, chat.choices[0].message.content, vectors]

    try:
        assert asyncio.run(use()) == ["Once upon", "Once upon", "Hello", [[1.0, 2.0], [0.5, -0.25]]]
        kinds = [document["kind"] for document in gateway.overlay.documents]
        assert kinds == ["completion", "completion", "chat", "embedding"]
    finally:
        gateway.http.close()
