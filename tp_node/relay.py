"""The relay role: accepts links, creates and extends circuits, forwards cells.

GPU nodes dial their home relays and keep those links up; a circuit is extended to a node over the node's
own link (HopCore finds a link by the peer's proven node id), so nodes never accept connections. Links to
other relays are dialed on demand when a client asks to extend there, and concurrent requests for the same
relay share one dial.

Where a relay may dial is HopCore's decision (tp_net.protocol.extend_policy); a host name is resolved here,
and dialed at the address it resolves to only if every address it resolves to is public (outside a local
network), so DNS cannot point an EXTEND at a private service. A dial that fails in any way, or takes longer
than EXTEND_DIAL_TIMEOUT_S, costs only the circuits waiting for it (CONNECT_FAILED).

Accepted links are limited by tp_net.protocol.link_limits: the listener caps connections per source address
and in all; here a link that carries no circuit and no cell for the idle timeout is closed, unless its peer is
a relay or GPU node the directory lists.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from functools import partial

import trio

from tp_crypto.identity import Identity, short_id
from tp_net.protocol.addresses import RelayAddress, is_private_host, parse_address
from tp_net.protocol.circuit_hop import EXTEND_TIMEOUT_S, HopCore
from tp_net.protocol.errors import DialError
from tp_net.protocol.extend_policy import ExtendPolicy
from tp_net.protocol.hop_outputs import ConnectTo
from tp_net.protocol.link import CloseReason
from tp_net.protocol.link_limits import LinkLimits, link_is_idle
from tp_net.protocol.rate_limits import IsListed
from tp_net.trio.hop_runtime import HopRuntime
from tp_net.trio.link_trio import Link, accept_link, dial_link
from tp_net.trio.services import ServiceHandler
from tp_net.trio.transport import Channel, Dialer, Listener

log = logging.getLogger(__name__)

# A dial for an EXTEND (TCP, WebSocket and link handshakes) gives up after this; the circuits waiting for it
# are torn down by then anyway (EXTEND_TIMEOUT_S), so the dial task must not outlive them.
EXTEND_DIAL_TIMEOUT_S = EXTEND_TIMEOUT_S


class Relay(HopRuntime):
    def __init__(
        self,
        identity: Identity,
        onion_keys: list[bytes],
        *,
        dialer: Dialer,
        rng: random.Random,
        services: Mapping[str, ServiceHandler] | None = None,
        extend_policy: ExtendPolicy | None = None,
        link_limits: LinkLimits | None = None,
        is_listed: IsListed | None = None,
    ) -> None:
        """`services`: streams a circuit ending here may open (every relay serves "directory").
        `extend_policy`: where EXTEND may dial (tp-relay passes its directory's; see HopCore).
        `is_listed`: whether a node id is in the relay's current directory (CREATE tier, kept links)."""
        core = HopCore(
            onion_keys,
            rng=rng,
            can_extend=True,
            services=tuple(services or ()),
            identity_key=identity.x25519_private,
            extend_policy=extend_policy,
            is_listed=is_listed,
        )
        self.link_limits = link_limits or LinkLimits()
        super().__init__(identity, core, services)
        self._dialer = dialer
        self._dials: dict[bytes, list[int]] = {}  # node id -> requests waiting for that dial
        self._nursery: trio.Nursery | None = None

    async def serve(
        self, listener: Listener, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Accept links on `listener` until cancelled; reports the listening address."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.run_background)
            address = await nursery.start(listener.serve, self._accept)
            log.info("relay %s listening on %s", short_id(self.identity.node_id), address)
            task_status.started(address)

    async def _accept(self, channel: Channel) -> None:
        link = await accept_link(channel, identity=self.identity)
        async with trio.open_nursery() as nursery:
            link_id = await nursery.start(partial(self.run_link, link, we_dialed=False))
            nursery.start_soon(self._close_when_idle, link_id, link)

    async def _close_when_idle(self, link_id: int, link: Link) -> None:
        """Close the link once it is idle (tp_net.protocol.link_limits.link_is_idle); return when it
        closes."""
        pump = self._pumps.get(link_id)
        limits = self.link_limits
        while pump is not None and not pump.closed.is_set():
            with trio.move_on_after(limits.idle_check_interval_s):
                await pump.closed.wait()
            idle = link_is_idle(
                now=trio.current_time(),
                last_cell_at=pump.last_cell_at,
                circuits=self.core.circuits_on(link_id),
                kept=self.core.peer_listed(link_id),
                idle_timeout_s=limits.idle_timeout_s,
            )
            if idle and not pump.closed.is_set():
                log.debug("link %d idle for %.0f s: closing it", link_id, limits.idle_timeout_s)
                await link.aclose(CloseReason.TIMEOUT)
                return

    def on_connect_to(self, request: ConnectTo) -> None:
        waiting = self._dials.get(request.node_id)
        if waiting is not None:
            waiting.append(request.request_id)
            return
        self._dials[request.node_id] = [request.request_id]
        assert self._nursery is not None
        self._nursery.start_soon(self._dial, request)

    async def _dial(self, request: ConnectTo) -> None:
        link_id: int | None = None
        try:
            with trio.fail_after(EXTEND_DIAL_TIMEOUT_S):
                address = await self._resolved(request.address)
                link = await dial_link(
                    self._dialer, address, expected_peer_id=request.node_id, identity=self.identity
                )
        except Exception as exc:  # the role's edge: whatever a dial raises costs only this extend
            log.info("extend to %s failed: %s", short_id(request.node_id), exc.__class__.__name__)
        else:
            assert self._nursery is not None
            link_id = await self._nursery.start(partial(self.run_link, link, we_dialed=True))
        for request_id in self._dials.pop(request.node_id, []):
            self.apply(self.core.connect_result(request_id, link_id))

    async def _resolved(self, address: str) -> str:
        """`address` with a host name replaced by the first IP it resolves to, when the extend policy
        forbids private addresses; DialError when any IP it resolves to is private."""
        policy = self.core.extend_policy
        if policy is None or policy.local_network:
            return address
        parsed = parse_address(address)
        if parsed.ip is not None:
            return address
        infos = await trio.socket.getaddrinfo(parsed.host, parsed.port, type=trio.socket.SOCK_STREAM)
        hosts = [str(info[4][0]) for info in infos]
        if not hosts or any(is_private_host(host) for host in hosts):
            raise DialError("the relay's host name resolves to a private address")
        return RelayAddress(hosts[0], parsed.port, parsed.path).url()
