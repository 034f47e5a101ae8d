"""Neighbour watch: which members this member holds a watch stream to.

A process that crashes while its host stays up has its TCP connections
closed by the host's kernel at once (FIN, or RST when data was unread). A
member that holds a connection to it learns of the crash within one
round trip, where SWIM would wait until some member happens to probe it
(about one probe per second reaches any given member, at exponential gaps).
nsqlookupd owes its fast producer removal to the same signal: an nsqd's
connection to it closes.

Each member therefore watches its ``k`` successors on a ring of the live
members (alive or suspect) ordered by a hash of their names, so every member
is watched by about ``k`` others at O(k) connections per member, and every
member computes the same ring from the same view. Suspect members stay on
the ring so that a suspicion refuted a moment later does not re-dial.

The engine treats a watch stream that closes without a goodbye as a refused
probe (`Membership.watch_closed`): a suspicion plus refusal evidence, so the
member is declared dead only when another member's probe is refused too.
A graceful leave says goodbye on the stream first, a stalled (SIGSTOPped)
process keeps its connections open, and a host that vanishes sends nothing,
so none of those is ever taken for a crash; the last keeps SWIM's timing.

This module is pure: the ring is a function of the names alone.
"""

from __future__ import annotations

import functools
import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["ring_key", "watch_targets"]


@functools.lru_cache(maxsize=65_536)
def ring_key(name: str) -> tuple[bytes, str]:
    """Return ``name``'s position on the ring.

    A cryptographic hash (not Python's salted ``hash``) so every process
    orders the ring the same way; the name breaks the (astronomically
    unlikely) tie.
    """
    return hashlib.blake2b(name.encode(), digest_size=8).digest(), name


def watch_targets(own: str, live: Iterable[str], k: int) -> list[str]:
    """Return the names ``own`` watches: its ``k`` successors among ``live``.

    ``live`` may or may not include ``own``; duplicates are ignored. Fewer
    than ``k`` are returned when fewer other members are live, and none when
    ``k`` is 0.
    """
    if k <= 0:
        return []
    own_key = ring_key(own)
    keys = sorted({ring_key(name) for name in live if name != own})
    if not keys:
        return []
    # Successors: members after us on the ring, wrapping round to the start.
    after = [key for key in keys if key > own_key]
    before = [key for key in keys if key < own_key]
    ring = after + before
    return [name for _, name in ring[:k]]
