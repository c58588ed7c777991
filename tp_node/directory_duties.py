"""What relays and nodes do for the directory, on a schedule: publish their descriptor to every authority,
keep a fresh document cached (relays), and, on authorities, vote and sign each period."""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from tp_crypto.errors import TokenPlaceError
from tp_crypto.identity import Identity, short_id
from tp_net.protocol.bootstrap_config import Bootstrap, BootstrapAuthority
from tp_net.protocol.circuit_client import HopInfo
from tp_net.protocol.descriptors import (
    DESCRIPTOR_LIFETIME_S,
    Descriptor,
    ModelOffer,
    NodeDescriptor,
    RelayDescriptor,
    SignedDescriptor,
    decode_descriptor,
    sign_descriptor,
)
from tp_net.protocol.directory import decode_body
from tp_net.trio.directory_client import KeptLinks, directory_request, fetch_document, publish_descriptor
from tp_net.trio.transport import Dialer
from tp_node.authority_core import AuthorityCore, Schedule, next_document_due
from tp_node.directory_service import DirectoryService

log = logging.getLogger(__name__)

REPUBLISH_INTERVAL_S_MAX = 600.0
DOCUMENT_RETRY_S = 2.0  # a role with no (or an overdue) document asks again this often
PUBLISH_RETRY_S = 2.0  # a publish some authority missed is tried again this soon (then doubling)
DESCRIPTOR_PERIODS = 2  # a descriptor's lifetime, in periods
WITHDRAWN_LIFETIME_S = 10  # a withdrawal: the last descriptor, expiring this soon (too soon for any vote)
WITHDRAW_TIMEOUT_S = 3.0  # how long a stopping role spends withdrawing
WallClock = Callable[[], float]


def republish_interval_s(bootstrap: Bootstrap) -> float:
    return min(REPUBLISH_INTERVAL_S_MAX, bootstrap.period_s / 2)


def publish_delay_s(missed_rounds: int, bootstrap: Bootstrap) -> float:
    """How long to wait before publishing again after `missed_rounds` publishes in a row that some authority
    did not accept (not up yet, unreachable, refusing): PUBLISH_RETRY_S, doubling each miss, at most the
    republish interval, which is also the wait once every authority accepted."""
    interval = republish_interval_s(bootstrap)
    if missed_rounds == 0:
        return interval
    return min(interval, PUBLISH_RETRY_S * 2.0 ** min(missed_rounds - 1, 16))


def descriptor_expiry(now: float, bootstrap: Bootstrap) -> int:
    """Descriptors live DESCRIPTOR_PERIODS periods (at most 3 h): republishing (each half period) keeps them
    in every vote, and a node that dies without a word drops out of the votes a period and a half after
    its last publish. One that stops cleanly withdraws at once (DescriptorPublisher.withdraw)."""
    return int(now) + min(DESCRIPTOR_LIFETIME_S, DESCRIPTOR_PERIODS * bootstrap.period_s)


@dataclass
class DescriptorPublisher:
    """Publishes a fresh descriptor to every authority, now and every `republish_interval_s`; sooner
    (`publish_delay_s`) while some authority has not accepted it, e.g. one not up yet when we started."""

    identity: Identity
    bootstrap: Bootstrap
    dialer: Dialer
    make_descriptor: Callable[[float], Descriptor]
    path_to: Callable[[BootstrapAuthority], Sequence[HopInfo]]
    invitation: bytes | None = None
    wall_clock: WallClock = time.time
    withdraw_on_stop: bool = False  # real roles do; a simulated crash must stay silent

    def __post_init__(self) -> None:
        self.published = trio.Event()
        self._wakeup = trio.Event()

    def publish_soon(self) -> None:
        """Publish again now (e.g. after an onion key rotation or a change of load)."""
        self._wakeup.set()

    async def run(self) -> None:
        try:
            missed_rounds = 0
            while True:
                accepted = await self.publish_once()
                missed_rounds = 0 if accepted == len(self.bootstrap.authorities) else missed_rounds + 1
                with trio.move_on_after(publish_delay_s(missed_rounds, self.bootstrap)):
                    await self._wakeup.wait()
                self._wakeup = trio.Event()
        finally:
            if self.withdraw_on_stop and self.published.is_set():
                with trio.CancelScope(shield=True), trio.move_on_after(WITHDRAW_TIMEOUT_S):
                    await self.withdraw()

    async def withdraw(self) -> int:
        """On a clean stop: publish a descriptor that expires before any coming vote, so the authorities
        drop us from the next document (within a period) instead of listing us until we expire."""
        now = self.wall_clock()
        descriptor = dataclasses.replace(self.make_descriptor(now), expires=int(now) + WITHDRAWN_LIFETIME_S)
        accepted = await self._publish_signed(sign_descriptor(self.identity, descriptor))
        log.info("withdrew from the directory (%d authorities accepted)", accepted)
        return accepted

    async def publish_once(self) -> int:
        """Publish to all authorities at once; returns how many accepted."""
        accepted = await self._publish_signed(
            sign_descriptor(self.identity, self.make_descriptor(self.wall_clock()))
        )
        if accepted:
            self.published.set()
        return accepted

    async def _publish_signed(self, signed: SignedDescriptor) -> int:
        accepted = [0]
        async with trio.open_nursery() as nursery:
            for authority in self.bootstrap.authorities:
                nursery.start_soon(self._publish_to, authority, signed, accepted)
        return accepted[0]

    async def _publish_to(
        self, authority: BootstrapAuthority, signed: SignedDescriptor, accepted: list[int]
    ) -> None:
        # A silent authority must not hold back the next round: the descriptor would expire at the others.
        with trio.move_on_after(republish_interval_s(self.bootstrap)) as scope:
            try:
                await publish_descriptor(self.dialer, self.path_to(authority), signed, self.invitation)
            except TokenPlaceError as exc:
                log.info("publishing to authority %s failed: %s", short_id(authority.node_id), exc)
                return
        if scope.cancelled_caught:
            log.info("publishing to authority %s timed out", short_id(authority.node_id))
            return
        accepted[0] += 1


async def refresh_documents(
    service: DirectoryService, bootstrap: Bootstrap, dialer: Dialer, wall_clock: WallClock = time.time
) -> None:
    """Keep the relay's cached document fresh: ask the authorities when the next one is due (at most a
    quarter period apart), and every few seconds while there is none. The link to each authority is kept
    between fetches (KeptLinks): a fresh one cost a WAN handshake per fetch (0.5 s at 80 ms RTT)."""
    async with KeptLinks.open(dialer) as kept:
        while True:
            for authority in bootstrap.authorities:
                try:
                    if service.offer_document(await fetch_document(dialer, authority.hop(), kept)):
                        due = next_due_text(service, bootstrap, wall_clock())
                        log.info("cached a new directory document; %s", due)
                    break
                except TokenPlaceError as exc:
                    log.debug("no document from authority %s: %s", short_id(authority.node_id), exc)
            await trio.sleep(refresh_delay_s(service.current_valid_after(), bootstrap, wall_clock()))


def refresh_delay_s(valid_after: int | None, bootstrap: Bootstrap, now: float) -> float:
    """How long a role that holds a document valid from `valid_after` (None: none yet) waits before
    fetching again: until the next is due, at least DOCUMENT_RETRY_S, at most a quarter period."""
    if valid_after is None:
        return min(DOCUMENT_RETRY_S, bootstrap.period_s / 4)
    due = next_document_due(valid_after, bootstrap.period_s, now)
    return max(DOCUMENT_RETRY_S, min(due - now, bootstrap.period_s / 4))


def directory_status(service: DirectoryService, bootstrap: Bootstrap, now: float) -> dict[str, Any]:
    """What `tp-relay status` shows of the directory: the document served, its age and signatures, and
    when the next is due."""
    status: dict[str, Any] = {
        "network": bootstrap.network,
        "threshold": bootstrap.threshold,
        "authorities": len(bootstrap.authorities),
        "period_s": bootstrap.period_s,
        "valid_after": None,
    }
    document = service.current_document()
    if document is None:
        return status
    body = decode_body(document.body)
    kinds = [decode_descriptor(d.body) for d in body.descriptors]
    relays = sum(1 for d in kinds if isinstance(d, RelayDescriptor))
    return status | {
        "valid_after": body.valid_after,
        "age_s": round(now - body.valid_after),
        "signatures": len(document.signatures),
        "relays": relays,
        "nodes": len(kinds) - relays,
        "next_due_in_s": round(next_document_due(body.valid_after, bootstrap.period_s, now) - now),
    }


def next_due_text(service: DirectoryService, bootstrap: Bootstrap, now: float) -> str:
    valid_after = service.current_valid_after()
    if valid_after is None:
        return "no document yet"
    return f"next due in {next_document_due(valid_after, bootstrap.period_s, now) - now:.0f} s"


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
        self.unreachable: set[bytes] = set()  # peers whose last request failed

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            first_aligned = Schedule.next_after(self.wall_clock(), self.core.period_s)
            log.info(
                "authority of %r: first document once %d of %d authorities are up, then one each %d s "
                "(first aligned period %d)",
                self.bootstrap.network,
                self.bootstrap.threshold,
                len(self.bootstrap.authorities),
                self.core.period_s,
                first_aligned.period,
            )
            while round_ := Schedule.first_round_after(self.wall_clock(), self.core.period_s, first_aligned):
                await self._round(round_, first_round=True)
            while True:
                await self._round(
                    Schedule.next_after(self.wall_clock(), self.core.period_s), first_round=False
                )

    async def _round(self, schedule: Schedule, *, first_round: bool) -> None:
        await self._sleep_until(schedule.vote_at)
        if first_round and not self.core.needs_first_round(self.wall_clock()):
            return
        vote = self.core.make_vote(schedule.period)
        self._broadcast({"op": "vote", "vote": vote})
        await self._sleep_until(schedule.sign_at)
        if first_round and self.core.votes_for(schedule.period) < self.core.trust.threshold:
            log.info(
                "warm-up round %d: %d of the %d votes a document needs (waiting for more authorities)",
                schedule.period,
                self.core.votes_for(schedule.period),
                self.core.trust.threshold,
            )
            return
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
            due = next_document_due(schedule.period, self.core.period_s, self.wall_clock())
            log.info(
                "signed the document valid from %d; next due in %.0f s",
                schedule.period,
                due - self.wall_clock(),
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

    def relay_vote(self, vote: bytes, author: bytes) -> None:
        """Relay a vote sent straight to us to the authorities other than its author (one vote set)."""
        request: dict[str, object] = {"op": "vote", "vote": vote, "relayed": self.core.relay_proof(vote)}
        self._broadcast(request, skip=author)

    def _broadcast(self, request: dict[str, object], skip: bytes | None = None) -> None:
        if self._nursery is None:
            return
        for peer in self.peers:
            if peer.node_id != skip:
                self._nursery.start_soon(self._send, peer, request)

    async def _send(self, peer: BootstrapAuthority, request: dict[str, object]) -> None:
        try:
            await directory_request(self.dialer, [peer.hop()], dict(request))
        except TokenPlaceError as exc:
            log.info("authority %s: %s failed: %s", short_id(peer.node_id), request["op"], exc)
            if peer.node_id not in self.unreachable:
                self.unreachable.add(peer.node_id)
                log.warning(
                    "authority %s at %s is unreachable (%s); %s",
                    peer.node_id.hex(),
                    peer.address,
                    exc,
                    self.reachability(),
                )
        else:
            if peer.node_id in self.unreachable:
                self.unreachable.discard(peer.node_id)
                log.info("authority %s is reachable again; %s", peer.node_id.hex(), self.reachability())

    def reachability(self) -> str:
        """How many authorities this one reaches (itself included) and whether the threshold holds."""
        reachable = len(self.bootstrap.authorities) - len(self.unreachable)
        holds = (
            "the threshold still holds"
            if reachable >= self.bootstrap.threshold
            else "below the threshold: no new directory documents until enough are back"
        )
        total, threshold = len(self.bootstrap.authorities), self.bootstrap.threshold
        return f"{reachable} of {total} authorities reachable, threshold {threshold}: {holds}"

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
    family: str = "",
    sealing_public_keys: Callable[[], tuple[bytes, ...]] = tuple,
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
            family,
            sealing_public_keys(),
        )

    def path_to(authority: BootstrapAuthority) -> list[HopInfo]:
        # A random home relay each time: one that is down only fails some rounds of publishing.
        home = rng.choice(home_relays)
        if home.node_id == authority.node_id:
            return [authority.hop()]
        return [HopInfo(home.node_id, None, home.address), authority.hop()]

    return DescriptorPublisher(identity, bootstrap, dialer, describe, path_to, invitation)
