"""BatchPipe: a real producer thread hands items to trio without waiting, in batches."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import trio

from tp_node.handoff import BatchPipe, PipeClosed

ITEMS = 20_000


def producer(
    pipe: BatchPipe[int], count: int, *, before_finish: Callable[[], None] = lambda: None
) -> threading.Thread:
    def run() -> None:
        for item in range(count):
            pipe.put(item)
        before_finish()
        pipe.finish()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


async def test_every_item_arrives_in_order_in_fewer_batches_than_items() -> None:
    pipe: BatchPipe[int] = BatchPipe()
    thread = producer(pipe, ITEMS)
    received: list[int] = []
    batches = 0
    while batch := await pipe.take():
        received += batch
        batches += 1
    thread.join()
    assert received == list(range(ITEMS))
    assert batches < ITEMS / 10  # the producer never waited for trio to take each item


async def test_a_slow_consumer_gets_everything_in_one_batch() -> None:
    pipe: BatchPipe[int] = BatchPipe()
    thread = producer(pipe, 1000)
    await trio.to_thread.run_sync(thread.join)
    assert await pipe.take() == list(range(1000))
    assert await pipe.take() == []


async def test_an_error_is_raised_after_the_last_batch() -> None:
    pipe: BatchPipe[int] = BatchPipe()
    pipe.put(1)
    pipe.finish(ValueError("boom"))
    assert await pipe.take() == [1]
    with pytest.raises(ValueError, match="boom"):
        await pipe.take()


async def test_the_consumer_waits_until_an_item_comes() -> None:
    pipe: BatchPipe[int] = BatchPipe()
    with trio.move_on_after(0.05) as scope:
        await pipe.take()
    assert scope.cancelled_caught
    thread = producer(pipe, 1)
    assert await pipe.take() == [0]
    thread.join()


async def test_after_abandon_the_producer_is_told_to_stop() -> None:
    pipe: BatchPipe[int] = BatchPipe()
    pipe.put(1)
    pipe.abandon()
    with pytest.raises(PipeClosed):
        pipe.put(2)
    pipe.finish()  # still allowed: a worker always finishes


def test_a_producer_outliving_the_trio_run_is_told_to_stop() -> None:
    pipes: list[BatchPipe[int]] = []

    async def make() -> None:
        pipes.append(BatchPipe())

    trio.run(make)
    with pytest.raises(PipeClosed):
        pipes[0].put(1)  # the first put finds the run gone; the second is refused
        pipes[0].put(2)
    pipes[0].finish()
