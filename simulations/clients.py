"""Clients: the workload (what each request asks) around the real gateway.

Each client is a machine running the gateway's own `tp_gateway.overlay.Overlay` on the simulated network
(its dialer, trio's virtual clock, the machine's skewed wall clock, its own seeded rng): node choice, paths,
guards, the circuit pool, failover, the avoid set and guards down are the gateway's, not copies. A client
only says what to ask and records how it went (from the Overlay's RequestTrace). All clients share one
DirectoryFeed: one real fetch and verification of each document
(tp_net.trio.directory_client.fetch_directory), handed to every Overlay with `use_directory`, stands for every
gateway fetching the same bytes, which at 10,000 machines would otherwise be most of the run (documented in
docs/SIMULATION.md).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import trio

from simulations.config import Scenario
from simulations.invariants import InvariantChecker, sentinel
from simulations.netsim import Machine, SimNetwork
from tp_crypto.errors import TokenPlaceError
from tp_gateway.overlay import Overlay, OverlayError
from tp_gateway.request_trace import RequestTrace
from tp_net.protocol.bootstrap_config import Bootstrap
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.directory import Directory, NewestDocument, Trust
from tp_net.trio.directory_client import fetch_directory
from tp_node.engine import FAKE_MODEL_ID

FEED_REFRESH_FRACTION = 8  # the feed looks for a new document every period_s / this
FEED_RETRY_S = 5.0


@dataclass
class RequestRecord:
    index: int
    client: str
    start_s: float
    outcome: str = ""  # "ok", "timeout", or the Overlay's error code
    ttft_s: float | None = None
    total_s: float | None = None
    circuit_s: float | None = None  # when the last attempt had its circuit, after the start
    pooled: bool = False  # that circuit was already built (the client's pool)
    node: str = ""
    guard: bytes = b""
    middle: bytes = b""
    last_relay: bytes = b""
    attempts: int = 0
    failed_builds: int = 0  # attempts that got no circuit

    @property
    def ended(self) -> bool:
        return bool(self.outcome)

    @property
    def build_s(self) -> float | None:
        """Time to a circuit built for this request (None: none was, or it came from the pool)."""
        return None if self.pooled else self.circuit_s


class DirectoryFeed:
    """The newest verified directory, fetched from the authorities over the simulated network and handed
    to every subscriber (the clients' Overlays) when it is newer than the last."""

    def __init__(
        self,
        machine: Machine,
        network: SimNetwork,
        sources: list[HopInfo],
        *,
        trust: Trust,
        period_s: int,
        rng: random.Random,
    ) -> None:
        self.machine = machine
        self._dialer = network.dialer(machine)
        self._sources = sources
        self._trust = trust
        self._period_s = period_s
        self._rng = rng
        self._held = NewestDocument(trust)  # the one freshness rule (tp_net.protocol.directory)
        self.directory: Directory | None = None
        self.subscribers: list[Callable[[Directory], None]] = []
        self.fetches = 0
        self.failures = 0

    async def run(self) -> None:
        while True:
            try:
                directory, _ = await fetch_directory(
                    self._dialer,
                    self._sources,
                    self._trust,
                    self._rng,
                    self.machine.wall_clock(),
                    held=self._held,
                )
            except TokenPlaceError:
                self.failures += 1
            else:
                self.fetches += 1
                if directory is not self.directory:  # the held document changed: a newer one
                    self.directory = directory
                    for subscriber in self.subscribers:
                        subscriber(directory)
            # Until there is a document, look often: a starting network's first one comes mid-period.
            wait_s = self._period_s / FEED_REFRESH_FRACTION
            await trio.sleep(wait_s if self.directory is not None else min(wait_s, FEED_RETRY_S))


class SimClient:
    """A machine running the real gateway Overlay; `run` keeps its pool, `request` sends one request."""

    def __init__(
        self,
        machine: Machine,
        network: SimNetwork,
        feed: DirectoryFeed,
        bootstrap: Bootstrap,
        rng: random.Random,
        *,
        pool_nodes_max: int,
    ) -> None:
        self.machine = machine
        self._feed = feed
        self.overlay = Overlay(
            bootstrap,
            network.dialer(machine),
            rng=rng,
            monotonic=trio.current_time,
            wall_clock=machine.wall_clock,
            pool_nodes_max=pool_nodes_max,
        )

    async def run(self) -> None:
        """The gateway starts: it takes the feed's directories from now on and keeps its pool."""
        self._feed.subscribers.append(self.overlay.use_directory)
        if self._feed.directory is not None:
            self.overlay.use_directory(self._feed.directory)
        await self.overlay.run_pool()

    async def request(
        self, record: RequestRecord, scenario: Scenario, seed: int, checker: InvariantChecker
    ) -> None:
        """One request to its end: the record says how it ended. Only the Overlay's errors and timeouts are
        clean; anything else is reported to the checker."""
        trace = RequestTrace()
        try:
            with trio.move_on_after(scenario.request_timeout_s) as scope:
                await self._ask(record, scenario, seed, trace)
            if scope.cancelled_caught:
                record.outcome = "timeout"
        except OverlayError as exc:
            record.outcome = exc.code
        except Exception as exc:
            record.outcome = "unclean"
            checker.unclean_error(record.index, exc)
        finally:
            self._note(record, trace, checker)
        record.total_s = trio.current_time() - record.start_s
        checker.request_ended(record.index, record.total_s, scenario.request_timeout_s + 1.0)

    async def _ask(self, record: RequestRecord, scenario: Scenario, seed: int, trace: RequestTrace) -> None:
        document = {
            "model": FAKE_MODEL_ID,
            "messages": [{"role": "user", "content": f"{sentinel(seed, record.index)} tell me a story"}],
            "max_tokens": scenario.max_tokens,
        }
        async for chunk in self.overlay.generate(FAKE_MODEL_ID, document, trace):
            if record.ttft_s is None:
                record.ttft_s = trio.current_time() - record.start_s
            if "finish_reason" in chunk:
                record.outcome = "ok"
        if not record.outcome:
            record.outcome = "truncated"

    def _note(self, record: RequestRecord, trace: RequestTrace, checker: InvariantChecker) -> None:
        """What the Overlay did for the request, into its record; the path goes to the checker."""
        record.attempts, record.failed_builds = trace.attempts, trace.circuit_failures
        record.node = trace.node_id.hex()[:16]
        if trace.circuit_at is None or len(trace.path) != 3:
            return
        record.circuit_s = trace.circuit_at - record.start_s
        record.pooled = trace.pooled
        record.guard, record.middle, record.last_relay = trace.path
        relays = self.overlay.directory.relays if self.overlay.directory is not None else {}
        checker.check_path(record.index, [relays[r] for r in trace.path if r in relays])
