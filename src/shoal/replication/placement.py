"""Where a topic's replicas live: rendezvous (highest random weight) hashing.

Rules:
1. Placement is a pure function of names: the owner's member name, the topic
   name and the set of members considered alive. Every node that holds the
   same membership view computes the same replicas, so no coordinator, lease
   or election is needed to agree on them.
2. The owner is never its own replica.
3. The weight of a member for ``(owner, topic)`` never depends on which other
   members exist, so a member joining or dying moves only the replicas it
   wins or held (rendezvous hashing's minimal disruption): when replica R of
   a topic dies, the set becomes the old set minus R plus the next member in
   that topic's order, and every other replica keeps its copy.

Theory of operation:
    Each candidate member gets the weight ``blake2b(owner, topic, member)``
    read as a 64-bit integer; candidates are ranked by weight, highest first
    (ties, which need a 64-bit collision, fall back to the name). The first
    ``factor - 1`` alive candidates are the replicas. The same ranking orders
    failover: when the owner is declared dead, the first alive member in this
    order that holds a copy adopts the topic (`adopter`).

    blake2b rather than Python's ``hash``: the weight must be the same in
    every process, whatever ``PYTHONHASHSEED`` says, and on every platform.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

__all__ = ["adopter", "rank", "replicas", "weight"]

_SEPARATOR = b"\x00"


def weight(owner: str, topic: str, member: str) -> int:
    """The rendezvous weight of ``member`` for ``owner``'s ``topic``.

    The three names are joined by NUL bytes, which no member or topic name
    may hold, so distinct triples never hash the same input.
    """
    data = _SEPARATOR.join((owner.encode(), topic.encode(), member.encode()))
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def rank(owner: str, topic: str, members: Iterable[str]) -> list[str]:
    """``members`` other than ``owner``, in the topic's rendezvous order."""
    candidates = {member for member in members if member != owner}
    return sorted(candidates, key=lambda member: (-weight(owner, topic, member), member))


def replicas(owner: str, topic: str, alive: Iterable[str], factor: int) -> tuple[str, ...]:
    """The members that hold copies of ``owner``'s ``topic`` at this factor.

    Args:
        owner: the member whose broker holds the topic.
        topic: the topic name.
        alive: the members considered alive (the owner may be among them).
        factor: total copies wanted, the owner's included; 1 means none.

    Returns:
        Up to ``factor - 1`` members, best first; fewer when fewer are alive.
    """
    if factor <= 1:
        return ()
    return tuple(rank(owner, topic, alive)[: factor - 1])


def adopter(owner: str, topic: str, alive: Iterable[str], holders: Collection[str]) -> str | None:
    """The member that takes over ``owner``'s ``topic`` once the owner is dead.

    Args:
        owner: the dead owner.
        topic: the topic name.
        alive: the members considered alive.
        holders: members known to hold a copy of the topic.

    Returns:
        The first alive holder in rendezvous order, or None when no alive
        member holds a copy.
    """
    for member in rank(owner, topic, alive):
        if member in holders:
            return member
    return None
