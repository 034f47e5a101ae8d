"""Waiting for a condition in trio tests, without sleeping a fixed time.

Tests wait for what they expect by polling it under the test's own
``trio.fail_after``; on trio's ``autojump_clock`` the polls cost virtual
time only. Fixed sleeps ("sleep and hope") are what this replaces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["eventually"]


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
