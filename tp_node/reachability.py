"""An authority's reachability dials (trio): it admits a new relay only once it has reached the address the
relay claims and the peer there proved the descriptor's identity key (the Noise XX link handshake checks the
node id). Decisions (what waits, what is dialed next, what is admitted) are tp_node.authority_core's and
tp_node.admission_queue's; this module dials, at most `REACHABILITY_DIALS_MAX` at once, each under
`REACHABILITY_TIMEOUT_S`, and closes the link at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from tp_crypto.errors import TokenPlaceError
from tp_net.protocol.descriptors import SignedDescriptor
from tp_net.trio.link_trio import dial_link
from tp_net.trio.transport import Dialer
from tp_node.authority_core import AuthorityCore

log = logging.getLogger(__name__)

REACHABILITY_DIALS_MAX = 64  # dials in flight at once, per authority
REACHABILITY_TIMEOUT_S = 10.0  # a dial (TCP, WebSocket, Noise XX) that takes longer counts as unreachable

Forward = Callable[[SignedDescriptor, bytes | None], None]


class ReachabilityTester:
    def __init__(
        self,
        core: AuthorityCore,
        dialer: Dialer,
        forward: Forward | None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._core = core
        self._dialer = dialer
        self._forward = forward
        self._clock = wall_clock
        self._wakeup = trio.Event()
        self._in_flight = 0
        self.dials = 0

    def wake(self) -> None:
        """Something may wait for a dial (a descriptor was uploaded)."""
        self._wakeup.set()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                self._wakeup = trio.Event()
                for node_id, address in self._core.queue.due(REACHABILITY_DIALS_MAX - self._in_flight):
                    self._in_flight += 1
                    nursery.start_soon(self._dial, node_id, address)
                await self._wakeup.wait()

    async def _dial(self, node_id: bytes, address: str) -> None:
        self.dials += 1
        reachable = False
        try:
            with trio.move_on_after(REACHABILITY_TIMEOUT_S):
                link = await dial_link(
                    self._dialer, address, expected_peer_id=node_id, identity=self._core.identity
                )
                reachable = True
                await link.aclose()
        except (TokenPlaceError, OSError) as exc:
            log.debug("reachability dial failed: %s", exc.__class__.__name__)
        finally:
            self._in_flight -= 1
            self.wake()
        for held in self._core.reached(node_id, reachable, self._clock()):
            if not held.forwarded and self._forward is not None:
                self._forward(held.signed, held.invitation)
