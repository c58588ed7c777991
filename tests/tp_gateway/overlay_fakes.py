"""What the gateway tests' fake overlays share; each fake satisfies tp_gateway.inference_overlay's
InferenceOverlay (handed to create_app without a cast, so mypy checks it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeStats:
    """The counters /metrics reads, never counting."""

    circuits_built: int = 0
    circuit_build_failures: int = 0
