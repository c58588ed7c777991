"""VirtualClock: the same schedule and times as MockClock(autojump_threshold=0), in fewer run-loop passes."""

from __future__ import annotations

import random

import trio
import trio.lowlevel
import trio.testing

from simulations.determinism import seeded_trio_scheduler
from simulations.virtual_clock import VirtualClock
from tp_net.trio.transport_memory import memory_channel_pair

TASKS = 12
STEPS = 40


class _IoWaits(trio.abc.Instrument):
    def __init__(self) -> None:
        self.count = 0

    def before_io_wait(self, timeout: float) -> None:
        self.count += 1


def _traced_run(clock: trio.abc.Clock) -> tuple[list[tuple[float, str]], int]:
    """Tasks that sleep, time out, and talk over memory channels whose messages arrive later (as the
    simulator's links do): every event with the virtual time it happened at."""
    trace: list[tuple[float, str]] = []
    waits = _IoWaits()

    async def sleeper(index: int, rng: random.Random) -> None:
        for step in range(STEPS):
            await trio.sleep(rng.choice((0.0, 0.001, 0.01, rng.random())))
            trace.append((trio.current_time(), f"sleep {index}.{step}"))
            with trio.move_on_after(rng.random() / 10):
                await trio.sleep(rng.random() / 10)
            trace.append((trio.current_time(), f"scope {index}.{step}"))

    async def talker(rng: random.Random) -> None:
        near, far = memory_channel_pair()
        near.arrival_time = lambda message: trio.current_time() + len(message) / 1000  # type: ignore[method-assign]

        async def receive() -> None:
            for _ in range(STEPS):
                message = await far.receive_message()
                trace.append((trio.current_time(), f"got {message!r}"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            for step in range(STEPS):
                await near.send_message(b"x" * rng.randrange(1, 40))
                await trio.sleep(rng.random() / 100)
                trace.append((trio.current_time(), f"sent {step}"))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for index in range(TASKS):
                nursery.start_soon(sleeper, index, random.Random(index))
            nursery.start_soon(talker, random.Random(-1))

    with seeded_trio_scheduler(7):
        trio.run(main, clock=clock, instruments=[waits])
    return trace, waits.count


def test_the_virtual_clock_keeps_mock_clocks_schedule_and_times_to_the_bit() -> None:
    mock_trace, mock_waits = _traced_run(trio.testing.MockClock(autojump_threshold=0))
    virtual_trace, virtual_waits = _traced_run(VirtualClock())
    assert len(virtual_trace) == TASKS * STEPS * 2 + STEPS * 2
    assert virtual_trace == mock_trace  # same events, same order, the same float times
    # The point of it: one run-loop pass (and one epoll call) per jump instead of two.
    assert virtual_waits < 0.7 * mock_waits


def test_the_virtual_clock_starts_at_zero_and_only_jumps() -> None:
    clock = VirtualClock()
    assert clock.current_time() == 0.0
    assert clock.deadline_to_sleep_time(float("inf")) > 0  # nothing to wait for: trio's long sleep
    assert clock.deadline_to_sleep_time(2.5) == 0.0
    assert clock.current_time() == 2.5
    assert clock.deadline_to_sleep_time(1.0) == 0.0  # a past deadline: no jump back
    assert clock.current_time() == 2.5
