"""The replica's on-disk logs: what was acknowledged comes back after a restart."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.cluster import replica_store
from shoal.cluster.replica_store import ReplicaStore
from shoal.replication.codec import encode_frame
from shoal.replication.records import Batch, ChannelCreated, Finish, Publish, Record
from shoal.replication.replica import ReplicaTopic, receive

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

OWNER = "10.0.0.1:4150"


def publish(start: int, count: int, size: int = 10) -> Publish:
    ids = tuple(b"%016d" % i for i in range(start, start + count))
    return Publish(ids=ids, bodies=tuple(b"x" * size for _ in ids), timestamp=1, channels=("work",))


async def feed(
    store: ReplicaStore, held: ReplicaTopic | None, first: int, *records: Record
) -> ReplicaTopic:
    # Each batch commits what it carries (the owner's watermark kept up).
    batch = Batch(topic="orders", first=first, records=records, commit=first + len(records) - 1)
    frame = encode_frame(batch)
    held = receive(held, batch)
    await store.append((OWNER, "orders"), frame, held)
    return held


def owed(replica: ReplicaTopic) -> list[tuple[bytes, frozenset[str] | None]]:
    return [(m.id, m.channels) for m in replica.owed()]


async def test_a_restarted_replica_holds_exactly_what_it_acknowledged(tmp_path: Path) -> None:
    store = ReplicaStore(str(tmp_path), durable=True)
    held = await feed(store, None, 1, ChannelCreated(channel="work"), publish(0, 5))
    held = await feed(store, held, 3, Finish(channel="work", ids=(b"%016d" % 1,)))
    store.close()
    restored = ReplicaStore(str(tmp_path), durable=True).restore()
    assert list(restored) == [(OWNER, "orders")]
    again = restored[OWNER, "orders"]
    assert again.applied == 3
    assert owed(again) == owed(held)
    assert len(again) == 4


async def test_a_torn_tail_keeps_every_whole_frame(tmp_path: Path) -> None:
    store = ReplicaStore(str(tmp_path), durable=False)
    held = await feed(store, None, 1, publish(0, 3))
    await feed(store, held, 2, publish(3, 3))
    store.close()
    (log,) = tmp_path.iterdir()  # noqa: ASYNC240 - a test's own small directory
    data = log.read_bytes()
    log.write_bytes(data[:-7])  # a crash in the middle of the second write
    restored = ReplicaStore(str(tmp_path), durable=False).restore()
    assert restored[OWNER, "orders"].applied == 1
    assert len(restored[OWNER, "orders"]) == 3


async def test_a_log_that_grew_is_rewritten_as_one_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replica_store, "REWRITE_SLACK", 0)
    store = ReplicaStore(str(tmp_path), durable=False)
    held = await feed(store, None, 1, publish(0, 50, size=100))
    # Finishing all but one makes the log far larger than what it holds.
    done = tuple(b"%016d" % i for i in range(49))
    held = await feed(store, held, 2, Finish(channel="work", ids=done))
    assert store.rewrites == 1
    (log,) = tmp_path.iterdir()  # noqa: ASYNC240 - a test's own small directory
    assert log.stat().st_size < 200
    held = await feed(store, held, 3, publish(50, 1))
    store.close()
    again = ReplicaStore(str(tmp_path), durable=False).restore()[OWNER, "orders"]
    assert again.applied == 3
    assert owed(again) == owed(held)


async def test_a_dropped_copy_is_gone_from_disk(tmp_path: Path) -> None:
    store = ReplicaStore(str(tmp_path), durable=False)
    await feed(store, None, 1, publish(0, 2))
    store.drop((OWNER, "orders"))
    assert list(tmp_path.iterdir()) == []  # noqa: ASYNC240 - a test's own small directory
    assert ReplicaStore(str(tmp_path), durable=False).restore() == {}
