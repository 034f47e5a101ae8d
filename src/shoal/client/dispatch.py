"""Runs a consumer's handler over arriving messages without a task per message.

A task per message (``nursery.start_soon`` for each) costs more than a quick
handler itself: creating the task, its context and its first scheduling pass
limited the consumer to some 10 k msgs/s. `HandlerPool` keeps a queue and a
set of long-lived workers instead, and wakes as few of them as the handlers
need:

- a worker takes messages from the queue one after the other, so handlers
  that never suspend (the common case: count, parse, store in memory) run a
  whole read's worth of messages in one scheduling pass;
- concurrency grows only when handlers actually suspend. Taking a message
  while others wait behind it "pokes" one spreader task; the spreader runs
  only once the running worker yields to the scheduler, which a synchronous
  handler never does before the queue is empty. If it finds messages queued
  and every awake worker inside a handler, it wakes (or starts) one more
  worker, up to ``limit`` (the consumer's ``max_in_flight``), so a slow
  handler still has up to ``limit`` messages handled at once.

The pool never drops a message: `take_all` hands back what was queued and
not started, for a stopping consumer to requeue.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Generic, TypeVar

import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["HandlerPool"]

T = TypeVar("T")


class HandlerPool(Generic[T]):
    """At most ``limit`` concurrent calls of ``handle``, one per queued item.

    Args:
        nursery: where the workers and the spreader run; cancelling it stops
            them (items still queued stay queued, see `take_all`).
        handle: awaited once per item; must not raise (the consumer's
            handler wrapper logs and requeues).
        limit: the most calls in progress at once.
    """

    def __init__(
        self, nursery: trio.Nursery, handle: Callable[[T], Awaitable[None]], limit: int
    ) -> None:
        self._nursery = nursery
        self._handle = handle
        self._limit = max(1, limit)
        self._queue: collections.deque[T] = collections.deque()
        self._workers = 0  # started, never end before the nursery does
        self._awake = 0  # workers not parked
        self._busy = 0  # workers inside ``handle``
        self._idle = trio.lowlevel.ParkingLot()
        self._poked = trio.Event()
        self._poke_pending = False  # `_poked` is set and the spreader has not run yet
        self._settled = trio.Event()
        self.wakeups = 0  # worker wake-ups and starts (for tests and benchmarks)
        nursery.start_soon(self._spread)

    def __len__(self) -> int:
        """Items queued and not yet started."""
        return len(self._queue)

    @property
    def busy(self) -> int:
        """Calls of ``handle`` in progress."""
        return self._busy

    def put(self, item: T) -> None:
        """Queue one item for the handler; never blocks (the caller bounds the queue)."""
        self._queue.append(item)
        if not self._poke_pending:
            self._poke()

    def take_all(self) -> list[T]:
        """Remove and return every item not yet handed to the handler."""
        items = list(self._queue)
        self._queue.clear()
        return items

    async def join(self) -> None:
        """Return once the queue is empty and no call is in progress."""
        while self._queue or self._busy:
            self._settled = trio.Event()
            await self._settled.wait()

    def _poke(self) -> None:
        self._poke_pending = True
        self._poked.set()

    async def _spread(self) -> None:
        while True:
            await self._poked.wait()
            self._poked = trio.Event()
            self._poke_pending = False
            # Every awake worker is inside a handler that yielded: the queued
            # items would wait for it, so one more worker takes them.
            if self._queue and self._busy == self._awake:
                self._wake_one()

    def _wake_one(self) -> None:
        if self._awake < self._workers:
            self._awake += 1
            self.wakeups += 1
            self._idle.unpark()
        elif self._workers < self._limit:
            self._workers += 1
            self._awake += 1
            self.wakeups += 1
            self._nursery.start_soon(self._work)

    async def _work(self) -> None:
        queue = self._queue
        handle = self._handle
        while True:
            while queue:
                item = queue.popleft()
                if queue and not self._poke_pending:
                    self._poke()
                self._busy += 1
                try:
                    await handle(item)
                finally:
                    self._busy -= 1
                    if not self._busy and not queue:
                        self._settled.set()
            self._awake -= 1
            await self._idle.park()
