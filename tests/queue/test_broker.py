"""Broker rules: topic and channel lifecycle, events, ephemerals, the deadline index."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from shoal.queue.broker import (
    Broker,
    BrokerEvent,
    ChannelCreated,
    ChannelDeleted,
    ChannelPaused,
    TopicCreated,
    TopicDeleted,
    TopicPaused,
)
from shoal.queue.channel import Channel
from shoal.queue.config import QueueConfig

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

T0 = 1_700_000_000.0
CONFIG = QueueConfig(msg_timeout=10.0)


def make_broker(
    known_channels: Callable[[str], Iterable[str]] | None = None,
) -> tuple[Broker, list[BrokerEvent]]:
    broker = Broker(CONFIG, known_channels=known_channels)
    events: list[BrokerEvent] = []
    broker.add_listener(events.append)
    return broker, events


def test_broker_get_or_create_topic_emits_topic_created_once() -> None:
    broker, events = make_broker()
    topic, created = broker.get_or_create_topic("t", T0)
    again, created_again = broker.get_or_create_topic("t", T0)
    assert (created, created_again) == (True, False)
    assert again is topic is broker.get_topic("t")
    assert broker.topics == {"t": topic}
    assert events == [TopicCreated(topic="t")]


def test_broker_get_or_create_channel_creates_topic_too() -> None:
    broker, events = make_broker()
    channel, created = broker.get_or_create_channel("t", "c", T0)
    assert created
    assert broker.get_channel("t", "c") is channel
    assert broker.get_or_create_channel("t", "c", T0) == (channel, False)
    assert events == [TopicCreated(topic="t"), ChannelCreated(topic="t", channel="c")]


def test_broker_delete_topic_emits_channel_then_topic_deleted() -> None:
    broker, events = make_broker()
    broker.get_or_create_channel("t", "a", T0)
    broker.get_or_create_channel("t", "b", T0)
    events.clear()
    topic = broker.delete_topic("t")
    assert topic.deleted
    assert broker.get_topic("t") is None
    assert events == [
        ChannelDeleted(topic="t", channel="a"),
        ChannelDeleted(topic="t", channel="b"),
        TopicDeleted(topic="t"),
    ]
    with pytest.raises(KeyError):
        broker.delete_topic("t")


def test_broker_delete_channel_emits_channel_deleted() -> None:
    broker, events = make_broker()
    channel, _ = broker.get_or_create_channel("t", "c", T0)
    events.clear()
    assert broker.delete_channel("t", "c") is channel
    assert channel.deleted
    assert events == [ChannelDeleted(topic="t", channel="c")]
    assert broker.get_topic("t") is not None
    with pytest.raises(KeyError):
        broker.delete_channel("t", "c")
    with pytest.raises(KeyError):
        broker.delete_channel("missing", "c")


def test_broker_pause_emits_paused_events() -> None:
    broker, events = make_broker()
    channel, _ = broker.get_or_create_channel("t", "c", T0)
    events.clear()
    broker.pause_topic("t", True)
    broker.pause_channel("t", "c", True)
    assert (broker.topics["t"].paused, channel.paused) == (True, True)
    broker.pause_topic("t", False)
    broker.pause_channel("t", "c", False)
    assert (broker.topics["t"].paused, channel.paused) == (False, False)
    assert events == [
        TopicPaused(topic="t", paused=True),
        ChannelPaused(topic="t", channel="c", paused=True),
        TopicPaused(topic="t", paused=False),
        ChannelPaused(topic="t", channel="c", paused=False),
    ]
    with pytest.raises(KeyError):
        broker.pause_channel("t", "missing", True)


def test_broker_ephemeral_channel_and_topic_deleted_when_last_client_leaves() -> None:
    broker, events = make_broker()
    channel, _ = broker.get_or_create_channel("t#ephemeral", "c#ephemeral", T0)
    channel.add_client(1)
    channel.add_client(2)
    events.clear()
    assert broker.remove_client("t#ephemeral", "c#ephemeral", 1) is False
    assert broker.remove_client("t#ephemeral", "c#ephemeral", 2) is True
    assert channel.deleted
    assert broker.topics == {}
    assert events == [
        ChannelDeleted(topic="t#ephemeral", channel="c#ephemeral"),
        TopicDeleted(topic="t#ephemeral"),
    ]


def test_broker_ephemeral_channel_of_durable_topic_leaves_topic() -> None:
    broker, _ = make_broker()
    channel, _ = broker.get_or_create_channel("t", "c#ephemeral", T0)
    channel.add_client(1)
    assert broker.remove_client("t", "c#ephemeral", 1) is True
    assert broker.get_channel("t", "c#ephemeral") is None
    assert broker.get_topic("t") is not None


def test_broker_durable_channel_stays_after_last_client() -> None:
    broker, _ = make_broker()
    channel, _ = broker.get_or_create_channel("t", "c", T0)
    channel.add_client(1)
    assert broker.remove_client("t", "c", 1) is False
    assert broker.get_channel("t", "c") is channel


def test_broker_new_topic_precreates_known_durable_channels() -> None:
    broker, events = make_broker(known_channels=lambda topic: ["a", "b#ephemeral", "c"])
    topic, _ = broker.get_or_create_topic("t", T0)
    assert sorted(topic.channels) == ["a", "c"]
    assert events == [
        TopicCreated(topic="t"),
        ChannelCreated(topic="t", channel="a"),
        ChannelCreated(topic="t", channel="c"),
    ]
    topic.publish([b"kept"], T0)
    assert topic.channels["a"].depth == topic.channels["c"].depth == 1


def test_broker_process_requeues_timeouts_and_reports_owners() -> None:
    broker, _ = make_broker()
    topic, _ = broker.get_or_create_topic("t", T0)
    channel, _ = broker.get_or_create_channel("t", "c", T0)
    topic.publish([b"a", b"b"], T0)
    channel.deliver(3, T0, 10.0, 2)
    assert broker.next_deadline() == T0 + 10
    assert broker.process(T0 + 9) == []
    assert broker.process(T0 + 10) == [(channel, [3, 3])]
    assert channel.depth == 2
    assert broker.next_deadline() is None


def test_broker_process_releases_deferred_messages() -> None:
    broker, _ = make_broker()
    topic, _ = broker.get_or_create_topic("t", T0)
    channel, _ = broker.get_or_create_channel("t", "c", T0)
    topic.publish([b"later"], T0, defer=4.0)
    assert broker.next_deadline() == T0 + 4
    assert broker.process(T0 + 4) == []
    assert channel.depth == 1
    assert broker.next_deadline() is None


def test_broker_process_only_touches_due_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    broker, _ = make_broker()
    channels: list[Channel] = []
    for n in range(50):
        topic, _ = broker.get_or_create_topic(f"t{n}", T0)
        channel, _ = broker.get_or_create_channel(f"t{n}", "c", T0)
        topic.publish([b"x"], T0)
        channel.deliver(1, T0, 10.0 + n, 1)
        channels.append(channel)
    visited: list[Channel] = []
    original = Channel.process

    def spy(self: Channel, now: float) -> list[int]:
        visited.append(self)
        return original(self, now)

    monkeypatch.setattr(Channel, "process", spy)
    assert broker.process(T0 + 5) == []
    assert visited == []
    result = broker.process(T0 + 11)
    assert visited == channels[:2]
    assert [ch for ch, _ in result] == channels[:2]
    assert broker.next_deadline() == T0 + 12


def test_broker_next_deadline_follows_earlier_deadline() -> None:
    broker, _ = make_broker()
    topic, _ = broker.get_or_create_topic("t", T0)
    channel, _ = broker.get_or_create_channel("t", "c", T0)
    topic.publish([b"a", b"b"], T0)
    channel.deliver(1, T0, 30.0, 1)
    assert broker.next_deadline() == T0 + 30
    channel.deliver(2, T0, 5.0, 1)
    assert broker.next_deadline() == T0 + 5
    assert broker.process(T0 + 5) == [(channel, [2])]
    assert broker.next_deadline() == T0 + 30


def test_broker_finished_messages_leave_no_deadline_after_visit() -> None:
    broker, _ = make_broker()
    topic, _ = broker.get_or_create_topic("t", T0)
    channel, _ = broker.get_or_create_channel("t", "c", T0)
    topic.publish([b"a"], T0)
    (m,) = channel.deliver(1, T0, 10.0, 1)
    channel.finish(1, m.id)
    assert broker.process(T0 + 10) == []
    assert broker.next_deadline() is None


def test_broker_deleted_channel_deadlines_are_dropped() -> None:
    broker, _ = make_broker()
    topic, _ = broker.get_or_create_topic("t", T0)
    channel, _ = broker.get_or_create_channel("t", "c", T0)
    topic.publish([b"a"], T0)
    channel.deliver(1, T0, 10.0, 1)
    broker.delete_channel("t", "c")
    assert broker.next_deadline() is None
    assert broker.process(T0 + 100) == []


def test_broker_flush_and_close_reach_every_channel() -> None:
    broker, _ = make_broker()
    topic, _ = broker.get_or_create_topic("t", T0)
    channel, _ = broker.get_or_create_channel("t", "c", T0)
    topic.publish([b"a", b"b"], T0)
    channel.deliver(1, T0, 10.0, 1)
    broker.flush(T0 + 1)
    broker.close()
    assert (channel.depth, channel.backend_depth, channel.in_flight_count) == (2, 2, 0)


def test_broker_listener_may_create_from_inside_event() -> None:
    broker, events = make_broker()

    def precreate(event: BrokerEvent) -> None:
        if isinstance(event, TopicCreated):
            broker.get_or_create_channel(event.topic, "archive", T0)

    broker.add_listener(precreate)
    broker.get_or_create_topic("t", T0)
    assert broker.get_channel("t", "archive") is not None
    assert events == [TopicCreated(topic="t"), ChannelCreated(topic="t", channel="archive")]
    broker.remove_listener(precreate)
    broker.remove_listener(events.append)
    broker.get_or_create_topic("u", T0)
    assert len(events) == 2
