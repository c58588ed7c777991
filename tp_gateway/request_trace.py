"""What one request went through inside the gateway's Overlay, for whoever asks (the simulator's records,
tests): counts, times and relay ids, never content, so it is safe to keep or report."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RequestTrace:
    attempts: int = 0  # nodes tried (at most tp_gateway.overlay.REQUEST_ATTEMPTS_MAX)
    circuit_failures: int = 0  # attempts that got no circuit (no path, guard down, build failed or slow)
    node_id: bytes = b""  # the node of the latest attempt
    path: tuple[bytes, ...] = ()  # relay ids of the latest attempt's circuit, guard first
    circuit_at: float | None = None  # when (Overlay's monotonic clock) the latest attempt had its circuit
    pooled: bool = False  # the latest attempt's circuit was already built (the pool), not built for it

    def attempt(self, node_id: bytes) -> None:
        self.attempts += 1
        self.node_id = node_id
        self.path, self.circuit_at, self.pooled = (), None, False
