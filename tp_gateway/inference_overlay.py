"""What the gateway app (tp_gateway.app and its sealed routes) needs from an overlay, as a typing.Protocol:
tp_gateway.overlay.Overlay is the real one; benchmarks/direct_server.py and the tests' fakes are others,
and mypy checks each against it where it is handed to create_app."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any, Protocol

import trio

from tp_gateway.isolation import Isolation
from tp_gateway.overlay import OverlayError
from tp_net.protocol.bootstrap_config import Bootstrap
from tp_net.protocol.directory import SignedDocument
from tp_net.protocol.model_identity import ModelIdentity


class OverlayStats(Protocol):
    """The counters /metrics shows."""

    @property
    def circuits_built(self) -> int: ...

    @property
    def circuit_build_failures(self) -> int: ...


class InferenceOverlay(Protocol):
    @property
    def ready(self) -> trio.Event:
        """Set once a directory is held (until then /health says "starting")."""
        ...

    @property
    def stats(self) -> OverlayStats: ...

    @property
    def pooled_circuits(self) -> int: ...

    @property
    def bootstrap(self) -> Bootstrap:
        """The network's bootstrap (GET /sealed/bootstrap)."""
        ...

    @property
    def signed_document(self) -> SignedDocument | None:
        """The directory's bytes (GET /sealed/directory); None before the first."""
        ...

    def model_ids(self) -> list[str]: ...

    def model_created(self, model_id: str) -> int: ...

    def model_identity(self, model_id: str) -> ModelIdentity | None: ...

    def generate(
        self, model_id: str, document: Mapping[str, Any], *, isolation: Isolation = ...
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The node's chunk documents; OverlayError when it cannot be served. Requests of different
        `isolation` keys never share a circuit (tp_gateway.isolation)."""
        ...

    def forward_sealed(self, node_id: bytes, sealed: bytes) -> AsyncGenerator[bytes, None]:
        """A sealed request's chunks from the node it names (PROTOCOL.md 9)."""
        ...


class WithoutSealing:
    """The sealed part of InferenceOverlay for an overlay that carries no sealed request (a network of
    one process: no directory, no node keys): the sealed routes answer 503 no_directory or 404."""

    bootstrap = Bootstrap("none", 1, 300, ())
    signed_document: SignedDocument | None = None

    async def forward_sealed(self, node_id: bytes, sealed: bytes) -> AsyncGenerator[bytes, None]:
        raise OverlayError("node_not_found", "this overlay carries no sealed request")
        yield b""  # an async generator, like the real one
