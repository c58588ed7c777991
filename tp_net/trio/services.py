"""Request/response services at the end of a circuit (a GPU node's "inference", a relay's "directory").

A stream to a service carries one request message from the client, then END(DONE). The host collects it,
decodes it once the stream ended, runs the service's handler, and streams the handler's response messages
back, pausing while the stream's window is full; then END(DONE). An aborted stream or a dead circuit cancels
the handler at its next checkpoint. A handler raises ServiceError for a request it refuses: the client gets an
error message.

The host acks request data as it takes it (so a request may be larger than the stream's window), which makes
the host, not the window, the bound on what a sender can make it hold, checked before the data is kept:
- a request is one message of at most REQUEST_BYTES_MAX (tp_net.protocol.messages.RequestReader); a stream
that
  carries more loses its circuit;
- a circuit's unfinished requests hold at most REQUEST_BUFFER_BYTES_PER_CIRCUIT_MAX (past it the stream is
  refused with OVERLOADED);
- all unfinished requests hold at most REQUEST_BUFFER_BYTES_MAX (past it the largest is refused).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import trio

from tp_net.protocol.errors import RemoteProtocolError, ServiceError
from tp_net.protocol.hop_outputs import CircuitRef, ServiceEvent
from tp_net.protocol.messages import REQUEST_BYTES_MAX, RequestReader, encode_message
from tp_net.protocol.streams import STREAM_SEND_BUFFER_BYTES, EndReason, StreamData, StreamEnded, StreamOpened
from tp_net.protocol.traffic_shaping import RESPONSE_SHAPING_OFF, ResponseCadence, ResponseShaping
from tp_net.trio import message_trace

log = logging.getLogger(__name__)

# Bytes of unfinished requests held for one circuit, and for all circuits together.
REQUEST_BUFFER_BYTES_PER_CIRCUIT_MAX = 4 * REQUEST_BYTES_MAX
REQUEST_BUFFER_BYTES_MAX = 64 * REQUEST_BYTES_MAX
# Responses of one circuit that pad after their END at one time (tp_net.protocol.traffic_shaping); past it a
# response goes unpadded, so that a client cannot make a node send padding for more requests than it has open.
PADDING_RESPONSES_PER_CIRCUIT_MAX = 4

ServiceHandler = Callable[[Mapping[str, Any]], AsyncGenerator[Mapping[str, Any], None]]
StreamKey = tuple[CircuitRef, int]


@dataclass(frozen=True, kw_only=True)
class StreamPort:
    """What the host needs from the circuit layer (HopCore plus the runtime that applies outputs)."""

    send: Callable[[CircuitRef, int, bytes], None]
    end: Callable[[CircuitRef, int, EndReason], None]
    destroy: Callable[[CircuitRef], None]  # the circuit broke the protocol: tear it down
    consumed: Callable[[CircuitRef, int], None]
    queued_bytes: Callable[[CircuitRef, int], int | None]
    wait_for_progress: Callable[[], Any]
    drop: Callable[[CircuitRef], bool]  # one dummy (DROP) cell to the client; False: the circuit is gone


@dataclass(eq=False)
class _Request:
    service: str
    reader: RequestReader = field(default_factory=RequestReader)
    scope: trio.CancelScope | None = None


class ServiceHost:
    def __init__(
        self,
        services: Mapping[str, ServiceHandler],
        port: StreamPort,
        shaping: ResponseShaping = RESPONSE_SHAPING_OFF,
    ) -> None:
        self.services = dict(services)
        self._port = port
        self._shaping = shaping
        self._padding: dict[CircuitRef, int] = {}  # responses padding after their END, per circuit
        self._requests: dict[StreamKey, _Request] = {}
        # Bytes held by unfinished requests (RequestReader buffers), per circuit and in all.
        self._buffered_per_circuit: dict[CircuitRef, int] = {}
        self._buffered_bytes = 0
        self._nursery: trio.Nursery | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes held by requests whose stream has not ended yet."""
        return self._buffered_bytes

    @property
    def active_requests(self) -> int:
        return sum(1 for request in self._requests.values() if request.scope is not None)

    async def run(self) -> None:
        """Hosts handler tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await trio.sleep_forever()

    def on_event(self, event: ServiceEvent) -> None:
        key = (event.circuit, event.event.stream_id)
        stream_event = event.event
        if isinstance(stream_event, StreamOpened):
            self._forget(key)
            self._requests[key] = _Request(stream_event.service)
        elif isinstance(stream_event, StreamData):
            self._request_data(key, stream_event.data)
        elif isinstance(stream_event, StreamEnded):
            self._request_ended(key, stream_event.reason)

    def _request_data(self, key: StreamKey, data: bytes) -> None:
        request = self._requests.get(key)
        if request is None or request.scope is not None:
            return
        circuit = key[0]
        if self._buffered_per_circuit.get(circuit, 0) + len(data) > REQUEST_BUFFER_BYTES_PER_CIRCUIT_MAX:
            self._abort(key, EndReason.OVERLOADED)
            return
        while self._buffered_bytes + len(data) > REQUEST_BUFFER_BYTES_MAX:
            # Some request holds bytes (a cell's data alone never exceeds the bound), so this ends.
            largest = max(self._requests, key=lambda k: self._requests[k].reader.buffered_bytes)
            log.info("unfinished requests over their bound: refusing the largest")
            self._abort(largest, EndReason.OVERLOADED)
            if largest == key:
                return
        try:
            request.reader.feed(data)
        except RemoteProtocolError:
            # More than one message, or more than a request may be: no honest client sends that.
            self._forget(key)
            self._port.destroy(circuit)
            return
        self._count_buffered(circuit, len(data))
        self._port.consumed(*key)

    def _count_buffered(self, circuit: CircuitRef, delta: int) -> None:
        self._buffered_bytes += delta
        held = self._buffered_per_circuit.get(circuit, 0) + delta
        if held:
            self._buffered_per_circuit[circuit] = held
        else:
            self._buffered_per_circuit.pop(circuit, None)

    def _forget(self, key: StreamKey) -> None:
        """Drop a request, and with it the count of the bytes it held."""
        request = self._requests.pop(key, None)
        if request is not None:
            self._count_buffered(key[0], -request.reader.buffered_bytes)

    def _request_ended(self, key: StreamKey, reason: int) -> None:
        request = self._requests.get(key)
        if request is None:
            return
        if reason != EndReason.DONE:
            if request.scope is not None:
                request.scope.cancel()
            self._forget(key)
            return
        if request.scope is not None:
            return
        try:
            document = request.reader.document()
        except RemoteProtocolError:
            self._abort(key, EndReason.BAD_REQUEST)
            return
        if self._nursery is None:
            self._abort(key, EndReason.INTERNAL)
            return
        self._count_buffered(key[0], -request.reader.buffered_bytes)
        request.reader = RequestReader()  # the bytes are decoded: let them go
        request.scope = trio.CancelScope()
        message_trace.mark("svc_request")
        self._nursery.start_soon(self._serve, key, request, document)

    def _abort(self, key: StreamKey, reason: EndReason) -> None:
        self._forget(key)
        self._port.end(key[0], key[1], reason)

    async def _serve(self, key: StreamKey, request: _Request, document: Any) -> None:
        assert request.scope is not None
        with request.scope:
            try:
                await self._respond(key, request.service, document)
            except Exception as exc:  # a handler's bug must not take the relay or node down
                self._port.send(key[0], key[1], _failure_message(request.service, exc))
            self._port.end(key[0], key[1], EndReason.DONE)
        if self._requests.get(key) is request:
            self._forget(key)

    async def _respond(self, key: StreamKey, service: str, document: Any) -> None:
        handler = self.services[service]
        if not isinstance(document, dict):
            raise ServiceError("invalid_request", "a request must be a map")
        if self._shaping.tick_s is not None:
            await self._respond_on_cadence(key, service, document, self._shaping.tick_s)
            return
        message_trace.mark("svc_handler")
        async with aclosing(handler(document)) as messages:
            async for message in messages:
                message_trace.mark("svc_message")
                self._port.send(key[0], key[1], encode_message(message))
                if not await self._wait_for_window(key):
                    return

    async def _respond_on_cadence(self, key: StreamKey, service: str, document: Any, tick_s: float) -> None:
        """The response leaves on ticks (tp_net.protocol.traffic_shaping): END after the real data, then
        padding."""
        cadence = ResponseCadence(self._shaping)
        tick_now = trio.Event()  # cadence.tick_now became true

        async def produce() -> None:
            try:
                async with aclosing(self.services[service](document)) as messages:
                    async for message in messages:
                        cadence.add(encode_message(message))
                        if cadence.tick_now:
                            tick_now.set()
                        # Backpressure as in _respond: the ticks drain the buffer as the window allows.
                        while cadence.buffered_bytes > STREAM_SEND_BUFFER_BYTES:
                            await trio.sleep(tick_s)
            except Exception as exc:  # as in _serve: the error is the response's last message
                cadence.add(_failure_message(service, exc))
            cadence.finish()

        due = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            while True:
                due += tick_s
                with trio.move_on_at(due):
                    await tick_now.wait()
                if cadence.tick_now:
                    due = trio.current_time()  # the next ticks count from this one
                if tick_now.is_set():
                    tick_now = trio.Event()  # used: `produce` sets no other (the first data has left)
                tick = cadence.tick()
                if tick.data:
                    self._port.send(key[0], key[1], tick.data)
                if tick.end_stream:
                    self._port.end(key[0], key[1], EndReason.DONE)
                    break
                if tick.data and not await self._wait_for_window(key):
                    nursery.cancel_scope.cancel()
                    return
        await self._pad(key, cadence, due, tick_s)

    async def _pad(self, key: StreamKey, cadence: ResponseCadence, due: float, tick_s: float) -> None:
        """After END: DROPs on the ticks until the bucket is full (or the circuit is gone). The stream is
        over, so its request is forgotten now; at most PADDING_RESPONSES_PER_CIRCUIT_MAX pad at a time."""
        circuit = key[0]
        padding = self._padding.get(circuit, 0)
        if cadence.done or padding >= PADDING_RESPONSES_PER_CIRCUIT_MAX:
            return
        self._forget(key)
        self._padding[circuit] = padding + 1
        try:
            while not cadence.done:
                due += tick_s
                await trio.sleep_until(due)
                for _ in range(cadence.tick().dummy_cells):
                    if not self._port.drop(circuit):
                        return
        finally:
            self._padding[circuit] -= 1
            if not self._padding[circuit]:
                del self._padding[circuit]

    async def _wait_for_window(self, key: StreamKey) -> bool:
        """Wait until the stream's queue is below its bound; False when the stream is gone."""
        while True:
            queued = self._port.queued_bytes(*key)
            if queued is None:
                return False
            if queued <= STREAM_SEND_BUFFER_BYTES:
                return True
            await self._port.wait_for_progress()


def _failure_message(service: str, exc: Exception) -> bytes:
    """The error message a client gets for a request its service refused (ServiceError) or failed on."""
    if isinstance(exc, ServiceError):
        return encode_message({"error": {"code": exc.code, "message": str(exc)}})
    # The class name only: a traceback or message could quote the request.
    log.error("service %r failed: %s", service, exc.__class__.__name__)
    return encode_message({"error": {"code": "internal_error", "message": "the service failed"}})
