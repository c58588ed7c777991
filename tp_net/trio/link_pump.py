"""Moves frames between a Link and the code that owns it.

A writer task sends everything queued in one `Link.send` call, so cells that pile up while a send is in
flight leave together in one WebSocket message (batching under load, no added latency when idle). Cells
queued per circuit are counted: the owner refuses to queue beyond its bound and tears that circuit down.

Control replies are bounded apart from the cells: at most one Pong is owed to the peer at a time. A Ping that
arrives while a Pong still waits replaces its token (the Pong answers the latest Ping), so a peer that sends
Pings and never reads costs one frame here, and Pongs never count toward the owner's cell bounds.

The writer also keeps the link's liveness (tp_net.protocol.liveness): a keepalive Ping after a silence, and an
abort (no goodbye) once nothing was received for the silence deadline, which ends the reader and the writer.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable

import trio

from tp_net.protocol.errors import LinkClosed, RemoteProtocolError
from tp_net.protocol.frames import Cell, Frame, Ping, Pong
from tp_net.protocol.liveness import LinkLiveness, LivenessAction, LivenessLimits
from tp_net.trio import message_trace
from tp_net.trio.link_trio import Link

_TRACING = message_trace.ENABLED  # the latency tracer (off unless TP_TRACE_DIR was set at start)

# Largest number of frames handed to one Link.send (one or a few WebSocket messages).
SEND_BATCH_FRAMES_MAX = 512


class LinkPump:
    def __init__(self, link: Link, link_id: int, *, liveness: LivenessLimits | None = None) -> None:
        self.link = link
        self.link_id = link_id
        self._queue: deque[Frame] = deque()
        self._queued_cells: Counter[int] = Counter()
        # The one Pong owed to the peer, if any (sent at the front of the next batch).
        self._owed_pong: Pong | None = None
        # Our keepalive Ping, if one waits to go out (sent at the front of the next batch).
        self._ping_due: Ping | None = None
        self.liveness = LinkLiveness(trio.current_time(), liveness)
        # Set when the link was closed because the peer fell silent.
        self.silent = False
        # When a cell last came in or was queued to go out (trio time): the owner's idle-link clock.
        self.last_cell_at = trio.current_time()
        self._has_work = trio.Event()
        self._sending = False
        self.closed = trio.Event()
        # Called by the writer just before it takes a batch: the owner's last chance to add cells to it.
        self.before_batch: Callable[[], None] | None = None
        self._queue_traced = False  # the latency tracer marked the first frame queued for the next batch

    def queued_cells(self, circuit_id: int) -> int:
        return self._queued_cells[circuit_id]

    def largest_circuit(self) -> int | None:
        """The circuit with the most cells queued here."""
        most = self._queued_cells.most_common(1)
        return most[0][0] if most else None

    def discard_circuit(self, circuit_id: int) -> None:
        """Drop the cells still queued for a circuit that is gone (those of a batch in flight stay counted
        until it is sent)."""
        queued = self._queued_cells[circuit_id]
        if not queued:
            return
        kept = deque(f for f in self._queue if not (isinstance(f, Cell) and f.circuit_id == circuit_id))
        in_flight = queued - (len(self._queue) - len(kept))
        self._queue = kept
        if in_flight:
            self._queued_cells[circuit_id] = in_flight
        else:
            del self._queued_cells[circuit_id]

    @property
    def queued_frames(self) -> int:
        """Frames queued by the owner (cells); the owed Pong is not one of them."""
        return len(self._queue)

    @property
    def pong_owed(self) -> bool:
        return self._owed_pong is not None

    @property
    def busy(self) -> bool:
        """A send is in flight or frames wait: what is added now leaves with the next batch anyway."""
        return self._sending or bool(self._queue) or self._owed_pong is not None or self._ping_due is not None

    def wake(self) -> None:
        """Make the writer run before_batch (and send what it adds) even if nothing is queued."""
        if not self.closed.is_set():
            self._has_work.set()

    def enqueue(self, frame: Frame) -> None:
        if self.closed.is_set():
            return
        self._queue.append(frame)
        if _TRACING and not self._queue_traced:
            self._queue_traced = True
            message_trace.mark("pump_enqueue")  # the first frame for the next batch
        if isinstance(frame, Cell):
            self._queued_cells[frame.circuit_id] += 1
            self.last_cell_at = trio.current_time()
        self._has_work.set()

    async def run_writer(self) -> None:
        """Send queued frames (and keepalive Pings) until the link closes or falls silent."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_alive)
                await self._write()
                nursery.cancel_scope.cancel()
        finally:
            self.closed.set()

    async def _keep_alive(self) -> None:
        """Apply the liveness decisions until the link is closed (as dead, here, or by anyone else)."""
        liveness = self.liveness
        while not self.closed.is_set():
            with trio.move_on_at(liveness.next_check_at()):
                await self.closed.wait()
            now = trio.current_time()
            action = liveness.poll(now)
            if action is LivenessAction.PING:
                self._ping_due = Ping(liveness.ping_sent(now))
                self._has_work.set()
            elif action is LivenessAction.DEAD and not self.closed.is_set():
                self.silent = True
                self.closed.set()
                self._has_work.set()  # the writer wakes and ends
                await self.link.abort()
                return

    async def _write(self) -> None:
        try:
            while not self.closed.is_set():
                await self._has_work.wait()
                if _TRACING:
                    message_trace.mark("pump_writer_runs")
                    self._queue_traced = False
                if self.before_batch is not None:
                    self.before_batch()
                batch = self._take_batch()
                if not batch:
                    self._has_work = trio.Event()
                    continue
                self._sending = True
                try:
                    await self.link.send(batch)
                finally:
                    self._sending = False
                self._uncount(batch)
        except LinkClosed:
            pass

    async def run_reader(
        self,
        on_frames: Callable[[list[Frame]], None],
        *,
        turns: Callable[[list[Frame]], list[list[Frame]]] | None = None,
    ) -> None:
        """Hand received frames to `on_frames` (answering Pings here) until the link closes.

        With `turns`, a message's frames go to `on_frames` one turn at a time, with a scheduler round between
        turns: every other task (other links' readers among them) runs before this link goes on, and the
        next message is read only once this one is handled (TCP backpressure slows its sender)."""
        try:
            while True:
                frames = await self.link.receive()
                self._note_received(frames)
                if turns is None:
                    on_frames(frames)
                    continue
                for index, turn in enumerate(turns(frames)):
                    if index:
                        await trio.lowlevel.checkpoint()
                    on_frames(turn)
        except (LinkClosed, RemoteProtocolError):
            pass
        finally:
            self.closed.set()

    async def aclose(self) -> None:
        self.closed.set()
        await self.link.aclose()

    def _note_received(self, frames: list[Frame]) -> None:
        """Owe a Pong for the latest Ping (replacing one still owed); note when cells arrived."""
        self.liveness.received(trio.current_time())
        cells = False
        for frame in frames:
            if isinstance(frame, Ping):
                self._owed_pong = Pong(frame.token)
            elif isinstance(frame, Cell):
                cells = True
        if cells:
            self.last_cell_at = trio.current_time()
        if self._owed_pong is not None and not self.closed.is_set():
            self._has_work.set()

    def _take_batch(self) -> list[Frame]:
        batch: list[Frame] = []
        if self._ping_due is not None:
            batch.append(self._ping_due)
            self._ping_due = None
        if self._owed_pong is not None:
            batch.append(self._owed_pong)
            self._owed_pong = None
        count = min(len(self._queue), SEND_BATCH_FRAMES_MAX - len(batch))
        batch += [self._queue.popleft() for _ in range(count)]
        return batch

    def _uncount(self, batch: list[Frame]) -> None:
        for frame in batch:
            if isinstance(frame, Cell):
                remaining = self._queued_cells[frame.circuit_id] - 1
                if remaining:
                    self._queued_cells[frame.circuit_id] = remaining
                else:
                    del self._queued_cells[frame.circuit_id]
