"""A nursery for context managers that run background tasks.

trio wraps whatever leaves a nursery in an `ExceptionGroup`, so an error
raised inside ``async with open_producer(...)`` would reach the caller as a
group holding it. Our background tasks never raise (they log and retry), so
the only failure is usually the caller's own: this unwraps a group of one.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["open_service_nursery"]


@contextlib.asynccontextmanager
async def open_service_nursery() -> AsyncIterator[trio.Nursery]:
    """`trio.open_nursery`, re-raising a single failure as itself."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
