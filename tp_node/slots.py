"""Slots: dedicated worker threads that each own a resource (a Llama), and the bounded queue in front of them.

A `SlotWorker` creates its resource on its own thread and runs every job there: llama.cpp objects are not
thread-safe, and under OpenMP calls from another thread than the creating one are ~4x slower
(shared/STACK.md). A `SlotPool` admits requests to a set of workers: at most `queue_limit` requests wait
for a slot, and one more is refused at once ("overloaded") instead of waiting without bound. A slot is
handed back when the worker has really finished the job, not when the requester gave up, so the load a
node reports is the load its threads carry.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

import trio

from tp_net.protocol.inference_contract import EngineError

log = logging.getLogger(__name__)

R = TypeVar("R")
W = TypeVar("W")
Job = Callable[[R], None]


class SlotWorker(Generic[R]):
    """One thread, one resource, one job at a time (jobs report their own results and errors)."""

    def __init__(self, name: str, create: Callable[[], R], destroy: Callable[[R], None]) -> None:
        self._jobs: queue.SimpleQueue[Job[R] | None] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(create, destroy), name=name, daemon=True)
        self._thread.start()

    def wait_ready(self) -> None:
        """Block until the resource exists; re-raises the error that prevented it."""
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def submit(self, job: Job[R]) -> None:
        self._jobs.put(job)

    def stop(self) -> None:
        """Finish the queued jobs, destroy the resource, end the thread (see `join`)."""
        self._jobs.put(None)

    def join(self) -> None:
        self._thread.join()

    def _run(self, create: Callable[[], R], destroy: Callable[[R], None]) -> None:
        try:
            resource = create()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while (job := self._jobs.get()) is not None:
                try:
                    job(resource)
                except Exception as exc:  # a job reports its own errors; this keeps the slot alive regardless
                    # No traceback: an exception's text may quote the request.
                    log.error("slot job failed unexpectedly (%s)", exc.__class__.__name__)  # noqa: TRY400
        finally:
            destroy(resource)


class SlotPool(Generic[W]):
    """Admission to `workers` (trio side). `acquire` a worker, `release` it when its job is over.

    Waiters park in FIFO order and `release` hands a worker straight to the first of them, so the counts
    are exact at every moment: a request is refused only when `queue_limit` others really wait.
    """

    def __init__(self, workers: list[W], queue_limit: int) -> None:
        self.size = len(workers)
        self.queue_limit = queue_limit
        self._idle = list(workers)
        self._waiters = trio.lowlevel.ParkingLot()
        self._granted: dict[trio.lowlevel.Task, W] = {}

    @property
    def active(self) -> int:
        return self.size - len(self._idle)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> W:
        """A free worker, waiting in FIFO order; EngineError("overloaded") when the queue is full."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._idle:  # nobody can be waiting while a worker is idle
            worker = self._idle.pop()
            await trio.lowlevel.cancel_shielded_checkpoint()
            return worker
        if len(self._waiters) >= self.queue_limit:
            raise EngineError(
                "overloaded",
                f"all {self.size} slots are busy and {len(self._waiters)} requests wait; try another node",
            )
        await self._waiters.park()
        return self._granted.pop(trio.lowlevel.current_task())

    def release(self, worker: W) -> None:
        """Give a worker back (trio thread only): to the longest waiter, else to the idle list."""
        woken = self._waiters.unpark()
        if woken:
            self._granted[woken[0]] = worker
        else:
            self._idle.append(worker)

    def release_soon(self, worker: W, token: trio.lowlevel.TrioToken) -> None:
        """Give a worker back from any thread; a no-op once the trio run is over."""
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(self.release, worker)
