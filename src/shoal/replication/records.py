"""What an owner tells its replicas about a topic, one record at a time.

Records describe what *happened* on the owner, not what the replica should
compute: a publish names the channels its messages went to, a pump names
how many backlog messages moved and into which channels. A replica therefore
never re-runs the owner's topic logic (paused topics, channels created
between a publish and a pump, ephemeral channels left out), and the owner
stays the single source of truth for where a message is owed.

The records are frozen, keyword-only `msgspec.Struct` types, never
subclassed; their wire encoding lives with the replication stream. A
`Snapshot` stands for every record up to a point.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

__all__ = [
    "Abort",
    "Batch",
    "ChannelCreated",
    "ChannelDropped",
    "Finish",
    "Publish",
    "Pump",
    "Record",
    "Snapshot",
    "TopicDropped",
]


class Publish(msgspec.Struct, frozen=True, kw_only=True):
    """Messages were published (PUB, MPUB, DPUB, HTTP /pub and /mpub).

    Attributes:
        ids: the message IDs the owner gave them, in order.
        bodies: their bodies, in step with ``ids``. Tuples on the owner;
            as decoded from a frame, `shoal.replication.packed.PackedField`
            views cut only when read.
        timestamp: publish time, nanoseconds since the epoch.
        due: wall time before which the messages are not deliverable (DPUB),
            0.0 when they are deliverable at once.
        channels: the channels each message is now owed to, or None when the
            owner held them in the topic's backlog (no channel yet, or the
            topic paused); a later `Pump` moves them.
    """

    ids: Sequence[bytes]
    bodies: Sequence[bytes]
    timestamp: int
    due: float = 0.0
    channels: tuple[str, ...] | None = None


class Pump(msgspec.Struct, frozen=True, kw_only=True):
    """The owner moved its ``count`` oldest backlog messages into ``channels``."""

    count: int
    channels: tuple[str, ...]


class Finish(msgspec.Struct, frozen=True, kw_only=True):
    """Clients of ``channel`` finished these messages (FIN): they are done there."""

    channel: str
    ids: Sequence[bytes]


class ChannelCreated(msgspec.Struct, frozen=True, kw_only=True):
    """A channel appeared on the owner's topic; it is owed only later messages."""

    channel: str


class ChannelDropped(msgspec.Struct, frozen=True, kw_only=True):
    """A channel was emptied or deleted: nothing it held is owed any more."""

    channel: str
    deleted: bool


class TopicDropped(msgspec.Struct, frozen=True, kw_only=True):
    """The topic was deleted, or its own backlog emptied.

    Deleted (``deleted=True``): nothing of the topic is owed any more.
    Emptied (``/topic/empty``, ``deleted=False``): as in nsqd, only the
    messages the topic holds in its backlog are dropped; those already in
    channels stay owed to them.
    """

    deleted: bool


class Abort(msgspec.Struct, frozen=True, kw_only=True):
    """The publish recorded at sequence ``seq`` failed: forget its messages.

    The owner answered that publish with an error (not enough replicas in
    time), so no copy may ever be delivered.
    """

    seq: int


Record = Publish | Pump | Finish | ChannelCreated | ChannelDropped | TopicDropped | Abort


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """What an owner sends one replica of one topic in one go.

    Attributes:
        topic: the topic name.
        first: the sequence number of ``records[0]``; the records follow
            without gaps.
        records: the records, in order (empty for a commit-only batch).
        commit: the owner's committed watermark when it sent the batch.
        snapshot: instead of records, the whole state to start from (a
            catch-up); ``first`` and ``records`` are then unused.
    """

    topic: str
    first: int
    records: tuple[Record, ...]
    commit: int
    snapshot: Snapshot | None = None


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A replica's whole state, as records, standing for every record to ``applied``.

    Attributes:
        applied: the last sequence number the snapshot includes.
        records: channels, then held messages in publish order (see
            `ReplicaTopic.snapshot`).
        tentative: the IDs of each publish not yet known to be committed, by
            its sequence number, so a later `Abort` still finds them.
    """

    applied: int
    records: tuple[Record, ...]
    tentative: dict[int, Sequence[bytes]]
