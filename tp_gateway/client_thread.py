"""The background half of the in-process client: an ASGI app (the gateway's own) on a trio loop in a thread
of its own, and the exchanges that carry one request into it and its response back out.

The caller may be a plain thread, an asyncio loop or another trio loop, so nothing here waits on the
caller's side: a request enters the trio thread with `TrioToken.run_sync_soon`, and each piece of the
response (start, body chunks, end) is appended to the exchange under a lock and a `Waker` of the caller's
kind is poked. Closing an exchange cancels its request in the trio thread, which closes the response
generator, which cancels the stream on the circuit, which stops the node.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from tp_crypto.errors import TokenPlaceError
from tp_gateway.openai_api import json_bytes
from tp_gateway.openai_errors import ApiError

THREAD_START_TIMEOUT_S = 30.0
THREAD_STOP_TIMEOUT_S = 10.0
# Body chunks waiting for a caller that reads slowly; beyond this the answer pauses (as a full socket would
# pause the gateway), which pauses the stream on the circuit and, once its window is full, the node.
BUFFERED_CHUNKS_MAX = 64
OVERLAY_UNREADY = "overlay_unavailable"


class AsgiApp(Protocol):
    def __call__(self, scope: Any, receive: Any, send: Any, /) -> Awaitable[None]: ...


@dataclass
class Service:
    """What the thread serves: the ASGI app, when it can answer, and why it cannot yet."""

    app: AsgiApp
    ready: trio.Event
    unready_message: str


OpenService = Callable[[trio.Nursery], Awaitable[Service]]


class ClientClosedError(TokenPlaceError):
    """The in-process client was closed, or its overlay thread stopped."""


@dataclass(frozen=True)
class ResponseStart:
    status: int
    headers: list[tuple[bytes, bytes]]


class ResponseEnd:
    """The response is complete."""


RESPONSE_END = ResponseEnd()
Item = ResponseStart | bytes | ResponseEnd | BaseException


# --- wakers: how the overlay thread wakes whoever waits for a response ------------------------------


class Waker(Protocol):
    def wake(self) -> None:
        """Called from the overlay thread; never blocks."""


class ThreadWaker:
    def __init__(self) -> None:
        self.event = threading.Event()

    def wake(self) -> None:
        self.event.set()


class AsyncioWaker:
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def wake(self) -> None:
        with suppress(RuntimeError):  # the caller's loop is closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(self.event.set)


class TrioWaker:
    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self.event = trio.Event()

    def wake(self) -> None:
        with suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self.event.set)

    def rearm(self) -> None:
        self.event = trio.Event()


def async_waker() -> AsyncioWaker | TrioWaker:
    """A waker for the running event loop of this thread: asyncio's, else trio's."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return TrioWaker()
    return AsyncioWaker()


# --- one request and its response -----------------------------------------------------------------


class Exchange:
    """One HTTP request into the app and its response coming back, item by item."""

    def __init__(self, scope: dict[str, Any], body: bytes, waker: Waker) -> None:
        self.scope = scope
        self.body = body
        self.waker = waker
        self._body_sent = False
        self._closed = False
        self._items: deque[Item] = deque()
        self._lock = threading.Lock()
        self._cancel: trio.CancelScope | None = None  # touched in the overlay thread only
        self._token: trio.lowlevel.TrioToken | None = None
        self._drained: trio.Event | None = None  # set (in the overlay thread) once the caller took some

    def put(self, item: Item) -> None:
        with self._lock:
            self._items.append(item)
        self.waker.wake()

    def take(self) -> Item | None:
        with self._lock:
            item = self._items.popleft() if self._items else None
            drained, self._drained = self._drained, None
        if drained is not None and self._token is not None:
            with suppress(trio.RunFinishedError):
                self._token.run_sync_soon(drained.set)
        return item

    async def _put_chunk(self, chunk: bytes) -> None:
        """Append a body chunk, first waiting while BUFFERED_CHUNKS_MAX are unread (overlay thread)."""
        while True:
            with self._lock:
                if len(self._items) < BUFFERED_CHUNKS_MAX:
                    self._items.append(chunk)
                    break
                drained = self._drained = trio.Event()
            await drained.wait()
        self.waker.wake()

    def close(self) -> None:
        """Cancel the request in the overlay thread (the caller stopped reading); idempotent."""
        self._closed = True  # before reading the token: serve() sets the token, then looks at this
        if self._token is not None:
            with suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._cancel_now)

    def _cancel_now(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    async def serve(self, service: Service, ready_timeout_s: float) -> None:
        """Runs in the overlay thread: the app's answer, or a 503 when the overlay is not ready in time."""
        self._token = trio.lowlevel.current_trio_token()
        if self._closed:
            return
        try:
            with trio.CancelScope() as self._cancel:
                with trio.move_on_after(ready_timeout_s):
                    await service.ready.wait()
                if service.ready.is_set():
                    await service.app(self.scope, self._receive, self._send)
                else:
                    self._send_error(ApiError(503, service.unready_message, code=OVERLAY_UNREADY))
        except Exception as exc:  # a bug in the app: the caller gets an error, the thread lives on
            self.put(exc)
        self.put(RESPONSE_END)

    async def _receive(self) -> dict[str, Any]:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await trio.sleep_forever()  # no disconnect while the caller reads; close() cancels instead
        raise AssertionError("unreachable")

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = [(bytes(name), bytes(value)) for name, value in message.get("headers", [])]
            self.put(ResponseStart(int(message["status"]), headers))
        elif message["type"] == "http.response.body" and message.get("body"):
            await self._put_chunk(bytes(message["body"]))

    def _send_error(self, error: ApiError) -> None:
        self.put(ResponseStart(error.status, [(b"content-type", b"application/json")]))
        self.put(json_bytes(error.to_json()))


# --- the thread -------------------------------------------------------------------------------------


class OverlayThread:
    """Runs `open_service` (the overlay and the app) in a trio loop on a daemon thread until `close()`."""

    def __init__(self, open_service: OpenService, *, ready_timeout_s: float) -> None:
        self._open_service = open_service
        self.ready_timeout_s = ready_timeout_s
        self._started = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._service: Service | None = None
        self._failure: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="token-place-client", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(THREAD_START_TIMEOUT_S) or self._token is None:
            self.close()
            raise ClientClosedError("the token.place client thread did not start") from self._failure

    def submit(self, exchange: Exchange) -> None:
        """Start serving `exchange` in the overlay thread."""
        if self._closed or self._token is None or self._nursery is None or self._service is None:
            raise ClientClosedError("the token.place client is closed") from self._failure
        nursery, service = self._nursery, self._service
        try:
            self._token.run_sync_soon(nursery.start_soon, exchange.serve, service, self.ready_timeout_s)
        except trio.RunFinishedError:
            raise ClientClosedError("the token.place client thread has stopped") from self._failure

    def close(self) -> None:
        """Stop the overlay (cancelling requests in flight) and wait for the thread to end; idempotent."""
        self._closed = True
        if self._token is not None and self._nursery is not None:
            with suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._nursery.cancel_scope.cancel)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(THREAD_STOP_TIMEOUT_S)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._failure = exc
        finally:
            self._started.set()

    async def _main(self) -> None:
        async with trio.open_nursery() as nursery:
            service = await self._open_service(nursery)
            startup = getattr(service.app, "startup", None)  # a Quart app's lifespan start
            if startup is not None:
                service.app.nursery = nursery  # type: ignore[attr-defined]
                await startup()
            self._service, self._nursery = service, nursery
            self._token = trio.lowlevel.current_trio_token()
            self._started.set()
            await trio.sleep_forever()
