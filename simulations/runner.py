"""One simulation run: build the world from a scenario and a seed, run it under trio's virtual clock,
check the invariants all along, and summarise it as a report.

Every random choice comes from random.Random instances seeded from the run's seed (by name, e.g.
"SEED:world", "SEED:client-7"), and trio's scheduler is seeded too (simulations.determinism).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable
from typing import Any

import trio

from simulations.adversary import Coalition
from simulations.clients import DirectoryFeed, RequestRecord, SimClient
from simulations.config import Scenario
from simulations.determinism import seeded_trio_scheduler, shared_verifier
from simulations.invariants import InvariantChecker, SentinelLogHandler, SimulationViolation, sentinel
from simulations.metrics import anonymity, load_spread, request_metrics
from simulations.netsim import MBPS, SIM_EPOCH_S, Machine, SimNetwork
from simulations.virtual_clock import VirtualClock
from simulations.world import START_SPREAD_S, SimMachine, World
from tp_net.protocol.bandwidth_weights import WEIGHT_MIN, unmeasured_weight
from tp_net.protocol.descriptors import NodeDescriptor, RelayDescriptor
from tp_net.protocol.directory import Directory

Progress = Callable[[float], None]
PROGRESS_STEPS = 100
END_GRACE_S = 5.0  # after the last request's timeout, before the unfinished ones count as hung
END_POLL_S = 1.0
# The clients' gateways start this long before the first request, once the network has formed (a gateway
# started with the network would pin the only relays of its first directory, the authorities, as guards).
GATEWAY_LEAD_S = 20.0


@dataclasses.dataclass
class RunResult:
    report: dict[str, Any]
    records: list[RequestRecord]


def start_wall_s(scenario: Scenario) -> float:
    """The wall time at virtual time 0: `first_vote_after_s` before the authorities' first vote (half a
    period before a period starts), so the first directory document forms early in the run."""
    return SIM_EPOCH_S + scenario.period_s / 2 - scenario.first_vote_after_s


def run_once(
    scenario: Scenario, seed: int, progress: Progress | None = None, *, leaky_relay: bool = False
) -> RunResult:
    """Run `scenario` with `seed`; SimulationViolation when an invariant breaks.

    `leaky_relay`: one relay is deliberately broken and stores the plaintext of the requests it carries
    (given to it behind the protocol's back): the test that the plaintext checker fires."""
    scenario.validate()
    checker = InvariantChecker(seed)
    handler = SentinelLogHandler(checker)
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if scenario.relays <= 100 else logging.INFO)
    sim = _Simulation(scenario, seed, checker, progress, leaky_relay)
    try:
        with seeded_trio_scheduler(seed):
            trio.run(sim.main, clock=VirtualClock())
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)
    if checker.violation is not None:
        raise checker.violation
    if progress is not None:
        progress(1.0)
    return RunResult(sim.report(), sim.records)


class _Simulation:
    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        checker: InvariantChecker,
        progress: Progress | None,
        leaky_relay: bool,
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.checker = checker
        self.progress = progress
        self.rng = random.Random(f"{seed}:run")
        self.network = SimNetwork(
            scenario.network, random.Random(f"{seed}:network"), epoch_s=start_wall_s(scenario)
        )
        self.coalition = Coalition()
        self.world = World(
            scenario, seed, self.network, self.coalition, shared_verifier(scenario.memoize_verification)
        )
        self.records: list[RequestRecord] = []
        self.latest_prompt = b""
        if leaky_relay:
            self.world.leak = lambda: self.latest_prompt
        self.events: list[str] = []
        self._build()

    def _build(self) -> None:
        scenario, world = self.scenario, self.world
        regular = scenario.relays - scenario.authorities
        hostile_count = (
            0
            if scenario.adversary.sybil_at_s is not None
            else round(scenario.adversary.fraction * scenario.relays)
        )
        hostile_at = set(self.rng.sample(range(regular), min(hostile_count, regular)))
        for index in range(regular):
            world.add_relay(hostile=index in hostile_at)
        for _ in range(scenario.gpu_nodes):
            world.add_node()
        self.coalition.node_ids = frozenset(n.identity.node_id for n in world.nodes)
        model = scenario.network
        self.clients = [
            SimClient(
                self._client_machine(index, model.client_uplink_mbps),
                self.network,
                self._feed(),
                world.bootstrap,
                random.Random(f"{self.seed}:client-{index}"),
                pool_nodes_max=scenario.client_pool_nodes,
            )
            for index in range(scenario.clients)
        ]
        self.network.taps.append(
            lambda machine, message: self.checker.scan_received(machine.name, machine.kind, message)
        )
        world.store = self.checker.scan_stored
        world.decrypted = self.checker.scan_decrypted

    def _client_machine(self, index: int, mbps: float) -> Machine:
        return self._machine(
            f"client-{index}", "client", self.rng.choice(self.scenario.network.regions), mbps * MBPS
        )

    def _feed(self) -> DirectoryFeed:
        if not hasattr(self, "feed"):
            machine = self._machine("directory-feed", "client", self.scenario.network.regions[0], 100 * MBPS)
            sources = [a.hop() for a in self.world.bootstrap.authorities]
            self.feed = DirectoryFeed(
                machine,
                self.network,
                sources,
                trust=self.world.trust,
                period_s=self.scenario.period_s,
                rng=random.Random(f"{self.seed}:feed"),
            )
        return self.feed

    def _machine(self, name: str, kind: str, region: str, uplink_bytes_per_s: float) -> Machine:
        """A machine without an address (clients): nothing dials it."""
        return Machine(name, kind, region, uplink_bytes_per_s, epoch_s=self.network.epoch_s)

    async def main(self) -> None:
        async with trio.open_nursery() as nursery:
            self.checker.arm(nursery.cancel_scope.cancel)
            for sim in self.world.authorities:
                self.world.start(nursery, sim)
            for sim in [*self.world.relays[len(self.world.authorities) :], *self.world.nodes]:
                self.world.start(nursery, sim, self.rng.uniform(0, START_SPREAD_S))
            nursery.start_soon(self._start_gateways, nursery)
            nursery.start_soon(self.feed.run)
            nursery.start_soon(self._requests, nursery)
            nursery.start_soon(self._check_buffers)
            nursery.start_soon(self._churn, nursery)
            nursery.start_soon(self._partitions)
            nursery.start_soon(self._sybils, nursery)
            if self.progress is not None:
                nursery.start_soon(self._report_progress)
            await trio.sleep(self.scenario.duration_s)
            # Requests still in flight get their full timeout (and a grace) before they count as hung.
            with trio.move_on_after(self.scenario.request_timeout_s + END_GRACE_S):
                while any(not r.ended for r in self.records):
                    await trio.sleep(END_POLL_S)
            self.checker.all_ended(r.index for r in self.records if not r.ended)
            nursery.cancel_scope.cancel()

    async def _start_gateways(self, nursery: trio.Nursery) -> None:
        await trio.sleep_until(max(0.0, self.scenario.warmup_s - GATEWAY_LEAD_S))
        for client in self.clients:
            nursery.start_soon(client.run)

    async def _requests(self, nursery: trio.Nursery) -> None:
        scenario = self.scenario
        end = scenario.duration_s - scenario.drain_s
        times = sorted(self.rng.uniform(scenario.warmup_s, end) for _ in range(scenario.requests))
        for index, when in enumerate(times):
            await trio.sleep_until(when)
            client = self.clients[self.rng.randrange(len(self.clients))]
            record = RequestRecord(index, client.machine.name, when)
            self.records.append(record)
            nursery.start_soon(client.request, record, scenario, self.seed, self.checker)
            self.latest_prompt = sentinel(self.seed, index).encode()

    async def _check_buffers(self) -> None:
        while True:
            await trio.sleep(self.scenario.check_interval_s)
            self.checker.check_buffers(self.world.live_hops())

    async def _churn(self, nursery: trio.Nursery) -> None:
        churn = self.scenario.churn
        candidates: list[tuple[SimMachine, float]] = [
            (sim, churn.relay_crashes_per_hour) for sim in self.world.relays if sim.role == "relay"
        ] + [(sim, churn.node_crashes_per_hour) for sim in self.world.nodes]
        events: list[tuple[float, str, SimMachine | None]] = []
        for sim, rate in candidates:
            t = 0.0
            while rate > 0:
                t += self.rng.expovariate(rate / 3600)
                if t >= self.scenario.duration_s:
                    break
                events.append((t, "crash", sim))
                t += self.rng.uniform(0.5, 1.5) * churn.restart_after_s
                events.append((t, "restart", sim))
        events += [
            (self.rng.uniform(0, self.scenario.duration_s - self.scenario.drain_s), "join", None)
            for _ in range(churn.relays_joining)
        ]
        for when, kind, target in sorted(events, key=lambda e: e[0]):
            await trio.sleep_until(when)
            if kind == "crash" and target is not None and target.machine.up:
                self.world.crash(target)
            elif kind == "restart" and target is not None and not target.machine.up:
                self.world.start(nursery, target)
            elif kind == "join":
                self.world.start(nursery, self.world.add_relay())
            self.events.append(kind)

    async def _partitions(self) -> None:
        for partition in sorted(self.scenario.partitions, key=lambda p: p.start_s):
            await trio.sleep_until(partition.start_s)
            self.network.cut(partition.regions)
            await trio.sleep_until(partition.end_s)
            self.network.heal()

    async def _sybils(self, nursery: trio.Nursery) -> None:
        adversary = self.scenario.adversary
        if adversary.sybil_at_s is None or adversary.fraction == 0:
            return
        await trio.sleep_until(adversary.sybil_at_s)
        count = round(adversary.fraction * self.scenario.relays / (1 - adversary.fraction))
        for _ in range(count):
            self.world.start(nursery, self.world.add_relay(hostile=True), self.rng.uniform(0, 5))

    async def _report_progress(self) -> None:
        assert self.progress is not None
        step = self.scenario.duration_s / PROGRESS_STEPS
        for index in range(1, PROGRESS_STEPS + 1):
            await trio.sleep_until(index * step)
            self.progress(index / PROGRESS_STEPS)

    def report(self) -> dict[str, Any]:
        scenario, world = self.scenario, self.world
        relays = world.relays  # authorities included
        hostile = {sim.identity.node_id for sim in relays if sim.hostile}
        return {
            "scenario": scenario.name,
            "seed": self.seed,
            "config": dataclasses.asdict(scenario),
            "machines": {
                "authorities": len(world.authorities),
                "relays": len(relays) - len(world.authorities),
                "hostile_relays": len(hostile),
                "gpu_nodes": len(world.nodes),
                "clients": len(self.clients),
                "total": len(relays) + len(world.nodes) + len(self.clients),
            },
            "simulated_s": scenario.duration_s,
            "requests": request_metrics(
                self.records, scenario.warmup_s, scenario.duration_s - scenario.drain_s
            ),
            "load": load_spread(self.records),
            "anonymity": anonymity(
                self.records, hostile, {sim.identity.node_id for sim in relays}, self.coalition
            ),
            "network": {
                "bytes_delivered": self.network.bytes_delivered,
                "links_dropped": self.network.links_dropped,
                "crashes": sum(sim.crashes for sim in [*relays, *world.nodes]),
                "churn_events": dict(sorted((k, self.events.count(k)) for k in set(self.events))),
                "directory_fetches": self.feed.fetches,
                "directory_fetch_failures": self.feed.failures,
                "measured_in_document": _measured(self.feed.directory),
            },
            "invariant_checks": self.checker.checks,
            "relay_cells_scanned": self.checker.decrypted_cells,
        }


def _measured(directory: Directory | None) -> int:
    """How many relays and nodes of the latest document weigh other than an unmeasured one would."""
    if directory is None:
        return 0
    listed: list[RelayDescriptor | NodeDescriptor] = [*directory.relays.values(), *directory.nodes.values()]
    return sum(directory.weights.get(d.node_id, WEIGHT_MIN) != unmeasured_weight(d) for d in listed)


@dataclasses.dataclass
class ScenarioResult:
    report: dict[str, Any]
    runs: list[RunResult]


def run_scenario(
    scenario: Scenario, seed: int, progress: Progress | None = None, *, leaky_relay: bool = False
) -> ScenarioResult:
    """A scenario's report: one run, or one run per adversary fraction for a sweep."""
    if not scenario.sweep_fractions:
        run = run_once(scenario, seed, progress, leaky_relay=leaky_relay)
        return ScenarioResult(run.report, [run])
    runs = []
    count = len(scenario.sweep_fractions)
    for index, fraction in enumerate(scenario.sweep_fractions):
        adversary = dataclasses.replace(scenario.adversary, fraction=fraction)
        variant = dataclasses.replace(scenario, adversary=adversary, sweep_fractions=())
        step = None if progress is None else _sub_progress(progress, index, count)
        runs.append(run_once(variant, seed, step))
    report = {"scenario": scenario.name, "seed": seed, "sweep": [run.report for run in runs]}
    return ScenarioResult(report, runs)


def _sub_progress(progress: Progress, index: int, count: int) -> Progress:
    return lambda fraction: progress((index + fraction) / count)


__all__ = ["RunResult", "ScenarioResult", "SimulationViolation", "run_once", "run_scenario"]
