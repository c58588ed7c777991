"""The simulated machines: authorities, relays and GPU nodes running the real role code on SimNetwork.

Each machine is assembled by the same tp_node.roles functions the commands use, with the simulator's
dialer and listener, a wall clock on trio's virtual clock plus the machine's skew, and keys drawn from the
run's seed. A machine runs in its own cancel scope: a crash cancels it and breaks its links; a restart runs
it again with the same identity and keys (as a restarted process with its data directory would).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

import trio

from simulations.adversary import Coalition, HostileRelay, LeakyRelay, SimRelay
from simulations.config import Scenario
from simulations.netsim import MBPS, Machine, SimNetwork
from tp_crypto import signed
from tp_crypto.identity import Identity
from tp_crypto.noise_primitives import x25519_public
from tp_crypto.signed import Verifier
from tp_net.protocol.bootstrap_config import Bootstrap, BootstrapAuthority
from tp_net.protocol.directory import make_invitation
from tp_net.trio.hop_runtime import HopRuntime
from tp_net.trio.services import ServiceHandler
from tp_net.trio.transport import Dialer
from tp_node.authority_core import Admission
from tp_node.engine import FakeEngine
from tp_node.gpu_node import HomeRelay
from tp_node.roles import RelayPlan, open_node, open_relay

SIM_VERSION = "tp-sim"
RELAY_PORT = 7000
RELAY_CAPACITIES = (500, 1000, 2000, 5000)  # KB/s weights, drawn uniformly
FAMILY_SHARE = 0.2  # honest relays that declare a family, drawn from relays // 5 operator names
START_SPREAD_S = 20.0  # relays and nodes start at random times in [0, this)
INVITATION_LIFETIME_S = 30 * 24 * 3600


@dataclass(eq=False)
class SimMachine:
    """A machine and what the simulator needs to run, crash and restart it."""

    machine: Machine
    identity: Identity
    onion_private: bytes
    role: str  # "authority", "relay", "node"
    hostile: bool = False
    family: str = ""
    capacity: int = 1000
    home_relays: list[HomeRelay] = field(default_factory=list)
    invitation: bytes | None = None
    scope: trio.CancelScope | None = None
    hop: HopRuntime | None = None
    crashes: int = 0

    @property
    def onion_public(self) -> bytes:
        return x25519_public(self.onion_private)


class World:
    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        network: SimNetwork,
        coalition: Coalition,
        verify: Verifier = signed.verify,
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.network = network
        self.coalition = coalition
        self._rng = random.Random(f"{seed}:world")
        self.authority_identities = [self._identity() for _ in range(scenario.authorities)]
        self.authorities: list[SimMachine] = []
        self.relays: list[SimMachine] = []  # authorities included (they relay too)
        self.nodes: list[SimMachine] = []
        self._subnets: set[tuple[int, int]] = set()
        self.bootstrap = self._make_bootstrap()
        self.trust = dataclasses.replace(self.bootstrap.trust(), verify=verify)  # every machine's
        self.store: Callable[[str, bytes], None] = lambda name, data: None
        self.decrypted: Callable[[str, bytes], None] = lambda name, body: None  # every relay's cell bodies
        self.leak: Callable[[], bytes] | None = None  # set: the last relay built is a LeakyRelay

    # --- building ---------------------------------------------------------------------------------

    def _identity(self) -> Identity:
        return Identity(self._rng.randbytes(32))

    def _address(self) -> str:
        while True:
            subnet = (self._rng.randrange(1, 255), self._rng.randrange(256))
            if subnet not in self._subnets:  # one relay per /16: diversity is about families here
                self._subnets.add(subnet)
                host = f"{subnet[0]}.{subnet[1]}.{self._rng.randrange(256)}.{self._rng.randrange(1, 255)}"
                return f"ws://{host}:{RELAY_PORT}/"

    def _machine(self, name: str, kind: str, uplink_mbps: float, address: str | None = None) -> Machine:
        model = self.scenario.network
        skew = (
            self._rng.uniform(-model.clock_skew_s_max, model.clock_skew_s_max)
            if model.clock_skew_s_max
            else 0.0
        )
        machine = Machine(name, kind, self._rng.choice(model.regions), uplink_mbps * MBPS, skew, address)
        self.network.add_machine(machine)
        return machine

    def _make_bootstrap(self) -> Bootstrap:
        addresses = [self._address() for _ in self.authority_identities]
        authorities = tuple(
            BootstrapAuthority(identity.node_id, address)
            for identity, address in zip(self.authority_identities, addresses, strict=True)
        )
        for index, (identity, address) in enumerate(zip(self.authority_identities, addresses, strict=True)):
            machine = self._machine(
                f"authority-{index}", "authority", self.scenario.network.relay_uplink_mbps, address
            )
            self.authorities.append(SimMachine(machine, identity, self._rng.randbytes(32), "authority"))
        self.relays.extend(self.authorities)
        return Bootstrap(f"sim-{self.seed}", self.scenario.threshold, self.scenario.period_s, authorities)

    def add_relay(self, *, hostile: bool = False) -> SimMachine:
        name = f"relay-{len(self.relays)}"
        machine = self._machine(name, "relay", self.scenario.network.relay_uplink_mbps, self._address())
        relay = SimMachine(machine, self._identity(), self._rng.randbytes(32), "relay", hostile=hostile)
        relay.capacity = self._rng.choice(RELAY_CAPACITIES)
        if not hostile and self._rng.random() < FAMILY_SHARE:
            relay.family = f"operator-{self._rng.randrange(max(1, self.scenario.relays // 5))}"
        if self.scenario.admission == "invite" and not hostile:
            relay.invitation = self._invite(relay.identity)
        self.relays.append(relay)
        return relay

    def add_node(self) -> SimMachine:
        machine = self._machine(f"node-{len(self.nodes)}", "node", self.scenario.network.node_uplink_mbps)
        node = SimMachine(machine, self._identity(), self._rng.randbytes(32), "node")
        # Nodes pick home relays among all relays (not authorities): a hostile one may well be among them.
        regular = [r for r in self.relays if r.role == "relay"]
        homes = self._rng.sample(regular, min(self.scenario.home_relays_per_node, len(regular)))
        node.home_relays = [HomeRelay(r.identity.node_id, r.machine.address or "") for r in homes]
        if self.scenario.admission == "invite":
            node.invitation = self._invite(node.identity)
        self.nodes.append(node)
        return node

    def _invite(self, identity: Identity) -> bytes:
        expires = int(self.network_start_wall()) + INVITATION_LIFETIME_S
        return make_invitation(
            self.authority_identities[0], identity.node_id, self.bootstrap.network, expires
        )

    @staticmethod
    def network_start_wall() -> float:
        from simulations.netsim import SIM_EPOCH_S

        return SIM_EPOCH_S

    # --- running ------------------------------------------------------------------------------------

    def start(self, nursery: trio.Nursery, sim: SimMachine, delay_s: float = 0.0) -> None:
        body = self._relay_body if sim.role in ("authority", "relay") else self._node_body
        nursery.start_soon(self._run_machine, sim, body, delay_s)

    async def _run_machine(
        self, sim: SimMachine, body: Callable[[SimMachine], Awaitable[None]], delay_s: float
    ) -> None:
        await trio.sleep(delay_s)
        sim.machine.up = True
        with trio.CancelScope() as scope:
            sim.scope = scope
            await body(sim)
        sim.hop = None

    def crash(self, sim: SimMachine) -> None:
        if sim.scope is not None:
            sim.scope.cancel()
        sim.crashes += 1
        self.network.crash(sim.machine)

    def live_hops(self) -> list[tuple[str, HopRuntime]]:
        return [(s.machine.name, s.hop) for s in [*self.relays, *self.nodes] if s.hop is not None]

    async def _relay_body(self, sim: SimMachine) -> None:
        machine = sim.machine
        plan = RelayPlan(
            capacity=sim.capacity,
            version=SIM_VERSION,
            family=sim.family,
            advertise=machine.address,
            invitation=sim.invitation,
            refresh_directory=self.scenario.relays_cache_directory,
        )
        dialer = self.network.dialer(machine)
        opening = open_relay(
            sim.identity,
            self.bootstrap,
            plan,
            dialer=dialer,
            listener=self.network.listener(machine),
            onion_public_keys=lambda: (sim.onion_public,),
            make_relay=lambda services, _directory: self._make_relay(sim, dialer, services),
            wall_clock=machine.wall_clock,
            admission=Admission(self.scenario.admission) if sim.role == "authority" else None,
            measurer_rng=(
                random.Random(f"{self.seed}:{machine.name}:measurer:{sim.crashes}")
                if sim.role == "authority" and self.scenario.authorities_measure
                else None
            ),
            trust=self.trust,
        )
        async with opening as role:
            sim.hop = role.relay
            await trio.sleep_forever()

    def _make_relay(
        self, sim: SimMachine, dialer: Dialer, services: Mapping[str, ServiceHandler]
    ) -> SimRelay:
        rng = random.Random(f"{self.seed}:{sim.machine.name}:{sim.crashes}")
        keys = [sim.onion_private]
        if sim.hostile:
            adversary = self.scenario.adversary
            relay: SimRelay = HostileRelay(
                sim.identity,
                keys,
                dialer=dialer,
                rng=rng,
                services=services,
                coalition=self.coalition,
                behaviour=adversary.behaviour,
                delay_s=adversary.delay_s,
                meddle_chance=adversary.meddle_chance,
            )
        elif self.leak is not None and sim is self.relays[-1]:
            relay = LeakyRelay(sim.identity, keys, dialer=dialer, rng=rng, services=services)
            relay.leak = self.leak
        else:
            relay = SimRelay(sim.identity, keys, dialer=dialer, rng=rng, services=services)
        relay.sim_name = sim.machine.name
        relay.store = self.store
        relay.core.observe = partial(self.decrypted, sim.machine.name)
        return relay

    async def _node_body(self, sim: SimMachine) -> None:
        machine = sim.machine
        opening = open_node(
            sim.identity,
            self.bootstrap,
            onion_keys=[sim.onion_private],
            onion_public_keys=lambda: (sim.onion_public,),
            home_relays=sim.home_relays,
            engine=FakeEngine(token_delay_s=self.scenario.token_delay_s),
            dialer=self.network.dialer(machine),
            rng=random.Random(f"{self.seed}:{machine.name}:{sim.crashes}"),
            version=SIM_VERSION,
            invitation=sim.invitation,
            wall_clock=machine.wall_clock,
        )
        async with opening as role:
            sim.hop = role.node
            await trio.sleep_forever()
