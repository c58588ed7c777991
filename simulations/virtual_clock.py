"""The simulation's clock: what trio's MockClock with `autojump_threshold=0` does, cheaper, same times.

A run advances virtual time millions of times (every message's arrival is a timer). MockClock autojumps
from the run loop's idle path: when nothing is runnable, trio asks the clock how long to sleep, waits
that long for I/O (a zero-timeout epoll call), sees that nothing happened, asks for the run's statistics
and jumps the clock to the next deadline; only on the loop's next pass do the timers expire (a second
epoll call). VirtualClock jumps when trio asks how long to sleep: the same jump (the same float
arithmetic, so the same times to the bit), one loop pass and one epoll call per jump instead of two, and
its `current_time` reads the virtual time without MockClock's real-clock arithmetic (a rate of 0).
The schedule is unchanged: the pass that MockClock adds runs no task (tests/simulations/test_virtual_clock.py
compares both clocks event by event).

Only for runs where nothing but timers wakes tasks (no real I/O, no wait_all_tasks_blocked): the
simulator's.
"""

from __future__ import annotations

import math

import trio

NEVER_S = 999_999_999  # what MockClock answers for a deadline that never comes (trio caps it)


class VirtualClock(trio.abc.Clock):
    """Virtual time from 0, advanced only by jumps to the next deadline (MockClock is final in trio)."""

    def __init__(self) -> None:
        self._virtual_s = 0.0

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self._virtual_s

    def deadline_to_sleep_time(self, deadline: float) -> float:
        """Called by trio's run loop only when no task is runnable: jump to the deadline now."""
        if math.isinf(deadline):
            return NEVER_S
        while deadline - self._virtual_s > 0:  # MockClock's jumps: time += (deadline - time)
            self._virtual_s += deadline - self._virtual_s
        return 0.0
