"""Light clients: what a gateway does for one request, with the real client library.

A client is an address (its machine) and its pinned guards. For each request it takes the current verified
directory, picks a node for the model and a diverse path (tp_net.path_selection, its own seeded rng),
links to its guard (tp_net.client.ClientLink), builds the circuit, sends the request on an "inference"
stream and reads the answer. All clients share one DirectoryFeed: one real fetch and verification of each
document (tp_net.directory_client.fetch_directory) stands for every gateway fetching the same bytes, which
at 10,000 machines would otherwise be most of the run (documented in docs/SIMULATION.md).
"""

from __future__ import annotations

import random
from contextlib import suppress
from dataclasses import dataclass

import trio

from simulations.config import Scenario
from simulations.invariants import InvariantChecker, sentinel
from simulations.netsim import Machine, SimNetwork
from tp_crypto.errors import TokenPlaceError
from tp_gateway.overlay import GUARD_DOWN_S
from tp_net.circuit_client import HopInfo
from tp_net.client import ClientLink
from tp_net.descriptors import NodeDescriptor, RelayDescriptor
from tp_net.directory import Directory, Trust
from tp_net.directory_client import fetch_directory
from tp_net.errors import DialError
from tp_net.inference_contract import INFERENCE_SERVICE
from tp_net.path_selection import (
    GUARDS_PER_CLIENT,
    STRICT_RULES,
    PathError,
    choose_guards,
    choose_node,
    choose_path,
    circuit_hops,
)
from tp_node.engine import FAKE_MODEL_ID

FEED_REFRESH_FRACTION = 8  # the feed looks for a new document every period_s / this
FEED_RETRY_S = 5.0


@dataclass
class RequestRecord:
    index: int
    client: str
    start_s: float
    outcome: str = ""  # "ok", or an error name
    ttft_s: float | None = None
    total_s: float | None = None
    build_s: float | None = None
    node: str = ""
    guard: bytes = b""
    middle: bytes = b""
    last_relay: bytes = b""
    attempts: int = 0
    failed_builds: int = 0  # attempts whose circuit never got built

    @property
    def ended(self) -> bool:
        return bool(self.outcome)


class DirectoryFeed:
    """The newest verified directory, fetched from the authorities over the simulated network."""

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
        self.directory: Directory | None = None
        self.fetches = 0
        self.failures = 0

    async def run(self) -> None:
        while True:
            try:
                directory, _ = await fetch_directory(
                    self._dialer, self._sources, self._trust, self._rng, self.machine.wall_clock()
                )
            except TokenPlaceError:
                self.failures += 1
            else:
                self.fetches += 1
                if self.directory is None or directory.valid_after > self.directory.valid_after:
                    self.directory = directory
            # Until there is a document, look often: a starting network's first one comes mid-period.
            wait_s = self._period_s / FEED_REFRESH_FRACTION
            await trio.sleep(wait_s if self.directory is not None else min(wait_s, FEED_RETRY_S))


class SimClient:
    def __init__(
        self, machine: Machine, network: SimNetwork, feed: DirectoryFeed, rng: random.Random
    ) -> None:
        self.machine = machine
        self._dialer = network.dialer(machine)
        self._feed = feed
        self._rng = rng
        self.guards: list[bytes] = []
        self._guards_down: dict[bytes, float] = {}  # guard -> virtual time it may be tried again

    def _usable_guards(self) -> list[bytes]:
        """The gateway's rule: guards recently unreachable are left out while others remain."""
        now = trio.current_time()
        return [g for g in self.guards if self._guards_down.get(g, 0.0) <= now] or self.guards

    def _refresh_guards(self, directory: Directory) -> None:
        kept = [g for g in self.guards if g in directory.relays]
        if len(kept) < GUARDS_PER_CLIENT:
            others = [r for r in directory.relays.values() if r.node_id not in kept]
            kept += choose_guards(others, self._rng, count=GUARDS_PER_CLIENT - len(kept))
        self.guards = kept

    def _choose_path(
        self, directory: Directory, node: NodeDescriptor, avoid: set[bytes]
    ) -> list[RelayDescriptor]:
        """As the gateway does: a path around the relays of failed attempts if there is one."""
        relays, guards = list(directory.relays.values()), self._usable_guards()
        if avoid:
            spared = [relay for relay in relays if relay.node_id not in avoid]
            with suppress(PathError):
                return choose_path(spared, node, guards, self._rng, rules=STRICT_RULES)
        return choose_path(relays, node, guards, self._rng, rules=STRICT_RULES)

    async def request(
        self, record: RequestRecord, scenario: Scenario, seed: int, checker: InvariantChecker
    ) -> None:
        """One request to its end: the record says how it ended. Only TokenPlaceErrors and timeouts are
        clean; anything else is reported to the checker."""
        try:
            with trio.move_on_after(scenario.request_timeout_s) as scope:
                await self._attempts(record, scenario, seed, checker)
            if scope.cancelled_caught:
                record.outcome = "timeout"
        except TokenPlaceError as exc:
            record.outcome = exc.__class__.__name__
        except Exception as exc:
            record.outcome = "unclean"
            checker.unclean_error(record.index, exc)
        record.total_s = trio.current_time() - record.start_s
        checker.request_ended(record.index, record.total_s, scenario.request_timeout_s + 1.0)

    async def _attempts(
        self, record: RequestRecord, scenario: Scenario, seed: int, checker: InvariantChecker
    ) -> None:
        """Like the gateway: a request that failed before its first token is tried again on a new circuit
        (another path, maybe another node), up to `request_attempts` times."""
        avoid: set[bytes] = set()
        for attempt in range(1, scenario.request_attempts + 1):
            record.attempts = attempt
            try:
                await self._request(record, scenario, seed, checker, avoid)
            except TokenPlaceError as exc:
                if record.ttft_s is not None or attempt == scenario.request_attempts:
                    raise
                record.failed_builds += record.build_s is None
                if isinstance(exc, DialError):
                    self._guards_down[record.guard] = trio.current_time() + GUARD_DOWN_S
                avoid.update((record.guard, record.middle))  # not the home relay: it is the only way in
            else:
                return

    async def _request(
        self,
        record: RequestRecord,
        scenario: Scenario,
        seed: int,
        checker: InvariantChecker,
        avoid: set[bytes],
    ) -> None:
        directory = self._feed.directory
        if directory is None:
            record.outcome = "no_directory"
            return
        self._refresh_guards(directory)
        node = choose_node(list(directory.nodes.values()), FAKE_MODEL_ID, self._rng)
        if node is None:
            record.outcome = "no_node"
            return
        path = self._choose_path(directory, node, avoid)
        checker.check_path(record.index, path)
        record.build_s = None
        record.node = node.node_id.hex()[:16]
        record.guard, record.middle, record.last_relay = (relay.node_id for relay in path)
        hops = circuit_hops(path, node)
        document = {
            "model": FAKE_MODEL_ID,
            "messages": [{"role": "user", "content": f"{sentinel(seed, record.index)} tell me a story"}],
            "max_tokens": scenario.max_tokens,
        }
        async with ClientLink.connect(self._dialer, hops[0], rng=self._rng) as link:
            circuit = await link.build_circuit(hops)
            record.build_s = trio.current_time() - record.start_s
            async for chunk in circuit.request(INFERENCE_SERVICE, document):
                if not isinstance(chunk, dict):
                    record.outcome = "bad_chunk"
                    break
                if "error" in chunk:
                    record.outcome = f"error:{chunk['error'].get('code')}"
                    break
                if record.ttft_s is None:
                    record.ttft_s = trio.current_time() - record.start_s
                if "finish_reason" in chunk:
                    record.outcome = "ok"
            circuit.destroy()
        if not record.outcome:
            record.outcome = "truncated"
