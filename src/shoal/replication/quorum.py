"""The owner's side of a replicated topic: which appended records are safe.

Rules:
1. Records of one replicated stream (one topic on its owner) are numbered
   1, 2, 3, ... in append order; a replica's acknowledgement is cumulative:
   ``ack(r, s)`` says replica ``r`` holds every record up to ``s`` (fsynced,
   in durable mode).
2. A record is *committed* once ``required`` replicas acknowledged it; the
   committed watermark never goes back, even when replicas leave the set.
3. A record that is not committed by its deadline *fails*: the owner
   answers the publish with an error and tells the replicas to drop it.
   `expire` reports each failure once; a later acknowledgement that covers
   a failed record (acknowledgements are cumulative) does not revive it.
4. The core never reads a clock: callers pass ``now`` and ask
   `next_deadline` when to come back.

Theory of operation:
    ``append`` numbers a record and gives it a deadline ``now + timeout``.
    ``ack`` raises a replica's watermark. The committed watermark is the
    ``required``-th highest watermark among current replicas (the records
    every one of ``required`` replicas holds), so it costs one sort of at
    most ``factor - 1`` integers per ack. ``expire`` fails the oldest
    uncommitted records whose deadline has passed; since records commit in
    order, those always form a prefix of the uncommitted ones.

    A replica that joins the set (a new member won the rendezvous order, or
    a replica came back) starts with watermark 0: it counts only once the
    owner has caught it up and it acknowledges (the catch-up snapshot stands
    for every record up to the sequence it is taken at).

    ``required`` is what the operator accepts: normally ``factor - 1``, less
    with ``--min-replicas``. With ``required`` 0 every record commits at once,
    which is the unreplicated behaviour.
"""

from __future__ import annotations

import collections
import types
from typing import TYPE_CHECKING

import msgspec

from shoal.errors import LocalProtocolError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["Quorum", "QuorumStatistics"]


class QuorumStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a stream's replication state.

    Attributes:
        appended: the last sequence number handed out.
        committed: the committed watermark.
        failed: records failed so far (not enough replicas in time).
        watermarks: each current replica's acknowledged watermark.
    """

    appended: int
    committed: int
    failed: int
    watermarks: dict[str, int]

    def lag(self, replica: str) -> int:
        """Records appended that ``replica`` has not acknowledged yet."""
        return self.appended - self.watermarks.get(replica, 0)


class Quorum:
    """Acknowledgement bookkeeping for one replicated stream on its owner.

    Args:
        required: acknowledgements a record needs to commit (0 or more).
        timeout: seconds a record may wait for them before it fails.
    """

    def __init__(self, *, required: int, timeout: float) -> None:
        if required < 0:
            raise LocalProtocolError(f"required replicas must be >= 0, not {required}")
        if timeout <= 0:
            raise LocalProtocolError(f"replication timeout must be positive, not {timeout}")
        self.required = required
        self.timeout = timeout
        self._appended = 0
        self._committed = 0
        self._failed_count = 0
        self._watermarks: dict[str, int] = {}
        self._watermarks_view = types.MappingProxyType(self._watermarks)
        # (seq, deadline) of uncommitted, unfailed records, in order.
        self._pending: collections.deque[tuple[int, float]] = collections.deque()

    @property
    def appended(self) -> int:
        """The last sequence number handed out (0 before the first)."""
        return self._appended

    @property
    def committed(self) -> int:
        """Every record up to this sequence number is committed."""
        return self._committed

    @property
    def watermarks(self) -> Mapping[str, int]:
        """Each current replica's acknowledged watermark: a live, read-only view, no copy."""
        return self._watermarks_view

    @property
    def replicas(self) -> frozenset[str]:
        """The current replicas."""
        return frozenset(self._watermarks)

    def set_replicas(self, names: Iterable[str]) -> list[str]:
        """Make ``names`` the replica set.

        Returns:
            The replicas new to the set, which the owner must catch up (their
            watermark starts at 0). Replicas dropped from the set forget
            their watermark; what they committed stays committed.
        """
        wanted = set(names)
        added = sorted(wanted - self._watermarks.keys())
        for name in self._watermarks.keys() - wanted:
            del self._watermarks[name]
        for name in added:
            self._watermarks[name] = 0
        return added

    def append(self, now: float, *, awaited: bool = True) -> int:
        """Number a new record; an awaited one must commit by ``now + timeout``.

        Args:
            now: the current time.
            awaited: somebody waits for this record to commit (a publish);
                other records (finishes, channel changes, aborts) travel in
                the same order but never fail.

        Returns:
            Its sequence number. With ``required`` 0 it is committed already.
        """
        self._appended += 1
        seq = self._appended
        if self.required == 0:
            self._committed = seq
        else:
            if awaited:
                self._pending.append((seq, now + self.timeout))
            self._advance()
        return seq

    def ack(self, replica: str, seq: int) -> int:
        """Record that ``replica`` holds every record up to ``seq``.

        Acknowledgements from members outside the set, for sequence numbers
        never handed out, or going backwards are ignored (a late frame from
        an older connection).

        Returns:
            The committed watermark afterwards.
        """
        current = self._watermarks.get(replica)
        if current is not None and current < seq <= self._appended:
            self._watermarks[replica] = seq
            self._advance()
        return self._committed

    def _advance(self) -> None:
        if len(self._watermarks) < self.required:
            return
        marks = sorted(self._watermarks.values(), reverse=True)
        candidate = marks[self.required - 1]
        if candidate > self._committed:
            self._committed = candidate
        pending = self._pending
        while pending and pending[0][0] <= self._committed:
            pending.popleft()

    def expire(self, now: float) -> list[int]:
        """Fail the uncommitted records whose deadline has passed.

        Returns:
            Their sequence numbers, oldest first. The caller answers their
            publishes with an error and tells the replicas to drop them.
        """
        failed = []
        pending = self._pending
        while pending and pending[0][1] <= now:
            seq, _ = pending.popleft()
            failed.append(seq)
        self._failed_count += len(failed)
        return failed

    def next_deadline(self) -> float | None:
        """When `expire` has work next, or None."""
        return self._pending[0][1] if self._pending else None

    def statistics(self) -> QuorumStatistics:
        """A snapshot for ``/stats`` and ``/metrics``."""
        return QuorumStatistics(
            appended=self._appended,
            committed=self._committed,
            failed=self._failed_count,
            watermarks=dict(self._watermarks),
        )
