import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import RemoteProtocolError
from shoal.replication.records import (
    Abort,
    ChannelCreated,
    ChannelDropped,
    Finish,
    Publish,
    Pump,
    Record,
    TopicDropped,
)
from shoal.replication.replica import ReplicaTopic


def publish(*ids: str, channels: tuple[str, ...] | None = ("a",), due: float = 0.0) -> Publish:
    raw = tuple(i.encode() for i in ids)
    return Publish(
        ids=raw, bodies=tuple(b"body-" + i for i in raw), timestamp=7, due=due, channels=channels
    )


def fed(*records: Record) -> ReplicaTopic:
    replica = ReplicaTopic("t")
    for seq, record in enumerate(records, 1):
        assert replica.apply(seq, record)
    return replica


def held(replica: ReplicaTopic) -> dict[bytes, set[str] | None]:
    return {m.id: None if m.channels is None else set(m.channels) for m in replica.owed()}


def test_replica_holds_until_every_channel_finishes() -> None:
    r = fed(
        ChannelCreated(channel="a"),
        ChannelCreated(channel="b"),
        publish("1", "2", channels=("a", "b")),
        Finish(channel="a", ids=(b"1",)),
    )
    assert held(r) == {b"1": {"b"}, b"2": {"a", "b"}}
    r.apply(5, Finish(channel="b", ids=(b"1",)))
    assert held(r) == {b"2": {"a", "b"}}
    assert r.held_bytes == len(b"body-2")


def test_replica_duplicate_record_is_ignored_and_gap_refused() -> None:
    r = fed(publish("1"))
    assert not r.apply(1, publish("9"))
    with pytest.raises(RemoteProtocolError):
        r.apply(3, publish("3"))
    assert r.applied == 1
    assert held(r) == {b"1": {"a"}}


def test_replica_keeps_the_first_copy_of_an_id_published_again() -> None:
    # Within one batch (the one-pass store must step back) and across batches.
    first = Publish(ids=(b"1", b"2", b"1"), bodies=(b"a", b"bb", b"ccc"), timestamp=7, due=0.0,
                    channels=None)  # fmt: skip
    r = fed(first, publish("2", "3", channels=None))
    assert {m.id: m.body for m in r.owed()} == {b"1": b"a", b"2": b"bb", b"3": b"body-3"}
    assert r.held_bytes == len(b"a") + len(b"bb") + len(b"body-3")
    # The backlog names each held message once, oldest first.
    r.apply(3, Pump(count=3, channels=("x",)))
    assert held(r) == {b"1": {"x"}, b"2": {"x"}, b"3": {"x"}}


def test_replica_pump_moves_oldest_backlog_messages() -> None:
    r = fed(
        publish("1", "2", "3", channels=None),
        ChannelCreated(channel="a"),
        Pump(count=2, channels=("a",)),
    )
    assert held(r) == {b"1": {"a"}, b"2": {"a"}, b"3": None}


def test_replica_abort_forgets_a_publish_until_committed() -> None:
    r = fed(publish("1"), publish("2", channels=None), publish("3"))
    r.commit(1)
    r.apply(4, Abort(seq=2))
    r.apply(5, Abort(seq=1))  # committed: no longer abortable
    assert held(r) == {b"1": {"a"}, b"3": {"a"}}
    r.apply(6, Pump(count=5, channels=("a",)))  # the aborted backlog entry is skipped
    assert held(r) == {b"1": {"a"}, b"3": {"a"}}


def test_replica_channel_and_topic_drops() -> None:
    r = fed(
        ChannelCreated(channel="a"),
        ChannelCreated(channel="b"),
        publish("1", channels=("a", "b")),
        publish("2", channels=("a",)),
        ChannelDropped(channel="a", deleted=True),
        publish("3", channels=None),
    )
    assert held(r) == {b"1": {"b"}, b"3": None}
    assert list(r.channels) == ["b"]
    # Emptied channel: what it owed is done there, the channel stays.
    r.apply(7, ChannelDropped(channel="b", deleted=False))
    assert held(r) == {b"3": None}
    assert list(r.channels) == ["b"]
    r.apply(8, publish("4", channels=("b",)))
    # Emptied topic (nsqd's /topic/empty): only its backlog goes.
    r.apply(9, TopicDropped(deleted=False))
    assert held(r) == {b"4": {"b"}}
    assert r.held_bytes == len(b"body-4")
    r.apply(10, Pump(count=1, channels=("b",)))  # nothing left in the backlog to move
    assert held(r) == {b"4": {"b"}}
    r.apply(11, TopicDropped(deleted=True))
    assert held(r) == {}
    assert r.held_bytes == 0
    assert list(r.channels) == []


def test_replica_keeps_due_time_and_order() -> None:
    r = fed(publish("2", due=99.0), publish("1"))
    assert [(m.id, m.due) for m in r.owed()] == [(b"2", 99.0), (b"1", 0.0)]


ids = st.sampled_from([b"%d" % i for i in range(12)])
chans = st.sampled_from(["a", "b", "c"])
records = st.one_of(
    st.builds(
        lambda i, c, d: Publish(
            ids=tuple(dict.fromkeys(i)),
            bodies=tuple(b"x" * len(x) for x in dict.fromkeys(i)),
            timestamp=1,
            due=d,
            channels=c,
        ),
        st.lists(ids, min_size=1, max_size=4),
        st.one_of(st.none(), st.lists(chans, min_size=1, max_size=3, unique=True).map(tuple)),
        st.sampled_from([0.0, 5.0]),
    ),
    st.builds(
        lambda n, c: Pump(count=n, channels=c),
        st.integers(0, 4),
        st.lists(chans, min_size=1, max_size=3, unique=True).map(tuple),
    ),
    st.builds(lambda c, i: Finish(channel=c, ids=tuple(i)), chans, st.lists(ids, max_size=4)),
    st.builds(lambda c: ChannelCreated(channel=c), chans),
    st.builds(lambda c, d: ChannelDropped(channel=c, deleted=d), chans, st.booleans()),
    st.builds(lambda d: TopicDropped(deleted=d), st.booleans()),
    st.builds(lambda s: Abort(seq=s), st.integers(1, 30)),
)


@given(st.lists(records, max_size=30))
def test_replica_snapshot_rebuilds_the_same_state(stream: list[Record]) -> None:
    original = fed(*stream)
    rebuilt = ReplicaTopic.restore("t", original.snapshot())
    assert rebuilt.applied == original.applied
    assert list(rebuilt.owed()) == list(original.owed())
    assert list(rebuilt.channels) == list(original.channels)
    assert rebuilt.held_bytes == original.held_bytes
    # The same later records (a pump, an abort of every publish) act the same on both.
    for replica in (original, rebuilt):
        replica.apply(replica.applied + 1, Pump(count=3, channels=("z",)))
        for seq in range(1, len(stream) + 1):
            replica.apply(replica.applied + 1, Abort(seq=seq))
    assert list(rebuilt.owed()) == list(original.owed())


@given(st.lists(records, max_size=30))
def test_replica_never_holds_a_message_owed_to_nobody(stream: list[Record]) -> None:
    r = fed(*stream)
    assert all(m.channels is None or m.channels for m in r.owed())
    assert r.held_bytes == sum(len(m.body) for m in r.owed())


def test_replica_holds_nothing_owed_to_no_channel() -> None:
    r = fed(publish("1", channels=()), publish("2"))
    assert held(r) == {b"2": {"a"}}
    assert r.held_bytes == len(b"body-2")


def test_replica_publish_of_held_or_repeated_ids_keeps_the_first() -> None:
    r = fed(publish("1"))
    r.apply(2, Publish(ids=(b"1", b"2"), bodies=(b"new", b"two"), timestamp=7, channels=("a",)))
    r.apply(3, Publish(ids=(b"3", b"3"), bodies=(b"x", b"yy"), timestamp=7, channels=None))
    assert [(m.id, m.body) for m in r.owed()] == [(b"1", b"body-1"), (b"2", b"two"), (b"3", b"x")]
    assert r.held_bytes == len(b"body-1") + len(b"two") + len(b"x")
    r.apply(4, Pump(count=5, channels=("a",)))
    assert held(r) == {b"1": {"a"}, b"2": {"a"}, b"3": {"a"}}


def test_replica_stores_publishes_only_once_their_messages_are_needed() -> None:
    r = fed(ChannelCreated(channel="a"), publish("1", "2"), publish("3"))
    # The round trip of a publish stores nothing per message.
    assert r.fresh_publishes == 2
    assert r.held_bytes_bound == 3 * len(b"body-1")
    r.apply(4, ChannelCreated(channel="b"))
    assert r.fresh_publishes == 2  # a record that touches no message stores nothing
    r.apply(5, Finish(channel="a", ids=(b"2",)))
    assert r.fresh_publishes == 0
    assert held(r) == {b"1": {"a"}, b"3": {"a"}}


def test_replica_size_bound_counts_an_id_published_twice_until_stored() -> None:
    r = fed(publish("1"), publish("1"))
    assert r.held_bytes_bound == 2 * len(b"body-1")
    assert r.held_bytes == len(b"body-1")  # storing keeps the first copy only
    assert r.held_bytes_bound == r.held_bytes
    assert r.fresh_publishes == 0


def test_replica_deleted_topic_forgets_fresh_publishes_without_storing_them() -> None:
    r = fed(publish("1"), publish("2"), TopicDropped(deleted=True))
    assert r.fresh_publishes == 0
    assert len(r) == 0
    assert r.held_bytes == r.held_bytes_bound == 0
    r.apply(4, publish("3"))
    assert held(r) == {b"3": {"a"}}
