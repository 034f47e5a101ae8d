"""What a replica holds of one owner's topic: every message still owed.

Rules:
1. A message is held from the `Publish` that carries it until every channel
   it is owed to has finished it, its channels are dropped (deleted or
   emptied), the topic is deleted (or, for a message still in the topic's
   backlog, emptied), or its publish is aborted. Nothing else removes it.
2. Records apply in sequence order exactly once: a record at or below
   `ReplicaTopic.applied` is a duplicate and ignored; one beyond the next
   expected number means the stream lost something, and the caller must
   catch the replica up from a snapshot (`RemoteProtocolError`).
3. The replica never decides where a message goes: the records say (see
   `shoal.replication.records`).

Theory of operation:
    Messages live in one insertion-ordered dict ``id -> (bodies, index,
    timestamp, due, owed)``: the body is ``bodies[index]``, the bodies of
    the publish that carried it, and ``owed`` is the tuple of channel names
    still owing the message, or None for a message the owner holds in the
    topic's backlog. Insertion order is publish order, so adoption hands messages to
    the adopting broker in the order the owner would have delivered them.
    The backlog is a deque of IDs in the same order, so a `Pump` of n moves
    the n oldest in O(n).

    A `Publish` costs O(1) when it is applied: its record joins a list of
    *fresh* publishes, and its messages enter the dict only when something
    needs them (any other record, `owed`, `len`, `snapshot`, `held_bytes`),
    all fresh publishes at once and in order, so the result is exactly as
    if each had been stored when applied. A replica's round trip (and the
    owner's, for its mirror) thus stores nothing per message: a stream of
    publishes with no FIN between them is stored once, when the next FIN,
    pump or catch-up comes, and one bulk pass over many publishes costs no
    more than the same passes one at a time.

    On a replica a decoded publish's IDs and bodies are views of the frame
    (`shoal.replication.packed`), and storing a message points at its body
    there instead of cutting it out: a publish acknowledged, then finished,
    has its IDs cut (they key the dict) but never a body. A held message
    keeps the bodies of its whole publish alive (its frame, on a replica),
    so once the bytes of the publishes stored since the last pass exceed
    `RETAINED_FACTOR` times the held bytes (plus `RETAINED_SLACK`), every
    held body is referenced alone (`_compact`): memory stays within a
    constant factor of what is held, at a bounded cost per byte stored.

    Publishes not yet known to be committed keep their IDs by sequence
    number (``commit`` forgets them), so an `Abort` finds its messages
    without a scan. A `Finish` costs O(1) per ID; dropping a channel scans
    the held messages once (channels are dropped rarely).

    `snapshot` turns the state back into records, which is how an owner
    catches up a new replica from its own mirror and how a replica rewrites
    its log compactly: `restore` from a snapshot yields the same held
    messages, owed to the same channels, with the same sequence number and
    the same abortable publishes.
"""

from __future__ import annotations

import collections
from itertools import repeat
from typing import TYPE_CHECKING, TypeAlias

import msgspec

from shoal.errors import RemoteProtocolError
from shoal.replication.packed import PackedField, total_size
from shoal.replication.records import (
    Abort,
    ChannelCreated,
    ChannelDropped,
    Finish,
    Publish,
    Pump,
    Record,
    Snapshot,
    TopicDropped,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from shoal.replication.records import Batch

__all__ = ["OwedMessage", "ReplicaTopic", "receive"]


#: A held message: ``(bodies, index, timestamp, due, owed)``: its body is
#: ``bodies[index]``, the bodies of the publish that carried it (so storing
#: it cuts no body out of a frame); ``owed`` is a tuple of
#: channel names, or None while the message sits in the topic backlog. A
#: tuple of untracked values, so the garbage collector stops tracking it:
#: a replica (and an owner's mirror) holds every unfinished message, and
#: one tracked object per message made each collection walk all of them.
_Held: TypeAlias = "tuple[Sequence[bytes], int, int, float, tuple[str, ...] | None]"

#: Frame bytes held messages may keep alive, beyond this many times the
#: bytes of the messages themselves (plus `RETAINED_SLACK`), before
#: `ReplicaTopic` copies its held bodies out of their frames.
RETAINED_FACTOR = 4
RETAINED_SLACK = 1 << 20


def _body_size(bodies: Sequence[bytes], index: int) -> int:
    """Bytes of ``bodies[index]``, without cutting a packed block."""
    if type(bodies) is PackedField:
        return bodies.lengths[index]
    return len(bodies[index])


class OwedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One held message, as adoption hands it to a broker.

    Attributes:
        id: the owner's message ID (kept, so consumers can deduplicate).
        body: the payload.
        timestamp: publish time, nanoseconds since the epoch.
        due: wall time before which it is not deliverable, 0.0 if none.
        channels: the channels still owed it, or None for the topic backlog.
    """

    id: bytes
    body: bytes
    timestamp: int
    due: float
    channels: frozenset[str] | None


class ReplicaTopic:
    """The messages of one owner's topic still owed to some channel.

    Args:
        topic: the topic name.
    """

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.applied = 0
        self.channels: dict[str, None] = {}
        self._messages: dict[bytes, _Held] = {}
        self._backlog: collections.deque[bytes] = collections.deque()
        self._tentative: dict[int, Sequence[bytes]] = {}
        self._held_bytes = 0
        # Publishes applied but not yet stored in ``_messages``, in order,
        # and the bytes of their bodies (an upper bound until stored: an
        # ID already held is not stored twice).
        self._fresh: list[Publish] = []
        self._fresh_bytes = 0
        self._fresh_counted = 0  # how many of them ``_fresh_bytes`` counts
        # Bytes of the publishes' bodies that stored messages point into
        # (an upper bound of what they keep alive): see `_compact`.
        self._retained = 0

    def __len__(self) -> int:
        self._store_fresh()
        return len(self._messages)

    @property
    def held_bytes(self) -> int:
        """Bytes of the bodies held."""
        self._store_fresh()
        return self._held_bytes

    @property
    def fresh_publishes(self) -> int:
        """Publishes applied whose messages are not stored yet (see the theory of operation)."""
        return len(self._fresh)

    @property
    def held_bytes_bound(self) -> int:
        """At least `held_bytes`, without storing the fresh publishes (for cheap size checks).

        Counted when asked (each fresh publish once), so an owner's mirror,
        which is never asked, does not count at all.
        """
        fresh = self._fresh
        counted = self._fresh_counted
        if counted < len(fresh):
            self._fresh_bytes += sum(total_size(record.bodies) for record in fresh[counted:])
            self._fresh_counted = len(fresh)
        return self._held_bytes + self._fresh_bytes

    def apply(self, seq: int, record: Record) -> bool:
        """Apply the owner's record numbered ``seq``.

        Returns:
            True if it was applied, False for a duplicate.

        Raises:
            RemoteProtocolError: ``seq`` skips a number; nothing changed.
        """
        if seq <= self.applied:
            return False
        if seq != self.applied + 1:
            raise RemoteProtocolError(
                f"replication record {seq} of {self.topic!r} follows {self.applied}"
            )
        self.applied = seq
        if type(record) is Publish:
            self._publish(seq, record)
            return True
        if self._fresh and type(record) is not ChannelCreated:
            if type(record) is TopicDropped and record.deleted:
                self._fresh.clear()
                self._fresh_bytes = self._fresh_counted = 0
            else:
                self._store_fresh()
        match record:
            case Pump(count=count, channels=channels):
                self._pump(count, channels)
            case Finish(channel=channel, ids=ids):
                for msg_id in ids:
                    self._finish(msg_id, channel)
            case ChannelCreated(channel=channel):
                self.channels[channel] = None
            case ChannelDropped(channel=channel, deleted=deleted):
                for msg_id in [
                    msg_id
                    for msg_id, held in self._messages.items()
                    if held[4] is not None and channel in held[4]
                ]:
                    self._finish(msg_id, channel)
                if deleted:
                    self.channels.pop(channel, None)
            case TopicDropped(deleted=True):
                self._messages.clear()
                self._backlog.clear()
                self._tentative.clear()
                self._held_bytes = self._retained = 0
                self.channels.clear()
            case TopicDropped(deleted=False):
                # Only the backlog: what the owner put in channels stays owed.
                for msg_id in self._backlog:
                    held = self._messages.get(msg_id)
                    if held is not None and held[4] is None:
                        self._remove(msg_id)
                self._backlog.clear()
            case Abort(seq=aborted):
                for msg_id in self._tentative.pop(aborted, ()):
                    self._remove(msg_id)
        return True

    def commit(self, seq: int) -> None:
        """The owner committed every record up to ``seq``: none will be aborted."""
        for done in [s for s in self._tentative if s <= seq]:
            del self._tentative[done]

    def _publish(self, seq: int, record: Publish) -> None:
        owed = record.channels
        if owed is not None and not owed:
            # Owed to no channel (only ephemeral ones took it): nothing to hold.
            self._tentative[seq] = ()
            return
        ids, bodies = record.ids, record.bodies
        if len(ids) != len(bodies):
            raise ValueError(f"publish record {seq}: {len(ids)} IDs but {len(bodies)} bodies")
        self._tentative[seq] = ids
        self._fresh.append(record)

    def _store_fresh(self) -> None:
        """Store the messages of the fresh publishes, in the order they were applied."""
        if not self._fresh:
            return
        fresh, self._fresh = self._fresh, []
        self._fresh_bytes = self._fresh_counted = 0
        for record in fresh:
            self._store(record)
        if self._retained > RETAINED_FACTOR * self._held_bytes + RETAINED_SLACK:
            self._compact()

    def _store(self, record: Publish) -> None:
        owed = record.channels
        messages = self._messages
        timestamp = record.timestamp
        due = record.due
        ids, bodies = record.ids, record.bodies
        before = len(messages)
        if messages.keys().isdisjoint(ids):
            # The usual case, a batch of new IDs: one C-level pass stores it
            # (the loop below costs a third of a replica's apply time), and
            # each message points at its body: none is cut out of a frame.
            held = zip(
                repeat(bodies),
                range(len(ids)),
                repeat(timestamp),
                repeat(due),
                repeat(owed),
                strict=False,
            )
            messages.update(zip(ids, held, strict=True))
            if len(messages) - before == len(ids):
                size = total_size(bodies)
                self._held_bytes += size
                if len(bodies) > 1:
                    self._retained += size
                if owed is None:
                    self._backlog.extend(ids)
                return
            for msg_id in ids:  # an ID repeated within the batch: redo it one by one
                messages.pop(msg_id, None)
        added = 0
        for index, msg_id in enumerate(ids):
            if msg_id in messages:
                continue
            messages[msg_id] = (bodies, index, timestamp, due, owed)
            added += _body_size(bodies, index)
            if owed is None:
                self._backlog.append(msg_id)
        self._held_bytes += added
        if added and len(bodies) > 1:
            self._retained += total_size(bodies)

    def _compact(self) -> None:
        """Copy held bodies out of their publishes, so finished messages' bytes are freed.

        A held message keeps the bodies of its whole publish alive (on a
        replica the whole frame that carried it; on an owner's mirror the
        publish's tuple). Once those could hold far more than the held
        messages (counted as they are stored, never decreased), each held
        body is referenced alone. It runs after at least ``RETAINED_FACTOR`` times the held
        bytes were stored since the last time, so its cost per byte
        received is bounded.
        """
        messages = self._messages
        for msg_id, (bodies, index, timestamp, due, owed) in messages.items():
            if len(bodies) > 1:
                messages[msg_id] = ((bodies[index],), 0, timestamp, due, owed)
        self._retained = 0

    @property
    def retained_bytes(self) -> int:
        """Bytes of bodies held messages may keep alive (see `_compact`)."""
        return self._retained

    def _pump(self, count: int, channels: tuple[str, ...]) -> None:
        backlog = self._backlog
        messages = self._messages
        moved = 0
        while moved < count and backlog:
            msg_id = backlog.popleft()
            held = messages.get(msg_id)
            if held is None:  # aborted while in the backlog
                continue
            messages[msg_id] = (held[0], held[1], held[2], held[3], channels)
            moved += 1

    def _finish(self, msg_id: bytes, channel: str) -> None:
        held = self._messages.get(msg_id)
        if held is None:
            return
        owed = held[4]
        if owed is None or channel not in owed:
            return
        left = tuple(name for name in owed if name != channel)
        if left:
            self._messages[msg_id] = (held[0], held[1], held[2], held[3], left)
        else:
            self._remove(msg_id)

    def _remove(self, msg_id: bytes) -> None:
        held = self._messages.pop(msg_id, None)
        if held is not None:
            self._held_bytes -= _body_size(held[0], held[1])
            # A backlog entry of a removed message is skipped by `_pump`.

    def owed(self) -> Iterator[OwedMessage]:
        """Every held message, in publish order."""
        self._store_fresh()
        for msg_id, (bodies, index, timestamp, due, owed) in self._messages.items():
            yield OwedMessage(
                id=msg_id,
                body=bodies[index],
                timestamp=timestamp,
                due=due,
                channels=None if owed is None else frozenset(owed),
            )

    @classmethod
    def restore(cls, topic: str, snapshot: Snapshot) -> ReplicaTopic:
        """A replica in exactly the state `snapshot` was taken from."""
        replica = cls(topic)
        for seq, record in enumerate(snapshot.records, 1):
            replica.apply(seq, record)
        replica.applied = snapshot.applied
        replica._store_fresh()
        replica._tentative = {
            seq: tuple(msg_id for msg_id in ids if msg_id in replica._messages)
            for seq, ids in snapshot.tentative.items()
        }
        return replica

    def snapshot(self) -> Snapshot:
        """This state as a `Snapshot`, from which `restore` rebuilds it.

        Its records are channels first, then the held messages in publish
        order, one `Publish` per run of messages sharing timestamp, due time
        and owed channels. Backlog messages are published with
        ``channels=None`` in backlog order, so a later `Pump` moves the same
        ones.
        """
        records: list[Record] = [ChannelCreated(channel=name) for name in self.channels]
        run_key: tuple[int, float, tuple[str, ...] | None] | None = None
        ids: list[bytes] = []
        bodies: list[bytes] = []

        def flush() -> None:
            if run_key is not None and ids:
                timestamp, due, channels = run_key
                records.append(
                    Publish(
                        ids=tuple(ids),
                        bodies=tuple(bodies),
                        timestamp=timestamp,
                        due=due,
                        channels=channels,
                    )
                )
            ids.clear()
            bodies.clear()

        for message in self.owed():
            channels = None if message.channels is None else tuple(sorted(message.channels))
            key = (message.timestamp, message.due, channels)
            if key != run_key:
                flush()
                run_key = key
            ids.append(message.id)
            bodies.append(message.body)
        flush()
        return Snapshot(
            applied=self.applied, records=tuple(records), tentative=dict(self._tentative)
        )


def receive(replica: ReplicaTopic | None, batch: Batch) -> ReplicaTopic:
    """Apply what the owner sent; the result's ``applied`` is the acknowledgement.

    Args:
        replica: what this replica held of the topic, or None.
        batch: the owner's batch for the topic.

    Returns:
        The replica's state afterwards (a new object after a snapshot).

    Raises:
        RemoteProtocolError: the batch starts past the next expected record;
            the records of the batch were not applied and the owner must send
            a snapshot (`shoal.replication.owner.OwnerTopic.resync`).
    """
    if batch.snapshot is not None:
        replica = ReplicaTopic.restore(batch.topic, batch.snapshot)
    else:
        if replica is None:
            replica = ReplicaTopic(batch.topic)
        if batch.records and batch.first > replica.applied + 1:
            raise RemoteProtocolError(
                f"replication batch of {batch.topic!r} starts at {batch.first}, "
                f"after {replica.applied}"
            )
        for seq, record in enumerate(batch.records, batch.first):
            replica.apply(seq, record)
    replica.commit(batch.commit)
    return replica
