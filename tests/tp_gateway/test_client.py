"""The in-process client: the official OpenAI SDK over tp_gateway.client's transports, with the gateway's real
app in the client's background trio thread and a scripted overlay in place of the network.

The sync client is called from a worker thread, the async one from asyncio and from trio itself. The real
overlay (WebSockets, circuits, a node) is tested in tests/integration/test_client_processes.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest
import trio
from openai import AsyncOpenAI, OpenAI

from tests.tp_gateway.overlay_fakes import FakeStats
from tp_gateway.app import create_app
from tp_gateway.client import (
    BASE_URL,
    IN_PROCESS_SITE,
    AsyncOverlayTransport,
    OverlayTransport,
    http_client,
    overlay_service,
)
from tp_gateway.client_thread import BUFFERED_CHUNKS_MAX, ClientClosedError, OverlayThread, Service
from tp_gateway.inference_overlay import WithoutSealing
from tp_gateway.isolation import Isolation
from tp_gateway.overlay import OverlayError
from tp_net.protocol.bootstrap_config import BootstrapError, load_bootstrap

T = TypeVar("T")
MODEL = "tiny"
WORDS = ["Hel", "lo", " from", " the", " overlay"]
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello."}]
WAIT_S = 10.0
THREAD_NAME = "token-place-client"


def final() -> dict[str, Any]:
    return {"finish_reason": "stop", "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}


class ScriptedOverlay(WithoutSealing):
    """Stands in for tp_gateway.overlay.Overlay: one model, a scripted answer; records how answers end."""

    def __init__(
        self, *, ready: bool = True, hold_after: int | None = None, words: list[str] = WORDS
    ) -> None:
        self.ready = trio.Event()
        if ready:
            self.ready.set()
        self.pooled_circuits = 1
        self.stats = FakeStats()
        self.hold_after = hold_after  # answer this many words, then wait for `release`
        self.release = threading.Event()
        self.answer_closed = threading.Event()
        self.documents: list[Mapping[str, Any]] = []
        self.isolations: list[Isolation] = []  # each request's isolation key
        self.words = words
        self.produced = 0

    def model_ids(self) -> list[str]:
        return [MODEL]

    def model_created(self, model_id: str) -> int:
        return 1_700_000_000

    def model_identity(self, model_id: str) -> None:
        return None  # a scripted network: no directory, no GGUF identity

    async def generate(
        self, model_id: str, document: Mapping[str, Any], *, isolation: Isolation = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        if model_id != MODEL:
            raise OverlayError("model_not_found", f"no node in the directory serves model {model_id!r}")
        self.documents.append(document)
        self.isolations.append(isolation)
        try:
            for index, word in enumerate(self.words):
                if index == self.hold_after:
                    await trio.to_thread.run_sync(self.release.wait, abandon_on_cancel=True)
                self.produced += 1
                yield {"text": word}
            yield final()
        finally:
            self.answer_closed.set()


def scripted(overlay: ScriptedOverlay) -> Callable[[trio.Nursery], Any]:
    async def open_service(nursery: trio.Nursery) -> Service:
        return Service(
            create_app(overlay, site=IN_PROCESS_SITE),
            overlay.ready,
            "no directory yet (scripted)",
        )

    return open_service


def started(overlay: ScriptedOverlay, ready_timeout_s: float = WAIT_S) -> OverlayThread:
    thread = OverlayThread(scripted(overlay), ready_timeout_s=ready_timeout_s)
    thread.start()
    return thread


def sdk(thread: OverlayThread, timeout: float = WAIT_S) -> OpenAI:
    client = httpx.Client(transport=OverlayTransport(thread), base_url=BASE_URL)
    return OpenAI(base_url=BASE_URL, api_key="unused", http_client=client, max_retries=0, timeout=timeout)


def async_sdk(thread: OverlayThread) -> AsyncOpenAI:
    client = httpx.AsyncClient(transport=AsyncOverlayTransport(thread), base_url=BASE_URL)
    return AsyncOpenAI(base_url=BASE_URL, api_key="unused", http_client=client, max_retries=0, timeout=WAIT_S)


def client_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == THREAD_NAME]


@pytest.fixture
def overlay() -> Iterator[ScriptedOverlay]:
    scripted_overlay = ScriptedOverlay()
    yield scripted_overlay
    scripted_overlay.release.set()
    assert not client_threads(), "every test closes its client"


async def in_worker(use: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(use)


async def test_sync_sdk_lists_models_and_chats_streamed_and_not(overlay: ScriptedOverlay) -> None:
    def use() -> tuple[list[str], str | None, list[str]]:
        with sdk(started(overlay)) as client:
            models = [model.id for model in client.models.list().data]
            whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8)
            with client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True) as stream:
                pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
            return models, whole.choices[0].message.content, pieces

    models, content, pieces = await in_worker(use)
    assert models == [MODEL]
    assert content == "".join(WORDS)
    assert pieces == [*WORDS, ""]  # the words (the first with the role), the finish chunk
    assert overlay.documents[0]["max_tokens"] == 8 and overlay.documents[0]["messages"] == MESSAGES
    assert not client_threads()


def test_async_sdk_on_asyncio_streams_and_not(overlay: ScriptedOverlay) -> None:
    async def use() -> tuple[str | None, str]:
        async with async_sdk(started(overlay)) as client:
            whole = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
            stream = await client.completions.create(model=MODEL, prompt="Hi", stream=True)
            async with stream:
                text = "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])
            return whole.choices[0].message.content, text

    assert asyncio.run(use()) == ("".join(WORDS), "".join(WORDS))
    assert not client_threads()


async def test_async_client_on_trio_streams_and_the_sdk_answers(overlay: ScriptedOverlay) -> None:
    # The SDK's own stream leaves its async generators unfinished after [DONE], which trio reports: the
    # stream is read with httpx here, the SDK asked without streaming.
    async with async_sdk(started(overlay)) as client:
        whole = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
        body = {"model": MODEL, "messages": MESSAGES, "stream": True}
        async with client._client.stream("POST", "/chat/completions", json=body) as response:
            events = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert whole.choices[0].message.content == "".join(WORDS)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "data: [DONE]"
    deltas = [json.loads(event.removeprefix("data: "))["choices"][0]["delta"] for event in events[:-1]]
    assert "".join(delta.get("content") or "" for delta in deltas) == "".join(WORDS)


async def test_chunks_arrive_while_the_answer_is_still_being_generated() -> None:
    overlay = ScriptedOverlay(hold_after=2)

    def use() -> tuple[list[str], list[str]]:
        with sdk(started(overlay)) as client:
            stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
            with stream:
                chunks = iter(stream)
                early = [next(chunks).choices[0].delta.content or "" for _ in range(2)]
                overlay.release.set()  # the overlay holds the rest until the first words were read
                rest = [chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices]
            return early, rest

    early, rest = await in_worker(use)
    assert early == WORDS[:2]
    assert "".join(rest) == "".join(WORDS[2:])


async def test_a_caller_that_stops_reading_pauses_the_answer() -> None:
    overlay = ScriptedOverlay(words=[f" w{index}" for index in range(BUFFERED_CHUNKS_MAX * 4)])
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}

    def use() -> tuple[int, int]:
        with httpx.Client(transport=OverlayTransport(started(overlay)), base_url=BASE_URL) as client:
            with client.stream("POST", "/chat/completions", json=body) as response:
                lines = response.iter_lines()
                next(lines)
                time.sleep(0.5)  # the overlay thread may run ahead, but only by the buffer
                paused_at = overlay.produced
                events = [line for line in lines if line.startswith("data: ")]
            return paused_at, len(events)

    paused_at, rest = await in_worker(use)
    assert paused_at <= BUFFERED_CHUNKS_MAX + 3, "one chunk in the app, one in hand, the rest buffered"
    assert rest >= len(overlay.words), "everything arrives once the caller reads again"


async def test_closing_a_stream_early_cancels_the_answer_in_the_overlay_thread() -> None:
    overlay = ScriptedOverlay(hold_after=1)

    def use() -> bool:
        with sdk(started(overlay)) as client:
            stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
            with stream:
                assert next(iter(stream)).choices[0].delta.role == "assistant"
            return overlay.answer_closed.wait(WAIT_S)  # without release: only cancellation ends it

    assert await in_worker(use)


def test_an_asyncio_task_cancelled_mid_stream_cancels_the_answer() -> None:
    overlay = ScriptedOverlay(hold_after=1)

    async def use() -> None:
        async with async_sdk(started(overlay)) as client:

            async def read_all() -> None:
                stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
                async with stream:
                    async for _ in stream:
                        pass

            task = asyncio.create_task(read_all())
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(use())
    assert overlay.answer_closed.wait(WAIT_S)


async def test_a_silent_overlay_is_a_timeout_and_the_answer_is_cancelled() -> None:
    overlay = ScriptedOverlay(hold_after=0)

    def use() -> None:
        with sdk(started(overlay), timeout=0.3) as client, pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model=MODEL, messages=MESSAGES)

    await in_worker(use)
    assert await in_worker(lambda: overlay.answer_closed.wait(WAIT_S))


async def test_unknown_model_is_the_gateways_404() -> None:
    def use() -> openai.NotFoundError:
        with sdk(started(ScriptedOverlay())) as client, pytest.raises(openai.NotFoundError) as raised:
            client.chat.completions.create(model="no-such-model", messages=MESSAGES)
        return raised.value

    error = await in_worker(use)
    assert error.code == "model_not_found" and error.param == "model"
    assert "no-such-model" in error.message


async def test_no_directory_in_time_is_a_503_that_says_why() -> None:
    def use() -> openai.APIStatusError:
        thread = started(ScriptedOverlay(ready=False), ready_timeout_s=0.2)
        with sdk(thread) as client, pytest.raises(openai.InternalServerError) as raised:
            client.models.list()
        return raised.value

    error = await in_worker(use)
    assert error.status_code == 503 and error.code == "overlay_unavailable"
    assert "no directory yet (scripted)" in error.message


async def test_a_stopped_overlay_thread_is_a_connection_error(overlay: ScriptedOverlay) -> None:
    def use() -> None:
        thread = started(overlay)
        with sdk(thread) as client:
            thread.close()
            assert not client_threads()
            with pytest.raises(openai.APIConnectionError, match="Connection error"):
                client.models.list()

    await in_worker(use)


def test_a_missing_bootstrap_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-bootstrap.json"
    with pytest.raises(BootstrapError, match=str(missing)):
        http_client(bootstrap=missing, data_dir=None)
    assert not client_threads()


async def test_the_real_overlay_with_no_authority_up_answers_503_naming_the_network(tmp_path: Path) -> None:
    """http_client() end to end: the overlay dials the bootstrap's authorities (a closed port here)."""
    bootstrap_file = tmp_path / "bootstrap.json"
    authority = {"node_id": "ab" * 32, "address": "ws://127.0.0.1:9/"}  # the discard port: refused
    document = {"network": "nowhere-net", "threshold": 1, "period_s": 60, "local": True}
    bootstrap_file.write_text(json.dumps({**document, "authorities": [authority]}))
    assert load_bootstrap(bootstrap_file).network == "nowhere-net"

    def use() -> openai.APIStatusError:
        http = http_client(bootstrap=bootstrap_file, data_dir=tmp_path / "client", ready_timeout_s=0.5)
        client = OpenAI(base_url=BASE_URL, api_key="unused", http_client=http, max_retries=0)
        with client, pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(model=MODEL, messages=MESSAGES)
        return raised.value

    error = await in_worker(use)
    assert error.status_code == 503 and "'nowhere-net'" in error.message
    assert not client_threads()


def test_overlay_service_keeps_guards_in_the_data_dir(tmp_path: Path) -> None:
    bootstrap = load_bootstrap(None)
    overlay_service(bootstrap, tmp_path / "client")
    assert (tmp_path / "client").is_dir()


async def test_the_chat_page_is_public_self_contained_and_under_a_strict_policy() -> None:
    overlay = ScriptedOverlay()

    async def open_service(nursery: trio.Nursery) -> Service:
        return Service(
            create_app(overlay, site=IN_PROCESS_SITE, api_key="sk-secret"),
            overlay.ready,
            "unready",
        )

    def use() -> dict[str, httpx.Response]:
        thread = OverlayThread(open_service, ready_timeout_s=WAIT_S)
        thread.start()
        with httpx.Client(transport=OverlayTransport(thread), base_url="http://127.0.0.1:8000") as client:
            paths = ["/", "/static/chat.js", "/static/chat.css", "/v1/models"]
            return {path: client.get(path) for path in paths}

    responses = await in_worker(use)
    page = responses["/"]
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert responses["/static/chat.js"].headers["content-type"].startswith("text/javascript")
    for path in ("/", "/static/chat.js", "/static/chat.css"):
        assert responses[path].status_code == 200
        assert "http://" not in responses[path].text and "https://" not in responses[path].text, path
    assert responses["/v1/models"].status_code == 401, "the API itself still needs the key"


def test_a_service_that_fails_to_open_is_a_clear_error_and_no_thread_stays() -> None:
    async def broken(nursery: trio.Nursery) -> Service:
        raise OSError("no route to the authorities (scripted)")

    thread = OverlayThread(broken, ready_timeout_s=WAIT_S)
    with pytest.raises(ClientClosedError, match="did not start") as raised:
        thread.start()
    assert "scripted" in repr(raised.value.__cause__)
    assert not client_threads()


async def test_concurrent_requests_from_many_threads_each_get_their_answer(
    overlay: ScriptedOverlay,
) -> None:
    threads_count = 12

    def use() -> list[str]:
        with sdk(started(overlay)) as client:

            def ask(index: int) -> str:
                stream = client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": f"q{index}"}], stream=True
                )
                with stream:
                    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

            with ThreadPoolExecutor(threads_count) as pool:
                return list(pool.map(ask, range(threads_count)))

    assert await in_worker(use) == ["".join(WORDS)] * threads_count
    asked = sorted(document["messages"][0]["content"] for document in overlay.documents)
    assert asked == sorted(f"q{index}" for index in range(threads_count))
