"""Small trio helpers."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


def is_cancelled() -> bool:
    """True when the current task is inside a cancelled scope (shutting down): skip polite goodbyes."""
    return trio.current_effective_deadline() == -math.inf


def sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside (nested) single-member groups, or the group itself."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


@asynccontextmanager
async def background_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery for helper tasks of a context manager's body, cancelled when the body ends.

    An exception from the body comes out as itself, not wrapped in an exception group, so callers of the
    context manager can catch it by type.
    """
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        error = sole_exception(group)
        if error is group:
            raise
        raise error from None


async def acquire_soon(lock: trio.Lock | trio.StrictFIFOLock) -> None:
    """Acquire `lock`; when it is free, at once, without the scheduler round trip that `acquire()` (and so
    `async with lock`) always costs. A free lock has no waiters, so nobody is overtaken. On a relay's
    per-cell send path that round trip was a visible share of the CPU."""
    if lock.locked():
        await lock.acquire()
    else:
        lock.acquire_nowait()
