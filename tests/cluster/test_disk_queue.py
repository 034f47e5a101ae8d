"""The file-backed disk queue: FIFO, segments, fsync policy, crash recovery, damage."""

from __future__ import annotations

import collections
import errno
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from typing import TYPE_CHECKING

import pytest
import trio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from shoal.cluster.disk_queue import (
    DiskBackendFactory,
    DiskQueue,
    DiskQueueConfig,
    disk_backend_factory,
)
from shoal.errors import LocalProtocolError
from shoal.queue.backend import BackendError, MemoryBackend
from shoal.queue.diskqueue import encode_record, segment_file_name
from shoal.queue.message import Message, encode_message

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

# 60-byte bodies: records of 86 bytes, 94 on disk; three fit in a 300-byte segment.
SMALL = DiskQueueConfig(max_bytes_per_file=300, sync_every=1, max_msg_size=1000)
RECORD_ON_DISK = len(encode_record(b"x" * 86))


def record(i: int, size: int = 60) -> bytes:
    body = (b"%d:" % i).ljust(size, b".")
    return encode_message(Message(id=b"%016x" % i, body=body, timestamp=i))


def segments(path: Path, name: str = "q") -> list[str]:
    return sorted(p.name for p in path.glob(f"{name}.diskqueue.[0-9]*.dat"))


def bad_files(path: Path, name: str = "q") -> list[Path]:
    return sorted(path.glob(f"{name}.diskqueue.*.dat.bad.*"))


def health(holder: DiskQueue | DiskBackendFactory) -> str | None:
    # A function call, so the type checker does not keep an earlier narrowing.
    return holder.health_error


def drain(queue: DiskQueue) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(10_000):
        item = queue.get()
        if item is None:
            return out
        out.append(item)
    raise AssertionError("queue never ran dry")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """The data path of the queues under test."""
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def open_queue(data: Path) -> Iterator[Callable[..., DiskQueue]]:
    """Open queues (in ``data`` by default) and release their files at teardown."""
    opened: list[DiskQueue] = []

    def opener(
        config: DiskQueueConfig = SMALL, path: Path = data, name: str = "q", *, acks: bool = False
    ) -> DiskQueue:
        queue = DiskQueue(path, name, config=config, acks=acks)
        opened.append(queue)
        return queue

    yield opener
    for queue in opened:
        if not queue.closed:
            queue.close()


# --- FIFO and segments -----------------------------------------------------------------------


def test_put_get_is_fifo_across_segment_rolls(open_queue: Callable[..., DiskQueue]) -> None:
    queue = open_queue()
    for i in range(20):
        queue.put(record(i))
    assert queue.depth == 20
    assert drain(queue) == [record(i) for i in range(20)]
    assert queue.depth == 0


def test_segments_hold_at_most_max_bytes_per_file(
    data: Path, open_queue: Callable[..., DiskQueue]
) -> None:
    queue = open_queue()
    for i in range(10):
        queue.put(record(i))
    names = segments(data)
    assert names == [segment_file_name("q", n) for n in range(4)]
    sizes = [(data / name).stat().st_size for name in names]
    assert sizes == [3 * RECORD_ON_DISK] * 3 + [RECORD_ON_DISK]


def test_record_larger_than_a_segment_gets_its_own(
    data: Path, open_queue: Callable[..., DiskQueue]
) -> None:
    queue = open_queue()
    big = record(1, size=900)
    queue.put(record(0))
    queue.put(big)
    queue.put(record(2))
    assert len(segments(data)) == 3
    assert drain(queue) == [record(0), big, record(2)]


def test_fully_read_segments_are_deleted(data: Path, open_queue: Callable[..., DiskQueue]) -> None:
    queue = open_queue()
    for i in range(10):
        queue.put(record(i))
    for _ in range(7):
        queue.get()
    assert segments(data) == [segment_file_name("q", 2), segment_file_name("q", 3)]
    drain(queue)
    assert segments(data) == [segment_file_name("q", 3)]


def test_put_hands_each_record_to_the_kernel_before_returning(
    data: Path, open_queue: Callable[..., DiskQueue]
) -> None:
    # No process-side buffer: a SIGKILL right after put loses nothing (only
    # a power loss before the next fsync can).
    queue = open_queue(DiskQueueConfig())
    for i in range(5):
        queue.put(record(i))
        size = (data / segment_file_name("q", 0)).stat().st_size
        assert size == (i + 1) * RECORD_ON_DISK
    assert drain(queue) == [record(i) for i in range(5)]


def test_put_refuses_records_outside_the_limit(open_queue: Callable[..., DiskQueue]) -> None:
    queue = open_queue()
    with pytest.raises(BackendError):
        queue.put(b"x" * 1027)
    with pytest.raises(BackendError):
        queue.put(b"")
    assert queue.depth == 0


def test_closed_queue_refuses_use(open_queue: Callable[..., DiskQueue]) -> None:
    queue = open_queue()
    queue.close()
    with pytest.raises(BackendError):
        queue.put(record(0))
    with pytest.raises(BackendError):
        queue.get()


# --- restarts --------------------------------------------------------------------------------


def test_depth_and_order_survive_close_and_reopen(open_queue: Callable[..., DiskQueue]) -> None:
    queue = open_queue(DiskQueueConfig(max_bytes_per_file=300))
    for i in range(10):
        queue.put(record(i))
    for _ in range(4):
        queue.get()
    queue.close()
    reopened = open_queue()
    assert reopened.depth == 6
    assert reopened.damage == []
    assert drain(reopened) == [record(i) for i in range(4, 10)]


def test_crash_without_close_loses_no_synced_record(
    data: Path, open_queue: Callable[..., DiskQueue]
) -> None:
    queue = open_queue()
    for i in range(10):
        queue.put(record(i))
    queue.get()
    # The process "dies" now: another directory gets the files as they are.
    shutil.copytree(data, data.parent / "crashed")
    recovered = open_queue(path=data.parent / "crashed")
    assert recovered.depth == 9
    assert drain(recovered) == [record(i) for i in range(1, 10)]


def test_records_written_after_last_position_sync_are_served(
    data: Path, open_queue: Callable[..., DiskQueue]
) -> None:
    queue = open_queue()
    for i in range(3):
        queue.put(record(i))
    stale_meta = (data / "q.diskqueue.meta.dat").read_bytes()
    for i in range(3, 10):
        queue.put(record(i))
    # Crash between fsyncing the records and replacing the position file.
    shutil.copytree(data, data.parent / "crashed")
    (data.parent / "crashed" / "q.diskqueue.meta.dat").write_bytes(stale_meta)
    recovered = open_queue(path=data.parent / "crashed")
    assert recovered.depth == 10
    assert recovered.damage == []
    assert drain(recovered) == [record(i) for i in range(10)]


def test_reads_after_last_sync_are_delivered_again(
    data: Path, open_queue: Callable[..., DiskQueue]
) -> None:
    queue = open_queue(DiskQueueConfig(max_bytes_per_file=300, sync_every=100))
    for i in range(6):
        queue.put(record(i))
    queue.sync()
    queue.get()
    queue.get()
    shutil.copytree(data, data.parent / "crashed")
    recovered = open_queue(path=data.parent / "crashed")
    assert drain(recovered) == [record(i) for i in range(6)]


@pytest.mark.parametrize("damage", ["missing", "garbled"])
def test_bad_position_file_serves_every_segment(
    data: Path, open_queue: Callable[..., DiskQueue], damage: str
) -> None:
    queue = open_queue()
    for i in range(8):
        queue.put(record(i))
    queue.close()
    meta = data / "q.diskqueue.meta.dat"
    if damage == "missing":
        meta.unlink()
    else:
        meta.write_bytes(b"12\nnot a position\n")
    recovered = open_queue()
    assert drain(recovered) == [record(i) for i in range(8)]
    assert "position file" in recovered.damage[0]


def test_sigkill_after_put_loses_nothing_with_sync_every_1(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from shoal.cluster.disk_queue import DiskQueue, DiskQueueConfig
        queue = DiskQueue(sys.argv[1], "q", config=DiskQueueConfig(sync_every=1))
        for i in range(50):
            queue.put(b"record-%03d" % i + b"." * 30)
        print("done", flush=True)
        time.sleep(60)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "done\n"
        finally:
            proc.kill()  # SIGKILL: no close, no final sync
    queue = DiskQueue(tmp_path, "q", config=DiskQueueConfig(sync_every=1))
    try:
        assert drain(queue) == [b"record-%03d" % i + b"." * 30 for i in range(50)]
    finally:
        queue.close()


# --- damage ----------------------------------------------------------------------------------


def test_torn_tail_is_cut_set_aside_and_earlier_records_served(
    data: Path, open_queue: Callable[..., DiskQueue]
) -> None:
    queue = open_queue()
    for i in range(5):
        queue.put(record(i))
    queue.close()
    last = data / segment_file_name("q", 1)
    os.truncate(last, 2 * RECORD_ON_DISK - 10)  # the 5th record loses its last 10 bytes
    recovered = open_queue()
    assert recovered.depth == 4
    assert (recovered.corrupt_records, recovered.corrupt_bytes) == (1, RECORD_ON_DISK - 10)
    assert "torn record" in recovered.damage[0]
    [bad] = bad_files(data)
    assert bad.read_bytes() == encode_record(record(4))[:-10]
    assert last.stat().st_size == RECORD_ON_DISK
    assert drain(recovered) == [record(i) for i in range(4)]


def test_garbled_tail_is_cut_set_aside_and_earlier_records_served(
    data: Path, open_queue: Callable[..., DiskQueue]
) -> None:
    queue = open_queue()
    for i in range(3):
        queue.put(record(i))
    queue.close()
    segment = data / segment_file_name("q", 0)
    raw = bytearray(segment.read_bytes())
    for index in range(RECORD_ON_DISK + 20, len(raw), 7):  # bodies of records 1 and 2
        raw[index] ^= 0xFF
    segment.write_bytes(bytes(raw))
    recovered = open_queue()
    assert recovered.depth == 1
    assert recovered.corrupt_bytes == 2 * RECORD_ON_DISK
    assert "checksum mismatch" in recovered.damage[0]
    [bad] = bad_files(data)
    assert bad.read_bytes() == bytes(raw[RECORD_ON_DISK:])
    assert drain(recovered) == [record(0)]


def test_garbage_inside_a_segment_keeps_records_before_and_later_segments(
    data: Path, open_queue: Callable[..., DiskQueue]
) -> None:
    queue = open_queue()
    for i in range(6):
        queue.put(record(i))
    queue.close()
    segment = data / segment_file_name("q", 0)
    raw = bytearray(segment.read_bytes())
    raw[RECORD_ON_DISK : RECORD_ON_DISK + 8] = b"\xde\xad\xbe\xef" * 2  # record 1's header
    segment.write_bytes(bytes(raw))
    recovered = open_queue()
    assert recovered.corrupt_records == 1
    assert f"{segment_file_name('q', 0)}: record length" in recovered.damage[0]
    assert len(bad_files(data)) == 1
    # Only the record whose header was hit is lost: reading resumes at record 2.
    assert drain(recovered) == [record(0), record(2), record(3), record(4), record(5)]


def test_damage_found_while_reading_is_skipped_and_reported(
    data: Path, open_queue: Callable[..., DiskQueue]
) -> None:
    queue = open_queue()
    for i in range(6):
        queue.put(record(i))
    with (data / segment_file_name("q", 0)).open("r+b") as file:
        file.seek(2 * RECORD_ON_DISK + 30)
        file.write(b"rot")
    assert drain(queue) == [record(0), record(1), record(3), record(4), record(5)]
    assert queue.depth == 0
    assert "checksum mismatch" in queue.damage[0]
    assert len(bad_files(data)) == 1


def test_set_aside_never_overwrites_an_earlier_bad_file(
    data: Path, open_queue: Callable[..., DiskQueue]
) -> None:
    queue = open_queue()
    queue.put(record(0))
    queue.close()
    segment = data / segment_file_name("q", 0)
    for _ in range(2):
        with segment.open("ab") as file:
            file.write(b"\x00\x00")
        open_queue().close()
    assert [p.name for p in bad_files(data)] == [
        f"{segment.name}.bad.0",
        f"{segment.name}.bad.1",
    ]


# --- empty and delete ------------------------------------------------------------------------


def test_empty_drops_records_and_deletes_segments(
    data: Path, open_queue: Callable[..., DiskQueue]
) -> None:
    queue = open_queue()
    for i in range(7):
        queue.put(record(i))
    queue.empty()
    assert (queue.depth, queue.get(), segments(data)) == (0, None, [])
    queue.put(record(99))
    queue.close()
    assert drain(open_queue()) == [record(99)]


def test_delete_removes_every_file_of_the_queue(
    data: Path, open_queue: Callable[..., DiskQueue]
) -> None:
    other = open_queue(name="q:c")
    other.put(record(0))
    queue = open_queue()
    for i in range(7):
        queue.put(record(i))
    queue.close()
    with (data / segment_file_name("q", 2)).open("ab") as file:
        file.write(b"torn")
    queue = open_queue()  # leaves a .bad file
    queue.delete()
    assert sorted(p.name for p in data.iterdir() if not p.name.startswith("q:c")) == []
    assert other.depth == 1
    assert segments(data, "q:c") == [segment_file_name("q:c", 0)]


# --- fsync policy ----------------------------------------------------------------------------


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the path of every fsynced descriptor."""
    paths: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        paths.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return paths


def test_sync_every_1_fsyncs_each_put_before_it_returns(
    open_queue: Callable[..., DiskQueue], fsynced: list[str]
) -> None:
    queue = open_queue()
    for i in range(7):
        fsynced.clear()
        queue.put(record(i))
        assert segment_file_name("q", i // 3) in fsynced
        assert "q.diskqueue.meta.dat.tmp" in fsynced


def test_sync_every_n_fsyncs_after_n_operations(
    open_queue: Callable[..., DiskQueue], fsynced: list[str]
) -> None:
    queue = open_queue(DiskQueueConfig(sync_every=4))
    fsynced.clear()
    for i in range(3):
        queue.put(record(i))
    assert fsynced == []
    queue.get()
    assert segment_file_name("q", 0) in fsynced


def test_maybe_sync_syncs_activity_at_most_once_per_sync_timeout(
    open_queue: Callable[..., DiskQueue], fsynced: list[str]
) -> None:
    queue = open_queue(DiskQueueConfig(sync_timeout=2.0))
    assert not queue.maybe_sync(100.0)  # nothing happened yet
    queue.put(record(0))
    assert queue.maybe_sync(100.0)
    assert segment_file_name("q", 0) in fsynced
    queue.put(record(1))
    assert not queue.maybe_sync(101.0)
    assert queue.maybe_sync(102.0)
    assert not queue.maybe_sync(110.0)  # synced, nothing new


# --- write failures --------------------------------------------------------------------------


def test_failed_write_raises_reports_health_and_stores_nothing(
    data: Path, open_queue: Callable[..., DiskQueue]
) -> None:
    (data / segment_file_name("q", 1)).symlink_to("/dev/full")
    queue = open_queue()
    for i in range(3):
        queue.put(record(i))
    with pytest.raises(BackendError):
        queue.put(record(3))  # rolls to segment 1, which is a full disk
    assert health(queue) is not None
    assert queue.depth == 3
    (data / segment_file_name("q", 1)).unlink()
    queue.put(record(4))  # space is back
    assert health(queue) is None
    assert drain(queue) == [record(0), record(1), record(2), record(4)]


def test_failed_fsync_takes_the_record_back(
    data: Path, open_queue: Callable[..., DiskQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = open_queue()
    queue.put(record(0))

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(BackendError, match="Input/output error"):
        queue.put(record(1))
    assert queue.depth == 1
    assert (data / segment_file_name("q", 0)).stat().st_size == RECORD_ON_DISK
    monkeypatch.undo()
    queue.put(record(2))
    assert drain(queue) == [record(0), record(2)]


# --- the factory -----------------------------------------------------------------------------


def test_factory_keeps_ephemeral_queues_in_memory(tmp_path: Path) -> None:
    factory = disk_backend_factory(tmp_path, config=SMALL)
    backend = factory("t#ephemeral", ephemeral=True)
    backend.put(record(0))
    assert isinstance(backend, MemoryBackend)
    assert list(tmp_path.iterdir()) == []


def test_factory_opens_disk_queues_once_per_name(tmp_path: Path) -> None:
    factory = disk_backend_factory(tmp_path, config=SMALL)
    backend = factory("t:c", ephemeral=False)
    backend.put(record(0))
    assert isinstance(backend, DiskQueue)
    with pytest.raises(LocalProtocolError):
        factory("t:c", ephemeral=False)
    backend.close()
    again = factory("t:c", ephemeral=False)
    assert again.depth == 1
    again.close()
    assert factory.open_queues() == []


def test_factory_reports_a_failing_queue_as_node_health(tmp_path: Path) -> None:
    factory = disk_backend_factory(tmp_path, config=SMALL)
    backend = factory("t", ephemeral=False)
    (tmp_path / segment_file_name("t", 1)).symlink_to("/dev/full")
    for i in range(3):
        backend.put(record(i))
    assert health(factory) is None
    with pytest.raises(BackendError):
        backend.put(record(3))
    assert "disk queue t" in (health(factory) or "")
    backend.close()


# --- model check -----------------------------------------------------------------------------


class DiskQueueMachine(RuleBasedStateMachine):
    """Any sequence of puts, gets, syncs and restarts behaves like a deque."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.config = DiskQueueConfig(max_bytes_per_file=200, sync_every=3, max_msg_size=200)
        self.queue = DiskQueue(self.dir.name, "m", config=self.config)
        self.model: collections.deque[bytes] = collections.deque()

    @rule(body=st.binary(min_size=1, max_size=120))
    def put(self, body: bytes) -> None:
        self.queue.put(body)
        self.model.append(body)

    @rule()
    def get(self) -> None:
        assert self.queue.get() == (self.model.popleft() if self.model else None)

    @rule()
    def sync(self) -> None:
        self.queue.sync()

    @rule()
    def restart(self) -> None:
        self.queue.close()
        self.queue = DiskQueue(self.dir.name, "m", config=self.config)
        assert self.queue.damage == []

    @rule()
    def empty(self) -> None:
        self.queue.empty()
        self.model.clear()

    @invariant()
    def depth_matches(self) -> None:
        assert self.queue.depth == len(self.model)

    def teardown(self) -> None:
        self.queue.close()
        self.dir.cleanup()


TestDiskQueueMachine = pytest.mark.slow(DiskQueueMachine.TestCase)
TestDiskQueueMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


# --- acknowledgements (durable channels) -----------------------------------------------------


def crash(queue: DiskQueue) -> None:
    """Drop a queue as a SIGKILL would: no sync, no position saved, files left as they are."""
    queue._close_fds()


def test_taken_records_stay_until_acked_and_come_back_after_a_crash(
    open_queue: Callable[..., DiskQueue],
) -> None:
    config = DiskQueueConfig(max_bytes_per_file=300, sync_every=1 << 20, max_msg_size=1000)
    queue = open_queue(config, acks=True)
    for i in range(8):
        queue.put(record(i))
    taken = [queue.take() for _ in range(5)]
    assert all(item is not None for item in taken)
    tickets = [item[1] for item in taken if item is not None]
    queue.sync()  # checkpoint: 5 outstanding
    queue.ack_many([tickets[0], tickets[2]])  # journaled, not checkpointed
    after = queue.take()  # record 5, taken after the checkpoint
    assert after is not None
    queue.ack(after[1])
    assert queue.outstanding == 3
    crash(queue)
    again = open_queue(config, acks=True)
    assert again.recovered_outstanding == 3
    assert again.depth == 3 + 2  # 1, 3, 4 again; then 6, 7 (5 was acked)
    assert drain(again) == [record(i) for i in (1, 3, 4, 6, 7)]


def test_acked_records_are_never_handed_out_again(
    data: Path, open_queue: Callable[..., DiskQueue]
) -> None:
    config = DiskQueueConfig(max_bytes_per_file=300, sync_every=1 << 20, max_msg_size=1000)
    queue = open_queue(config, acks=True)
    for i in range(9):
        queue.put(record(i))
    for _ in range(9):
        item = queue.take()
        assert item is not None
        queue.ack(item[1])
    crash(queue)
    again = open_queue(config, acks=True)
    assert (again.depth, again.recovered_outstanding) == (0, 0)
    again.close()
    assert segments(data) == [segment_file_name("q", 2)]  # fully acked segments deleted


def test_a_segment_with_outstanding_records_outlives_its_reading(
    data: Path, open_queue: Callable[..., DiskQueue]
) -> None:
    config = DiskQueueConfig(max_bytes_per_file=300, sync_every=1 << 20, max_msg_size=1000)
    queue = open_queue(config, acks=True)
    for i in range(6):
        queue.put(record(i))
    first = queue.take()
    assert first is not None
    for _ in range(5):
        item = queue.take()
        assert item is not None
        queue.ack(item[1])
    assert segment_file_name("q", 0) in segments(data)  # record 0 is still out
    queue.sync()
    crash(queue)
    again = open_queue(config, acks=True)
    assert drain(again) == [record(0)]
    again.close()
    assert segment_file_name("q", 0) not in segments(data)


class AckedQueueMachine(RuleBasedStateMachine):
    """Puts, takes, acks, syncs, clean restarts and crashes: every unacked record survives.

    After any crash a restarted queue holds exactly the records put and not
    acknowledged (order aside): outstanding ones come back, acknowledged ones
    never do.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.config = DiskQueueConfig(max_bytes_per_file=200, sync_every=1 << 20, max_msg_size=200)
        self.queue = DiskQueue(self.dir.name, "t:c", config=self.config, acks=True)
        self.unacked: collections.Counter[bytes] = collections.Counter()
        self.out: dict[int, bytes] = {}
        self.serial = 0

    @rule(size=st.integers(min_value=1, max_value=120))
    def put(self, size: int) -> None:
        self.serial += 1
        body = (b"%d:" % self.serial).ljust(size, b".")
        self.queue.put(body)
        self.unacked[body] += 1

    @rule()
    def take(self) -> None:
        taken = self.queue.take()
        if taken is None:
            assert self.queue.depth == 0
            return
        body, ticket = taken
        assert ticket not in self.out
        self.out[ticket] = body

    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        if not self.out:
            return
        ticket = data.draw(st.sampled_from(sorted(self.out)))
        self.queue.ack(ticket)
        self.unacked[self.out.pop(ticket)] -= 1

    @rule()
    def sync(self) -> None:
        self.queue.sync()

    @rule(clean=st.booleans())
    def restart(self, clean: bool) -> None:
        if clean:
            self.queue.close()
        else:
            crash(self.queue)
        self.queue = DiskQueue(self.dir.name, "t:c", config=self.config, acks=True)
        self.out.clear()
        assert self.queue.damage == []
        left: collections.Counter[bytes] = collections.Counter()
        for _ in range(1000):
            taken = self.queue.take()
            if taken is None:
                break
            left[taken[0]] += 1
            self.out[taken[1]] = taken[0]
        assert left == +self.unacked

    @invariant()
    def counts_match(self) -> None:
        assert self.queue.depth + len(self.out) == sum(self.unacked.values())
        assert self.queue.outstanding == len(self.out)

    def teardown(self) -> None:
        self.queue.close()
        self.dir.cleanup()


TestAckedQueueMachine = pytest.mark.slow(AckedQueueMachine.TestCase)
TestAckedQueueMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


def test_unput_takes_back_the_last_batch_until_it_is_read(
    data: Path, open_queue: Callable[..., DiskQueue]
) -> None:
    queue = open_queue(DiskQueueConfig())
    queue.put(record(0))
    queue.put_many([record(1), record(2)])
    assert queue.unput(2)
    assert (data / segment_file_name("q", 0)).stat().st_size == RECORD_ON_DISK
    assert not queue.unput(1)  # only the last batch, once
    queue.put_many([record(3)])
    assert queue.get() == record(0)
    assert queue.get() == record(3)
    assert not queue.unput(1)  # already handed out
    assert queue.depth == 0


# --- syncing off the event loop --------------------------------------------------------------


async def test_concurrent_commits_share_fsync_rounds(tmp_path: Path, fsynced: list[str]) -> None:
    factory = disk_backend_factory(tmp_path, config=DiskQueueConfig(sync_every=1 << 20))
    queue = factory("t:c", ephemeral=False)
    await factory.checkpoint()  # the position of the new queue
    fsynced.clear()
    queue.put(record(0))

    async def publisher() -> None:
        queue.put(record(1))
        await factory.commit()

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(publisher)
    data = [name for name in fsynced if name == segment_file_name("t:c", 0)]
    # The first round covers the first caller, one more covers all the others.
    assert 1 <= len(data) <= 2
    assert not any(name.endswith(".meta.dat.tmp") for name in fsynced)  # no position: a commit
    await factory.checkpoint()
    assert "t:c.diskqueue.meta.dat.tmp" in fsynced  # a checkpoint saves the position
    queue.close()


async def test_a_failed_commit_raises_and_reports_health(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = disk_backend_factory(tmp_path, config=DiskQueueConfig(sync_every=1 << 20))
    queue = factory("t", ephemeral=False)
    queue.put(record(0))

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(BackendError, match="Input/output error"):
        await factory.commit()
    assert "Input/output error" in (health(factory) or "")
    monkeypatch.undo()
    await factory.commit()  # the data is synced again on the next round
    assert health(factory) is None
    queue.close()


def test_outstanding_records_are_served_when_reopened_without_acks(
    open_queue: Callable[..., DiskQueue],
) -> None:
    # A data path that ran in durable mode and restarts in default mode.
    config = DiskQueueConfig(max_bytes_per_file=300, sync_every=1 << 20, max_msg_size=1000)
    queue = open_queue(config, acks=True)
    for i in range(5):
        queue.put(record(i))
    for _ in range(4):
        queue.take()  # in flight at the stop
    queue.close()
    again = open_queue(config)
    assert sorted(drain(again)) == [record(i) for i in range(5)]
