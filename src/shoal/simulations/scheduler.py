"""The virtual clock: a heap of timed callbacks, run in time order.

Rules:

1. **Time is virtual.** Nothing here reads a clock or sleeps: `Scheduler.now`
   jumps from one due callback to the next, so a simulated hour costs only the
   work done in it.
2. **Order is total and reproducible.** Callbacks due at the same instant run
   in the order they were scheduled (a sequence number breaks ties), so a run
   is a pure function of its inputs and its seed.
3. **Every loop is bounded.** `Scheduler.run_until` refuses to process more
   than ``max_steps`` callbacks in one call, which turns a livelocked model
   into an error instead of a hang.

There is no cancellation: a callback whose purpose has lapsed checks a token
it was given (a wake-up time, a life counter) and returns at once. That keeps
the heap a plain list of tuples, which is what makes a thousand-node run
cheap.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Scheduler", "SchedulerOverrun"]


class SchedulerOverrun(RuntimeError):
    """`Scheduler.run_until` hit its step bound: the model is livelocked."""


class Scheduler:
    """Runs callbacks in virtual-time order.

    Args:
        now: the virtual time to start at, in seconds.
        max_steps: most callbacks one `run_until` call may run.

    Attributes:
        now: the current virtual time; only moves forward.
        steps: callbacks run so far (the "events processed" of a report).
    """

    __slots__ = ("_heap", "_seq", "max_steps", "now", "steps")

    def __init__(self, *, now: float = 0.0, max_steps: int = 500_000_000) -> None:
        self.now = now
        self.steps = 0
        self.max_steps = max_steps
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0

    def call_at(self, at: float, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` at virtual time ``at`` (now, if ``at`` is past)."""
        self._seq += 1
        heapq.heappush(self._heap, (max(at, self.now), self._seq, fn, args))

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` ``delay`` seconds from now."""
        self.call_at(self.now + delay, fn, *args)

    def next_time(self) -> float | None:
        """Return when the next callback is due, or None if none is scheduled."""
        return self._heap[0][0] if self._heap else None

    def run_until(self, deadline: float) -> None:
        """Run every callback due up to ``deadline``, then set the clock to it.

        Callbacks may schedule more callbacks; those due by ``deadline`` run too.

        Raises:
            SchedulerOverrun: more than ``max_steps`` callbacks were due. The
                clock stays at the last callback run; the rest stay queued.
        """
        heap = self._heap
        pop = heapq.heappop
        steps = 0
        limit = self.max_steps
        while heap and heap[0][0] <= deadline:
            if steps >= limit:
                self.steps += steps
                raise SchedulerOverrun(f"more than {limit} events before t={deadline:.3f}")
            at, _, fn, args = pop(heap)
            self.now = at
            fn(*args)
            steps += 1
        self.steps += steps
        if deadline > self.now:
            self.now = deadline
