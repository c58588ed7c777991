"""httpx transports that make the official OpenAI SDK use a remote gateway in sealed mode, unchanged:

    from openai import OpenAI
    from tp_gateway.sealed_transport import sealed_http_client
    client = OpenAI(base_url=REMOTE, api_key=KEY, http_client=sealed_http_client(REMOTE, bootstrap=FILE))

`POST .../chat/completions`, `.../completions` and `.../embeddings` are sealed to a node by
tp_gateway.sealed_client and answered here, in this process, as the gateway would answer them (JSON, or
server-sent events ending with `[DONE]`; errors as OpenAI error objects with the same status codes). Any
other POST may carry a prompt too (the SDK's `responses`, `moderations`...): it is refused here, sent
nowhere (404 `not_sealable`). Other requests (`GET /models`...) go to the gateway as they are.

The sync and async transports share one core (`SealedRoute`): which requests are sealed and how, and the
response each answer becomes; they differ only in how they wait.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx

from tp_gateway.openai_api import SSE_DONE, ApiError, invalid_json, sse_error, sse_event
from tp_gateway.sealed_client import TIMEOUT_S, AsyncAnswer, SecureChatCompletion
from tp_net.protocol.bootstrap_config import Bootstrap

# The end of the API path of each kind of request sent sealed (sealed_client.KIND_SHAPES), matched in
# this order ("/chat/completions" also ends with "/completions").
SEALED_PATHS = {"/chat/completions": "chat", "/completions": "completion", "/embeddings": "embedding"}
EVENT_STREAM_HEADERS = {"Content-Type": "text/event-stream"}


def sealed_http_client(
    base_url: str,
    api_key: str | None = None,
    *,
    bootstrap: Bootstrap | Path | str | None = None,
    timeout_s: float = TIMEOUT_S,
    upstream: httpx.Client | None = None,
) -> httpx.Client:
    """An httpx client for `OpenAI(http_client=...)`: inference sealed, the rest passed through."""
    inner = upstream or httpx.Client(timeout=timeout_s)
    chat = SecureChatCompletion(base_url, api_key, bootstrap=bootstrap, http_client=inner)
    return httpx.Client(transport=SealedTransport(SealedRoute(chat), inner), timeout=timeout_s)


def async_sealed_http_client(
    base_url: str,
    api_key: str | None = None,
    *,
    bootstrap: Bootstrap | Path | str | None = None,
    timeout_s: float = TIMEOUT_S,
    upstream: httpx.AsyncClient | None = None,
) -> httpx.AsyncClient:
    """The same for `AsyncOpenAI(http_client=...)`."""
    inner = upstream or httpx.AsyncClient(timeout=timeout_s)
    chat = SecureChatCompletion(base_url, api_key, bootstrap=bootstrap, async_http_client=inner)
    route = SealedRoute(chat)
    return httpx.AsyncClient(transport=AsyncSealedTransport(route, inner), timeout=timeout_s)


class SealedRoute:
    """Sans-IO: which requests are sealed (with which fields), and the httpx response an answer becomes."""

    def __init__(self, chat: SecureChatCompletion) -> None:
        self.chat = chat

    def sealed(self, request: httpx.Request) -> tuple[str, dict[str, Any]] | None:
        """(kind, OpenAI fields) of a request to seal, None for one to pass through (not a POST); an ApiError
        for a POST that cannot be sealed, before anything is sent. Its body must be read."""
        if request.method != "POST":
            return None
        path = request.url.path
        for suffix, kind in SEALED_PATHS.items():
            if path.endswith(suffix):
                return kind, _params(request.content)
        raise ApiError(
            404,
            f"POST {path} cannot be sealed (only {', '.join(SEALED_PATHS)}); nothing was sent.",
            code="not_sealable",
        )

    @staticmethod
    def error(error: ApiError) -> httpx.Response:
        headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s is not None else {}
        return httpx.Response(error.status, json=error.to_json(), headers=headers)

    @staticmethod
    def answer(result: AsyncAnswer | Iterator[dict[str, Any]]) -> httpx.Response:
        if isinstance(result, dict):
            return httpx.Response(200, json=result)
        return httpx.Response(200, headers=EVENT_STREAM_HEADERS, stream=_Events(result))


def _params(content: bytes) -> dict[str, Any]:
    try:
        body = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise invalid_json() from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_request")
    return body


class _Events(httpx.SyncByteStream, httpx.AsyncByteStream):
    """An answer's chunks as server-sent events, ending with `[DONE]`, or with the error that cut it short.
    The sync transport gives it an iterator, the async one an async iterator."""

    def __init__(self, chunks: Iterator[dict[str, Any]] | AsyncIterator[dict[str, Any]]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        assert isinstance(self._chunks, Iterator)
        try:
            for chunk in self._chunks:
                yield sse_event(chunk)
        except ApiError as exc:
            yield sse_error(exc)
            return
        yield SSE_DONE

    async def __aiter__(self) -> AsyncIterator[bytes]:
        assert isinstance(self._chunks, AsyncIterator)
        try:
            async for chunk in self._chunks:
                yield sse_event(chunk)
        except ApiError as exc:
            yield sse_error(exc)
            return
        yield SSE_DONE

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

    async def aclose(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class SealedTransport(httpx.BaseTransport):
    def __init__(self, route: SealedRoute, upstream: httpx.Client) -> None:
        self._route = route
        self._upstream = upstream

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        try:
            sealed = self._route.sealed(request)
            if sealed is None:
                return self._upstream.send(request)
            return self._route.answer(self._route.chat.send(*sealed))
        except ApiError as exc:
            return self._route.error(exc)

    def close(self) -> None:
        self._route.chat.close()


class AsyncSealedTransport(httpx.AsyncBaseTransport):
    def __init__(self, route: SealedRoute, upstream: httpx.AsyncClient) -> None:
        self._route = route
        self._upstream = upstream

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        try:
            sealed = self._route.sealed(request)
            if sealed is None:
                return await self._upstream.send(request)
            return self._route.answer(await self._route.chat.asend(*sealed))
        except ApiError as exc:
            return self._route.error(exc)

    async def aclose(self) -> None:
        await self._upstream.aclose()
