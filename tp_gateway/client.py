"""The in-process client: httpx clients that send OpenAI requests over the token.place overlay from this
process, with no gateway process to run.

    from openai import OpenAI
    from tp_gateway.client import http_client

    client = OpenAI(base_url="http://token.place/v1", api_key="unused",
                    http_client=http_client(bootstrap="my-net/bootstrap.json"))

`async_http_client` is the same for `AsyncOpenAI` (on asyncio or trio). The overlay and the gateway's own
app (tp_gateway.app, so every OpenAI translation and error is the gateway's) run in a background thread
with its own trio loop (tp_gateway.client_thread); the transports call the app directly, no socket is
opened and the host of the URL is ignored: the request reaches the app as one for `IN_PROCESS_HOST`, the
Host only this in-process app serves (a gateway on a socket refuses it). Closing the client stops the thread.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import trio

from tp_cli.launch import default_data_dir
from tp_gateway.app import create_app
from tp_gateway.client_thread import (
    RESPONSE_END,
    AsyncioWaker,
    ClientClosedError,
    Exchange,
    Item,
    OpenService,
    OverlayThread,
    ResponseStart,
    Service,
    ThreadWaker,
    TrioWaker,
    async_waker,
)
from tp_gateway.http_guard import SiteRules
from tp_gateway.overlay import Overlay
from tp_net.protocol.bootstrap_config import Bootstrap, load_bootstrap
from tp_net.trio.transport_ws import WebSocketDialer

IN_PROCESS_HOST = "token.place"
BASE_URL = f"http://{IN_PROCESS_HOST}/v1"
IN_PROCESS_SITE = SiteRules.of(hosts=[IN_PROCESS_HOST])
# How long a request waits for the first signed directory before it is answered 503.
READY_TIMEOUT_S = 30.0
GUARD_FILE = "guards.json"
DEFAULT_DATA_DIR = default_data_dir("client")


def http_client(
    *,
    bootstrap: Bootstrap | Path | str | None = None,
    data_dir: Path | str | None = DEFAULT_DATA_DIR,
    ready_timeout_s: float = READY_TIMEOUT_S,
    rng: random.Random | None = None,
    **client_options: Any,
) -> httpx.Client:
    """An `httpx.Client` whose requests go over the overlay (for `OpenAI(http_client=...)`).

    `bootstrap`: the network's bootstrap file (default: $TP_BOOTSTRAP, else the built-in network).
    `data_dir`: where the chosen guard relays are kept between runs (None: in memory only).
    `ready_timeout_s`: how long a request waits for the network's directory before failing with 503.
    Other keyword arguments go to `httpx.Client` (e.g. `timeout`). Close the client to stop the overlay.
    """
    thread = _start(overlay_service(_bootstrap(bootstrap), data_dir, rng), ready_timeout_s)
    return httpx.Client(transport=OverlayTransport(thread), base_url=BASE_URL, **client_options)


def async_http_client(
    *,
    bootstrap: Bootstrap | Path | str | None = None,
    data_dir: Path | str | None = DEFAULT_DATA_DIR,
    ready_timeout_s: float = READY_TIMEOUT_S,
    rng: random.Random | None = None,
    **client_options: Any,
) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` whose requests go over the overlay (for `AsyncOpenAI(http_client=...)`),
    usable from asyncio and from trio; arguments as for `http_client`."""
    thread = _start(overlay_service(_bootstrap(bootstrap), data_dir, rng), ready_timeout_s)
    return httpx.AsyncClient(transport=AsyncOverlayTransport(thread), base_url=BASE_URL, **client_options)


def overlay_service(
    bootstrap: Bootstrap, data_dir: Path | str | None, rng: random.Random | None = None
) -> OpenService:
    """The overlay to the network of `bootstrap` and the gateway app in front of it."""
    guard_file = None
    if data_dir is not None:
        Path(data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        guard_file = Path(data_dir) / GUARD_FILE

    async def open_service(nursery: trio.Nursery) -> Service:
        overlay = Overlay(
            bootstrap, WebSocketDialer(nursery), rng=rng or random.Random(), guard_file=guard_file
        )
        nursery.start_soon(overlay.run)
        unready = (
            f"no signed directory of network {bootstrap.network!r} could be fetched from its "
            f"{len(bootstrap.authorities)} authorities yet: check the bootstrap file and that the "
            "network is up"
        )
        return Service(create_app(overlay, site=IN_PROCESS_SITE), overlay.ready, unready)

    return open_service


def _bootstrap(bootstrap: Bootstrap | Path | str | None) -> Bootstrap:
    if isinstance(bootstrap, Bootstrap):
        return bootstrap
    return load_bootstrap(Path(bootstrap) if bootstrap is not None else None)


def _start(open_service: OpenService, ready_timeout_s: float) -> OverlayThread:
    thread = OverlayThread(open_service, ready_timeout_s=ready_timeout_s)
    thread.start()
    return thread


# --- the transports -----------------------------------------------------------------------------------


class OverlayTransport(httpx.BaseTransport):
    """Sends each request to the app in `thread`; the response body streams back as it is produced."""

    def __init__(self, thread: OverlayThread) -> None:
        self._thread = thread

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        waker = ThreadWaker()
        exchange = Exchange(asgi_scope(request), request.read(), waker)
        timeout = _read_timeout(request)
        _submit(self._thread, exchange, request)

        def next_item() -> Item:
            while True:
                waker.event.clear()  # before take(): a put() after it sets the event again
                item = exchange.take()
                if item is not None:
                    return item
                if not waker.event.wait(timeout):
                    exchange.close()
                    raise httpx.ReadTimeout(f"no answer within {timeout} s", request=request)

        try:
            first = next_item()
        except BaseException:  # e.g. KeyboardInterrupt while waiting: stop the request in the overlay too
            exchange.close()
            raise
        start = _response_start(first, exchange, request)
        return httpx.Response(
            start.status, headers=start.headers, stream=_SyncBody(next_item, exchange), request=request
        )

    def close(self) -> None:
        self._thread.close()


class AsyncOverlayTransport(httpx.AsyncBaseTransport):
    """The async twin of OverlayTransport, for asyncio and trio callers."""

    def __init__(self, thread: OverlayThread) -> None:
        self._thread = thread

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        waker = async_waker()
        exchange = Exchange(asgi_scope(request), await request.aread(), waker)
        timeout = _read_timeout(request)
        _submit(self._thread, exchange, request)

        async def next_item() -> Item:
            while True:
                _clear(waker)
                item = exchange.take()
                if item is not None:
                    return item
                if not await _wait(waker, timeout):
                    exchange.close()
                    raise httpx.ReadTimeout(f"no answer within {timeout} s", request=request)

        try:
            first = await next_item()
        except BaseException:  # cancelled while waiting: stop the request in the overlay too
            exchange.close()
            raise
        start = _response_start(first, exchange, request)
        return httpx.Response(
            start.status, headers=start.headers, stream=_AsyncBody(next_item, exchange), request=request
        )

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._thread.close)


def _clear(waker: AsyncioWaker | TrioWaker) -> None:
    if isinstance(waker, TrioWaker):
        waker.rearm()
    else:
        waker.event.clear()


async def _wait(waker: AsyncioWaker | TrioWaker, timeout: float | None) -> bool:
    """Wait for a wake-up; False when `timeout` passed first."""
    with anyio.move_on_after(timeout) as scope:
        await waker.event.wait()
    return not scope.cancelled_caught


class _SyncBody(httpx.SyncByteStream):
    def __init__(self, next_item: Callable[[], Item], exchange: Exchange) -> None:
        self._next_item = next_item
        self._exchange = exchange

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._next_item()
            if isinstance(item, bytes):
                yield item
            elif item is RESPONSE_END:
                return
            else:
                raise _broken(item)

    def close(self) -> None:
        self._exchange.close()


class _AsyncBody(httpx.AsyncByteStream):
    def __init__(self, next_item: Callable[[], Awaitable[Item]], exchange: Exchange) -> None:
        self._next_item = next_item
        self._exchange = exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._next_item()
            if isinstance(item, bytes):
                yield item
            elif item is RESPONSE_END:
                return
            else:
                raise _broken(item)

    async def aclose(self) -> None:
        self._exchange.close()


def _submit(thread: OverlayThread, exchange: Exchange, request: httpx.Request) -> None:
    try:
        thread.submit(exchange)
    except ClientClosedError as exc:
        raise httpx.ConnectError(str(exc), request=request) from exc


def _response_start(item: Item, exchange: Exchange, request: httpx.Request) -> ResponseStart:
    if isinstance(item, ResponseStart):
        return item
    exchange.close()
    raise httpx.RemoteProtocolError(str(_broken(item)), request=request)


def _broken(item: object) -> httpx.RemoteProtocolError:
    if isinstance(item, BaseException):
        return httpx.RemoteProtocolError(f"the in-process gateway failed: {item.__class__.__name__}")
    return httpx.RemoteProtocolError("the in-process gateway ended the response early")


def _read_timeout(request: httpx.Request) -> float | None:
    timeout = request.extensions.get("timeout", {})
    read = timeout.get("read") if isinstance(timeout, dict) else None
    return float(read) if read is not None else None


def asgi_scope(request: httpx.Request) -> dict[str, Any]:
    """The ASGI HTTP scope of an httpx request, addressed to the in-process app whatever the URL's host."""
    headers = [(name.lower(), value) for name, value in request.headers.raw if name.lower() != b"host"]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": request.url.scheme,
        "path": request.url.path,
        "raw_path": request.url.raw_path.split(b"?", 1)[0],
        "query_string": request.url.query,
        "root_path": "",
        "headers": [(b"host", IN_PROCESS_HOST.encode()), *headers],
        "client": None,
        "server": (IN_PROCESS_HOST, 80),
        "extensions": {},
    }
