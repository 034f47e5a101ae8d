import random

from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.errors import RemoteProtocolError
from shoal.replication.owner import OwnerTopic
from shoal.replication.records import ChannelCreated, Finish, Publish
from shoal.replication.replica import ReplicaTopic, receive


def publish(i: int) -> Publish:
    msg_id = b"%016d" % i
    return Publish(ids=(msg_id,), bodies=(b"m%d" % i,), timestamp=i, channels=("c",))


def pump(owner: OwnerTopic, replicas: dict[str, ReplicaTopic | None]) -> None:
    """Deliver everything outgoing and acknowledge it."""
    for name in list(replicas):
        while (batch := owner.outgoing(name)) is not None:
            replica = receive(replicas[name], batch)
            replicas[name] = replica
            owner.ack(name, replica.applied)


def owed(topic: ReplicaTopic | None) -> list[tuple[bytes, frozenset[str] | None]]:
    return [] if topic is None else [(m.id, m.channels) for m in topic.owed()]


def test_owner_publish_commits_after_required_acks() -> None:
    owner = OwnerTopic("t", required=2, timeout=5.0)
    owner.set_replicas(["r1", "r2"])
    owner.append(ChannelCreated(channel="c"), 0.0)
    seq = owner.append(publish(1), 0.0)
    assert owner.committed < seq
    replicas: dict[str, ReplicaTopic | None] = {"r1": None, "r2": None}
    pump(owner, replicas)
    assert owner.committed == seq
    assert owed(replicas["r1"]) == owed(owner.mirror) == [(b"%016d" % 1, frozenset({"c"}))]


def test_owner_failed_publish_is_aborted_on_replicas() -> None:
    owner = OwnerTopic("t", required=2, timeout=1.0)
    owner.set_replicas(["r1", "r2"])
    replicas: dict[str, ReplicaTopic | None] = {"r1": None}
    owner.append(ChannelCreated(channel="c"), 0.0)
    seq = owner.append(publish(1), 0.0)
    pump(owner, replicas)  # only r1 answers
    assert owner.committed < seq
    assert owner.expire(2.0) == [seq]
    pump(owner, replicas)
    assert owed(replicas["r1"]) == owed(owner.mirror) == []


def test_owner_adopted_messages_are_copied_but_never_aborted() -> None:
    owner = OwnerTopic("t", required=1, timeout=1.0)
    owner.set_replicas(["r1"])
    owner.append(ChannelCreated(channel="c"), 0.0)
    adopted = owner.append(publish(1), 0.0, awaited=False)
    awaited = owner.append(publish(2), 0.0)
    assert owner.next_deadline() == 1.0  # only the awaited publish has one
    assert owner.expire(2.0) == [awaited]
    replicas: dict[str, ReplicaTopic | None] = {"r1": None}
    pump(owner, replicas)
    assert owner.committed > adopted
    assert owed(replicas["r1"]) == owed(owner.mirror) == [(b"%016d" % 1, frozenset({"c"}))]


def test_owner_catches_up_a_new_replica_with_a_snapshot() -> None:
    owner = OwnerTopic("t", required=1, timeout=5.0)
    owner.set_replicas(["r1"])
    replicas: dict[str, ReplicaTopic | None] = {"r1": None}
    owner.append(ChannelCreated(channel="c"), 0.0)
    for i in range(5):
        owner.append(publish(i), 0.0)
    owner.append(Finish(channel="c", ids=(b"%016d" % 2,)), 0.0)
    pump(owner, replicas)
    # r1 dies; r2 replaces it and gets the mirror's state.
    assert owner.set_replicas(["r2"]) == ["r2"]
    replicas = {"r2": None}
    batch = owner.outgoing("r2")
    assert batch is not None
    assert batch.snapshot is not None
    caught_up = receive(None, batch)
    replicas["r2"] = caught_up
    owner.ack("r2", caught_up.applied)
    owner.append(publish(9), 0.0)
    pump(owner, replicas)
    assert owed(replicas["r2"]) == owed(owner.mirror)
    assert len(owed(owner.mirror)) == 5


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 3))
def test_owner_replicas_converge_despite_lost_batches(seed: int, factor: int) -> None:
    rng = random.Random(seed)
    names = [f"r{i}" for i in range(factor)]
    owner = OwnerTopic("t", required=factor, timeout=1e9)
    owner.set_replicas(names)
    replicas: dict[str, ReplicaTopic | None] = dict.fromkeys(names)
    owner.append(ChannelCreated(channel="c"), 0.0)
    published = []
    for step in range(60):
        if rng.random() < 0.6:
            published.append(step)
            owner.append(publish(step), 0.0)
        elif published:
            done = rng.choice(published)
            owner.append(Finish(channel="c", ids=(b"%016d" % done,)), 0.0)
        for name in names:
            batch = owner.outgoing(name, limit=rng.randint(1, 4))
            if batch is None:
                continue
            if rng.random() < 0.3:  # lost with its connection
                owner.rewind(name)
                continue
            try:
                replica = receive(replicas[name], batch)
            except RemoteProtocolError:
                owner.resync(name)
                continue
            replicas[name] = replica
            if rng.random() < 0.7:
                owner.ack(name, replica.applied)
    for name in names:
        owner.rewind(name)
    pump(owner, replicas)
    assert owner.committed == owner.quorum.appended
    for name in names:
        assert owed(replicas[name]) == owed(owner.mirror)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32))
def test_owner_failed_publishes_are_owed_nowhere(seed: int) -> None:
    rng = random.Random(seed)
    names = ["r0", "r1"]
    owner = OwnerTopic("t", required=2, timeout=3.0)
    owner.set_replicas(names)
    replicas: dict[str, ReplicaTopic | None] = dict.fromkeys(names)
    owner.append(ChannelCreated(channel="c"), 0.0)
    seq_of: dict[int, int] = {}
    failed: set[int] = set()
    for step in range(80):
        now = float(step)
        seq_of[step] = owner.append(publish(step), now)
        failed.update(owner.expire(now))
        for name in names:
            if rng.random() < 0.4:  # this replica is slow this round
                continue
            while (batch := owner.outgoing(name, limit=3)) is not None:
                try:
                    replica = receive(replicas[name], batch)
                except RemoteProtocolError:
                    owner.resync(name)
                    continue
                replicas[name] = replica
                owner.ack(name, replica.applied)
    pump(owner, replicas)
    lost = {b"%016d" % step for step, seq in seq_of.items() if seq in failed}
    kept = {b"%016d" % step for step, seq in seq_of.items() if seq not in failed}
    for topic in (owner.mirror, replicas["r0"], replicas["r1"]):
        ids = {msg_id for msg_id, _ in owed(topic)}
        assert ids == kept
        assert not ids & lost


def test_former_replica_is_released_only_once_the_newcomer_holds_the_log_end() -> None:
    owner = OwnerTopic("t", required=1, timeout=5.0)
    owner.set_replicas(["old"])
    owner.append(ChannelCreated(channel="c"), 0.0)
    owner.append(publish(1), 0.0)
    replicas: dict[str, ReplicaTopic | None] = {"old": None}
    pump(owner, replicas)
    owner.set_replicas(["new"])  # a member that outranks "old" joined
    assert owner.formers == frozenset({"old"})
    assert (owner.has_formers, owner.is_former("old")) == (True, True)
    assert not owner.is_replica("old")
    assert owner.is_replica("new")
    assert not owner.is_former("new")
    assert owner.releasable() == []  # "new" holds nothing yet
    owner.append(publish(2), 0.0)
    assert owner.outgoing("old") is None  # no longer sent anything
    newcomer: dict[str, ReplicaTopic | None] = {"new": None}
    pump(owner, newcomer)
    assert owner.releasable() == ["old"]
    owner.released("old")
    assert owner.formers == frozenset()
    assert not owner.has_formers
    assert not owner.is_former("old")


def test_former_replica_that_rejoins_the_set_is_not_released() -> None:
    owner = OwnerTopic("t", required=1, timeout=5.0)
    owner.set_replicas(["old"])
    owner.append(publish(1), 0.0)
    owner.set_replicas(["new"])
    owner.set_replicas(["old"])  # the newcomer died before it was caught up
    assert owner.formers == frozenset({"new"})
    assert "old" not in owner.releasable()


def test_owner_sends_a_watermark_alone_only_once_it_covers_what_was_sent() -> None:
    owner = OwnerTopic("t", required=1, timeout=5.0)
    owner.set_replicas(["r"])
    assert owner.outgoing("r") is not None  # the catch-up snapshot
    owner.append(publish(1), 0.0)
    owner.append(publish(2), 0.0)
    assert owner.outgoing("r", limit=1) is not None
    assert owner.outgoing("r", limit=1) is not None
    owner.ack("r", 1)
    # Committed 1 of the 2 sent: the next batch with a record carries it.
    assert owner.outgoing("r") is None
    owner.ack("r", 2)
    # A sender that has just sent records leaves the watermark to its next batch.
    assert owner.outgoing("r", watermark_alone=False) is None
    batch = owner.outgoing("r")
    assert batch is not None
    assert (batch.records, batch.commit) == ((), 2)
    assert owner.outgoing("r") is None
