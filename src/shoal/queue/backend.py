"""The overflow store behind every topic and channel memory queue.

Topics and channels keep up to ``mem_queue_size`` messages in memory and hand
the rest to a `Backend` as encoded records (`encode_message`: the 26-byte
header then the body), as nsqd hands them to its disk queue. The protocol and
the channel logic only see this interface, so the disk queue slots in
without touching them.

Rules:
1. Records come back in the order they were put (FIFO).
2. ``put`` either stores the record or raises `BackendError`; a record is
   never half-stored as far as ``get`` can tell.
3. ``get`` removes the record it returns: once handed out, the message lives
   in memory only (in flight or deferred), as in nsqd (docs/nsq.md §4.5).
4. ``take`` hands out a record with a ticket. A backend that keeps records
   until acknowledged (the disk queue of a channel in durable mode) keeps
   it until ``ack_many`` names the ticket, and hands it out again after a
   restart if it never does; the others return ticket -1 and forget the
   record, as ``get`` does.
5. ``take_many`` and ``get_many`` are ``take`` and ``get`` for up to a
   number of records at once: what a consumer or a topic's backlog pump
   asks for, so a backend can serve them from large reads with no work per
   record beyond decoding it.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Protocol

from shoal.errors import ShoalError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["Backend", "BackendError", "BackendFactory", "MemoryBackend", "memory_backend_factory"]


class BackendError(ShoalError):
    """A backend could not store or read a record (for example a failed write)."""


class Backend(Protocol):
    """A FIFO of encoded message records."""

    @property
    def depth(self) -> int:
        """Records stored and not yet read."""
        ...

    def put(self, record: bytes) -> None:
        """Append one record.

        Raises:
            BackendError: the record could not be stored; the backend is unchanged.
        """
        ...

    def put_many(self, records: Sequence[bytes]) -> None:
        """Append records in order: all are stored, or none and `BackendError` is raised."""
        ...

    def get(self) -> bytes | None:
        """Remove and return the oldest record, or None when empty."""
        ...

    def take(self) -> tuple[bytes, int] | None:
        """Hand out the oldest record and its ticket (-1: nothing to acknowledge), or None."""
        ...

    def take_many(self, limit: int) -> tuple[list[bytes], list[int]]:
        """Hand out up to ``limit`` of the oldest records and their tickets, in step.

        Raises:
            BackendError: nothing could be read; every record stays queued.
        """
        ...

    def get_many(self, limit: int) -> list[bytes]:
        """Remove and return up to ``limit`` of the oldest records.

        Raises:
            BackendError: nothing could be read; every record stays queued.
        """
        ...

    def ack_many(self, tickets: Iterable[int]) -> None:
        """Acknowledge tickets from `take`; unknown ones (and -1) are ignored."""
        ...

    def note_reads(self) -> None:
        """Record how far `take` has read (no fsync), so a restart can count redeliveries."""
        ...

    def unput(self, count: int) -> bool:
        """Take back the ``count`` records the last put stored, if none was handed out yet."""
        ...

    def empty(self) -> None:
        """Drop every stored record."""
        ...

    def sync(self) -> None:
        """Make every stored record durable (a no-op where nothing is durable)."""
        ...

    def close(self) -> None:
        """Sync and release resources, keeping the records for the next start."""
        ...

    def delete(self) -> None:
        """Release resources and remove the records for good."""
        ...


class BackendFactory(Protocol):
    """Opens the backend for a topic (``name`` = topic) or channel (``topic:channel``)."""

    def __call__(self, name: str, *, ephemeral: bool) -> Backend:
        """Return the backend for ``name``; ephemeral queues never touch disk."""
        ...


class MemoryBackend:
    """An unbounded in-memory backend: overflow stays in the process.

    Used for ephemeral topics and channels in place of nsqd's dropping
    backend, and for nodes run without a data path.
    """

    __slots__ = ("_records",)

    def __init__(self) -> None:
        self._records: collections.deque[bytes] = collections.deque()

    @property
    def depth(self) -> int:
        """Records stored and not yet read."""
        return len(self._records)

    def put(self, record: bytes) -> None:
        """Append one record."""
        self._records.append(record)

    def put_many(self, records: Sequence[bytes]) -> None:
        """Append records in order."""
        self._records.extend(records)

    def get(self) -> bytes | None:
        """Remove and return the oldest record, or None when empty."""
        return self._records.popleft() if self._records else None

    def take(self) -> tuple[bytes, int] | None:
        """Remove and return the oldest record with ticket -1, or None when empty."""
        return (self._records.popleft(), -1) if self._records else None

    def take_many(self, limit: int) -> tuple[list[bytes], list[int]]:
        """Remove and return up to ``limit`` of the oldest records, each with ticket -1."""
        records = self.get_many(limit)
        return records, [-1] * len(records)

    def get_many(self, limit: int) -> list[bytes]:
        """Remove and return up to ``limit`` of the oldest records."""
        count = min(max(limit, 0), len(self._records))
        popleft = self._records.popleft
        return [popleft() for _ in range(count)]

    def ack_many(self, tickets: Iterable[int]) -> None:
        """Nothing is kept for acknowledgement."""

    def note_reads(self) -> None:
        """Nothing survives a restart."""

    def unput(self, count: int) -> bool:
        """Drop the ``count`` newest records."""
        if count > len(self._records):
            return False
        for _ in range(count):
            self._records.pop()
        return True

    def empty(self) -> None:
        """Drop every stored record."""
        self._records.clear()

    def sync(self) -> None:
        """Nothing to make durable."""

    def close(self) -> None:
        """Nothing to release; the records are lost with the process."""

    def delete(self) -> None:
        """Drop every stored record."""
        self._records.clear()


def memory_backend_factory(name: str, *, ephemeral: bool) -> Backend:
    """A `BackendFactory` that keeps every overflow in memory."""
    del name, ephemeral
    return MemoryBackend()
