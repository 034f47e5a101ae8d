"""Waiting for a condition in tests, without sleeping a fixed time.

Trio tests wait for what they expect with `eventually`, polling under the
test's own ``trio.fail_after``; on trio's ``autojump_clock`` the polls cost
virtual time only. Synchronous tests of real processes use `wait_for`,
bounded by its own limit. Fixed sleeps ("sleep and hope") are what both
replace.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["eventually", "wait_for"]


async def eventually(
    predicate: Callable[[], bool], *, interval: float = 0.01, polls: int = 2000
) -> None:
    """Return once ``predicate()`` holds, polling every ``interval`` seconds.

    The caller's ``fail_after`` usually ends a wait that never succeeds;
    ``polls`` bounds it regardless.

    Raises:
        AssertionError: the condition did not hold within ``polls`` polls.
    """
    for _ in range(polls):
        if predicate():
            return
        await trio.sleep(interval)
    raise AssertionError("condition never held")


def wait_for(
    condition: Callable[[], bool], limit: float = 20.0, *, interval: float = 0.05
) -> float:
    """Block until ``condition()`` holds, polling every ``interval`` seconds; return the wait.

    For synchronous tests that watch real processes, where no trio clock
    runs.

    Raises:
        AssertionError: the condition did not hold within ``limit`` seconds.
    """
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit:
            raise AssertionError(f"condition not met within {limit}s")
        time.sleep(interval)
    return time.monotonic() - started
