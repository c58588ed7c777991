"""Invariant checkers, run throughout a simulation (TigerBeetle VOPR style).

- every request ends, with an answer or a clean error (a TokenPlaceError, a refusal, a timeout);
- no relay ever holds plaintext: each request's prompt carries a unique sentinel, and every cell body a relay
  holds after removing its onion layer (HopCore's `observe` hook, on honest and hostile relays alike), every
  message a relay receives on a link, every log record (any machine, any level the run captures) and every
  relay's own store of what it saw is scanned for the sentinels' common marker;
- no circuit has two relays of one declared family (or one relay twice);
- buffers stay under their bounds (tp_net.trio.hop_runtime's per-circuit and per-link cell queues).

The first violation stops the run: the checker cancels the world, and the runner raises SimulationViolation
with the seed and the event, which the CLI prints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import trio

from tp_net.protocol.descriptors import RelayDescriptor
from tp_net.trio.hop_runtime import CIRCUIT_QUEUE_CELLS_MAX, LINK_QUEUE_CELLS_MAX, HopRuntime

SENTINEL_MARK = "tp-sim-sentinel"
SENTINEL_MARK_BYTES = SENTINEL_MARK.encode()


def sentinel(seed: int, request_index: int) -> str:
    """The unique text a request's prompt carries (its marker is what scanners look for)."""
    return f"{SENTINEL_MARK}-{seed}-{request_index}"


class SimulationViolation(Exception):
    """An invariant broke: `seed` reproduces the run, `event` says what happened (and when)."""

    def __init__(self, seed: int, time_s: float, event: str) -> None:
        super().__init__(f"invariant violated at t={time_s:.3f} s (seed {seed}): {event}")
        self.seed = seed
        self.time_s = time_s
        self.event = event


class InvariantChecker:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.violation: SimulationViolation | None = None
        self._stop: Callable[[], None] = lambda: None
        self.checks = 0
        self.decrypted_cells = 0  # cell bodies relays decrypted and handed to scan_decrypted

    def arm(self, stop: Callable[[], None]) -> None:
        """`stop` cancels the world (called once, on the first violation)."""
        self._stop = stop

    def fail(self, event: str) -> None:
        if self.violation is None:
            self.violation = SimulationViolation(self.seed, _now(), event)
            self._stop()

    # --- plaintext --------------------------------------------------------------------------------

    def scan_received(self, machine_name: str, kind: str, message: bytes) -> None:
        self.checks += 1
        if kind in ("relay", "authority") and SENTINEL_MARK_BYTES in message:
            self.fail(f"relay {machine_name} received plaintext of a request on a link")

    def scan_decrypted(self, machine_name: str, body: bytes) -> None:
        """A cell body a relay holds with its own onion layer removed (or received from the next hop)."""
        self.checks += 1
        self.decrypted_cells += 1
        if SENTINEL_MARK_BYTES in body:
            self.fail(f"relay {machine_name} decrypted plaintext of a request from a cell")

    def scan_stored(self, machine_name: str, data: bytes) -> None:
        self.checks += 1
        if SENTINEL_MARK_BYTES in data:
            self.fail(f"relay {machine_name} stored plaintext of a request")

    # --- paths ------------------------------------------------------------------------------------

    def check_path(self, request_index: int, path: Sequence[RelayDescriptor]) -> None:
        self.checks += 1
        ids = [relay.node_id for relay in path]
        if len(set(ids)) != len(ids):
            self.fail(f"request {request_index}: a circuit uses one relay twice")
        families = [relay.family for relay in path if relay.family]
        if len(set(families)) != len(families):
            self.fail(f"request {request_index}: a circuit has two hops in family {_repeated(families)!r}")

    # --- buffers ----------------------------------------------------------------------------------

    def check_buffers(self, hops: Iterable[tuple[str, HopRuntime]]) -> None:
        for name, hop in hops:
            self.checks += 1
            for link in hop.link_stats():
                # The link bound is enforced right after an enqueue (shedding the largest circuit), so at
                # rest a link holds at most the bound; each circuit at most its own.
                if link.queued_cells > LINK_QUEUE_CELLS_MAX:
                    self.fail(f"{name}: link {link.link_id} holds {link.queued_cells} cells")
                if link.largest_circuit_cells > CIRCUIT_QUEUE_CELLS_MAX:
                    self.fail(
                        f"{name}: circuit on link {link.link_id} holds {link.largest_circuit_cells} cells"
                    )

    # --- requests ---------------------------------------------------------------------------------

    def request_ended(self, request_index: int, duration_s: float, limit_s: float) -> None:
        self.checks += 1
        if duration_s > limit_s:
            self.fail(f"request {request_index} took {duration_s:.1f} s, past its {limit_s:.0f} s limit")

    def unclean_error(self, request_index: int, exc: BaseException) -> None:
        self.fail(f"request {request_index} ended with an unclean error {exc.__class__.__name__}")

    def all_ended(self, unfinished: Iterable[int]) -> None:
        left = sorted(unfinished)
        if left:
            self.fail(f"{len(left)} requests never ended (first: request {left[0]})")


class SentinelLogHandler(logging.Handler):
    """Fails the run when any log record carries a request's sentinel."""

    def __init__(self, checker: InvariantChecker) -> None:
        super().__init__(logging.DEBUG)
        self._checker = checker

    def emit(self, record: logging.LogRecord) -> None:
        self._checker.checks += 1
        if SENTINEL_MARK in record.getMessage():
            self._checker.fail(f"a log record of {record.name} carries plaintext of a request")


def _repeated(items: Sequence[str]) -> str:
    return next(item for item in items if items.count(item) > 1)


def _now() -> float:
    try:
        return trio.current_time()
    except RuntimeError:
        return float("nan")
