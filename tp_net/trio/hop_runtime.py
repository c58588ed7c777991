"""The trio side of a hop (relay or GPU node): runs links and carries out HopCore's outputs.

All protocol decisions are in tp_net.protocol.circuit_hop.HopCore; this module moves cells between links and
the core, enforces the per-circuit and per-link buffer bounds, and expires idle circuits.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import trio

from tp_crypto.identity import Identity, short_id
from tp_net.protocol.cells import CellCommand, DestroyReason
from tp_net.protocol.circuit_hop import HopCore
from tp_net.protocol.frames import CELL_BODY_BYTES, Cell, Frame
from tp_net.protocol.hop_outputs import CircuitRef, ConnectTo, HopOutput, SendCell, ServiceEvent
from tp_net.protocol.link_limits import fair_turns
from tp_net.protocol.streams import CIRCUIT_WINDOW_CELLS
from tp_net.protocol.traffic_shaping import RESPONSE_SHAPING_OFF, ResponseShaping
from tp_net.trio.link_pump import LinkPump
from tp_net.trio.link_trio import Link
from tp_net.trio.services import ServiceHandler, ServiceHost, StreamPort

log = logging.getLogger(__name__)

# A circuit's cells waiting to go out on one link. Honest edges never have more than a window of DATA in
# flight, plus a few control cells; anything beyond this is a peer ignoring flow control.
CIRCUIT_QUEUE_CELLS_MAX = 2 * CIRCUIT_WINDOW_CELLS
CIRCUIT_QUEUE_BYTES_MAX = CIRCUIT_QUEUE_CELLS_MAX * CELL_BODY_BYTES
# All circuits' cells waiting on one link; past it the circuit with the most queued cells is torn down.
LINK_QUEUE_CELLS_MAX = 16 * CIRCUIT_QUEUE_CELLS_MAX
EXPIRE_INTERVAL_S = 5.0


@dataclass(frozen=True)
class LinkStats:
    """One link's pump, as observers see it (the simulator's buffer checks, status)."""

    link_id: int
    link: Link
    queued_cells: int  # all circuits' cells waiting to go out
    largest_circuit_cells: int  # the most any one circuit has waiting


class HopRuntime:
    """Links and circuits of one hop. Subclasses handle ConnectTo and ServiceEvent."""

    def __init__(
        self,
        identity: Identity,
        core: HopCore,
        services: Mapping[str, ServiceHandler] | None = None,
        shaping: ResponseShaping = RESPONSE_SHAPING_OFF,
    ) -> None:
        self.identity = identity
        self.core = core
        self._pumps: dict[int, LinkPump] = {}
        self._link_ids = itertools.count(1)
        self._progress = trio.Event()
        # Outputs not yet carried out, in the order HopCore produced them (see apply).
        self._outputs: deque[HopOutput] = deque()
        self._applying = False
        # Per link: circuits whose local streams hold data not yet cut into cells (see _stream_send).
        self._unflushed: dict[int, set[CircuitRef]] = {}
        # Operator counters (status, /metrics): plain ints, as every cell is handled on the one trio thread.
        self.cells_received = 0
        self.cells_sent = 0
        port = StreamPort(
            send=self._stream_send,
            end=lambda ref, stream_id, reason: self.apply(core.streams.end(ref, stream_id, reason)),
            destroy=lambda ref: self.apply(core.destroy_circuit(ref[0], ref[1], DestroyReason.PROTOCOL)),
            consumed=lambda ref, stream_id: self.apply(core.streams.consumed(ref, stream_id)),
            queued_bytes=core.streams.queued_bytes,
            wait_for_progress=self.wait_for_progress,
            drop=self._send_drop,
        )
        self.services = ServiceHost(services or {}, port, shaping)

    def _send_drop(self, ref: CircuitRef) -> bool:
        outputs = self.core.send_drop(ref)
        self.apply(outputs)
        return bool(outputs)

    @property
    def link_count(self) -> int:
        return len(self._pumps)

    def queued_cells(self) -> int:
        return sum(pump.queued_frames for pump in self._pumps.values())

    def link_stats(self) -> list[LinkStats]:
        stats = []
        for link_id, pump in self._pumps.items():
            largest = pump.largest_circuit()
            most = pump.queued_cells(largest) if largest is not None else 0
            stats.append(LinkStats(link_id, pump.link, pump.queued_frames, most))
        return stats

    def link(self, link_id: int) -> Link | None:
        """The link with this id while it is up."""
        pump = self._pumps.get(link_id)
        return pump.link if pump is not None else None

    async def run_link(
        self, link: Link, *, we_dialed: bool, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve one established link until it closes; reports its link id once registered."""
        link_id = next(self._link_ids)
        pump = LinkPump(link, link_id)
        pump.before_batch = partial(self._flush_unflushed, link_id)
        self._pumps[link_id] = pump
        self.core.link_up(link_id, link.peer_id, we_dialed=we_dialed, peer_host=link.peer_host)
        log.debug("link %d up (peer %s)", link_id, short_id(link.peer_id) if link.peer_id else "anonymous")
        try:
            task_status.started(link_id)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump.run_writer)
                await pump.run_reader(partial(self.on_frames, link_id), turns=fair_turns)
                nursery.cancel_scope.cancel()
        finally:
            del self._pumps[link_id]
            self._unflushed.pop(link_id, None)
            self.apply(self.core.link_down(link_id))
            await pump.aclose()
            log.debug("link %d down", link_id)

    async def run_background(self) -> None:
        """The hop's own tasks (service handlers, circuit expiry) until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.services.run)
            nursery.start_soon(self._expire_forever)

    async def _expire_forever(self) -> None:
        while True:
            await trio.sleep(EXPIRE_INTERVAL_S)
            self.apply(self.core.expire(trio.current_time()))

    def apply(self, outputs: list[HopOutput]) -> None:
        """Carry out HopCore's outputs in the order it produced them.

        A backward cell is encrypted when HopCore makes it, so cells must reach the link in that order or
        the client's keystream falls out of step. Carrying out an output can call HopCore again (a service
        acks the data it was handed, which queues a stream SENDME): such a nested call only appends its
        outputs, behind every earlier one, and the outermost call carries them out. Never re-entrant.
        """
        if not outputs:
            return
        self._outputs.extend(outputs)
        if self._applying:
            return
        self._applying = True
        try:
            while self._outputs:
                output = self._outputs.popleft()
                if isinstance(output, SendCell):
                    self._send(output)
                elif isinstance(output, ConnectTo):
                    self.on_connect_to(output)
                else:
                    self.on_service_event(output)
        finally:
            self._applying = False

    def on_connect_to(self, request: ConnectTo) -> None:
        self.apply(self.core.connect_result(request.request_id, None))

    def on_service_event(self, event: ServiceEvent) -> None:
        self.services.on_event(event)

    def _note_progress(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def wait_for_progress(self) -> None:
        """Return after the next batch of received cells was processed (windows may have opened)."""
        await self._progress.wait()

    def _stream_send(self, ref: CircuitRef, stream_id: int, data: bytes) -> None:
        """A service's message: out at once when the link is idle; while it is busy, kept until the writer
        takes its next batch, so that what a fast engine produces meanwhile shares cells (one cell and one
        WebSocket message per batch at every hop, not one per token)."""
        pump = self._pumps.get(ref[0])
        if pump is None or not pump.busy:
            self.apply(self.core.streams.send(ref, stream_id, data))
            return
        self.core.streams.send(ref, stream_id, data, flush=False)
        self._unflushed.setdefault(ref[0], set()).add(ref)
        pump.wake()

    def _flush_unflushed(self, link_id: int) -> None:
        refs = self._unflushed.pop(link_id, None)
        if not refs:
            return
        for ref in sorted(refs):
            self.apply(self.core.streams.flush(ref))
        # Services waiting for their queue to shrink may go on.
        self._note_progress()

    def on_frames(self, link_id: int, frames: list[Frame]) -> None:
        """Frames received on a link, in order, into HopCore. The seam for observers of the cells a hop
        receives (a subclass sees them here, and may hold, alter or drop them: the simulator's adversary)."""
        now = trio.current_time()
        for frame in frames:
            if isinstance(frame, Cell):
                self.cells_received += 1
                self.apply(self.core.receive_cell(link_id, frame, now))
        self._note_progress()

    def _send(self, output: SendCell) -> None:
        pump = self._pumps.get(output.link)
        if pump is None:
            return
        circuit_id = output.cell.circuit_id
        if output.cell.command == CellCommand.DESTROY:
            # The circuit is gone: what it still has queued here need not go, and must not count. DESTROY
            # itself always goes out.
            pump.discard_circuit(circuit_id)
        elif pump.queued_cells(circuit_id) >= CIRCUIT_QUEUE_CELLS_MAX:
            log.info("circuit over its buffer bound on link %d: destroying it", output.link)
            self.apply(self.core.destroy_circuit(output.link, circuit_id, DestroyReason.RESOURCE_LIMIT))
            return
        pump.enqueue(output.cell)
        self.cells_sent += 1
        if pump.queued_frames > LINK_QUEUE_CELLS_MAX:
            self._shed_largest_circuit(pump)

    def _shed_largest_circuit(self, pump: LinkPump) -> None:
        largest = pump.largest_circuit()
        if largest is not None:
            log.info("link %d over its buffer bound: destroying its largest circuit", pump.link_id)
            self.apply(self.core.destroy_circuit(pump.link_id, largest, DestroyReason.RESOURCE_LIMIT))
