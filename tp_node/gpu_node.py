"""The GPU node role: keeps outbound links to its home relays and serves inference streams on circuits.

A node never accepts connections: it dials each home relay, proves its identity, and keeps the link up with
exponential backoff. Circuits end at the node (it is the last hop, with its own onion layer). Each stream
to the "inference" service carries one request message; the node answers with chunk messages produced by
its engine, pausing whenever the stream's window is full, and stops generating when the stream is aborted
or the circuit dies.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import trio

from tp_crypto.identity import Identity, short_id
from tp_net.circuit_hop import CircuitRef, HopCore, ServiceEvent
from tp_net.errors import RemoteProtocolError, TokenPlaceError
from tp_net.link_trio import dial_link
from tp_net.messages import MessageReader, encode_message
from tp_net.streams import EndReason, StreamData, StreamEnded, StreamOpened
from tp_net.transport import Dialer
from tp_node.engine import Engine, EngineError
from tp_node.hop_runtime import HopRuntime

log = logging.getLogger(__name__)

INFERENCE_SERVICE = "inference"
REQUEST_BYTES_MAX = 1024 * 1024
# Response bytes a stream may queue beyond its flow-control window before generation pauses.
STREAM_SEND_BUFFER_BYTES = 32 * 1024
RECONNECT_BACKOFF_MIN_S = 0.25
RECONNECT_BACKOFF_MAX_S = 30.0


@dataclass(frozen=True)
class HomeRelay:
    node_id: bytes
    address: str


@dataclass(eq=False)
class _Request:
    reader: MessageReader = field(default_factory=lambda: MessageReader(REQUEST_BYTES_MAX))
    documents: list[Any] = field(default_factory=list)
    received_bytes: int = 0
    scope: trio.CancelScope | None = None


class GpuNode(HopRuntime):
    def __init__(
        self,
        identity: Identity,
        onion_keys: list[bytes],
        *,
        home_relays: Sequence[HomeRelay],
        engine: Engine,
        dialer: Dialer,
        rng: random.Random,
    ) -> None:
        core = HopCore(onion_keys, rng=rng, can_extend=False, services=(INFERENCE_SERVICE,))
        super().__init__(identity, core)
        self.home_relays = list(home_relays)
        self._engine = engine
        self._dialer = dialer
        self._rng = rng
        self._requests: dict[tuple[CircuitRef, int], _Request] = {}
        self._nursery: trio.Nursery | None = None
        self.linked = trio.Event()

    async def run(self) -> None:
        """Keep links to every home relay and serve circuits until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.expire_forever)
            for relay in self.home_relays:
                nursery.start_soon(self._keep_linked, relay)

    async def _keep_linked(self, relay: HomeRelay) -> None:
        backoff = RECONNECT_BACKOFF_MIN_S
        while True:
            try:
                link = await dial_link(
                    self._dialer, relay.address, expected_peer_id=relay.node_id, identity=self.identity
                )
            except TokenPlaceError as exc:
                log.info("home relay %s unreachable (%s)", short_id(relay.node_id), exc.__class__.__name__)
            else:
                backoff = RECONNECT_BACKOFF_MIN_S
                self.linked.set()
                await self.run_link(link, we_dialed=True)
                log.info("link to home relay %s closed", short_id(relay.node_id))
            # Jitter spreads reconnects of many nodes after a relay restarts.
            await trio.sleep(backoff * self._rng.uniform(0.5, 1.5))
            backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX_S)

    def on_service_event(self, event: ServiceEvent) -> None:
        key = (event.circuit, event.event.stream_id)
        stream_event = event.event
        if isinstance(stream_event, StreamOpened):
            self._requests[key] = _Request()
        elif isinstance(stream_event, StreamData):
            self._request_data(key, stream_event.data)
        elif isinstance(stream_event, StreamEnded):
            self._request_ended(key, stream_event.reason)

    def _request_data(self, key: tuple[CircuitRef, int], data: bytes) -> None:
        request = self._requests.get(key)
        if request is None or request.scope is not None:
            return
        try:
            request.documents += request.reader.feed(data)
        except RemoteProtocolError:
            self._abort(key, EndReason.BAD_REQUEST)
            return
        self.apply(self.core.stream_consumed(key[0], key[1]))

    def _request_ended(self, key: tuple[CircuitRef, int], reason: int) -> None:
        request = self._requests.get(key)
        if request is None:
            return
        if reason != EndReason.DONE:
            if request.scope is not None:
                request.scope.cancel()
            del self._requests[key]
            return
        if len(request.documents) != 1 or request.reader.pending_bytes:
            self._abort(key, EndReason.BAD_REQUEST)
            return
        request.scope = trio.CancelScope()
        assert self._nursery is not None
        self._nursery.start_soon(self._serve, key, request.documents[0], request.scope)

    def _abort(self, key: tuple[CircuitRef, int], reason: EndReason) -> None:
        self._requests.pop(key, None)
        self.apply(self.core.stream_end(key[0], key[1], reason))

    async def _serve(self, key: tuple[CircuitRef, int], document: Any, scope: trio.CancelScope) -> None:
        ref, stream_id = key
        with scope:
            try:
                await self._generate(ref, stream_id, document)
            except EngineError as exc:
                error = encode_message({"error": {"code": exc.code, "message": str(exc)}})
                self.apply(self.core.stream_send(ref, stream_id, error))
            self.apply(self.core.stream_end(ref, stream_id, EndReason.DONE))
        self._requests.pop(key, None)

    async def _generate(self, ref: CircuitRef, stream_id: int, document: Any) -> None:
        if not isinstance(document, dict):
            raise EngineError("invalid_request", "a request must be a map")
        async with aclosing(self._engine.generate(document)) as chunks:
            async for chunk in chunks:
                self.apply(self.core.stream_send(ref, stream_id, encode_message(chunk)))
                if not await self._wait_for_window(ref, stream_id):
                    return

    async def _wait_for_window(self, ref: CircuitRef, stream_id: int) -> bool:
        """Wait until the stream's queue is below its bound; False when the stream is gone."""
        while True:
            queued = self.core.stream_queued_bytes(ref, stream_id)
            if queued is None:
                return False
            if queued <= STREAM_SEND_BUFFER_BYTES:
                return True
            await self.wait_for_progress()
