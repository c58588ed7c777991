"""tp-gateway end to end: the official OpenAI SDK (sync and async clients) against a real gateway process on a
real local network of processes (three relays that are the authorities, a tp-node with the tiny llama model).

One network and gateway (2 slots, no queue, an API key) serve the tests of this module; the test that kills
the node has a network of its own. The sync client runs in a trio worker thread, the async one in asyncio
there. Every client has max_retries=0, so an error status is the gateway's answer, not a retried one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing, suppress
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import llama_cpp
import openai
import pytest
import trio
from openai import AsyncOpenAI, OpenAI
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionToolParam

from tests.integration.gateway_network import BackgroundGateway, RunningGateway, running_gateway

T = TypeVar("T")
ChunkStream = openai.Stream[ChatCompletionChunk]
API_KEY = "sk-tp-test-6f1c"
MODEL = "tiny"
N_CTX = 2048
CLIENT_TIMEOUT_S = 30.0
LONG_ANSWER_TOKENS = 1800  # seconds of generation for the tiny model on this CPU
MESSAGES: list[Any] = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Say hello to the relays, twice!"},
]
PROMPT = "The token place network is"
WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def llama_node(model: Path, *extra: str) -> list[str]:
    return ["--engine", "llama", "--model", str(model), "--model-id", MODEL, "--n-ctx", str(N_CTX), *extra]


@pytest.fixture(scope="module")
def gateway(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """Two slots and no queue: a third concurrent request is refused at once (429)."""
    background = BackgroundGateway(
        partial(
            running_gateway,
            tmp_path_factory.mktemp("gateway-network"),
            node_args=llama_node(tiny_model_path, "--slots", "2", "--queue", "0"),
            api_key=API_KEY,
        )
    )
    running = background.start()
    try:
        yield running
    finally:
        background.close()


def sync_client(base_url: str, api_key: str = API_KEY) -> OpenAI:
    return OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=CLIENT_TIMEOUT_S)


async def with_sync_client(base_url: str, use: Callable[[OpenAI], T]) -> T:
    def run() -> T:
        with sync_client(base_url) as client:
            return use(client)

    return await trio.to_thread.run_sync(run)


async def with_async_client(base_url: str, use: Callable[[AsyncOpenAI], Awaitable[T]]) -> T:
    async def main() -> T:
        async with AsyncOpenAI(
            base_url=base_url, api_key=API_KEY, max_retries=0, timeout=CLIENT_TIMEOUT_S
        ) as client:
            return await use(client)

    return await trio.to_thread.run_sync(lambda: asyncio.run(main()))


def direct_chat(model: Path, max_tokens: int) -> str:
    """What llama-cpp-python answers itself, greedily."""
    with closing(llama_cpp.Llama(model_path=str(model), n_ctx=N_CTX, verbose=False)) as llm:
        result: Any = llm.create_chat_completion(messages=MESSAGES, temperature=0, max_tokens=max_tokens)
    return str(result["choices"][0]["message"]["content"])


def chat_text(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def status_of(call: Callable[[], object]) -> openai.APIStatusError:
    """The API error `call` raises (and fail if it raises none)."""
    with pytest.raises(openai.APIStatusError) as raised:
        call()
    return raised.value


# --- models -------------------------------------------------------------------------------------------


async def test_models_list_and_retrieve(gateway: RunningGateway) -> None:
    def check(client: OpenAI) -> None:
        models = client.models.list().data
        assert [model.id for model in models] == [MODEL]
        listed = models[0]
        assert listed.object == "model"
        assert listed.owned_by == "token.place"
        assert time.time() - 3600 < listed.created <= time.time() + 5  # the node's descriptor, just now
        assert client.models.retrieve(MODEL) == listed
        error = status_of(lambda: client.models.retrieve("no-such-model"))
        assert isinstance(error, openai.NotFoundError)
        assert (error.code, error.param, error.type) == ("model_not_found", "model", "invalid_request_error")

    assert gateway.model_ids == [MODEL]
    await with_sync_client(gateway.base_url, check)


# --- chat and completions -----------------------------------------------------------------------------


async def test_chat_stream_is_byte_identical_to_non_stream_and_to_llama_cpp(
    gateway: RunningGateway, tiny_model_path: Path
) -> None:
    max_tokens = 48

    def chat(client: OpenAI) -> tuple[ChatCompletion, list[ChatCompletionChunk]]:
        whole = client.chat.completions.create(
            model=MODEL, messages=MESSAGES, temperature=0, max_tokens=max_tokens
        )
        with client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            temperature=0,
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        ) as stream:
            chunks = list(stream)
        return whole, chunks

    whole, chunks = await with_sync_client(gateway.base_url, chat)
    assert whole.object == "chat.completion" and whole.model == MODEL and whole.id.startswith("chatcmpl-")
    message = whole.choices[0].message
    assert message.role == "assistant" and message.tool_calls is None
    assert message.content, "the tiny model always says something"
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == max_tokens
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + max_tokens

    assert chat_text(chunks).encode("utf-8") == message.content.encode("utf-8")
    assert message.content.encode("utf-8") == direct_chat(tiny_model_path, max_tokens).encode("utf-8")
    assert {chunk.id for chunk in chunks} == {chunks[0].id} and chunks[0].id.startswith("chatcmpl-")
    assert all(chunk.object == "chat.completion.chunk" and chunk.model == MODEL for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    *answer, usage_chunk = chunks
    assert answer[-1].choices[0].finish_reason == "length"
    assert all(chunk.usage is None for chunk in answer)
    assert usage_chunk.choices == [] and usage_chunk.usage == whole.usage


async def test_completions_and_chat_stream_and_not_with_the_async_client(gateway: RunningGateway) -> None:
    async def use(client: AsyncOpenAI) -> tuple[Completion, list[Completion], ChatCompletion, str]:
        whole = await client.completions.create(model=MODEL, prompt=PROMPT, temperature=0, max_tokens=24)
        stream = await client.completions.create(
            model=MODEL,
            prompt=PROMPT,
            temperature=0,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            chunks = [chunk async for chunk in stream]
        chat = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, temperature=0, max_tokens=8
        )
        chat_stream = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, temperature=0, max_tokens=8, stream=True
        )
        async with chat_stream:
            streamed_chat = chat_text([chunk async for chunk in chat_stream])
        return whole, chunks, chat, streamed_chat

    whole, chunks, chat, streamed_chat = await with_async_client(gateway.base_url, use)
    assert whole.object == "text_completion" and whole.model == MODEL and whole.id.startswith("cmpl-")
    text = whole.choices[0].text
    assert text and whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 24
    *answer, usage_chunk = chunks
    assert "".join(chunk.choices[0].text for chunk in answer).encode("utf-8") == text.encode("utf-8")
    assert answer[-1].choices[0].finish_reason == "length"
    assert usage_chunk.choices == [] and usage_chunk.usage == whole.usage
    assert chat.choices[0].message.content == streamed_chat != ""


async def test_a_named_tool_choice_returns_a_tool_call_stream_and_not(gateway: RunningGateway) -> None:
    def call(client: OpenAI) -> tuple[ChatCompletion, list[ChatCompletionChunk]]:
        request: dict[str, Any] = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
            "temperature": 0,
            "max_tokens": 40,
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        }
        whole = client.chat.completions.create(**request)
        with client.chat.completions.create(**request, stream=True) as stream:
            chunks = list(stream)
        return whole, chunks

    whole, chunks = await with_sync_client(gateway.base_url, call)
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None and choice.message.tool_calls is not None
    [tool_call] = choice.message.tool_calls
    assert tool_call.type == "function" and tool_call.id.startswith("call_")
    assert tool_call.function.name == "get_weather"
    arguments = tool_call.function.arguments
    # llama-cpp-python holds the arguments to the tool's JSON schema, but the tiny model fills the string with
    # random words until max_tokens: assert the shape, and the JSON only when it came out whole.
    assert arguments.startswith("{")
    with suppress(json.JSONDecodeError):
        assert isinstance(json.loads(arguments), dict)

    deltas = [delta for chunk in chunks for delta in chunk.choices[0].delta.tool_calls or []]
    assert deltas[0].index == 0 and deltas[0].id is not None and deltas[0].id.startswith("call_")
    assert deltas[0].function is not None and deltas[0].function.name == "get_weather"
    assert all(delta.index == 0 and delta.id is None for delta in deltas[1:])
    assert "".join(delta.function.arguments or "" for delta in deltas if delta.function) == arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_the_api_v1_prefix_serves_the_same_api(gateway: RunningGateway) -> None:
    def compare(prefixed: OpenAI) -> None:
        with sync_client(gateway.base_url) as plain:
            assert prefixed.models.list().data == plain.models.list().data
            assert prefixed.models.retrieve(MODEL) == plain.models.retrieve(MODEL)
            assert isinstance(status_of(lambda: prefixed.models.retrieve("nope")), openai.NotFoundError)
            request: dict[str, Any] = {
                "model": MODEL,
                "messages": MESSAGES,
                "temperature": 0,
                "max_tokens": 12,
            }
            answer = prefixed.chat.completions.create(**request).choices[0].message.content
            assert answer and answer == plain.chat.completions.create(**request).choices[0].message.content
            with prefixed.completions.create(
                model=MODEL, prompt=PROMPT, temperature=0, max_tokens=6, stream=True
            ) as stream:
                streamed = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
            whole = plain.completions.create(model=MODEL, prompt=PROMPT, temperature=0, max_tokens=6)
            assert streamed == whole.choices[0].text != ""

    await with_sync_client(gateway.root_url + "/api/v1", compare)


# --- errors -------------------------------------------------------------------------------------------


def post_raw(client: httpx.Client, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    reply = client.post(path, content=body, headers={"Content-Type": "application/json"})
    return reply.status_code, reply.json()["error"]


async def test_bad_requests_get_openai_shaped_errors(gateway: RunningGateway) -> None:
    def raw() -> None:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=gateway.root_url, headers=headers, timeout=CLIENT_TIMEOUT_S) as client:
            for prefix in ("/v1", "/api/v1"):
                status, error = post_raw(client, f"{prefix}/chat/completions", b'{"model": "tiny", "mess')
                assert (status, error["type"], error["param"]) == (400, "invalid_request_error", None)
                assert "JSON" in error["message"]
                status, error = post_raw(client, f"{prefix}/completions", b"[1, 2]")
                assert (status, error["type"]) == (400, "invalid_request_error")
                status, error = post_raw(client, f"{prefix}/chat/completions", b'{"model": "tiny"}')
                assert (status, error["param"], error["code"]) == (
                    400,
                    "messages",
                    "missing_required_parameter",
                )
                body = {"model": MODEL, "messages": MESSAGES, "temperature": "hot"}
                status, error = post_raw(client, f"{prefix}/chat/completions", json.dumps(body).encode())
                assert (status, error["param"]) == (400, "temperature")
                reply = client.get(f"{prefix}/no/such/route")
                assert reply.status_code == 404 and reply.json()["error"]["type"] == "invalid_request_error"
                reply = client.get(f"{prefix}/chat/completions")
                assert reply.status_code == 405 and "error" in reply.json()

    def sdk(client: OpenAI) -> None:
        error = status_of(
            lambda: client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=2.5)
        )
        assert isinstance(error, openai.BadRequestError)
        assert (error.status_code, error.param, error.type) == (400, "temperature", "invalid_request_error")
        error = status_of(lambda: client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=0))
        assert isinstance(error, openai.BadRequestError) and error.param == "max_tokens"
        for call in (
            lambda: client.chat.completions.create(model="no-such-model", messages=MESSAGES),
            lambda: client.chat.completions.create(model="no-such-model", messages=MESSAGES, stream=True),
            lambda: client.completions.create(model="no-such-model", prompt=PROMPT),
        ):
            error = status_of(call)
            assert isinstance(error, openai.NotFoundError)
            assert (error.code, error.param) == ("model_not_found", "model")
        huge: list[Any] = [{"role": "user", "content": "x" * (1024 * 1024 + 1)}]
        started = time.monotonic()
        error = status_of(lambda: client.chat.completions.create(model=MODEL, messages=huge))
        assert (error.status_code, error.code) == (413, "request_too_large")
        # The same client goes on: the gateway closed the connection rather than leave the body unread.
        assert client.models.list().data[0].id == MODEL
        assert time.monotonic() - started < 10

    await trio.to_thread.run_sync(raw)
    await with_sync_client(gateway.base_url, sdk)


async def test_an_api_key_is_required_except_for_health_and_metrics(gateway: RunningGateway) -> None:
    def check() -> None:
        for api_key in ("sk-wrong", API_KEY + "x", API_KEY[:-1]):
            with sync_client(gateway.base_url, api_key=api_key) as client:
                error = status_of(client.models.list)
                assert isinstance(error, openai.AuthenticationError)
                assert (error.code, error.type) == ("invalid_api_key", "authentication_error")
                error = status_of(partial(client.chat.completions.create, model=MODEL, messages=MESSAGES))
                assert isinstance(error, openai.AuthenticationError)
        with httpx.Client(base_url=gateway.root_url, timeout=CLIENT_TIMEOUT_S) as client:
            for prefix in ("/v1", "/api/v1"):
                assert client.get(f"{prefix}/models").status_code == 401
                reply = client.get(f"{prefix}/models", headers={"Authorization": f"Bearer {API_KEY}"})
                assert reply.status_code == 200 and reply.json()["data"][0]["id"] == MODEL
                assert client.get(f"{prefix}/health").status_code == 200
                assert client.get(f"{prefix}/metrics").status_code == 200

    await trio.to_thread.run_sync(check)


async def test_an_overloaded_node_answers_429_and_client_disconnects_stop_generation(
    gateway: RunningGateway,
) -> None:
    """Two long answers fill both slots and a third request is refused. Closing the longer answer's
    connection cancels it on the node: a new request gets its slot while the shorter one, which started
    first, still generates. Closing that one too leaves the node idle."""
    served = threading.Event()

    def long_answer(client: OpenAI, max_tokens: int) -> ChunkStream:
        stream = client.chat.completions.create(
            model=MODEL, messages=MESSAGES, temperature=0, max_tokens=max_tokens, stream=True
        )
        assert next(stream).choices[0].delta.role == "assistant"
        return stream

    def overload(client: OpenAI, twin_client: OpenAI) -> tuple[ChunkStream, ChunkStream]:
        twin = long_answer(twin_client, LONG_ANSWER_TOKENS * 2 // 3)
        first = long_answer(client, LONG_ANSWER_TOKENS)
        for stream in (False, True):
            error = status_of(
                partial(client.chat.completions.create, model=MODEL, messages=MESSAGES, stream=stream)
            )
            assert isinstance(error, openai.RateLimitError)
            assert (error.code, error.type) == ("overloaded", "rate_limit_error")
            assert "slots are busy" in error.message  # the node's own reason
        return first, twin

    def read_twin(twin: ChunkStream) -> bool:
        """Read the twin (a stalled reader would stall its generation) until a new request was served,
        then disconnect; True if the twin ended before."""
        with twin:
            for chunk in twin:
                if chunk.choices[0].finish_reason is not None:
                    return True
                if served.is_set():
                    return False
        return True

    def serve_after_disconnect(client: OpenAI, first: ChunkStream) -> float:
        """Close the first answer's connection; seconds until a new request is served."""
        first.close()
        closed_at = time.monotonic()
        while True:
            try:
                reply = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4)
            except openai.RateLimitError:
                assert time.monotonic() - closed_at < 20, "the slot was never freed"
                time.sleep(0.01)
                continue
            served.set()
            assert reply.choices[0].finish_reason == "length"
            return time.monotonic() - closed_at

    twin_ended_first: list[bool] = []
    with sync_client(gateway.base_url) as client, sync_client(gateway.base_url) as twin_client:
        first, twin = await trio.to_thread.run_sync(overload, client, twin_client)

        async def twin_reader() -> None:
            twin_ended_first.append(await trio.to_thread.run_sync(read_twin, twin))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(twin_reader)
            freed_s = await trio.to_thread.run_sync(serve_after_disconnect, client, first)
    assert twin_ended_first == [False], "the slot was freed only when a whole answer would have ended"
    assert freed_s < 5
    await trio.sleep(0.3)
    cpu_s = gateway.node.cpu_seconds
    await trio.sleep(0.5)
    assert gateway.node.cpu_seconds - cpu_s < 0.2, "the node went on generating for a closed connection"


# --- health and metrics -------------------------------------------------------------------------------


def metric_samples(text: str) -> dict[str, float]:
    """Prometheus text format -> {name{labels}: value}, checking every line's shape."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert line.split(" ", 3)[1] in ("HELP", "TYPE"), line
            continue
        name, _, value = line.rpartition(" ")
        samples[name] = float(value)
    return samples


async def test_health_and_prometheus_metrics(gateway: RunningGateway) -> None:
    chat_route = 'tp_gateway_http_requests_total{route="/v1/chat/completions",status="200"}'

    def check() -> None:
        with httpx.Client(base_url=gateway.root_url, timeout=CLIENT_TIMEOUT_S) as http:
            for prefix in ("/v1", "/api/v1"):
                health = http.get(f"{prefix}/health")
                assert health.status_code == 200
                assert health.json()["status"] == "ok" and health.json()["models"] == 1
                assert health.json()["pooled_circuits"] >= 1  # warm circuits to the node
            before = http.get("/v1/metrics")
            assert before.status_code == 200
            assert before.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert "# TYPE tp_gateway_http_requests_total counter" in before.text
            with sync_client(gateway.base_url) as client:
                client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
            after = metric_samples(http.get("/api/v1/metrics").text)
        earlier = metric_samples(before.text)
        assert after[chat_route] == earlier.get(chat_route, 0) + 1
        assert (
            after["tp_gateway_first_token_seconds_count"]
            == earlier["tp_gateway_first_token_seconds_count"] + 1
        )
        assert after["tp_gateway_first_token_seconds_sum"] > earlier["tp_gateway_first_token_seconds_sum"]
        assert after["tp_gateway_models"] == 1
        assert after["tp_gateway_circuits_built"] >= after["tp_gateway_pooled_circuits"] >= 1

    await trio.to_thread.run_sync(check)


# --- a node that dies ---------------------------------------------------------------------------------


async def test_a_node_killed_mid_stream_ends_the_stream_with_an_error_and_later_requests_fail_fast(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    async with running_gateway(tmp_path, node_args=llama_node(tiny_model_path)) as running:

        def mid_stream(client: OpenAI) -> tuple[openai.APIError, float]:
            with client.chat.completions.create(
                model=MODEL, messages=MESSAGES, temperature=0, max_tokens=LONG_ANSWER_TOKENS, stream=True
            ) as stream:
                chunks = iter(stream)
                assert next(chunks).choices[0].delta.role == "assistant"
                os.kill(running.node.process.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                with pytest.raises(openai.APIError) as raised:
                    for _ in chunks:
                        pass
            return raised.value, time.monotonic() - killed_at

        def afterwards(client: OpenAI) -> list[tuple[openai.APIStatusError, float]]:
            errors = []
            for stream in (False, True, False):
                started = time.monotonic()
                error = status_of(
                    partial(client.chat.completions.create, model=MODEL, messages=MESSAGES, stream=stream)
                )
                errors.append((error, time.monotonic() - started))
            return errors

        error, seconds = await with_sync_client(running.base_url, mid_stream)
        assert (error.code, error.type) == ("upstream_error", "server_error"), error.body
        assert seconds < 5
        for late, late_seconds in await with_sync_client(running.base_url, afterwards):
            assert late.status_code in (502, 503) and late.type == "server_error", late.body
            assert late_seconds < 5
        async with httpx.AsyncClient(base_url=running.root_url, timeout=CLIENT_TIMEOUT_S) as http:
            assert (await http.get("/v1/health")).status_code == 200  # the gateway itself is fine
