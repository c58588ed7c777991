"""`n`, `logprobs`/`top_logprobs` and `logit_bias` through the official SDK: the gateway's real app in the
in-process client's thread, the node's FakeEngine answering (the in-memory path), so the request document
is checked at both ends; the SDK's own models parse every response. A hostile node's chunks are refused.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, TypeVar

import httpx
import openai
import pytest
import trio
from openai import OpenAI

from tests.tp_gateway.overlay_fakes import FakeStats
from tp_gateway.app import create_app
from tp_gateway.client import BASE_URL, IN_PROCESS_SITE, OverlayTransport
from tp_gateway.client_thread import OverlayThread, Service
from tp_gateway.inference_overlay import WithoutSealing
from tp_gateway.isolation import Isolation
from tp_gateway.openai_api import ApiError, ChatCompletionCollector, ChatCompletionStream, CompletionCollector
from tp_gateway.overlay import OverlayError
from tp_net.protocol.inference_contract import (
    CHOICES_MAX,
    LOGIT_BIAS_ENTRIES_MAX,
    TOP_LOGPROBS_MAX,
    EngineError,
)
from tp_node.engine import FAKE_VOCABULARY, FakeEngine

T = TypeVar("T")
MODEL = "fake"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello."}]
WAIT_S = 10.0


class EngineOverlay(WithoutSealing):
    """The overlay, with a node's FakeEngine in place of the network; records the documents sent."""

    def __init__(self) -> None:
        self.ready = trio.Event()
        self.ready.set()
        self.pooled_circuits = 1
        self.stats = FakeStats()
        self.engine = FakeEngine()
        self.documents: list[Mapping[str, Any]] = []

    def model_ids(self) -> list[str]:
        return [MODEL]

    def model_created(self, model_id: str) -> int:
        return 1_700_000_000

    def model_identity(self, model_id: str) -> None:
        return None  # a scripted network: no directory, no GGUF identity

    async def generate(
        self, model_id: str, document: Mapping[str, Any], *, isolation: Isolation = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        self.documents.append(document)
        try:
            async for chunk in self.engine.generate(document):
                yield chunk
        except EngineError as exc:  # a node answers an error document; the overlay raises it
            raise OverlayError(exc.code, str(exc)) from None


def with_sdk(overlay: EngineOverlay, use: Callable[[OpenAI], T]) -> T:
    async def open_service(nursery: trio.Nursery) -> Service:
        app = create_app(overlay, site=IN_PROCESS_SITE)
        return Service(app, overlay.ready, "no directory (in memory)")

    thread = OverlayThread(open_service, ready_timeout_s=WAIT_S)
    thread.start()
    client = httpx.Client(transport=OverlayTransport(thread), base_url=BASE_URL)
    with OpenAI(
        base_url=BASE_URL, api_key="unused", http_client=client, max_retries=0, timeout=WAIT_S
    ) as sdk:
        return use(sdk)


async def in_sdk(overlay: EngineOverlay, use: Callable[[OpenAI], T]) -> T:
    return await trio.to_thread.run_sync(with_sdk, overlay, use)


async def test_n_choices_each_a_generation_of_its_own_streamed_with_their_index() -> None:
    overlay = EngineOverlay()

    def use(sdk: OpenAI) -> tuple[Any, list[Any]]:
        whole = sdk.chat.completions.create(model=MODEL, messages=MESSAGES, n=3, max_tokens=6)
        with sdk.chat.completions.create(model=MODEL, messages=MESSAGES, n=3, max_tokens=6, stream=True) as s:
            chunks = list(s)
        return whole, chunks

    whole, chunks = await in_sdk(overlay, use)
    assert [choice.index for choice in whole.choices] == [0, 1, 2]
    texts = [choice.message.content for choice in whole.choices]
    assert len(set(texts)) == 3 and all(choice.finish_reason == "length" for choice in whole.choices)
    assert whole.usage is not None and whole.usage.completion_tokens == 18  # the prompt counted once
    streamed = ["", "", ""]
    ends = {}
    for chunk in chunks:
        (choice,) = chunk.choices
        streamed[choice.index] += choice.delta.content or ""
        if choice.finish_reason:
            ends[choice.index] = choice.finish_reason
    assert streamed == texts and ends == {0: "length", 1: "length", 2: "length"}
    assert overlay.documents[0]["n"] == 3


async def test_chat_logprobs_with_top_logprobs_in_openai_shape_streamed_and_not() -> None:
    overlay = EngineOverlay()

    def use(sdk: OpenAI) -> tuple[Any, list[Any]]:
        options: dict[str, Any] = {"logprobs": True, "top_logprobs": 5, "max_tokens": 5}
        whole = sdk.chat.completions.create(model=MODEL, messages=MESSAGES, **options)
        with sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, **options) as s:
            return whole, list(s)

    whole, chunks = await in_sdk(overlay, use)
    (choice,) = whole.choices
    content = choice.logprobs.content
    assert "".join(entry.token for entry in content) == choice.message.content
    for entry in content:
        assert len(entry.top_logprobs) == 5 and entry.top_logprobs[0].token == entry.token
        assert entry.logprob <= 0 and entry.bytes == list(entry.token.encode())
    pieces = [chunk.choices[0].logprobs for chunk in chunks if chunk.choices[0].logprobs]
    streamed = [entry for piece in pieces for entry in piece.content or []]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in content]
    assert overlay.documents[0]["logprobs"] == 5


async def test_completion_logprobs_and_n_in_openai_shape() -> None:
    overlay = EngineOverlay()

    def use(sdk: OpenAI) -> Any:
        return sdk.completions.create(model=MODEL, prompt="Once", n=2, logprobs=3, max_tokens=4)

    result = await in_sdk(overlay, use)
    assert [choice.index for choice in result.choices] == [0, 1]
    for choice in result.choices:
        logprobs = choice.logprobs
        assert "".join(logprobs.tokens) == choice.text
        assert logprobs.text_offset == [
            sum(map(len, logprobs.tokens[:i])) for i in range(len(logprobs.tokens))
        ]
        assert all(len(top) <= 3 for top in logprobs.top_logprobs)


async def test_logit_bias_reaches_the_model_and_a_token_beyond_its_vocabulary_is_refused() -> None:
    overlay = EngineOverlay()
    favoured = FAKE_VOCABULARY.index("private")

    def use(sdk: OpenAI) -> tuple[str | None, openai.BadRequestError]:
        bias = {str(favoured): 100}
        whole = sdk.chat.completions.create(model=MODEL, messages=MESSAGES, logit_bias=bias, max_tokens=4)
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.chat.completions.create(model=MODEL, messages=MESSAGES, logit_bias={"900": -100})
        return whole.choices[0].message.content, refused.value

    content, refused = await in_sdk(overlay, use)
    assert content == "private " * 4
    assert "vocabulary" in str(refused)  # the node's check: only it knows its model's vocabulary


@pytest.mark.parametrize(
    "options",
    [
        {"n": CHOICES_MAX + 1},
        {"logprobs": True, "top_logprobs": TOP_LOGPROBS_MAX + 1},
        {"top_logprobs": 2},
        {"logit_bias": {str(token): 1 for token in range(LOGIT_BIAS_ENTRIES_MAX + 1)}},
        {"logit_bias": {"1": 100.5}},
        {"logit_bias": {"-1": 1}},
    ],
)
async def test_the_gateway_refuses_beyond_the_shared_limits_before_any_node_work(
    options: dict[str, Any],
) -> None:
    overlay = EngineOverlay()

    def use(sdk: OpenAI) -> None:
        with pytest.raises(openai.BadRequestError):
            sdk.chat.completions.create(model=MODEL, messages=MESSAGES, **options)

    await in_sdk(overlay, use)
    assert overlay.documents == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", CHOICES_MAX + 1),
        ("logprobs", TOP_LOGPROBS_MAX + 1),
        ("logit_bias", {"1": 101}),
        ("logit_bias", [1]),
    ],
)
async def test_the_node_refuses_beyond_the_same_limits(field: str, value: object) -> None:
    with pytest.raises(EngineError) as refused:
        async for _ in FakeEngine().generate({"messages": MESSAGES, field: value}):
            pass
    assert refused.value.code == f"invalid_{field}"


def _final(**extra: Any) -> dict[str, Any]:
    return {"finish_reason": "stop", "usage": {"prompt_tokens": 1, "completion_tokens": 1}, **extra}


ENTRY = {"token": "a", "logprob": -0.5, "top_logprobs": [{"token": "a", "logprob": -0.5}]}
# A well-formed end of a response with n = 2: each bad chunk below is fed before it.
ENDING = [{"finish_reason": "stop", "choice": 0}, _final(choice=1)]


def test_the_ending_alone_is_well_formed() -> None:
    collector = ChatCompletionCollector(MODEL, "chatcmpl-x", 0, choices=2, top_logprobs=1)
    for chunk in [{"text": "a", "choice": 1, "logprobs": [ENTRY]}, *ENDING]:
        collector.feed(chunk)
    assert [choice["message"]["content"] for choice in collector.result()["choices"]] == ["", "a"]


@pytest.mark.parametrize(
    "chunks",
    [
        [{"text": "a", "choice": 2}],  # a choice that was not asked for (n = 2)
        [{"finish_reason": "stop", "choice": 0}, {"text": "a", "choice": 0}],  # after its end
        [_final(choice=0)],  # usage before the last choice ended
        [{"finish_reason": "stop", "choice": 1}],  # the last choice's end without the usage
        [{"text": "a", "logprobs": [{**ENTRY, "logprob": 0.5}]}],  # a probability above 1
        [{"text": "a", "logprobs": [{**ENTRY, "logprob": float("nan")}]}],
        [{"text": "a", "logprobs": [{**ENTRY, "top_logprobs": [ENTRY["top_logprobs"][0]] * 2}]}],  # > asked
        [{"text": "a", "logprobs": [{**ENTRY, "token": "x" * 257}]}],
    ],
)
def test_a_node_breaking_the_choice_or_logprob_rules_is_a_502(chunks: list[dict[str, Any]]) -> None:
    collector = ChatCompletionCollector(MODEL, "chatcmpl-x", 0, choices=2, top_logprobs=1)
    with pytest.raises(ApiError) as refused:
        for chunk in [*chunks, *ENDING]:
            collector.feed(chunk)
    assert refused.value.status == 502


def test_logprobs_a_client_did_not_ask_for_are_dropped() -> None:
    stream = ChatCompletionStream(MODEL, "chatcmpl-x", 0)
    (chunk,) = stream.feed({"text": "a", "logprobs": [ENTRY]})
    assert chunk["choices"][0]["logprobs"] is None
    collector = CompletionCollector(MODEL, "cmpl-x", 0)
    collector.feed({"text": "a", "logprobs": [ENTRY]})
    collector.feed(_final())
    assert collector.result()["choices"][0]["logprobs"] is None


def test_a_stream_refuses_the_usage_before_every_choice_ended() -> None:
    stream = ChatCompletionStream(MODEL, "chatcmpl-x", 0, True, choices=2)
    with pytest.raises(ApiError) as refused:
        stream.feed(_final(choice=0))
    assert refused.value.status == 502 and not stream.finished
