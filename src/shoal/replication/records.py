"""What an owner tells its replicas about a topic, one record at a time.

Records describe what *happened* on the owner, not what the replica should
compute: a publish names the channels its messages went to, a pump names
how many backlog messages moved and into which channels. A replica therefore
never re-runs the owner's topic logic (paused topics, channels created
between a publish and a pump, ephemeral channels left out), and the owner
stays the single source of truth for where a message is owed.

The records are frozen, slotted, keyword-only dataclasses, never
subclassed; their wire encoding lives with the replication stream.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from shoal.replication.replica import Snapshot

__all__ = [
    "Abort",
    "Batch",
    "ChannelCreated",
    "ChannelDropped",
    "Finish",
    "Publish",
    "Pump",
    "Record",
    "TopicDropped",
]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Publish:
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


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Pump:
    """The owner moved its ``count`` oldest backlog messages into ``channels``."""

    count: int
    channels: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Finish:
    """Clients of ``channel`` finished these messages (FIN): they are done there."""

    channel: str
    ids: Sequence[bytes]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ChannelCreated:
    """A channel appeared on the owner's topic; it is owed only later messages."""

    channel: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ChannelDropped:
    """A channel was emptied or deleted: nothing it held is owed any more."""

    channel: str
    deleted: bool


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TopicDropped:
    """The topic was deleted, or its own backlog emptied.

    Deleted (``deleted=True``): nothing of the topic is owed any more.
    Emptied (``/topic/empty``, ``deleted=False``): as in nsqd, only the
    messages the topic holds in its backlog are dropped; those already in
    channels stay owed to them.
    """

    deleted: bool


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Abort:
    """The publish recorded at sequence ``seq`` failed: forget its messages.

    The owner answered that publish with an error (not enough replicas in
    time), so no copy may ever be delivered.
    """

    seq: int


Record = Publish | Pump | Finish | ChannelCreated | ChannelDropped | TopicDropped | Abort


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
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
