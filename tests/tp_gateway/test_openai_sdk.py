"""The gateway's HTTP API end to end through the official OpenAI SDK: the real app (tp_gateway.app) behind
the in-process client's transport (tp_gateway.client, the app on its own trio thread), with a scripted
overlay below it in place of circuits and a node. The SDK's own parsing is the judge of what comes out.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from typing import Any, cast

import httpx
import openai
import pytest
import trio

from tests.tp_gateway.overlay_fakes import FakeStats
from tp_gateway.app import create_app
from tp_gateway.client import BASE_URL, IN_PROCESS_SITE, OverlayTransport
from tp_gateway.client_thread import OverlayThread, Service
from tp_gateway.inference_overlay import WithoutSealing
from tp_gateway.isolation import Isolation
from tp_gateway.overlay import OverlayError

MODELS = {"tiny-llama": 1_700_000_000, "tiny-embed": 1_700_000_001}
WAIT_S = 10.0
Script = list[dict[str, Any] | OverlayError]
Node = Callable[[dict[str, Any]], Script]


def final(reason: str = "stop") -> dict[str, Any]:
    return {"finish_reason": reason, "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}


class ScriptedOverlay(WithoutSealing):
    """Stands in for tp_gateway.overlay.Overlay under the real app: `node` scripts each answer's chunk
    documents, and an OverlayError in the script is raised where it stands (the overlay raises a node's
    error document, or a broken circuit, that way). Records the documents the app sent."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.ready = trio.Event()
        self.ready.set()
        self.pooled_circuits = 0
        self.stats = FakeStats()
        self.documents: list[Mapping[str, Any]] = []

    def model_ids(self) -> list[str]:
        return list(MODELS)

    def model_created(self, model_id: str) -> int:
        return MODELS[model_id]

    def model_identity(self, model_id: str) -> None:
        return None  # a scripted network: no directory, no GGUF identity

    async def generate(
        self, model_id: str, document: Mapping[str, Any], *, isolation: Isolation = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        if model_id not in MODELS:
            raise OverlayError("model_not_found", f"no node in the directory serves model {model_id!r}")
        self.documents.append(document)
        for item in self.node(dict(document)):
            if isinstance(item, OverlayError):
                raise item
            yield item


class Gateway:
    """The real app on the in-process client's thread, and what went in: request bodies, documents."""

    def __init__(self, node: Node) -> None:
        self.overlay = ScriptedOverlay(node)
        self.bodies: list[bytes] = []  # as the SDK sent them

        async def open_service(nursery: trio.Nursery) -> Service:
            app = create_app(self.overlay, site=IN_PROCESS_SITE)
            return Service(app, self.overlay.ready, "not ready (scripted)")

        thread = OverlayThread(open_service, ready_timeout_s=WAIT_S)
        thread.start()
        self.http = httpx.Client(
            transport=OverlayTransport(thread),
            base_url=BASE_URL,
            event_hooks={"request": [self._record]},
            timeout=WAIT_S,
        )

    def _record(self, request: httpx.Request) -> None:
        self.bodies.append(request.content)

    @property
    def documents(self) -> list[Mapping[str, Any]]:
        return self.overlay.documents


ClientFor = Callable[[Node], tuple[openai.OpenAI, Gateway]]


@pytest.fixture
def client_for() -> Iterator[ClientFor]:
    gateways: list[Gateway] = []

    def make(node: Node) -> tuple[openai.OpenAI, Gateway]:
        gateway = Gateway(node)
        gateways.append(gateway)
        # tp_gateway.client's transports are httpx's; openai 3 types http_client as httpx2's (either works).
        http = cast(Any, gateway.http)
        client = openai.OpenAI(api_key="unused", base_url=BASE_URL, http_client=http, max_retries=0)
        return client, gateway

    yield make
    for gateway in gateways:
        gateway.http.close()  # stops the app's thread


def answering(*chunks: dict[str, Any] | OverlayError) -> Node:
    return lambda document: list(chunks)


HELLO = answering({"text": "Hel"}, {"text": "lo"}, final())
MESSAGES: Any = [{"role": "user", "content": "hi"}]


def test_models_are_listed_and_retrieved(client_for: ClientFor) -> None:
    client, _ = client_for(HELLO)
    assert [(m.id, m.owned_by) for m in client.models.list()] == [
        ("tiny-embed", "token.place"),
        ("tiny-llama", "token.place"),
    ]
    assert client.models.retrieve("tiny-llama").created == 1_700_000_000
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("nope")
    assert caught.value.code == "model_not_found"


def test_a_chat_completion(client_for: ClientFor) -> None:
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


def test_a_streamed_chat_completion_with_usage(client_for: ClientFor) -> None:
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


def test_tool_calls_pass_through(client_for: ClientFor) -> None:
    client, gateway = client_for(TOOL_NODE)
    completion = client.chat.completions.create(
        model="tiny-llama", messages=MESSAGES, tools=TOOLS, tool_choice="auto"
    )
    (call,) = completion.choices[0].message.tool_calls or []
    assert call.type == "function"
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "f", '{"a": 1}')
    assert completion.choices[0].finish_reason == "tool_calls"
    assert gateway.documents[0]["tools"] == TOOLS and gateway.documents[0]["tool_choice"] == "auto"


def test_streamed_tool_calls_pass_through(client_for: ClientFor) -> None:
    client, _ = client_for(TOOL_NODE)
    stream = client.chat.completions.create(model="tiny-llama", messages=MESSAGES, tools=TOOLS, stream=True)
    deltas = [call for chunk in stream for call in chunk.choices[0].delta.tool_calls or []]
    assert deltas[0].id == "call_1" and deltas[0].function is not None and deltas[0].function.name == "f"
    assert "".join(d.function.arguments or "" for d in deltas if d.function) == '{"a": 1}'


def test_an_error_after_the_first_token_ends_the_stream_with_an_api_error(client_for: ClientFor) -> None:
    # The overlay raises a node's error document as an OverlayError with the node's code and message.
    client, _ = client_for(answering({"text": "Hel"}, OverlayError("internal_error", "boom")))
    stream = client.chat.completions.create(model="tiny-llama", messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIError, match="boom") as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["Hel"]
    assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "server_error"


@pytest.mark.parametrize(
    ("code", "exception", "status"),
    [
        ("invalid_max_tokens", openai.BadRequestError, 400),
        ("model_not_found", openai.NotFoundError, 404),
        ("overloaded", openai.RateLimitError, 429),
        ("content_policy_violation", openai.BadRequestError, 400),
        ("internal_error", openai.APIStatusError, 502),
        ("unavailable", openai.APIStatusError, 503),  # no node could be reached
        ("upstream", openai.APIStatusError, 502),  # the node ended the answer without a word
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_an_overlay_error_before_the_first_token_is_an_http_error(
    client_for: ClientFor, code: str, exception: type[openai.APIStatusError], status: int, stream: bool
) -> None:
    client, _ = client_for(answering(OverlayError(code, "scripted failure")))
    with pytest.raises(exception) as caught:
        list(client.chat.completions.create(model="tiny-llama", messages=MESSAGES, stream=stream))
    assert caught.value.status_code == status


def test_validation_errors_reach_the_sdk_with_their_param(client_for: ClientFor) -> None:
    client, gateway = client_for(HELLO)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny-llama", messages=MESSAGES, n=9)
    assert (caught.value.param, caught.value.code) == ("n", "integer_above_max_value")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="unknown", messages=MESSAGES)
    assert gateway.documents == []


def test_completions_stream_and_not(client_for: ClientFor) -> None:
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
def test_embeddings_in_the_sdks_default_base64_and_as_floats(
    client_for: ClientFor, encoding_format: Any
) -> None:
    client, gateway = client_for(EMBEDDINGS)
    response = client.embeddings.create(model="tiny-embed", input=["a", "b"], encoding_format=encoding_format)
    assert [item.embedding for item in response.data] == [[1.0, 2.0], [0.5, -0.25]]
    assert response.usage.prompt_tokens == 4
    assert json.loads(gateway.bodies[0])["encoding_format"] == (
        "float" if encoding_format == "float" else "base64"
    )
    assert gateway.documents == [{"kind": "embedding", "model": "tiny-embed", "input": ["a", "b"]}]


def test_an_overlay_error_on_embeddings_is_an_http_error(client_for: ClientFor) -> None:
    client, _ = client_for(answering(OverlayError("overloaded", "busy")))
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model="tiny-embed", input="a")
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="no-such-model", input="a")
    assert caught.value.code == "model_not_found"


def test_a_body_that_is_not_json(client_for: ClientFor) -> None:
    _, gateway = client_for(HELLO)
    headers = {"content-type": "application/json"}
    response = gateway.http.post("/chat/completions", content=b"{nope", headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert gateway.documents == []


def test_an_error_document_mid_stream_is_an_api_error_too(client_for: ClientFor) -> None:
    # Should a node's error document reach the app as a chunk, the stream still ends with the error.
    node_error = {"error": {"code": "internal_error", "message": "boom"}}
    client, _ = client_for(answering({"text": "Hel"}, node_error))
    stream = client.chat.completions.create(model="tiny-llama", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError, match="boom"):
        list(stream)
