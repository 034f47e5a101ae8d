"""The owner's side of one replicated topic: number, mirror, send, commit.

Rules:
1. Every change to a replicated topic on its owner becomes a record
   (`shoal.replication.records`), numbered by the topic's `Quorum` and
   applied to the owner's *mirror*, a `ReplicaTopic` like the ones its
   replicas hold. The mirror is what a new replica is caught up from.
2. Only publishes are awaited: the owner answers a publish once its record
   commits, or with an error once it fails (`expire`). A failed publish is
   followed by an `Abort` record, so no replica keeps it.
3. The owner keeps each record until every current replica acknowledged it
   and it is committed; a replica too far behind for the log (it joined
   the set, or came back after the log moved on) gets a snapshot instead.
4. A member leaving the replica set (a newcomer outranks it, or it looked
   dead) is a *former* replica until the members of the set acknowledged
   every record it could hold (`releasable`); only then may it drop its
   copy. Until then it may be the only copy besides the owner's: the
   newcomer is empty until caught up.
5. Pure: no I/O, no clock. The shell asks `outgoing` what to send each
   replica, feeds `ack` with what comes back, and calls `expire` at
   `next_deadline`.

Theory of operation:
    Per replica the owner remembers the last sequence number it sent
    (``sent``), so batches pipeline: `outgoing` hands out everything after
    ``sent`` without waiting for acknowledgements, and `rewind` (after a
    reconnect) moves ``sent`` back to the replica's acknowledged watermark
    so the unacknowledged tail is sent again; the replica ignores records
    it already has. ``sent`` is None while a replica needs a snapshot.

    The committed watermark rides on every batch. A batch carrying it alone
    is handed out only once it covers everything sent to that replica: an
    earlier one would cost the replica a frame, a log write and an
    acknowledgement to learn what the next batch tells it anyway.
"""

from __future__ import annotations

import collections
import itertools
from typing import TYPE_CHECKING

from shoal.replication.quorum import Quorum
from shoal.replication.records import Abort, Batch, Publish
from shoal.replication.replica import ReplicaTopic

if TYPE_CHECKING:
    from collections.abc import Iterable

    from shoal.replication.quorum import QuorumStatistics
    from shoal.replication.records import Record

__all__ = ["OwnerTopic"]


class OwnerTopic:
    """One replicated topic on its owner.

    Args:
        topic: the topic name.
        required: replica acknowledgements a publish needs.
        timeout: seconds a publish may wait for them.
    """

    def __init__(self, topic: str, *, required: int, timeout: float) -> None:
        self.topic = topic
        self.quorum = Quorum(required=required, timeout=timeout)
        self.mirror = ReplicaTopic(topic)
        self._log: collections.deque[tuple[int, Record]] = collections.deque()
        self._sent: dict[str, int | None] = {}
        self._told_commit: dict[str, int] = {}
        # (seq of the Abort record, seq of the publish it aborts), in order.
        self._aborts: collections.deque[tuple[int, int]] = collections.deque()
        # Former replica -> the last record it may hold (the log end when it
        # left the set): released once the set holds that much.
        self._former: dict[str, int] = {}

    def set_replicas(self, names: Iterable[str]) -> list[str]:
        """Make ``names`` the replicas; new ones will get a snapshot first.

        Returns:
            The replicas new to the set.
        """
        added = self.quorum.set_replicas(names)
        current = self.quorum.replicas
        appended = self.quorum.appended
        for name in list(self._sent):
            if name not in current:
                del self._sent[name]
                self._told_commit.pop(name, None)
                self._former[name] = max(self._former.get(name, 0), appended)
        for name in added:
            self._sent[name] = None
            self._told_commit[name] = 0
            self._former.pop(name, None)
        self._trim()
        return added

    @property
    def formers(self) -> frozenset[str]:
        """Former replicas not yet released: they keep their copies."""
        return frozenset(self._former)

    @property
    def has_formers(self) -> bool:
        """Whether any former replica awaits its release (no set built, for hot paths)."""
        return bool(self._former)

    def is_replica(self, name: str) -> bool:
        """Whether ``name`` is a current replica (no set built, for hot paths)."""
        return name in self.quorum.watermarks

    def is_former(self, name: str) -> bool:
        """Whether ``name`` is a former replica not yet released."""
        return name in self._former

    def releasable(self) -> list[str]:
        """Former replicas whose copies the current set now covers.

        A former replica held at most the records up to the log end when it
        left the set. Once ``required`` current replicas (at least one)
        acknowledged that far, every message it held is on them too, or was
        finished or aborted in records they hold: it may drop its copy.
        """
        if not self._former:
            return []
        marks = self.quorum.watermarks.values()
        need = max(self.quorum.required, 1)
        return sorted(
            name
            for name, held in self._former.items()
            if sum(1 for mark in marks if mark >= held) >= need
        )

    def released(self, member: str) -> None:
        """``member`` was sent its release (or is gone for good): forget it."""
        self._former.pop(member, None)

    def append(self, record: Record, now: float, *, awaited: bool | None = None) -> int:
        """Record a change on the owner's topic.

        Args:
            record: what changed.
            now: the current time.
            awaited: whether somebody waits for the record to commit, so it
                may fail at its deadline; by default a `Publish` is awaited
                and nothing else is. An adopter passes False for the messages
                it adopted: they are delivered already and must never be
                aborted, only copied to its replicas.

        Returns:
            The record's sequence number; for an awaited record, the caller
            waits until `committed` reaches it or `expire` names it.
        """
        if awaited is None:
            awaited = isinstance(record, Publish)
        seq = self.quorum.append(now, awaited=awaited)
        self.mirror.apply(seq, record)
        if self.quorum.watermarks:
            self._log.append((seq, record))
        if self.quorum.committed >= seq:
            self.mirror.commit(seq)
        return seq

    @property
    def committed(self) -> int:
        """Every record up to this sequence number is committed."""
        return self.quorum.committed

    def outgoing(
        self, replica: str, limit: int = 1024, *, watermark_alone: bool = True
    ) -> Batch | None:
        """What to send ``replica`` now, or None when it has everything.

        Args:
            replica: a current replica.
            limit: records per batch at most.
            watermark_alone: whether a batch of no record, only a newer
                committed watermark, is worth sending. A sender that has
                just sent records passes False: the acknowledgements that
                raised the watermark meanwhile will ride on its next batch.
        """
        if replica not in self._sent:
            return None
        sent = self._sent[replica]
        if sent is None:
            self._sent[replica] = self.quorum.appended
            commit = self._commit_for(self.quorum.appended)
            self._told_commit[replica] = commit
            return Batch(
                topic=self.topic,
                first=0,
                records=(),
                commit=commit,
                snapshot=self.mirror.snapshot(),
            )
        log = self._log
        start = sent + 1 - log[0][0] if log else 0
        if start < 0:
            # The records it lacks are gone from the log: start it afresh.
            self._sent[replica] = None
            return self.outgoing(replica, limit)
        records = tuple(record for _, record in itertools.islice(log, start, start + limit))
        commit = self._commit_for(sent + len(records))
        if not records and (
            not watermark_alone or self._told_commit[replica] >= commit or commit < sent
        ):
            # Nothing new, or a watermark that does not yet cover what the
            # replica was sent: the batch that follows carries it. A batch
            # for the watermark alone is worth a frame only once it covers
            # everything sent (the replica then forgets every abortable ID).
            return None
        self._sent[replica] = sent + len(records)
        self._told_commit[replica] = commit
        return Batch(topic=self.topic, first=sent + 1, records=records, commit=commit)

    def _commit_for(self, sent: int) -> int:
        """The commit watermark a replica that has records up to ``sent`` may hear.

        A replica forgets how to abort a publish once it hears a watermark
        at or above it. Acknowledgements are cumulative, so the owner's
        watermark can pass a publish that failed; a replica must not hear
        that watermark before it has the `Abort` of that publish.
        """
        commit = self.quorum.committed
        for abort_seq, failed in self._aborts:
            if abort_seq > sent:
                commit = min(commit, failed - 1)
                break
        return commit

    def ack(self, replica: str, seq: int) -> int:
        """``replica`` holds every record up to ``seq``.

        Returns:
            The committed watermark afterwards.
        """
        before = self.quorum.committed
        committed = self.quorum.ack(replica, seq)
        sent = self._sent.get(replica)
        if sent is not None and seq > sent:
            # It holds more than this stream sent it since a rewind: the
            # earlier stream's records arrived after all.
            self._sent[replica] = min(seq, self.quorum.appended)
        if committed > before:
            self.mirror.commit(committed)
        self._trim()
        return committed

    def rewind(self, replica: str) -> None:
        """The stream to ``replica`` broke: send again what it did not acknowledge."""
        if replica not in self._sent:
            return
        mark = self.quorum.watermarks.get(replica, 0)
        oldest = self._log[0][0] if self._log else self.quorum.appended + 1
        self._sent[replica] = mark if mark >= oldest - 1 else None

    def expire(self, now: float) -> list[int]:
        """Fail the publishes that did not commit in time, and abort them.

        Returns:
            Their sequence numbers; answer those publishes with an error.
        """
        failed = self.quorum.expire(now)
        for seq in failed:
            self._aborts.append((self.append(Abort(seq=seq), now), seq))
        return failed

    def next_deadline(self) -> float | None:
        """When `expire` has work next, or None."""
        return self.quorum.next_deadline()

    def statistics(self) -> QuorumStatistics:
        """Replication lag and counters for ``/stats`` and ``/metrics``."""
        return self.quorum.statistics()

    def resync(self, replica: str) -> None:
        """``replica`` cannot apply what it was sent (a gap): snapshot it again."""
        if replica in self._sent:
            self._sent[replica] = None
        self._trim()

    def _trim(self) -> None:
        # Replicas waiting for a snapshot need no log; the others need every
        # record they have not acknowledged, and uncommitted records may
        # still have to be sent to a replica that replaces a dead one.
        marks = self.quorum.watermarks
        floor = min(
            (mark for name, mark in marks.items() if self._sent.get(name) is not None),
            default=self.quorum.appended,
        )
        floor = min(floor, self.quorum.committed)
        log = self._log
        while log and log[0][0] <= floor:
            log.popleft()
        sent_floor = min((sent or 0 for sent in self._sent.values()), default=floor)
        aborts = self._aborts
        while aborts and aborts[0][0] <= sent_floor:
            aborts.popleft()
