"""The transmit-limited broadcast queue that feeds piggybacked gossip.

Theory of operation (docs/membership.md §1.7; memberlist ``queue.go``):

Every outgoing packet is topped up with queued broadcasts (membership news
and application messages). Each broadcast is sent a limited number of times,
``retransmit_mult * ceil(log10(n + 1))``, which is enough for an epidemic to
reach everyone with high probability, and then dropped.

Order (memberlist's, kept per transmission tier in a plain list sorted by
``(-len, -id)``):

1. fewest transmissions first, so fresh news overtakes news most members have
   already heard;
2. within one transmission tier, the largest message that still fits first,
   which packs packets tightly;
3. among equal sizes, the newest first.

Broadcasts are *named*: queueing a message under a key already queued replaces
the older message (news about member X invalidates older news about X; an
application key's newer value invalidates the older value), in O(1) through a
dictionary plus the removal from its tier.

Filling a packet walks the tiers upwards and, per tier, bisects for the largest
item that fits the space left; chosen items move to the next tier only after
the walk, so one packet never carries the same item twice. Moving them is one
merge of two sorted runs per tier (linear, in C), which is why tiers are plain
lists rather than one sorted container with an insertion per item: filling a
packet is on the path of every datagram sent.
"""

from __future__ import annotations

import bisect
import math

__all__ = ["QueuedBroadcast", "TransmitLimitedQueue", "retransmit_limit"]


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """Return how many times a broadcast is sent in a cluster of ``n`` members.

    ``retransmit_mult * ceil(log10(n + 1))`` (memberlist ``retransmitLimit``):
    4 up to 9 members, 8 up to 99, 12 up to 999 with the LAN multiplier of 4.
    """
    return retransmit_mult * math.ceil(math.log10(n + 1))


# Below any ``-id`` key, so a bisection lands before every item of a given size.
_LOWEST_ID_KEY = -(1 << 62)


class QueuedBroadcast:
    """A message in the queue, with its key and transmission count."""

    __slots__ = ("entry", "key", "message", "repeats", "transmits")

    def __init__(self, key: str, message: bytes, item_id: int, repeats: int = 1) -> None:
        self.key = key
        self.message = message
        self.transmits = 0
        self.repeats = repeats
        # The tier lists hold these tuples: they sort (in C) by size
        # descending, then newest first; ids are unique, so the item itself is
        # never compared.
        self.entry: tuple[int, int, QueuedBroadcast] = (-len(message), -item_id, self)


def _forget(item: QueuedBroadcast) -> None:
    """Break the cycle between a message leaving the queue and its entry.

    The entry holds the item and the item its entry: left alone, every
    message sent its last time would wait for the cyclic collector.
    """
    item.entry = _FORGOTTEN


#: What a message that left the queue holds instead of its entry.
_FORGOTTEN: tuple[int, int, QueuedBroadcast] = QueuedBroadcast("", b"", 0).entry


class TransmitLimitedQueue:
    """Named broadcasts waiting to be piggybacked, each sent a bounded number of times."""

    __slots__ = ("_by_key", "_next_id", "_tiers")

    def __init__(self) -> None:
        self._tiers: dict[int, list[tuple[int, int, QueuedBroadcast]]] = {}
        self._by_key: dict[str, QueuedBroadcast] = {}
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def queue(self, key: str, message: bytes, *, repeats: int = 1) -> None:
        """Queue ``message`` under ``key``, replacing any queued message with that key.

        The new message starts with zero transmissions: newer news is fresh.
        ``repeats`` multiplies its transmit limit, for news that must not
        be missed even in the tail of the epidemic.
        """
        self.discard(key)
        self._next_id += 1
        item = QueuedBroadcast(key, message, self._next_id, repeats)
        self._by_key[key] = item
        bisect.insort(self._tiers.setdefault(0, []), item.entry)

    def discard(self, key: str) -> None:
        """Drop the message queued under ``key``, if any."""
        old = self._by_key.pop(key, None)
        if old is None:
            return
        tier = self._tiers.get(old.transmits)
        if tier is None:
            return  # taken for a packet right now; `release` will drop it
        index = bisect.bisect_left(tier, old.entry)
        if index < len(tier) and tier[index] is old.entry:
            del tier[index]
            _forget(old)
            if not tier:
                del self._tiers[old.transmits]

    def clear(self) -> None:
        """Drop every queued message."""
        for item in self._by_key.values():
            _forget(item)
        self._tiers.clear()
        self._by_key.clear()

    def get_broadcasts(self, limit: int, transmit_limit: int, max_count: int) -> list[bytes]:
        """Take messages for one packet, in the queue's order.

        Args:
            limit: bytes available; only messages that fit are taken.
            transmit_limit: after this many transmissions a message is dropped.
            max_count: most messages to take.

        Returns:
            The encoded messages; each counts one transmission.
        """
        taken = self.take(limit, max_count)
        self.release(taken, transmit_limit)
        return [item.message for item in taken]

    def take(self, limit: int, max_count: int) -> list[QueuedBroadcast]:
        """Remove messages for one packet, in the queue's order, until `release`.

        Taking in several steps (then releasing once) lets a packet be filled
        from several queues in turns without carrying one message twice.

        Args:
            limit: bytes available; only messages that fit are taken.
            max_count: most messages to take.
        """
        tiers = self._tiers
        if not tiers or limit <= 0 or max_count <= 0:
            return []
        chosen: list[QueuedBroadcast] = []
        used = 0
        for transmits in sorted(tiers):
            tier = tiers[transmits]
            while tier and len(chosen) < max_count and used < limit:
                index = bisect.bisect_left(tier, (used - limit, _LOWEST_ID_KEY))
                if index == len(tier):
                    break  # nothing in this tier fits any more
                item = tier.pop(index)[2]
                chosen.append(item)
                used += len(item.message)
            if not tier:
                del tiers[transmits]
            if len(chosen) >= max_count or used >= limit:
                break
        return chosen

    def release(self, taken: list[QueuedBroadcast], transmit_limit: int) -> None:
        """Count one transmission of each taken message and queue it again, or drop it.

        A message queued anew under the same key while it was taken stays
        replaced: the taken one is dropped.
        """
        tiers = self._tiers
        by_key = self._by_key
        moved: dict[int, list[tuple[int, int, QueuedBroadcast]]] = {}
        for item in taken:
            item.transmits += 1
            if by_key.get(item.key) is not item:
                _forget(item)
                continue
            if item.transmits >= transmit_limit * item.repeats:
                del by_key[item.key]
                _forget(item)
            else:
                moved.setdefault(item.transmits, []).append(item.entry)
        for transmits, entries in moved.items():
            tier = tiers.setdefault(transmits, [])
            tier.extend(entries)
            tier.sort()  # two sorted runs: a linear merge
