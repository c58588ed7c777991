"""The GPU node's "sealed" service (PROTOCOL.md section 9): opens a sealed request, runs it like an
"inference" request, and seals every response message, so the circuit's client (a gateway that is not the
user's) carries only ciphertext.

Request message: `{"sealed": bytes}`. Response messages: `{"sealed": bytes}`, one sealed chunk each, the last
one the final chunk. A request that does not open (wrong node, unknown key, broken seal, replayed, stale,
not padded) is refused in the clear with the SealedError's code: the gateway learns that it failed and why,
never anything about the content. Once it opened, every answer, errors included, is sealed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from typing import Any

from tp_net.protocol.errors import ServiceError
from tp_net.protocol.sealed import ReplayCache, SealedError, SealingKey, open_request
from tp_net.trio.services import ServiceHandler

log = logging.getLogger(__name__)


class SealedService:
    def __init__(
        self,
        node_id: bytes,
        keys: Callable[[], list[SealingKey]],
        inference: ServiceHandler,
        wall_clock: Callable[[], float],
        replay: ReplayCache | None = None,
    ) -> None:
        self._node_id = node_id
        self._keys = keys
        self._inference = inference
        self._wall_clock = wall_clock
        # Nothing sent before this process started: a restarted node has lost the nonces it saw.
        self.replay = ReplayCache(started=wall_clock()) if replay is None else replay

    async def handle(self, request: Mapping[str, Any]) -> AsyncGenerator[Mapping[str, Any], None]:
        data = request.get("sealed")
        if set(request) != {"sealed"} or not isinstance(data, bytes):
            raise ServiceError("invalid_request", "a sealed request is {'sealed': bytes}")
        try:
            opened = open_request(data, self._node_id, self._keys(), self.replay, self._wall_clock())
        except SealedError as exc:
            log.info("sealed request refused: %s", exc.code)
            raise ServiceError(f"sealed_{exc.code}", str(exc)) from None
        sealer = opened.sealer
        async for message in _sealed_answer(self._inference, opened.document):
            yield {"sealed": sealer.seal(message)}
        yield {"sealed": sealer.seal_final()}


async def _sealed_answer(inference: ServiceHandler, document: Any) -> AsyncGenerator[Mapping[str, Any], None]:
    """The inference service's messages; its refusals and failures become error messages (to be sealed)."""
    if not isinstance(document, dict):
        yield {"error": {"code": "invalid_request", "message": "a request must be a map"}}
        return
    try:
        async with aclosing(inference(document)) as messages:
            async for message in messages:
                yield message
    except ServiceError as exc:
        yield {"error": {"code": exc.code, "message": str(exc)}}
    except Exception as exc:  # as tp_net.trio.services: the class name only, never the message
        log.error("sealed inference failed: %s", exc.__class__.__name__)  # noqa: TRY400
        yield {"error": {"code": "internal_error", "message": "the service failed"}}
