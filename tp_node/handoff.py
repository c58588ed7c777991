"""Handing items from a worker thread to trio in batches.

A per-item `trio.from_thread.run` blocks the worker until trio has run the call: at GPU speed (~2 ms a
token) that hop cost 15% of the throughput (shared/STACK.md). Here the worker only appends under a lock and,
when trio has not yet been told, schedules one wake-up with `TrioToken.run_sync_soon`; it never waits for
trio. Trio takes everything that piled up since it last looked as one batch, so a slow consumer sees bigger
batches instead of slowing the producer.

`take(interval_s)` also paces the consumer: after a batch it lets items pile up for `interval_s` before the
next one (the first batch and the end of the stream are never delayed). Every wake runs Python on the trio
thread, which takes the GIL from the worker; pacing bounds the wakes per second whatever the item rate.
"""

from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class PipeClosed(Exception):
    """The trio side stopped listening: the worker should stop producing."""


@dataclass
class _Shared(Generic[T]):
    items: list[T]
    finished: bool = False
    error: BaseException | None = None
    wake_scheduled: bool = False
    pacing: bool = False  # trio looks again at a deadline anyway: no wake-up needed
    abandoned: bool = False


class BatchPipe(Generic[T]):
    """One producer thread, one trio consumer. Created in trio (it remembers the run's token)."""

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._lock = threading.Lock()
        self._shared: _Shared[T] = _Shared([])
        # Touched only in the trio thread:
        self._event = trio.Event()
        self._finished = trio.Event()
        self._last_take = -math.inf

    # Worker thread side.

    def put(self, item: T) -> None:
        """Queue an item; raises PipeClosed once the consumer has gone."""
        with self._lock:
            if self._shared.abandoned:
                raise PipeClosed
            self._shared.items.append(item)
            if not (self._shared.wake_scheduled or self._shared.pacing):
                self._shared.wake_scheduled = True
                try:
                    self._token.run_sync_soon(self._wake)
                except trio.RunFinishedError:
                    self._shared.abandoned = True

    def finish(self, error: BaseException | None = None) -> None:
        """No more items; the consumer gets `error` raised after the last batch, if given.

        Delivered through the trio token, so it reaches trio after any `run_sync_soon` call this thread
        made before (a slot handed back first is back before the consumer sees the end).
        """
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._mark_finished, error)

    # Trio side.

    def _wake(self) -> None:
        self._event.set()  # the event trio waits on now (only this thread replaces it)

    def _mark_finished(self, error: BaseException | None) -> None:
        with self._lock:
            self._shared.finished = True
            self._shared.error = error
        self._event.set()
        self._finished.set()

    async def take(self, interval_s: float = 0.0) -> list[T]:
        """The items queued since the last call (at least one); [] once finished and drained.

        Returns no sooner than `interval_s` after the previous call returned, unless the stream ended.
        """
        deadline = self._last_take + interval_s
        if deadline > trio.current_time():
            with self._lock:
                self._shared.pacing = True
            try:
                with trio.move_on_at(deadline):
                    await self._finished.wait()
            finally:
                with self._lock:
                    self._shared.pacing = False
        while True:
            if self._event.is_set():
                self._event = trio.Event()
            with self._lock:
                shared = self._shared
                if shared.items or shared.finished:
                    batch, shared.items = shared.items, []
                    shared.wake_scheduled = False
                    self._last_take = trio.current_time()
                    if not batch and shared.error is not None:
                        raise shared.error
                    return batch
            await self._event.wait()

    def abandon(self) -> None:
        """The consumer stops listening: the next `put` raises PipeClosed."""
        with self._lock:
            self._shared.abandoned = True
            self._shared.items.clear()
