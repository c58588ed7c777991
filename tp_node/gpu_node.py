"""The GPU node role: keeps outbound links to its home relays and serves inference streams on circuits.

A node never accepts connections: it dials each home relay, proves its identity, and keeps the link up with
exponential backoff. Circuits end at the node (it is the last hop, with its own onion layer). Each stream
to the "inference" service carries one request message; the node answers with chunk messages produced by
its engine (tp_net.trio.services does the streaming, flow control and cancellation).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from tp_crypto.identity import Identity, short_id
from tp_net.protocol.circuit_hop import HopCore
from tp_net.protocol.errors import TokenPlaceError, WrongPeerError
from tp_net.protocol.inference_contract import INFERENCE_SERVICE
from tp_net.protocol.sealed import SEALED_SERVICE, SealingKey
from tp_net.protocol.traffic_shaping import RESPONSE_SHAPING_DEFAULT, ResponseShaping
from tp_net.trio.hop_runtime import HopRuntime
from tp_net.trio.link_trio import dial_link
from tp_net.trio.services import ServiceHandler
from tp_net.trio.transport import Dialer
from tp_node.engine import Engine
from tp_node.sealed_service import SealedService

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_MIN_S = 0.25
RECONNECT_BACKOFF_MAX_S = 30.0


@dataclass(frozen=True)
class HomeRelay:
    node_id: bytes
    address: str


class GpuNode(HopRuntime):
    def __init__(
        self,
        identity: Identity,
        onion_keys: list[bytes],
        *,
        home_relays: Sequence[HomeRelay],
        engine: Engine,
        dialer: Dialer,
        rng: random.Random,
        sealing_keys: Callable[[], list[SealingKey]] | None = None,
        wall_clock: Callable[[], float] = time.time,
        shaping: ResponseShaping = RESPONSE_SHAPING_DEFAULT,
    ) -> None:
        """With `sealing_keys` (newest first) the node also serves sealed requests (PROTOCOL.md 9)."""
        services: dict[str, ServiceHandler] = {INFERENCE_SERVICE: engine.generate}
        self.sealed: SealedService | None = None
        if sealing_keys is not None:
            self.sealed = SealedService(identity.node_id, sealing_keys, engine.generate, wall_clock)
            services[SEALED_SERVICE] = self.sealed.handle
        core = HopCore(
            onion_keys,
            rng=rng,
            can_extend=False,
            services=tuple(services),
            identity_key=identity.x25519_private,
        )
        super().__init__(identity, core, services, shaping)
        self.home_relays = list(home_relays)
        self._engine = engine
        self._dialer = dialer
        self._rng = rng
        self.linked = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._kept: dict[bytes, trio.CancelScope] = {}  # home relay -> the task keeping its link

    async def run(self) -> None:
        """Keep links to every home relay and serve circuits until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.run_background)
            self.use_home_relays(self.home_relays)

    def use_home_relays(self, relays: Sequence[HomeRelay]) -> None:
        """Keep links to `relays` from now on: new ones are dialled, the links to dropped ones closed."""
        self.home_relays = list(relays)
        if self._nursery is None:  # run() starts them
            return
        wanted = {relay.node_id for relay in relays}
        for node_id in [node_id for node_id in self._kept if node_id not in wanted]:
            self._kept.pop(node_id).cancel()
        for relay in relays:
            if relay.node_id not in self._kept:
                self._kept[relay.node_id] = scope = trio.CancelScope()
                self._nursery.start_soon(self._keep_linked, relay, scope)

    async def _keep_linked(self, relay: HomeRelay, scope: trio.CancelScope) -> None:
        with scope:
            await self._keep_linked_until_cancelled(relay)

    async def _keep_linked_until_cancelled(self, relay: HomeRelay) -> None:
        backoff = RECONNECT_BACKOFF_MIN_S
        while True:
            try:
                link = await dial_link(
                    self._dialer, relay.address, expected_peer_id=relay.node_id, identity=self.identity
                )
            except WrongPeerError as exc:
                log.warning(
                    "home relay at %s is node %s, not %s: fix --home-relay (`tp-relay status` on the relay "
                    "shows its node id)",
                    relay.address,
                    exc.answered.hex() if exc.answered else "(anonymous)",
                    relay.node_id.hex(),
                )
            except TokenPlaceError as exc:
                log.info("home relay %s unreachable (%s)", short_id(relay.node_id), exc.__class__.__name__)
            else:
                backoff = RECONNECT_BACKOFF_MIN_S
                self.linked.set()
                await self.run_link(link, we_dialed=True)
                log.info("link to home relay %s closed", short_id(relay.node_id))
            # Jitter spreads reconnects of many nodes after a relay restarts.
            await trio.sleep(backoff * self._rng.uniform(0.5, 1.5))
            backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX_S)
