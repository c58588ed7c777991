"""What relays and nodes do for the directory, on a schedule: publish their descriptor to every authority,
keep a fresh document cached (relays), and, on authorities, vote and sign each period."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from bootstrap.config import Bootstrap, BootstrapAuthority
from tp_crypto.errors import TokenPlaceError
from tp_crypto.identity import Identity, short_id
from tp_net.circuit_client import HopInfo
from tp_net.descriptors import (
    DESCRIPTOR_LIFETIME_S,
    Descriptor,
    ModelOffer,
    NodeDescriptor,
    SignedDescriptor,
    sign_descriptor,
)
from tp_net.directory_client import directory_request, fetch_document, publish_descriptor
from tp_net.transport import Dialer
from tp_node.authority_core import AuthorityCore, Schedule
from tp_node.directory_service import DirectoryService

log = logging.getLogger(__name__)

REPUBLISH_INTERVAL_S_MAX = 600.0
WallClock = Callable[[], float]


def republish_interval_s(bootstrap: Bootstrap) -> float:
    return min(REPUBLISH_INTERVAL_S_MAX, bootstrap.period_s / 2)


def descriptor_expiry(now: float, bootstrap: Bootstrap) -> int:
    """Descriptors live a few periods (at most 3 h): republishing keeps them alive, a dead node drops out."""
    return int(now) + min(DESCRIPTOR_LIFETIME_S, 4 * bootstrap.period_s)


@dataclass
class DescriptorPublisher:
    """Publishes a fresh descriptor to every authority, now and every `republish_interval_s`."""

    identity: Identity
    bootstrap: Bootstrap
    dialer: Dialer
    make_descriptor: Callable[[float], Descriptor]
    path_to: Callable[[BootstrapAuthority], Sequence[HopInfo]]
    invitation: bytes | None = None
    wall_clock: WallClock = time.time

    def __post_init__(self) -> None:
        self.published = trio.Event()
        self._wakeup = trio.Event()

    def publish_soon(self) -> None:
        """Publish again now (e.g. after an onion key rotation or a change of load)."""
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            await self.publish_once()
            with trio.move_on_after(republish_interval_s(self.bootstrap)):
                await self._wakeup.wait()
            self._wakeup = trio.Event()

    async def publish_once(self) -> int:
        """Publish to all authorities at once; returns how many accepted."""
        signed = sign_descriptor(self.identity, self.make_descriptor(self.wall_clock()))
        accepted = [0]
        async with trio.open_nursery() as nursery:
            for authority in self.bootstrap.authorities:
                nursery.start_soon(self._publish_to, authority, signed, accepted)
        if accepted[0]:
            self.published.set()
        return accepted[0]

    async def _publish_to(
        self, authority: BootstrapAuthority, signed: SignedDescriptor, accepted: list[int]
    ) -> None:
        try:
            await publish_descriptor(self.dialer, self.path_to(authority), signed, self.invitation)
        except TokenPlaceError as exc:
            log.info("publishing to authority %s failed: %s", short_id(authority.node_id), exc)
        else:
            accepted[0] += 1


async def refresh_documents(service: DirectoryService, bootstrap: Bootstrap, dialer: Dialer) -> None:
    """Keep the relay's cached document fresh: ask the authorities every quarter period."""
    while True:
        for authority in bootstrap.authorities:
            try:
                if service.offer_document(await fetch_document(dialer, authority.hop())):
                    log.info("cached a new directory document")
                break
            except TokenPlaceError as exc:
                log.debug("no document from authority %s: %s", short_id(authority.node_id), exc)
        await trio.sleep(bootstrap.period_s / 4)


@dataclass
class AuthorityRunner:
    """Votes and signs on the period schedule, and forwards accepted descriptors to the other authorities."""

    core: AuthorityCore
    bootstrap: Bootstrap
    dialer: Dialer
    wall_clock: WallClock = time.time

    def __post_init__(self) -> None:
        self._nursery: trio.Nursery | None = None
        self.peers = [a for a in self.bootstrap.authorities if a.node_id != self.core.identity.node_id]

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            while True:
                schedule = Schedule.next_after(self.wall_clock(), self.core.period_s)
                await self._sleep_until(schedule.vote_at)
                vote = self.core.make_vote(schedule.period)
                self._broadcast({"op": "vote", "vote": vote})
                await self._sleep_until(schedule.sign_at)
                signed = self.core.make_signature(schedule.period)
                if signed is not None:
                    body, signature = signed
                    self._broadcast(
                        {
                            "op": "signature",
                            "period": schedule.period,
                            "body": body,
                            "authority": self.core.identity.node_id,
                            "signature": signature,
                        }
                    )
                self.core.forget_before(self.wall_clock())

    def forward(self, signed: SignedDescriptor, invitation: bytes | None) -> None:
        request: dict[str, object] = {
            "op": "publish",
            "descriptor": signed.body,
            "signature": signed.signature,
            "invitation": invitation,
            "forwarded": self.core.forward_proof(signed),
        }
        self._broadcast(request)

    def _broadcast(self, request: dict[str, object]) -> None:
        if self._nursery is None:
            return
        for peer in self.peers:
            self._nursery.start_soon(self._send, peer, request)

    async def _send(self, peer: BootstrapAuthority, request: dict[str, object]) -> None:
        try:
            await directory_request(self.dialer, [peer.hop()], dict(request))
        except TokenPlaceError as exc:
            log.info("authority %s: %s failed: %s", short_id(peer.node_id), request["op"], exc)

    async def _sleep_until(self, wall_time: float) -> None:
        await trio.sleep(max(0.0, wall_time - self.wall_clock()))


def node_publisher(
    identity: Identity,
    bootstrap: Bootstrap,
    dialer: Dialer,
    *,
    home_relays: Sequence[HopInfo],
    onion_public_keys: Callable[[], tuple[bytes, ...]],
    offers: Callable[[], tuple[ModelOffer, ...]],
    version: str,
    rng: random.Random,
    invitation: bytes | None = None,
) -> DescriptorPublisher:
    """A GPU node's publisher: its descriptor goes to each authority through a home relay, so no
    authority learns the node's address (the home relay already knows it)."""

    def describe(now: float) -> NodeDescriptor:
        return NodeDescriptor(
            identity.node_id,
            onion_public_keys(),
            tuple(relay.node_id for relay in home_relays),
            offers(),
            version,
            int(now),
            descriptor_expiry(now, bootstrap),
        )

    def path_to(authority: BootstrapAuthority) -> list[HopInfo]:
        # A random home relay each time: one that is down only fails some rounds of publishing.
        home = rng.choice(home_relays)
        if home.node_id == authority.node_id:
            return [authority.hop()]
        return [HopInfo(home.node_id, None, home.address), authority.hop()]

    return DescriptorPublisher(identity, bootstrap, dialer, describe, path_to, invitation)
