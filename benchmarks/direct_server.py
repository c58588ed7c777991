"""The direct baseline for the gateway benchmarks: the gateway's own HTTP app (hypercorn, QuartTrio, the
OpenAI translation and SSE framing) serving a FakeEngine in the same process, with no overlay.

    .venv/bin/python -m benchmarks.direct_server --listen 127.0.0.1:0 [--fake-token-delay-ms 0.5]

Measured against it, the gateway's extra time is the overlay alone (circuit, three relays, the node, onion
crypto, the extra processes), not HTTP or JSON, which any local OpenAI-compatible server also pays. It
announces {"role": "direct", "base_url": ...} on stdout like the other roles and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import trio

from tp_cli.common import host_port, run_role
from tp_cli.launch import announce
from tp_gateway.app import create_app
from tp_gateway.cli import serve_gateway
from tp_gateway.inference_overlay import WithoutSealing
from tp_gateway.isolation import Isolation
from tp_gateway.overlay import OverlayError
from tp_node.engine import EngineError, FakeEngine


class _NoStats:
    circuits_built = 0
    circuit_build_failures = 0
    circuit_build_seconds = 0.0


class DirectEngine(WithoutSealing):
    """What the gateway app asks of its Overlay, answered by an engine in this process."""

    pooled_circuits = 0

    def __init__(self, engine: FakeEngine) -> None:
        self._engine = engine
        self._created = int(time.time())
        self.stats = _NoStats()
        self.ready = trio.Event()
        self.ready.set()

    def model_ids(self) -> list[str]:
        return [model.model_id for model in self._engine.models()]

    def model_created(self, model_id: str) -> int:
        return self._created

    def model_identity(self, model_id: str) -> None:
        return None  # no directory, so no file identity to show

    async def generate(
        self, model_id: str, document: Mapping[str, Any], *, isolation: Isolation = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        try:
            async for chunk in self._engine.generate(document):
                yield chunk
        except EngineError as exc:
            raise OverlayError(exc.code, str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.direct_server", description=__doc__)
    parser.add_argument("--listen", type=host_port, default=("127.0.0.1", 0))
    parser.add_argument("--fake-token-delay-ms", type=float, default=0.0)
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return run_role(_serve, parser.parse_args(argv))


async def _serve(args: argparse.Namespace, nursery: trio.Nursery) -> None:
    engine = DirectEngine(FakeEngine(token_delay_s=args.fake_token_delay_ms / 1000))
    app = create_app(engine)
    base_url = await nursery.start(serve_gateway, app, *args.listen)
    announce({"role": "direct", "base_url": base_url})


if __name__ == "__main__":
    sys.exit(main())
