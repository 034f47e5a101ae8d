"""Batch reads of the disk queue: `DiskQueue.take_many` does what `take` does, from large reads.

The consumer path reads records in runs from one read-ahead buffer. These
tests hold it to two things: it hands out exactly what the same calls of
`take` would (records, tickets, order, damage, recovery), and it costs far
less than one read system call per record.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shoal.cluster.disk_queue import DiskQueue, DiskQueueConfig
from shoal.queue.backend import MemoryBackend
from shoal.queue.channel import Channel
from shoal.queue.config import QueueConfig
from shoal.queue.diskqueue import segment_file_name
from shoal.queue.message import Message, encode_message
from shoal.queue.topic import Topic

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from shoal.queue.backend import Backend

# Segments of a few records each, so runs meet segment ends often.
SMALL = DiskQueueConfig(max_bytes_per_file=1000, sync_every=1 << 20, max_msg_size=1000)


def record(i: int, size: int = 60) -> bytes:
    body = (b"%d:" % i).ljust(size, b".")
    return encode_message(Message(id=b"%016x" % i, body=body, timestamp=i // 7))


def crash(queue: DiskQueue) -> None:
    """Drop a queue as a SIGKILL would: no sync, no position saved."""
    queue._close_fds()


def drain_one_by_one(queue: DiskQueue) -> tuple[list[bytes], list[int]]:
    records: list[bytes] = []
    tickets: list[int] = []
    for _ in range(100_000):
        taken = queue.take()
        if taken is None:
            return records, tickets
        records.append(taken[0])
        tickets.append(taken[1])
    raise AssertionError("queue never ran dry")


def drain_in_runs(queue: DiskQueue, limit: int) -> tuple[list[bytes], list[int]]:
    records: list[bytes] = []
    tickets: list[int] = []
    for _ in range(100_000):
        got, got_tickets = queue.take_many(limit)
        assert len(got) == len(got_tickets) <= limit
        if not got:
            assert queue.depth == 0
            return records, tickets
        records += got
        tickets += got_tickets
    raise AssertionError("queue never ran dry")


@pytest.fixture
def twins(tmp_path: Path) -> Iterator[Callable[[Path], tuple[DiskQueue, DiskQueue]]]:
    """Open two queues on identical copies of a data path: one read by `take`, one in runs."""
    opened: list[DiskQueue] = []

    def open_twins(data: Path, *, acks: bool = False) -> tuple[DiskQueue, DiskQueue]:
        copy = tmp_path / f"copy{len(opened)}"
        shutil.copytree(data, copy)
        pair = (
            DiskQueue(data, "q", config=SMALL, acks=acks),
            DiskQueue(copy, "q", config=SMALL, acks=acks),
        )
        opened.extend(pair)
        return pair

    yield open_twins
    for queue in opened:
        if not queue.closed:
            queue.close()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.mark.parametrize("limit", [1, 3, 50, 10_000])
def test_take_many_hands_out_what_take_does_across_segments(
    data: Path, twins: Callable[..., tuple[DiskQueue, DiskQueue]], limit: int
) -> None:
    writer = DiskQueue(data, "q", config=SMALL)
    writer.put_many([record(i) for i in range(40)])
    writer.put_many([record(i, size=i) for i in range(40, 60)])
    writer.close()
    one, runs = twins(data)
    expected = drain_one_by_one(one)
    assert drain_in_runs(runs, limit) == expected
    assert expected[0] == [record(i) for i in range(40)] + [
        record(i, size=i) for i in range(40, 60)
    ]


def test_take_many_serves_records_written_after_its_buffer_was_filled(data: Path) -> None:
    queue = DiskQueue(data, "q", config=SMALL)
    queue.put_many([record(i) for i in range(5)])
    first, _ = queue.take_many(3)
    queue.put_many([record(i) for i in range(5, 9)])  # into the segment being read
    rest, _ = queue.take_many(100)
    assert first + rest == [record(i) for i in range(9)]
    assert queue.depth == 0
    queue.close()


def test_take_many_passes_damage_found_while_reading_as_take_does(
    tmp_path: Path, data: Path, twins: Callable[..., tuple[DiskQueue, DiskQueue]]
) -> None:
    writer = DiskQueue(data, "q", config=SMALL)
    writer.put_many([record(i) for i in range(10)])
    writer.close()
    one, runs = twins(data)
    on_disk = len(record(0)) + 8
    for directory in (data, tmp_path / "copy0"):
        with (directory / segment_file_name("q", 0)).open("r+b") as file:
            file.seek(2 * on_disk + 30)  # inside record 2's payload: its checksum fails
            file.write(b"rot")
    expected = drain_one_by_one(one)
    assert drain_in_runs(runs, 100) == expected
    assert record(2) not in expected[0]
    assert len(expected[0]) == 9
    assert runs.corrupt_records == one.corrupt_records == 1


def test_take_many_after_a_crash_redelivers_and_skips_as_take_does(
    data: Path, twins: Callable[..., tuple[DiskQueue, DiskQueue]]
) -> None:
    queue = DiskQueue(data, "q", config=SMALL, acks=True)
    queue.put_many([record(i) for i in range(30)])
    early, early_tickets = queue.take_many(5)
    queue.sync()  # checkpoint: five outstanding
    late, late_tickets = queue.take_many(10)
    queue.ack_many([early_tickets[1], *late_tickets[2:6], late_tickets[8]])
    crash(queue)
    one, runs = twins(data, acks=True)
    expected = drain_one_by_one(one)
    assert drain_in_runs(runs, 7) == expected
    assert runs.recovered_outstanding == one.recovered_outstanding
    gone = {early[1], *late[2:6], late[8]}
    assert sorted(expected[0]) == sorted(r for r in map(record, range(30)) if r not in gone)


def test_take_many_tickets_are_acknowledged_like_takes(data: Path) -> None:
    queue = DiskQueue(data, "q", config=SMALL, acks=True)
    queue.put_many([record(i) for i in range(30)])
    records, tickets = queue.take_many(30)
    assert records == [record(i) for i in range(30)]
    assert queue.outstanding == 30
    queue.ack_many(tickets[:29])
    assert queue.outstanding == 1
    crash(queue)
    again = DiskQueue(data, "q", config=SMALL, acks=True)
    assert again.take_many(100)[0] == [record(29)]
    again.close()


def test_get_many_removes_records_for_good(data: Path) -> None:
    queue = DiskQueue(data, "q", config=SMALL, acks=True)
    queue.put_many([record(i) for i in range(12)])
    assert queue.get_many(5) == [record(i) for i in range(5)]
    assert queue.outstanding == 0
    crash(queue)
    again = DiskQueue(data, "q", config=SMALL, acks=True)
    assert again.get_many(100) == [record(i) for i in range(5, 12)]
    again.close()


def test_memory_backend_take_many_is_fifo_with_no_tickets() -> None:
    backend = MemoryBackend()
    backend.put_many([b"a", b"b", b"c"])
    assert backend.take_many(2) == ([b"a", b"b"], [-1, -1])
    assert backend.get_many(5) == [b"c"]
    assert backend.take_many(5) == ([], [])


# --- system calls per message ------------------------------------------------------------


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count every ``os.read`` and ``os.pread`` (the sizes asked for)."""
    calls: list[int] = []
    real_read, real_pread = os.read, os.pread

    def counting_read(fd: int, size: int) -> bytes:
        calls.append(size)
        return real_read(fd, size)

    def counting_pread(fd: int, size: int, offset: int) -> bytes:
        calls.append(size)
        return real_pread(fd, size, offset)

    monkeypatch.setattr(os, "read", counting_read)
    monkeypatch.setattr(os, "pread", counting_pread)
    return calls


def _consume(channel: Channel, backend: Backend, count: int) -> tuple[int, int]:
    """Deliver and FIN everything at RDY 2500; return (messages, batches) delivered."""
    delivered = runs = 0
    for _ in range(count):  # every pass delivers at least one message or ends
        batches = channel.deliver_batches(1, 0.0, 60.0, 2500)
        if not batches:
            break
        ids = [msg_id for batch in batches for msg_id in batch[0]]
        assert channel.finish_many(1, ids) == []
        delivered += len(ids)
        runs += len(batches)
    assert backend.depth == 0
    return delivered, runs


def test_channel_delivery_from_disk_reads_far_less_than_once_per_message(
    data: Path, reads: list[int]
) -> None:
    config = QueueConfig(mem_queue_size=0)
    backend = DiskQueue(data, "t:c", config=DiskQueueConfig(sync_every=1 << 20))
    channel = Channel("t", "c", config, backend, None, 0.0)
    channel.add_client(1)
    for start in range(0, 20_000, 200):
        channel.put_batch(
            [b"%016x" % i for i in range(start, start + 200)], [b"x" * 200] * 200, 1, 0.0
        )
    reads.clear()
    delivered, runs = _consume(channel, backend, 20_000)
    assert delivered == 20_000
    # 234-byte records, about 4,480 per 1 MiB read: a handful of reads in all.
    assert len(reads) / delivered < 0.01
    # Decoded in runs: each published batch of 200 leaves as one or two
    # batches (cut where a delivery round ends), not as 200.
    assert runs <= 2 * 20_000 // 200
    backend.close()


def test_topic_backlog_pump_reads_far_less_than_once_per_message(
    data: Path, reads: list[int]
) -> None:
    config = QueueConfig(mem_queue_size=0)
    opened: list[DiskQueue] = []

    def factory(name: str, *, ephemeral: bool) -> Backend:
        del ephemeral
        queue = DiskQueue(data, name, config=DiskQueueConfig(sync_every=1 << 20))
        opened.append(queue)
        return queue

    topic = Topic("t", config, factory)
    for _ in range(50):
        topic.publish([b"x" * 200] * 200, 0.0)
    channel, _ = topic.get_or_create_channel("c", 0.0)
    reads.clear()
    moved = 0
    for _ in range(100):  # every pass moves a step or ends
        step = topic.pump(0.0, 1000)
        if not step:
            break
        moved += step
    assert moved == 10_000
    assert channel.depth == 10_000
    assert len(reads) / moved < 0.01
    for queue in opened:
        queue.close()


# --- the two paths side by side ----------------------------------------------------------


class TwinQueues(RuleBasedStateMachine):
    """Two queues fed the same puts, acks and crashes: one read by `take`, one by `take_many`.

    Whatever the interleaving, both hand out the same records with the same
    tickets and keep the same depth and outstanding count.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dirs = [tempfile.TemporaryDirectory(), tempfile.TemporaryDirectory()]
        self.config = DiskQueueConfig(max_bytes_per_file=400, sync_every=1 << 20, max_msg_size=200)
        self.queues = [self._open(index) for index in range(2)]
        self.out: list[int] = []
        self.serial = 0

    def _open(self, index: int) -> DiskQueue:
        return DiskQueue(self.dirs[index].name, "t:c", config=self.config, acks=True)

    @rule(sizes=st.lists(st.integers(min_value=27, max_value=150), min_size=1, max_size=12))
    def put(self, sizes: list[int]) -> None:
        batch = []
        for size in sizes:
            self.serial += 1
            batch.append((b"%d:" % self.serial).ljust(size, b"."))
        for queue in self.queues:
            queue.put_many(batch)

    @rule(limit=st.integers(min_value=1, max_value=20))
    def take(self, limit: int) -> None:
        one, runs = self.queues
        expected: tuple[list[bytes], list[int]] = ([], [])
        for _ in range(limit):
            taken = one.take()
            if taken is None:
                break
            expected[0].append(taken[0])
            expected[1].append(taken[1])
        assert runs.take_many(limit) == expected
        self.out += expected[1]

    @precondition(lambda self: bool(self.out))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        chosen = data.draw(st.lists(st.sampled_from(self.out), max_size=5, unique=True))
        for queue in self.queues:
            queue.ack_many(chosen)
        self.out = [ticket for ticket in self.out if ticket not in chosen]

    @rule()
    def sync(self) -> None:
        for queue in self.queues:
            queue.sync()

    @rule()
    def crash_and_restart(self) -> None:
        for index, queue in enumerate(self.queues):
            crash(queue)
            self.queues[index] = self._open(index)
        self.out = []

    @invariant()
    def same_state(self) -> None:
        one, runs = self.queues
        assert (one.depth, one.outstanding) == (runs.depth, runs.outstanding)

    def teardown(self) -> None:
        for queue in self.queues:
            if not queue.closed:
                queue.close()
        for directory in self.dirs:
            directory.cleanup()


TestTwinQueues = pytest.mark.slow(TwinQueues.TestCase)
TestTwinQueues.settings = settings(max_examples=15, stateful_step_count=20, deadline=None)
