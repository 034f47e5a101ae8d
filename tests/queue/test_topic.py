"""Topic rules: IDs and counts, fan-out, backlog and pump, pause, ephemeral, shutdown."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pytest

from shoal.queue.backend import Backend, BackendError, MemoryBackend
from shoal.queue.config import QueueConfig
from shoal.queue.message import decode_message
from shoal.queue.topic import Topic

if TYPE_CHECKING:
    from collections.abc import Sequence

T0 = 1_700_000_000.0
CONFIG = QueueConfig(node_id=5, mem_queue_size=100, msg_timeout=10.0)


class RecordingFactory:
    """A backend factory that remembers what it opened."""

    def __init__(self) -> None:
        self.opened: dict[str, tuple[MemoryBackend, bool]] = {}

    def __call__(self, name: str, *, ephemeral: bool) -> Backend:
        backend = MemoryBackend()
        self.opened[name] = (backend, ephemeral)
        return backend


def make_topic(name: str = "t", config: QueueConfig = CONFIG) -> tuple[Topic, RecordingFactory]:
    factory = RecordingFactory()
    return Topic(name, config, factory), factory


def drain(topic: Topic, now: float = T0) -> int:
    moved = 0
    for _ in range(1000):
        step = topic.pump(now, 7)
        if step == 0:
            return moved
        moved += step
    raise AssertionError("pump never ran dry")


def test_topic_publish_assigns_ids_timestamp_and_counts() -> None:
    topic, _ = make_topic()
    channel, _ = topic.get_or_create_channel("c", T0)
    topic.publish([b"a", b"bcd"], T0 + 0.5)
    out = channel.deliver(1, T0, 10.0, 5)
    assert [m.body for m in out] == [b"a", b"bcd"]
    assert all(m.timestamp == int((T0 + 0.5) * 1e9) for m in out)
    assert all(len(m.id) == 16 and int(m.id, 16) >= 0 for m in out)
    assert out[0].id < out[1].id
    assert (int(out[0].id, 16) >> 12) & 0x3FF == 5  # node id bits
    assert (topic.message_count, topic.message_bytes) == (2, 4)


def test_topic_fans_out_a_copy_to_every_channel() -> None:
    topic, _ = make_topic()
    channels = [topic.get_or_create_channel(name, T0)[0] for name in ("a", "b", "c")]
    topic.publish([b"x", b"y"], T0)
    delivered = [ch.deliver(1, T0, 10.0, 5) for ch in channels]
    ids = [[m.id for m in batch] for batch in delivered]
    assert ids[0] == ids[1] == ids[2]
    assert all(ch.message_count == 2 for ch in channels)
    # independent copies: one channel's delivery does not touch another's attempts
    assert len({id(m) for batch in delivered for m in batch}) == 6
    assert topic.depth == 0


def test_topic_without_channel_buffers_then_flows_to_first_channel() -> None:
    topic, _ = make_topic(config=dataclasses.replace(CONFIG, mem_queue_size=3))
    topic.publish([b"%d" % n for n in range(10)], T0)
    assert (topic.depth, topic.backend_depth, topic.has_backlog) == (10, 7, False)
    woken: list[int] = []
    topic.wakeup = lambda: woken.append(1)
    first, created = topic.get_or_create_channel("first", T0 + 1)
    assert (created, woken, topic.has_backlog) == (True, [1], True)
    assert drain(topic, T0 + 1) == 10
    assert (topic.has_backlog, topic.depth) == (False, 0)
    assert [m.body for m in first.deliver(1, T0 + 1, 10.0, 20)] == [b"%d" % n for n in range(10)]


def test_topic_later_channel_sees_only_new_messages() -> None:
    topic, _ = make_topic()
    first, _ = topic.get_or_create_channel("first", T0)
    topic.publish([b"old"], T0)
    second, _ = topic.get_or_create_channel("second", T0)
    topic.publish([b"new"], T0)
    assert [m.body for m in first.deliver(1, T0, 10.0, 5)] == [b"old", b"new"]
    assert [m.body for m in second.deliver(1, T0, 10.0, 5)] == [b"new"]


def test_topic_get_or_create_channel_returns_existing() -> None:
    topic, _ = make_topic()
    channel, created = topic.get_or_create_channel("c", T0)
    again, created_again = topic.get_or_create_channel("c", T0)
    assert (created, created_again) == (True, False)
    assert again is channel
    assert topic.get_channel("c") is channel
    assert topic.get_channel("missing") is None


def test_topic_channel_backend_named_topic_colon_channel() -> None:
    topic, factory = make_topic("t")
    topic.get_or_create_channel("c", T0)
    topic.get_or_create_channel("e#ephemeral", T0)
    assert factory.opened["t"][1] is False
    assert factory.opened["t:c"][1] is False
    assert factory.opened["t:e#ephemeral"][1] is True


def test_topic_ephemeral_topic_channels_get_ephemeral_backends() -> None:
    topic, factory = make_topic("t#ephemeral")
    topic.get_or_create_channel("c", T0)
    assert factory.opened["t#ephemeral"][1] is True
    assert factory.opened["t#ephemeral:c"][1] is True


def test_topic_dpub_defers_every_channel_copy() -> None:
    topic, _ = make_topic()
    a, _ = topic.get_or_create_channel("a", T0)
    b, _ = topic.get_or_create_channel("b", T0)
    topic.publish([b"later"], T0, defer=5.0)
    for channel in (a, b):
        assert (channel.message_count, channel.deferred_count, channel.depth) == (1, 1, 0)
        assert channel.deliver(1, T0 + 4.9, 10.0, 1) == []
        assert channel.next_deadline() == T0 + 5.0
        assert channel.process_deferred(T0 + 5.0) == 1
        assert [m.body for m in channel.deliver(1, T0 + 5, 10.0, 1)] == [b"later"]


def test_topic_dpub_without_channel_defers_from_pump_time() -> None:
    topic, _ = make_topic()
    topic.publish([b"later"], T0, defer=5.0)
    channel, _ = topic.get_or_create_channel("c", T0 + 100)
    assert topic.pump(T0 + 100, 10) == 1
    assert channel.deferred_count == 1
    assert channel.next_deadline() == T0 + 105


def test_topic_pause_holds_messages_until_unpause() -> None:
    topic, _ = make_topic()
    channel, _ = topic.get_or_create_channel("c", T0)
    topic.publish([b"before"], T0)
    topic.pause()
    topic.publish([b"during"], T0)
    assert topic.pump(T0, 10) == 0
    assert (topic.depth, channel.depth) == (1, 1)
    woken: list[int] = []
    topic.wakeup = lambda: woken.append(1)
    topic.unpause()
    assert woken == [1]
    assert drain(topic) == 1
    assert [m.body for m in channel.deliver(1, T0, 10.0, 5)] == [b"before", b"during"]


def test_topic_empty_drops_backlog_only() -> None:
    topic, _ = make_topic(config=dataclasses.replace(CONFIG, mem_queue_size=1))
    channel, _ = topic.get_or_create_channel("c", T0)
    topic.publish([b"in-channel"], T0)
    topic.pause()
    topic.publish([b"held-1", b"held-2"], T0)
    topic.empty()
    assert (topic.depth, topic.backend_depth) == (0, 0)
    assert channel.depth == 1


def test_topic_delete_channel_deletes_it() -> None:
    topic, factory = make_topic(config=dataclasses.replace(CONFIG, mem_queue_size=0))
    channel, _ = topic.get_or_create_channel("c", T0)
    topic.publish([b"x"], T0)
    assert factory.opened["t:c"][0].depth == 1
    assert topic.delete_channel("c") is channel
    assert channel.deleted
    assert factory.opened["t:c"][0].depth == 0
    assert topic.channels == {}
    assert not topic.should_delete
    with pytest.raises(KeyError):
        topic.delete_channel("c")
    topic.publish([b"y"], T0)
    assert topic.depth == 1


def test_topic_ephemeral_should_delete_after_last_channel() -> None:
    topic, _ = make_topic("t#ephemeral")
    assert topic.ephemeral
    topic.get_or_create_channel("a", T0)
    topic.get_or_create_channel("b", T0)
    topic.delete_channel("a")
    assert not topic.should_delete
    topic.delete_channel("b")
    assert topic.should_delete


def test_topic_ephemeral_without_channels_stays() -> None:
    topic, _ = make_topic("t#ephemeral")
    topic.publish([b"x"], T0)
    assert not topic.should_delete
    assert topic.depth == 1


def test_topic_flush_writes_backlog_and_channels_to_backends() -> None:
    topic, factory = make_topic()
    channel, _ = topic.get_or_create_channel("c", T0)
    topic.publish([b"one", b"two"], T0)
    channel.deliver(1, T0, 10.0, 1)
    topic.pause()
    topic.publish([b"held"], T0, defer=50.0)
    topic.flush(T0 + 1)
    topic.close()
    topic_backend = factory.opened["t"][0]
    channel_backend = factory.opened["t:c"][0]
    assert (topic_backend.depth, channel_backend.depth) == (1, 2)
    held = topic_backend.get()
    assert held is not None
    assert decode_message(held).body == b"held"
    bodies = []
    for _ in range(2):
        record = channel_backend.get()
        assert record is not None
        bodies.append(decode_message(record).body)
    assert bodies == [b"two", b"one"]


def test_topic_delete_deletes_channels_and_backlog() -> None:
    topic, factory = make_topic(config=dataclasses.replace(CONFIG, mem_queue_size=0))
    channel, _ = topic.get_or_create_channel("c", T0)
    topic.publish([b"x"], T0)
    topic.pause()
    topic.publish([b"y"], T0)
    topic.delete()
    assert topic.deleted
    assert channel.deleted
    assert topic.channels == {}
    assert factory.opened["t"][0].depth == 0
    assert factory.opened["t:c"][0].depth == 0


def test_topic_publish_overflow_in_channel_goes_to_channel_backend() -> None:
    topic, factory = make_topic(config=dataclasses.replace(CONFIG, mem_queue_size=2))
    a, _ = topic.get_or_create_channel("a", T0)
    b, _ = topic.get_or_create_channel("b", T0)
    topic.publish([b"%d" % n for n in range(5)], T0)
    for name, channel in (("a", a), ("b", b)):
        assert factory.opened[f"t:{name}"][0].depth == 3
        assert [m.body for m in channel.deliver(1, T0, 1.0, 9)] == [b"%d" % n for n in range(5)]


def test_topic_publish_ids_unique_and_increasing_across_batches() -> None:
    topic, _ = make_topic()
    channel, _ = topic.get_or_create_channel("c", T0)
    topic.publish([b"x"] * 5000, T0)
    topic.publish([b"y"] * 5000, T0)
    ids = [m.id for m in channel.deliver(1, T0, 10.0, 10_000)]
    assert len(ids) == 10_000
    assert ids == sorted(set(ids))


def test_topic_backlog_of_several_batches_pumps_in_order_across_batch_edges() -> None:
    topic, _ = make_topic(config=dataclasses.replace(CONFIG, mem_queue_size=7))
    sizes = (5, 1, 4)
    bodies = [b"m%d" % n for n in range(sum(sizes))]
    start = 0
    for size in sizes:
        topic.publish(bodies[start : start + size], T0)
        start += size
    assert (topic.depth, topic.backend_depth) == (10, 3)
    channel, _ = topic.get_or_create_channel("c", T0)
    depths = []
    for _ in range(4):
        topic.pump(T0, 3)
        depths.append(topic.depth)
    assert depths == [7, 4, 1, 0]
    assert topic.pump(T0, 3) == 0
    assert [m.body for m in channel.deliver(1, T0, 10.0, 20)] == bodies


def test_topic_flush_after_a_partial_pump_keeps_the_rest_in_order() -> None:
    topic, factory = make_topic()
    topic.publish([b"a", b"b", b"c", b"d", b"e"], T0)
    channel, _ = topic.get_or_create_channel("c", T0)
    assert topic.pump(T0, 2) == 2
    topic.flush(T0)
    assert topic.depth == topic.backend_depth == 3
    backend = factory.opened["t"][0]
    records = [decode_message(backend.get() or b"") for _ in range(3)]
    assert [(m.body, m.attempts) for m in records] == [(b"c", 0), (b"d", 0), (b"e", 0)]
    assert channel.depth == channel.backend_depth == 2  # flushed to its own backend
    assert [m.body for m in channel.deliver(1, T0, 10.0, 5)] == [b"a", b"b"]


def test_topic_keeps_its_own_copy_of_the_published_bodies() -> None:
    topic, _ = make_topic()
    held = [b"one", b"two"]
    topic.publish(held, T0)
    held[0] = b"changed"
    held.append(b"three")
    channel, _ = topic.get_or_create_channel("c", T0)
    drain(topic)
    assert [m.body for m in channel.deliver(1, T0, 10.0, 5)] == [b"one", b"two"]


class _CountingBackend(MemoryBackend):
    """A memory backend that counts syncs."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs = 0

    def sync(self) -> None:
        self.syncs += 1


def test_durable_topic_leaves_syncing_to_the_shell_and_defers_into_a_backend() -> None:
    backends: dict[str, _CountingBackend] = {}

    def factory(name: str, *, ephemeral: bool) -> _CountingBackend:
        backends[name] = _CountingBackend()
        return backends[name]

    topic = Topic("t", QueueConfig(mem_queue_size=0, sync_on_publish=True), factory)
    topic.publish([b"a", b"b", b"c"], 1.0)
    assert backends["t"].depth == 3
    channel, _ = topic.get_or_create_channel("c", 1.0)
    topic.publish([b"d"] * 200, 2.0, defer=5.0)
    # One group-committed fsync off the event loop is the shell's job, not the core's.
    assert all(backend.syncs == 0 for backend in backends.values())
    assert channel.deferred_count == 200
    assert backends["t:c:deferred"].depth == 0  # taken back: held for acknowledgement


class _FullBackend(MemoryBackend):
    """A memory backend whose disk is full: every put is refused."""

    def put(self, record: bytes) -> None:
        raise BackendError("No space left on device")

    def put_many(self, records: Sequence[bytes]) -> None:
        raise BackendError("No space left on device")


@pytest.mark.parametrize("defer", [0.0, 5.0])
def test_a_publish_refused_by_one_channel_is_stored_in_none(defer: float) -> None:
    def factory(name: str, *, ephemeral: bool) -> MemoryBackend:
        return _FullBackend() if name.startswith("t:b") else MemoryBackend()

    config = QueueConfig(mem_queue_size=1, sync_on_publish=defer > 0)
    topic = Topic("t", config, factory)
    a, _ = topic.get_or_create_channel("a", 1.0)
    topic.get_or_create_channel("b", 1.0)
    if defer == 0:
        topic.publish([b"kept"], 1.0)  # fits b's memory queue
    with pytest.raises(BackendError):
        topic.publish([b"x", b"y", b"z"], 2.0, defer)
    assert a.depth == (1 if defer == 0 else 0)
    assert a.deferred_count == 0
    assert [m.body for m in a.deliver(1, 100.0, 10.0, 10)] == ([b"kept"] if defer == 0 else [])
