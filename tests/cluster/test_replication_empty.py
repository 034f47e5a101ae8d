"""An empty on a replicated topic's owner, raced by publishes still waiting for replicas.

A publish's record precedes the drop an empty records, so the replicas drop
its messages; the owner must then not place them where the empty reached
once the publish commits, or an adoption and the owner would disagree.
"""

from __future__ import annotations

from shoal.cluster.replication import _Owned, _Pending
from shoal.queue.backend import memory_backend_factory
from shoal.queue.config import QueueConfig
from shoal.queue.topic import Topic
from shoal.replication import OwnerTopic, ReplicaTopic, receive
from shoal.replication.records import ChannelCreated, Publish


def owned_topic(*channels: str) -> _Owned:
    topic = Topic("t", QueueConfig(), memory_backend_factory)
    core = OwnerTopic("t", required=1, timeout=30.0)
    core.set_replicas(["r"])
    for name in channels:
        topic.get_or_create_channel(name, 0.0)
        core.append(ChannelCreated(channel=name), 0.0)
    return _Owned(topic, core, lambda: None)


def waiting_publish(owned: _Owned, *bodies: bytes) -> None:
    """A publish appended and waiting for its replica, as `Replication.publish` leaves it."""
    channels = owned.topic.fanout_names()
    ids = owned.topic.new_ids(1, len(bodies))
    record = Publish(ids=ids, bodies=bodies, timestamp=1, channels=channels)
    seq = owned.core.append(record, 0.0)
    owned.pending[seq] = _Pending(ids, bodies, 1, 0.0, channels)


def replicate(owned: _Owned, replica: ReplicaTopic | None = None) -> ReplicaTopic:
    """The replica receives everything and acknowledges; the owner settles."""
    while (batch := owned.core.outgoing("r")) is not None:
        replica = receive(replica, batch)
        owned.core.ack("r", replica.applied)
    owned.settle()
    assert replica is not None
    return replica


def owed(replica: ReplicaTopic) -> dict[bytes, frozenset[str] | None]:
    return {m.body: m.channels for m in replica.owed()}


async def test_a_channel_empty_reaches_a_publish_waiting_for_its_replica() -> None:
    owned = owned_topic("c1", "c2")
    waiting_publish(owned, b"a", b"b")
    owned.emptied("c1")
    (waiting,) = owned.pending.values()
    replica = replicate(owned)
    assert waiting.ok
    channels = owned.topic.channels
    assert (channels["c1"].depth, channels["c2"].depth) == (0, 2)
    assert owed(replica) == {b"a": frozenset({"c2"}), b"b": frozenset({"c2"})}


async def test_a_topic_empty_reaches_a_held_publish_waiting_for_its_replica() -> None:
    owned = owned_topic()  # no channel: the publish is held in the topic's backlog
    waiting_publish(owned, b"held")
    owned.emptied(None)
    replica = replicate(owned)
    assert owned.topic.depth == 0
    assert owed(replica) == {}
    # A later publish is held, and kept, on both.
    waiting_publish(owned, b"later")
    replica = replicate(owned, replica)
    assert owned.topic.depth == 1
    assert owed(replica) == {b"later": None}
