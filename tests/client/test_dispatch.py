"""HandlerPool: quick handlers share one wake-up, slow ones get up to `limit` workers."""

from __future__ import annotations

import trio
import trio.testing

from shoal.client.dispatch import HandlerPool


async def test_quick_handlers_run_a_whole_batch_in_one_wakeup() -> None:
    done: list[int] = []

    async def handle(item: int) -> None:
        done.append(item)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            pool = HandlerPool(nursery, handle, limit=200)
            for item in range(1000):
                pool.put(item)
            await pool.join()
            assert done == list(range(1000))
            assert pool.wakeups == 1  # one worker, no task per message
            for item in range(1000, 1500):
                pool.put(item)
            await pool.join()
            assert done == list(range(1500))
            assert pool.wakeups == 2
            nursery.cancel_scope.cancel()


async def test_suspending_handlers_run_up_to_limit_at_once() -> None:
    release = trio.Event()
    done: list[int] = []
    inside = 0
    most = 0

    async def handle(item: int) -> None:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await release.wait()
        inside -= 1
        done.append(item)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            pool = HandlerPool(nursery, handle, limit=4)
            for item in range(10):
                pool.put(item)
            await trio.testing.wait_all_tasks_blocked()
            assert (pool.busy, len(pool), most) == (4, 6, 4)
            release.set()
            await pool.join()
            assert sorted(done) == list(range(10))
            assert most == 4
            nursery.cancel_scope.cancel()


async def test_one_slow_handler_does_not_hold_up_the_rest() -> None:
    slow = trio.Event()
    done: list[int] = []

    async def handle(item: int) -> None:
        if item == 0:
            await slow.wait()
        done.append(item)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            pool = HandlerPool(nursery, handle, limit=2)
            for item in range(5):
                pool.put(item)
            await trio.testing.wait_all_tasks_blocked()
            assert done == [1, 2, 3, 4]
            slow.set()
            await pool.join()
            assert done == [1, 2, 3, 4, 0]
            nursery.cancel_scope.cancel()


async def test_take_all_returns_what_no_handler_started() -> None:
    async def handle(item: int) -> None:
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            pool = HandlerPool(nursery, handle, limit=2)
            for item in range(5):
                pool.put(item)
            await trio.testing.wait_all_tasks_blocked()
            assert pool.take_all() == [2, 3, 4]
            assert len(pool) == 0
            nursery.cancel_scope.cancel()
