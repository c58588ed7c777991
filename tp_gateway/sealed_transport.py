"""httpx transports that make the official OpenAI SDK use a remote gateway in sealed mode, unchanged:

    from openai import OpenAI
    from tp_gateway.sealed_transport import sealed_http_client
    client = OpenAI(base_url=REMOTE, api_key=KEY, http_client=sealed_http_client(REMOTE, bootstrap=FILE))

`POST .../chat/completions` is sealed to a node by tp_gateway.sealed_client and answered here, in this
process, as the gateway would answer it (JSON, or server-sent events ending with `[DONE]`; errors as OpenAI
error objects with the same status codes). Every other request (`GET /models`...) goes to the gateway as is:
it carries no prompt.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx

from tp_gateway.openai_api import SSE_DONE, ApiError, invalid_json, sse_error, sse_event
from tp_gateway.sealed_client import TIMEOUT_S, SecureChatCompletion
from tp_net.protocol.bootstrap_config import Bootstrap

SEALED_PATH_SUFFIX = "/chat/completions"


def sealed_http_client(
    base_url: str,
    api_key: str | None = None,
    *,
    bootstrap: Bootstrap | Path | str | None = None,
    timeout_s: float = TIMEOUT_S,
    upstream: httpx.Client | None = None,
) -> httpx.Client:
    """An httpx client for `OpenAI(http_client=...)`: chat completions sealed, the rest passed through."""
    inner = upstream or httpx.Client(timeout=timeout_s)
    chat = SecureChatCompletion(base_url, api_key, bootstrap=bootstrap, http_client=inner)
    return httpx.Client(transport=SealedTransport(chat, inner), timeout=timeout_s)


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
    return httpx.AsyncClient(transport=AsyncSealedTransport(chat, inner), timeout=timeout_s)


def _is_chat(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path.endswith(SEALED_PATH_SUFFIX)


def _params(request: httpx.Request) -> dict[str, Any]:
    try:
        body = json.loads(request.content)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise invalid_json() from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_request")
    return body


def _error(error: ApiError) -> httpx.Response:
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s is not None else {}
    return httpx.Response(error.status, json=error.to_json(), headers=headers)


class _Events(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[dict[str, Any]]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._chunks:
                yield sse_event(chunk)
        except ApiError as exc:
            yield sse_error(exc)
            return
        yield SSE_DONE

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class _AsyncEvents(httpx.AsyncByteStream):
    def __init__(self, chunks: AsyncIterator[dict[str, Any]]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._chunks:
                yield sse_event(chunk)
        except ApiError as exc:
            yield sse_error(exc)
            return
        yield SSE_DONE

    async def aclose(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class SealedTransport(httpx.BaseTransport):
    def __init__(self, chat: SecureChatCompletion, upstream: httpx.Client) -> None:
        self._chat = chat
        self._upstream = upstream

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not _is_chat(request):
            request.read()
            return self._upstream.send(request)
        try:
            result = self._chat.create(**_params(request))
        except ApiError as exc:
            return _error(exc)
        if isinstance(result, dict):
            return httpx.Response(200, json=result)
        stream = _Events(result)
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, stream=stream)

    def close(self) -> None:
        self._chat.close()


class AsyncSealedTransport(httpx.AsyncBaseTransport):
    def __init__(self, chat: SecureChatCompletion, upstream: httpx.AsyncClient) -> None:
        self._chat = chat
        self._upstream = upstream

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not _is_chat(request):
            await request.aread()
            return await self._upstream.send(request)
        try:
            result = await self._chat.acreate(**_params(request))
        except ApiError as exc:
            return _error(exc)
        if isinstance(result, dict):
            return httpx.Response(200, json=result)
        stream = _AsyncEvents(result)
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, stream=stream)

    async def aclose(self) -> None:
        await self._upstream.aclose()
