"""Slot threads own their resource; the pool bounds the queue in front of them."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

from tp_net.protocol.inference_contract import EngineError
from tp_node.slots import SlotPool, SlotWorker


class Resource:
    def __init__(self) -> None:
        self.created_on = threading.get_ident()
        self.used_on: list[int] = []
        self.destroyed_on: int | None = None


def destroy(resource: Resource) -> None:
    resource.destroyed_on = threading.get_ident()


def test_a_worker_creates_uses_and_destroys_its_resource_on_its_own_thread() -> None:
    resources: list[Resource] = []

    def create() -> Resource:
        resources.append(Resource())
        return resources[-1]

    worker = SlotWorker("test-slot", create, destroy)
    worker.wait_ready()
    done = threading.Event()
    worker.submit(lambda resource: resource.used_on.append(threading.get_ident()))
    worker.submit(lambda resource: 1 / 0)  # type: ignore[func-returns-value]  # a failing job keeps the slot
    worker.submit(lambda resource: done.set())
    assert done.wait(5)
    worker.stop()
    worker.join()
    (resource,) = resources
    assert resource.created_on != threading.get_ident()
    assert resource.used_on == [resource.created_on] == [resource.destroyed_on]


def test_a_failed_creation_is_raised_by_wait_ready() -> None:
    def create() -> Resource:
        raise OSError("no such model")

    worker = SlotWorker("test-slot", create, destroy)
    with pytest.raises(OSError, match="no such model"):
        worker.wait_ready()
    worker.join()


async def test_the_pool_queues_up_to_its_limit_then_refuses_at_once() -> None:
    pool = SlotPool(["a", "b"], queue_limit=2)
    held = [await pool.acquire(), await pool.acquire()]
    assert sorted(held) == ["a", "b"] and pool.active == 2
    got: list[str] = []
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(_take, pool, got)
        await trio.testing.wait_all_tasks_blocked()
        assert pool.waiting == 2
        with pytest.raises(EngineError) as caught:
            await pool.acquire()
        assert caught.value.code == "overloaded"
        pool.release(held[0])
        pool.release(held[1])
    assert sorted(got) == ["a", "b"] and pool.waiting == 0


async def _take(pool: SlotPool[str], got: list[str]) -> None:
    got.append(await pool.acquire())


async def test_waiters_are_served_in_arrival_order() -> None:
    pool = SlotPool(["only"], queue_limit=10)
    first = await pool.acquire()
    order: list[int] = []

    async def waiter(number: int) -> None:
        worker = await pool.acquire()
        order.append(number)
        pool.release(worker)

    async with trio.open_nursery() as nursery:
        for number in range(5):
            nursery.start_soon(waiter, number)
            await trio.testing.wait_all_tasks_blocked()
        pool.release(first)
    assert order == [0, 1, 2, 3, 4]


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    pool = SlotPool(["only"], queue_limit=1)
    await pool.acquire()
    with trio.move_on_after(0.01):
        await pool.acquire()
    assert pool.waiting == 0
    with trio.move_on_after(0.01) as scope:
        await pool.acquire()  # queued (not refused): the cancelled one freed its place
    assert scope.cancelled_caught


async def test_release_soon_works_from_another_thread() -> None:
    pool = SlotPool(["only"], queue_limit=0)
    worker = await pool.acquire()
    token = trio.lowlevel.current_trio_token()
    await trio.to_thread.run_sync(pool.release_soon, worker, token)
    with trio.fail_after(1):
        assert await pool.acquire() == "only"
