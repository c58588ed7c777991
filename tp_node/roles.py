"""The three roles assembled once: `open_relay`, `open_authority` and `open_node`.

Each wires a hop (Relay, GpuNode) to its directory duties (directory service, authority runner, descriptor
publisher, directory refresh) and runs them until the context exits. The transport, clocks, keys and the
relay object itself are passed in, so the commands (tp_node.relay_cli, node_cli) and the simulator
(simulations/world.py) run the same assembly on WebSocket and on the simulated network.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import trio

from tp_crypto.identity import Identity
from tp_net.protocol.bandwidth_weights import MeasurementScheduler
from tp_net.protocol.bootstrap_config import Bootstrap, BootstrapError
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.descriptors import LOAD_MAX, MAX_CONCURRENT_MAX, ModelOffer, RelayDescriptor
from tp_net.protocol.directory import Trust
from tp_net.protocol.extend_policy import ExtendPolicy
from tp_net.protocol.link_limits import LinkLimits
from tp_net.protocol.path_selection import LOCAL_NETWORK_RULES, STRICT_RULES
from tp_net.protocol.sealed import SealingKey
from tp_net.protocol.traffic_shaping import RESPONSE_SHAPING_DEFAULT, ResponseShaping
from tp_net.trio.directory_client import DIRECTORY_SERVICE
from tp_net.trio.services import ServiceHandler
from tp_net.trio.transport import Dialer, Listener
from tp_node.authority_core import Admission, AuthorityCore
from tp_node.directory_duties import (
    AuthorityRunner,
    DescriptorPublisher,
    descriptor_expiry,
    node_publisher,
    refresh_documents,
)
from tp_node.directory_service import DirectoryService
from tp_node.engine import ModelInfo, ServingEngine
from tp_node.gpu_node import GpuNode, HomeRelay
from tp_node.home_relays import keep_home_relays
from tp_node.measurer import CircuitProber, run_measurer, served_directory
from tp_node.reachability import ReachabilityTester
from tp_node.relay import Relay

WallClock = Callable[[], float]


class MakeRelay(Protocol):
    """Builds the relay object for a role, given the services it serves and its directory service."""

    def __call__(self, services: Mapping[str, ServiceHandler], directory: DirectoryService) -> Relay: ...


@dataclass(frozen=True, kw_only=True)
class RelayPlan:
    """What a relay publishes and does besides relaying."""

    capacity: int  # bandwidth weight, KB/s
    version: str
    family: str = ""
    advertise: str | None = None  # the address in the descriptor (default: where it listens)
    invitation: bytes | None = None
    refresh_directory: bool = True  # a relay that is no authority fetches documents to serve them
    withdraw_on_stop: bool = False  # real roles do; a simulated crash must stay silent


@dataclass(frozen=True)
class RelayRole:
    relay: Relay
    directory: DirectoryService
    publisher: DescriptorPublisher
    authority: AuthorityCore | None
    address: str  # where it listens
    advertised: str


@dataclass(frozen=True)
class NodeRole:
    node: GpuNode

    async def wait_linked(self) -> None:
        """Until the node holds a link to a home relay (its descriptor is published from then on)."""
        await self.node.linked.wait()


def standard_relay(
    identity: Identity,
    onion_keys: list[bytes],
    bootstrap: Bootstrap,
    *,
    dialer: Dialer,
    rng: random.Random,
    link_limits: LinkLimits | None = None,
) -> MakeRelay:
    """The relay tp-relay runs: it extends only to relays its directory lists (or any, on a local
    network) and ranks links by whether their peers are listed."""

    def make(services: Mapping[str, ServiceHandler], directory: DirectoryService) -> Relay:
        return Relay(
            identity,
            onion_keys,
            dialer=dialer,
            rng=rng,
            services=services,
            extend_policy=ExtendPolicy(directory.listed_relays, local_network=bootstrap.local),
            link_limits=link_limits,
            is_listed=directory.is_listed,
        )

    return make


def authority_core(
    identity: Identity, bootstrap: Bootstrap, admission: Admission, trust: Trust | None = None
) -> AuthorityCore:
    trust = trust or bootstrap.trust()
    if identity.node_id not in trust.authorities:
        raise BootstrapError(
            f"--authority: this relay's node id {identity.node_id.hex()} is not an authority "
            f"of network {bootstrap.network!r} in the bootstrap file"
        )
    return AuthorityCore(
        identity, trust, period_s=bootstrap.period_s, admission=admission, check_reachability=True
    )


@asynccontextmanager
async def open_relay(
    identity: Identity,
    bootstrap: Bootstrap,
    plan: RelayPlan,
    *,
    dialer: Dialer,
    listener: Listener,
    onion_public_keys: Callable[[], Sequence[bytes]],
    make_relay: MakeRelay,
    wall_clock: WallClock = time.time,
    admission: Admission | None = None,
    measurer_rng: random.Random | None = None,
    trust: Trust | None = None,
) -> AsyncIterator[RelayRole]:
    """A relay serving links on `listener`, its directory service, and its descriptor published; with an
    `admission`, also one of the bootstrap's authorities (it votes, signs and serves documents), which
    measures relays and nodes when given a `measurer_rng` (the simulator's authorities do not measure).
    `trust`: the bootstrap's, or one with its own signature verifier (the simulator's memoized one)."""
    trust = trust or bootstrap.trust()
    authority = authority_core(identity, bootstrap, admission, trust) if admission is not None else None
    runner = AuthorityRunner(authority, bootstrap, dialer, wall_clock=wall_clock) if authority else None
    reachability = (
        ReachabilityTester(authority, dialer, runner.forward, wall_clock=wall_clock)
        if authority and runner
        else None
    )
    directory = DirectoryService(
        trust,
        authority=authority,
        forward=runner.forward if runner else None,
        relay_vote=runner.relay_vote if runner else None,
        uploaded=reachability.wake if reachability else None,
        wall_clock=wall_clock,
    )
    relay = make_relay({DIRECTORY_SERVICE: directory.handle}, directory)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(relay.serve, listener)
        advertised = plan.advertise or address

        def describe(now: float) -> RelayDescriptor:
            return RelayDescriptor(
                identity.node_id,
                advertised,
                tuple(onion_public_keys()),
                plan.capacity,
                plan.family,
                plan.version,
                int(now),
                descriptor_expiry(now, bootstrap),
            )

        publisher = DescriptorPublisher(
            identity,
            bootstrap,
            dialer,
            describe,
            lambda a: [a.hop()],
            plan.invitation,
            wall_clock,
            withdraw_on_stop=plan.withdraw_on_stop,
        )
        nursery.start_soon(publisher.run)
        if runner is not None and authority is not None:
            nursery.start_soon(runner.run)
            if reachability is not None:
                nursery.start_soon(reachability.run)
            if measurer_rng is not None:
                nursery.start_soon(
                    partial(_measure, wall_clock=wall_clock),
                    authority,
                    directory,
                    bootstrap,
                    dialer,
                    measurer_rng,
                )
        elif plan.refresh_directory:
            nursery.start_soon(refresh_documents, directory, bootstrap, dialer)
        yield RelayRole(relay, directory, publisher, authority, address, advertised)
        nursery.cancel_scope.cancel()


async def _measure(
    authority: AuthorityCore,
    service: DirectoryService,
    bootstrap: Bootstrap,
    dialer: Dialer,
    rng: random.Random,
    *,
    wall_clock: WallClock,
) -> None:
    """The authority measures the relays and nodes of the document it serves; its votes carry the weights.
    On the role's wall clock (the simulator's is virtual), as the document and the schedule are."""
    rules = LOCAL_NETWORK_RULES if bootstrap.local else STRICT_RULES
    await run_measurer(
        MeasurementScheduler(bootstrap.period_s, rng),
        served_directory(service.current_document, bootstrap.trust(), wall_clock=wall_clock),
        authority.record_weights,
        CircuitProber(dialer, rng, rules),
        wall_clock=wall_clock,
    )


@asynccontextmanager
async def open_authority(
    identity: Identity,
    bootstrap: Bootstrap,
    plan: RelayPlan,
    admission: Admission,
    *,
    dialer: Dialer,
    listener: Listener,
    onion_public_keys: Callable[[], Sequence[bytes]],
    make_relay: MakeRelay,
    wall_clock: WallClock = time.time,
) -> AsyncIterator[RelayRole]:
    """A directory authority: a relay of the bootstrap's authorities (open_relay with an admission)."""
    async with open_relay(
        identity,
        bootstrap,
        plan,
        dialer=dialer,
        listener=listener,
        onion_public_keys=onion_public_keys,
        make_relay=make_relay,
        wall_clock=wall_clock,
        admission=admission,
    ) as role:
        yield role


@asynccontextmanager
async def open_node(
    identity: Identity,
    bootstrap: Bootstrap,
    *,
    onion_keys: list[bytes],
    onion_public_keys: Callable[[], tuple[bytes, ...]],
    home_relays: Sequence[HomeRelay],
    engine: ServingEngine,
    dialer: Dialer,
    rng: random.Random,
    version: str,
    invitation: bytes | None = None,
    wall_clock: WallClock = time.time,
    withdraw_on_stop: bool = False,
    family: str = "",
    sealing_keys: Callable[[], list[SealingKey]] | None = None,
    sealing_public_keys: Callable[[], tuple[bytes, ...]] = tuple,
    shaping: ResponseShaping = RESPONSE_SHAPING_DEFAULT,
) -> AsyncIterator[NodeRole]:
    """A GPU node linked to its home relays, its descriptor published through them once linked."""
    node = GpuNode(
        identity,
        onion_keys,
        home_relays=home_relays,
        engine=engine,
        dialer=dialer,
        rng=rng,
        sealing_keys=sealing_keys,
        shaping=shaping,
    )
    home_hops = [HopInfo(relay.node_id, None, relay.address) for relay in home_relays]

    async def publish_when_linked() -> None:
        await node.linked.wait()
        publisher = node_publisher(
            identity,
            bootstrap,
            dialer,
            home_relays=home_hops,
            onion_public_keys=onion_public_keys,
            offers=lambda: model_offers(engine.models()),
            version=version,
            rng=rng,
            invitation=invitation,
            family=family,
            sealing_public_keys=sealing_public_keys,
        )
        publisher.wall_clock = wall_clock
        publisher.withdraw_on_stop = withdraw_on_stop  # leave the directory at its next document
        await publisher.run()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(node.run)
        if not home_relays:  # chosen from the directory, and replaced when they leave it
            await nursery.start(keep_home_relays, node, bootstrap, dialer, home_hops, rng)
        nursery.start_soon(publish_when_linked)
        yield NodeRole(node)
        nursery.cancel_scope.cancel()


def model_offers(models: Sequence[ModelInfo]) -> tuple[ModelOffer, ...]:
    """What the descriptor advertises: each model and its current load (requests running or waiting)."""
    return tuple(
        ModelOffer(
            model.model_id,
            bytes.fromhex(model.sha256),
            model.parameter_count,
            model.quantisation,
            model.context_length,
            min(model.max_concurrent, MAX_CONCURRENT_MAX),  # an unlimited fake engine still fits the field
            min(model.active_requests + model.queued_requests, LOAD_MAX),
            model.vision,
        )
        for model in models
    )
