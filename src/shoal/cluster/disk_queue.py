"""The file-backed `Backend`: nsqd's disk queue with checksums, acks and honest recovery.

Every non-ephemeral topic and channel spills its overflow into a `DiskQueue`
(docs/nsq.md §4.5). The record format, file names and recovery decisions live in
the pure `shoal.queue.diskqueue`; this module does the files.

Rules:
1. ``put`` and ``put_many`` store their records or raise `BackendError`
   with the queue as it was: a failed write is cut off again and never
   reaches a reader. Every record is handed to the kernel (``pwrite``)
   before the call returns, so a SIGKILL loses nothing that was put; a
   power loss loses what was put since the last fsync.
2. Without acknowledgements, ``get`` removes the record it returns (nsqd's
   contract: the message then lives in memory only). With them
   (``acks=True``, a channel in durable mode), ``take`` hands out a record
   with a ticket and the record stays in the durable store until ``ack``;
   a restart hands out every unacknowledged record again.
3. A restart serves every intact record from the read position on,
   including ones written after the last position sync. Damage is a hole:
   a record that does not verify starts it, the next record that does ends
   it, and only the hole is lost. Holes are copied to
   ``<segment>.bad.<n>`` when there is room, and a hole at the end of the
   write segment (a torn write) is cut off. A position that points past
   the data is unreadable, not a reason to delete: every segment is served.
4. A fully read segment is deleted once no outstanding ticket points into
   it; ``.bad`` files are removed only by `DiskQueue.delete`.
5. Opening a queue writes nothing it cannot do without: on a full disk it
   still opens and serves its records, reporting what it could not write.

Acknowledgements, and why this mechanism. The queue already is an
append-only log whose read position says "everything before here was
handed out". Acknowledged-or-not is state of the records between that
position and the oldest record still unacknowledged, which in practice is a
window of the in-flight and deferred messages, small next to the log. So
the durable state is: the read position plus the set of outstanding
tickets (a checkpoint in the position file, written at each sync, and
compact because it names only what is outstanding), plus an append-only
ack journal (``<name>.diskqueue.acks.<generation>.dat``) of the tickets
acknowledged since that checkpoint. An ack costs one small ``write`` (a
run of FINs, one write), never an fsync of its own; a checkpoint starts a
new journal generation and deletes the old one, so the journal never holds
more than one sync interval of acks. Recovery takes the checkpoint's
outstanding set, removes what the journals acknowledged and serves the
rest first, then reads on from the position, skipping the records the
journals acknowledged. Per-segment ack bitmaps were the alternative; they
would cost a write per record per segment bitmap and a scan of every live
segment's bitmap on start, for no gain in what survives.

Reading. Consumers and backlog pumps ask for records in runs
(`DiskQueue.take_many`, `DiskQueue.get_many`): one ``pread`` of
`READ_CHUNK_SIZE` fills a read-ahead buffer, `decode_records` checks and
slices every record in it in one call, and the bookkeeping (position,
counts, tickets) is done once per run. Only what a run cannot cover takes
the one-record path, `DiskQueue.take`: recovered tickets, acknowledged
records to pass over, holes, segment ends and damage.

Syncing. The queue never blocks its caller on an fsync when a sync hook is
installed (the node's `DiskBackendFactory`): `prepare_sync` snapshots, in
the caller's thread, what must reach the disk (duplicated descriptors, the
position file's bytes, journals to retire) as a `SyncJob`, whose `SyncJob.run`
does the fsyncs and renames in a worker thread, and `finish_sync` records
the outcome. Without a hook (tests, tools) ``sync_every`` syncs inline.

Error handling: file errors become `BackendError` and set `health_error`,
which the node reports on ``/ping`` until a later write or sync succeeds.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import itertools
import os
import re
from typing import TYPE_CHECKING

import msgspec
import trio

from shoal.errors import LocalProtocolError
from shoal.queue.backend import Backend, BackendError, MemoryBackend
from shoal.queue.diskqueue import (
    READ_MARK,
    RECORD_HEADER_SIZE,
    TICKET_SHIFT,
    Corrupt,
    DiskQueueConfig,
    Hole,
    NeedData,
    QueueMeta,
    Record,
    RecordScanner,
    bad_file_name,
    check_queue_name,
    decode_acks,
    decode_meta,
    decode_record,
    decode_records,
    encode_acks,
    encode_meta,
    encode_record,
    make_ticket,
    max_record_size,
    meta_file_name,
    parse_segment_number,
    plan_recovery,
    segment_file_name,
    ticket_position,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "DiskBackendFactory",
    "DiskQueue",
    "DiskQueueConfig",
    "SyncJob",
    "disk_backend_factory",
]

#: Bytes read per ``pread`` when serving records (at least one largest record).
READ_CHUNK_SIZE = 1 << 20
#: Bytes read per ``pread`` when verifying segments on start.
SCAN_CHUNK_SIZE = 4 << 20
#: Bound on ``.bad.<n>`` serials tried when setting damaged bytes aside.
_MAX_BAD_FILES = 100_000
_NO_TICKET = -1


def _journal_name(name: str, generation: int) -> str:
    return f"{name}.diskqueue.acks.{generation}.dat"


def _journal_generations(name: str, file_names: Iterable[str]) -> dict[int, str]:
    pattern = re.compile(re.escape(name) + r"\.diskqueue\.acks\.([0-9]{1,18})\.dat")
    out: dict[int, str] = {}
    for file_name in file_names:
        match = pattern.fullmatch(file_name)
        if match is not None:
            out[int(match.group(1))] = file_name
    return out


class _Segment(msgspec.Struct, eq=False):
    """A segment before the write segment: its final size, unread records and holes."""

    number: int
    size: int
    unread: int
    holes: collections.deque[Hole] = msgspec.field(default_factory=collections.deque)


class SyncJob(msgspec.Struct, eq=False):
    """What one sync of one queue must do off the event loop (see `DiskQueue.prepare_sync`).

    `run` touches only what the job owns: duplicated descriptors, and files
    the queue no longer writes (the position file's temporary, retired
    journals), so it may run in a worker thread while the queue goes on.
    """

    fds: list[int]
    directory: str
    meta_path: str | None = None
    meta: bytes = b""
    retire: list[str] = msgspec.field(default_factory=list)
    fsync_dir: bool = False

    def run(self) -> None:
        """`sync_data`, then `save_position`.

        Raises:
            OSError: an fsync or a write failed; descriptors are closed anyway.
        """
        self.sync_data()
        self.save_position()

    def sync_data(self) -> None:
        """Fsync records and journals.

        Raises:
            OSError: an fsync failed; descriptors are closed anyway.
        """
        try:
            for fd in self.fds:
                os.fsync(fd)
        finally:
            for fd in self.fds:
                os.close(fd)
            self.fds = []

    def save_position(self) -> None:
        """Replace the position file, fsync the directory, then retire old journals.

        Raises:
            OSError: a write or fsync failed.
        """
        if self.meta_path is not None:
            tmp = self.meta_path + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                if os.write(fd, self.meta) != len(self.meta):
                    raise OSError(errno.EIO, "short write of the position file")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.meta_path)
            self.fsync_dir = True
        if self.fsync_dir:
            dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        for path in self.retire:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def discard(self) -> None:
        """Release the descriptors of a job that will not run."""
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []


class DiskQueue:
    """One topic's or channel's overflow records in segment files under ``data_path``.

    Opening a queue recovers it (see the module docstring): read `damage`,
    `corrupt_records` and `corrupt_bytes` afterwards to log what was found.

    Args:
        data_path: existing directory holding the queue's files.
        name: the topic name, ``topic:channel``, or ``topic:channel:deferred``.
        config: limits and fsync policy.
        acks: keep records until acknowledged (`take`, `ack`); see the module notes.

    Raises:
        BackendError: the files could not be read.
        LocalProtocolError: ``name`` cannot be a file name.
    """

    __slots__ = (
        "_acks",
        "_closed",
        "_config",
        "_corrupt_bytes",
        "_corrupt_records",
        "_damage",
        "_depth",
        "_dir",
        "_dir_dirty",
        "_done_segments",
        "_full",
        "_handed_upto",
        "_health_error",
        "_held",
        "_journal_fd",
        "_journal_gen",
        "_journal_unsynced",
        "_last_put",
        "_last_sync_at",
        "_marked",
        "_max_record",
        "_name",
        "_old_fds",
        "_ops",
        "_outstanding",
        "_rbuf",
        "_rbuf_pos",
        "_read_pos",
        "_redeliver",
        "_retired",
        "_rfd",
        "_rfd_number",
        "_skip",
        "_unsynced_data",
        "_wfd",
        "_write_file",
        "_write_holes",
        "_write_pos",
        "_write_unread",
        "on_sync_due",
        "recovered_outstanding",
    )

    def __init__(
        self,
        data_path: str | os.PathLike[str],
        name: str,
        *,
        config: DiskQueueConfig | None = None,
        acks: bool = False,
        on_sync_due: Callable[[], None] | None = None,
    ) -> None:
        check_queue_name(name)
        self._dir = os.fspath(data_path)
        self._name = name
        self._config = config if config is not None else DiskQueueConfig()
        self._max_record = max_record_size(self._config.max_msg_size)
        self._acks = acks
        # Segments before the write segment with records to read, oldest first.
        self._full: collections.deque[_Segment] = collections.deque()
        # Reading: offset in the read segment (``_full[0]`` or the write segment).
        self._read_pos = 0
        self._rfd: int | None = None
        self._rfd_number = -1
        self._rbuf = b""
        self._rbuf_pos = 0
        # Writing: every record is in the file; ``_write_pos`` is its end.
        self._write_file = 0
        self._write_pos = 0
        self._write_unread = 0
        self._write_holes: collections.deque[Hole] = collections.deque()
        self._wfd: int | None = None
        self._old_fds: list[int] = []  # finished segments awaiting their fsync
        self._last_put: tuple[int, int, int] | None = None  # (segment, start, count)
        self._depth = 0
        self._ops = 0
        self._unsynced_data = False
        self._dir_dirty = False
        self._last_sync_at: float | None = None
        self._health_error: str | None = None
        self._corrupt_records = 0
        self._corrupt_bytes = 0
        self._damage: list[str] = []
        self._closed = False
        # Acknowledgements: outstanding tickets, their count per segment,
        # fully read segments kept for them, recovered ones to hand out
        # first, and acknowledged ones still ahead of the read position.
        self._outstanding: set[int] = set()
        self._held: dict[int, int] = {}
        self._done_segments: set[int] = set()
        self._redeliver: collections.deque[int] = collections.deque()
        self._skip: set[int] = set()
        self._journal_fd: int | None = None
        self._journal_gen = 0
        self._journal_unsynced = False
        self._retired: list[str] = []
        self._marked = -1  # the last read position written to the journal
        self._handed_upto = -1  # records before this were handed out before a restart
        self.recovered_outstanding = 0
        #: Called (no arguments) instead of syncing inline when ``sync_every``
        #: operations have passed; the owner then syncs off its event loop.
        #: With it, opening and `empty` leave their sync to the owner too.
        self.on_sync_due = on_sync_due
        try:
            self._recover()
        except OSError as exc:
            self._close_fds()
            self._closed = True
            raise self._fail("recovery", exc) from exc

    # --- observation ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The queue's name."""
        return self._name

    @property
    def depth(self) -> int:
        """Records stored and not yet handed out (recovered outstanding ones included)."""
        return self._depth

    @property
    def closed(self) -> bool:
        """Whether `close` or `delete` was called (or opening failed)."""
        return self._closed

    @property
    def outstanding(self) -> int:
        """Records handed out by `take` and not yet acknowledged."""
        return len(self._outstanding)

    @property
    def health_error(self) -> str | None:
        """Why the last write or sync failed, until a later one succeeds; None when healthy."""
        return self._health_error

    @property
    def corrupt_records(self) -> int:
        """Damaged regions (holes) found."""
        return self._corrupt_records

    @property
    def corrupt_bytes(self) -> int:
        """Bytes in those holes."""
        return self._corrupt_bytes

    @property
    def damage(self) -> list[str]:
        """One line per problem found, oldest first, for the node's log."""
        return list(self._damage)

    @property
    def sync_pending(self) -> bool:
        """Whether anything was written, read or acknowledged since the last sync."""
        return (
            self._ops > 0
            or self._unsynced_data
            or self._journal_unsynced
            or self._dir_dirty
            or bool(self._old_fds)
        )

    # --- Backend -------------------------------------------------------------------------

    def put(self, record: bytes) -> None:
        """Append one record (handed to the kernel before this returns).

        Raises:
            BackendError: the record is too large or could not be written; the
                queue is unchanged and `health_error` says why.
        """
        self.put_many((record,))

    def put_many(self, records: Sequence[bytes]) -> None:
        """Append records in one write: all are stored or none.

        The batch goes to one segment (rolled first when its first record
        would not fit), so it can be taken back whole.

        Raises:
            BackendError: a record is too large or the write failed; nothing
                was stored and `health_error` says why.
        """
        self._check_open()
        if not records:
            return
        limit = self._max_record
        for record in records:
            if not 1 <= len(record) <= limit:
                raise BackendError(f"a record of {len(record)} bytes is outside 1..{limit}")
        frames = b"".join(map(encode_record, records))
        first = RECORD_HEADER_SIZE + len(records[0])
        if self._write_pos > 0 and self._write_pos + first > self._config.max_bytes_per_file:
            try:
                self._roll()
            except OSError as exc:
                raise self._fail("rolling to a new segment", exc) from exc
        start = self._write_pos
        try:
            self._write(frames, start)
        except OSError as exc:
            self._cut(start)
            raise self._fail("write", exc) from exc
        count = len(records)
        self._write_pos = start + len(frames)
        self._write_unread += count
        self._depth += count
        self._last_put = (self._write_file, start, count)
        try:
            self._count_ops(count)
        except BackendError:
            # An inline sync failed: the records were not stored durably, so
            # they are not stored at all (the caller answers an error).
            self._cut(start)
            self._write_pos = start
            self._write_unread -= count
            self._depth -= count
            self._ops = max(self._ops - count, 0)
            raise

    def unput(self, count: int) -> bool:
        """Take back the records of the last `put_many` (``count`` of them), if none was read.

        Used when a publish fails in another queue: a publish answered with
        an error must not be delivered later.

        Returns:
            Whether they were taken back (cut off the segment).
        """
        last = self._last_put
        if self._closed or last is None or last[2] != count or last[0] != self._write_file:
            return False
        _, start, _ = last
        if not self._full and self._read_pos > start:
            return False  # already handed out
        self._last_put = None
        self._cut(start)
        self._write_pos = start
        self._write_unread -= count
        self._depth -= count
        return True

    def get(self) -> bytes | None:
        """Remove and return the oldest record, or None when empty.

        With acknowledgements this is `take` followed by `ack`.

        Raises:
            BackendError: the segment could not be read; the record stays queued.
        """
        taken = self.take()
        if taken is None:
            return None
        if self._acks:
            self.ack(taken[1])
        return taken[0]

    def take(self) -> tuple[bytes, int] | None:
        """Hand out the oldest record with its ticket, or None when empty.

        Without acknowledgements the ticket is -1 and the record is gone, as
        with `get`. Damage met while reading becomes a hole and the next
        intact record is returned instead.

        Raises:
            BackendError: the segment could not be read; the record stays queued.
        """
        self._check_open()
        try:
            # Each pass hands out a record, passes an acknowledged one, passes a
            # hole or a segment end, or finds the holes of a segment (once each).
            holes = len(self._write_holes) + sum(len(segment.holes) for segment in self._full)
            bound = 2 * (self._depth + len(self._skip) + len(self._full) + holes) + 8
            for _ in range(bound):
                if self._depth == 0:
                    return None
                if self._redeliver:
                    ticket = self._redeliver.popleft()
                    payload = self._read_ticket(ticket)
                    self._depth -= 1
                    if payload is None:
                        self._forget(ticket)
                        continue
                    if not self._acks:
                        self._forget(ticket)  # handed over for good, as `get` does
                        return payload, _NO_TICKET
                    return payload, ticket
                result = self._next_record()
                if result is None:
                    continue  # a hole or a segment boundary was passed
                number = self._full[0].number if self._full else self._write_file
                ticket = make_ticket(number, self._read_pos)
                size = RECORD_HEADER_SIZE + len(result.payload)
                if ticket in self._skip:
                    self._skip.discard(ticket)  # acknowledged before a crash: counted out
                    self._consume(size)
                    continue
                if self._acks:
                    # Held before the segment can be retired by reading past it.
                    self._outstanding.add(ticket)
                    self._held[number] = self._held.get(number, 0) + 1
                    if ticket < self._handed_upto:
                        self.recovered_outstanding += 1  # in flight at the last stop
                self._consume(size)
                self._depth -= 1
                self._count_ops(1)
                return result.payload, ticket if self._acks else _NO_TICKET
        except OSError as exc:
            raise self._fail("read", exc) from exc
        raise LocalProtocolError(f"disk queue {self._name}: depth {self._depth} but no records")

    def take_many(self, limit: int) -> tuple[list[bytes], list[int]]:
        """Hand out up to ``limit`` of the oldest records with their tickets, as `take` would.

        The consumer's path: records are decoded in runs straight from the
        read-ahead buffer, which one ``pread`` of `READ_CHUNK_SIZE` fills, so
        a record costs a slice and a checksum and no system call. Whatever
        the run cannot cover (recovered tickets to hand out first, a hole, a
        segment's end, damage) goes through `take`, one record at a time.

        Returns:
            The records, oldest first, and their tickets (-1 each without
            acknowledgements), in step; both empty when the queue is.

        Raises:
            BackendError: reading failed before any record was taken; the
                records stay queued. A failure after some were taken returns
                those instead (`health_error` says why; the next call meets it
                again).
        """
        self._check_open()
        records: list[bytes] = []
        tickets: list[int] = []
        # Bounded: every pass hands out at least one record or ends.
        while len(records) < limit and self._depth > 0:
            try:
                if not self._redeliver and self._take_run(limit - len(records), records, tickets):
                    continue
                taken = self.take()
            except OSError as exc:
                failure = self._fail("read", exc)
                if records:
                    break
                raise failure from exc
            except BackendError:
                if records:
                    break
                raise
            if taken is None:
                break
            records.append(taken[0])
            tickets.append(taken[1])
        return records, tickets

    def get_many(self, limit: int) -> list[bytes]:
        """Remove and return up to ``limit`` of the oldest records (`take_many`, then `ack_many`).

        Raises:
            BackendError: as `take_many`.
        """
        records, tickets = self.take_many(limit)
        if self._acks and records:
            self.ack_many(tickets)
        return records

    def _take_run(self, want: int, records: list[bytes], tickets: list[int]) -> int:
        """Append a run of up to ``want`` intact records from the read segment; return how many.

        0 means the record at the read position needs `take`: a hole or the
        segment's end is there, it was acknowledged before a restart, or it
        does not verify.

        Raises:
            OSError: the segment could not be read; nothing was taken.
        """
        segment = self._full[0] if self._full else None
        if segment is not None:
            number, end, holes = segment.number, segment.size, segment.holes
        else:
            number, end, holes = self._write_file, self._write_pos, self._write_holes
        read_pos = self._read_pos
        while holes and holes[0].end <= read_pos:
            holes.popleft()
        stop = min(holes[0].start, end) if holes else end
        if read_pos >= stop:
            return 0
        if self._rfd_number != number:
            self._close_reader()
            self._rfd = os.open(self._path(segment_file_name(self._name, number)), os.O_RDONLY)
            self._rfd_number = number
        assert self._rfd is not None
        payloads: list[bytes] = []
        new_offset = 0
        # At most two passes: the buffer as it is, then refilled from the read position.
        for refill in (False, True):
            if refill:
                chunk = max(READ_CHUNK_SIZE, RECORD_HEADER_SIZE + self._max_record)
                self._rbuf = os.pread(self._rfd, min(end - read_pos, chunk), read_pos)
                self._rbuf_pos = read_pos
            offset = read_pos - self._rbuf_pos
            if 0 <= offset < len(self._rbuf):
                payloads, new_offset = decode_records(
                    self._rbuf, offset, stop - self._rbuf_pos, self._max_record, want
                )
                if payloads:
                    break
        if not payloads:
            return 0
        run_tickets: list[int] = []
        if self._acks or self._skip:
            base = number << TICKET_SHIFT
            sizes = [RECORD_HEADER_SIZE + len(payload) for payload in payloads]
            starts = itertools.accumulate(sizes[:-1], initial=read_pos)
            run_tickets = [base | start for start in starts]
            if self._skip:
                # Stop before a record acknowledged before a restart: `take` passes it.
                skip = self._skip
                for index, ticket in enumerate(run_tickets):
                    if ticket in skip:
                        if index == 0:
                            return 0
                        del payloads[index:], run_tickets[index:]
                        new_offset = run_tickets[-1] - base + sizes[index - 1] - self._rbuf_pos
                        break
        count = len(payloads)
        if self._acks:
            self._outstanding.update(run_tickets)
            self._held[number] = self._held.get(number, 0) + count
            if self._handed_upto >= 0:
                upto = self._handed_upto
                self.recovered_outstanding += sum(1 for t in run_tickets if t < upto)
            tickets += run_tickets
        else:
            tickets += itertools.repeat(_NO_TICKET, count)
        records += payloads
        self._read_pos = self._rbuf_pos + new_offset
        if segment is not None:
            segment.unread -= count
        else:
            self._write_unread -= count
        self._depth -= count
        self._advance()
        # An inline sync that fails is recorded in `health_error`; the records
        # are handed out all the same, as nothing of theirs is lost.
        with contextlib.suppress(BackendError):
            self._count_ops(count)
        return count

    def ack(self, ticket: int) -> None:
        """Acknowledge one ticket from `take` (see `ack_many`)."""
        self.ack_many((ticket,))

    def ack_many(self, tickets: Iterable[int]) -> None:
        """Acknowledge tickets from `take`: their records leave the durable store.

        Unknown tickets (already acknowledged, from before `empty`, or -1)
        are ignored. The acknowledgements are written to the journal at once;
        if that fails, they hold in memory and `health_error` says why (a
        crash would then hand those records out again: a duplicate, never a
        loss).
        """
        if not self._acks or self._closed:
            return
        done = [ticket for ticket in tickets if ticket in self._outstanding]
        if not done:
            return
        outstanding = self._outstanding
        held = self._held
        for ticket in done:
            outstanding.discard(ticket)
            number = ticket_position(ticket)[0]
            left = held[number] - 1
            if left:
                held[number] = left
            else:
                del held[number]
                if number in self._done_segments:
                    self._done_segments.discard(number)
                    self._delete_segment(number)
        try:
            self._journal_write(encode_acks(done))
        except OSError as exc:
            self._fail("writing acknowledgements", exc)
        self._count_ops(len(done))

    def note_reads(self) -> None:
        """Journal how far records were handed out (one small write, no fsync).

        Recovery then counts the records it hands out again, which were in
        flight at the stop: the duplicates the node reports.
        """
        if not self._acks or self._closed:
            return
        number = self._full[0].number if self._full else self._write_file
        ticket = make_ticket(number, self._read_pos)
        if ticket == self._marked:
            return
        try:
            self._journal_write(encode_acks([READ_MARK | ticket]))
        except OSError as exc:
            self._fail("writing the read mark", exc)
            return
        self._marked = ticket

    def empty(self) -> None:
        """Drop every stored record and delete the segment files (``.bad`` files stay).

        Raises:
            BackendError: a file could not be removed or the position not saved.
        """
        self._check_open()
        self._close_fds()
        self._reset_to(self._write_file + 1)
        try:
            self._remove_files(bad_too=False)
            if self.on_sync_due is None:
                self._sync_now()
        except OSError as exc:
            raise self._fail("empty", exc) from exc
        if self.on_sync_due is not None:
            # A crash before the owner's checkpoint finds no segment at the
            # old position: nothing to serve, which is what empty means.
            self._ops = max(self._ops, 1)
            self.on_sync_due()

    def sync(self) -> None:
        """Fsync records and acknowledgements and save the position, inline.

        Raises:
            BackendError: an fsync or write failed; the next sync tries again.
        """
        self._check_open()
        try:
            self._sync_now()
        except OSError as exc:
            raise self._fail("sync", exc) from exc

    def prepare_sync(self, *, checkpoint: bool) -> SyncJob | None:
        """Snapshot what a sync must do, for `SyncJob.run` off the event loop.

        Args:
            checkpoint: also replace the position file (and start a new ack
                journal); otherwise only fsync records and acknowledgements,
                which is what a durable publish waits for.

        Returns:
            The job, or None when there is nothing to do. Pass it to
            `finish_sync` once run (or discarded).

        Raises:
            BackendError: a descriptor could not be duplicated.
        """
        if self._closed:
            return None
        job = SyncJob(fds=[], directory=self._dir)
        try:
            job.fds += self._old_fds  # the job owns (and closes) these now
            self._old_fds = []
            if self._wfd is not None and self._unsynced_data:
                job.fds.append(os.dup(self._wfd))
            if self._journal_fd is not None and self._journal_unsynced:
                job.fds.append(os.dup(self._journal_fd))
            if checkpoint and (self.sync_pending or self._retired):
                job.meta_path = self._path(meta_file_name(self._name))
                job.meta = encode_meta(self._meta(rotate=True))
                job.retire, self._retired = self._retired, []
                self._ops = 0
        except OSError as exc:
            job.discard()
            raise self._fail("sync", exc) from exc
        job.fsync_dir = self._dir_dirty
        self._dir_dirty = False
        self._unsynced_data = False
        self._journal_unsynced = False
        if not job.fds and job.meta_path is None and not job.fsync_dir:
            return None
        return job

    def finish_sync(self, job: SyncJob, error: OSError | None) -> None:
        """Record how a job from `prepare_sync` ended (a failed one is redone next time)."""
        if error is None:
            if self._health_error is not None and "sync" in self._health_error:
                self._health_error = None
            return
        self._unsynced_data = self._wfd is not None
        self._journal_unsynced = self._journal_fd is not None
        self._dir_dirty = self._dir_dirty or job.fsync_dir
        self._retired.extend(job.retire)
        self._ops = max(self._ops, 1)
        self._fail("sync", error)

    def maybe_sync(self, now: float) -> bool:
        """Sync inline if anything happened since the last sync and ``sync_timeout`` passed.

        Args:
            now: the caller's clock, in seconds.

        Returns:
            Whether a sync happened.

        Raises:
            BackendError: as `sync`.
        """
        if self._closed or not self.sync_pending:
            return False
        if self._last_sync_at is not None and now - self._last_sync_at < self._config.sync_timeout:
            return False
        self._last_sync_at = now
        self.sync()
        return True

    def close(self) -> None:
        """Sync and release the files, keeping records (outstanding ones too) for the next start.

        Raises:
            BackendError: the final sync failed; the files are released anyway
                and recovery on the next start serves what reached the disk.
        """
        if self._closed:
            return
        try:
            self._sync_now()
        except OSError as exc:
            raise self._fail("close", exc) from exc
        finally:
            self._close_fds()
            self._closed = True

    def delete(self) -> None:
        """Release the files and remove every file of this queue, ``.bad`` files included.

        Raises:
            BackendError: a file could not be removed; the queue is closed anyway.
        """
        self._close_fds()
        self._closed = True
        self._reset_to(self._write_file + 1)
        try:
            self._remove_files(bad_too=True)
            self._unlink_if_exists(self._path(meta_file_name(self._name)))
            self._unlink_if_exists(self._path(meta_file_name(self._name) + ".tmp"))
        except OSError as exc:
            raise self._fail("delete", exc) from exc

    # --- reading -------------------------------------------------------------------------

    def _next_record(self) -> Record | None:
        """The record at the read position, or None after skipping a hole or a segment end."""
        if self._full:
            segment = self._full[0]
            number, end, holes = segment.number, segment.size, segment.holes
        else:
            number, end, holes = self._write_file, self._write_pos, self._write_holes
        while holes and holes[0].end <= self._read_pos:
            holes.popleft()
        if holes and holes[0].start <= self._read_pos:
            self._read_pos = holes[0].end
            self._rbuf = b""
            self._advance()
            return None
        if self._read_pos >= end:
            if self._full:
                self._advance()
                return None
            raise OSError(
                errno.EIO, f"depth {self._depth} but the write segment is read to its end"
            )
        result = self._read_from_file(number, end)
        if isinstance(result, Record):
            return result
        self._rescan_read_segment(number, end, result.reason)
        return None

    def _read_from_file(self, number: int, end: int) -> Record | Corrupt:
        if self._rfd_number != number:
            self._close_reader()
            self._rfd = os.open(self._path(segment_file_name(self._name, number)), os.O_RDONLY)
            self._rfd_number = number
        assert self._rfd is not None
        offset = self._read_pos - self._rbuf_pos
        if 0 <= offset <= len(self._rbuf):
            result = decode_record(self._rbuf, offset, self._max_record)
            if not isinstance(result, NeedData):
                return result
        chunk = max(READ_CHUNK_SIZE, RECORD_HEADER_SIZE + self._max_record)
        want = min(end - self._read_pos, chunk)
        self._rbuf = os.pread(self._rfd, want, self._read_pos)
        self._rbuf_pos = self._read_pos
        result = decode_record(self._rbuf, 0, self._max_record)
        if isinstance(result, NeedData):
            return Corrupt(
                f"torn record: {len(self._rbuf)} bytes left before the end of the data",
                self._read_pos,
            )
        return result

    def _rescan_read_segment(self, number: int, end: int, reason: str) -> None:
        """Damage appeared under the reader: find the holes from here on and recount."""
        records, holes = self._scan_segment(number, self._read_pos, end)
        if not holes or holes[0].start != self._read_pos:
            holes.insert(0, Hole(self._read_pos, self._read_pos + 1, reason))
            records = max(records - 1, 0)
        if self._full:
            segment = self._full[0]
            self._depth += records - segment.unread
            segment.unread = records
            segment.holes = collections.deque(holes)
        else:
            self._depth += records - self._write_unread
            self._write_unread = records
            self._write_holes = collections.deque(holes)
        self._rbuf = b""

    def _consume(self, size: int) -> None:
        self._read_pos += size
        if self._full:
            self._full[0].unread -= 1
        else:
            self._write_unread -= 1
        self._advance()

    def _read_ticket(self, ticket: int) -> bytes | None:
        """The record a recovered outstanding ticket names, or None if it no longer verifies."""
        number, offset = ticket_position(ticket)
        try:
            fd = os.open(self._path(segment_file_name(self._name, number)), os.O_RDONLY)
        except FileNotFoundError:
            self._damage.append(f"outstanding record {number}:{offset} is gone with its segment")
            return None
        try:
            data = os.pread(fd, RECORD_HEADER_SIZE + self._max_record, offset)
        finally:
            os.close(fd)
        result = decode_record(data, 0, self._max_record)
        if isinstance(result, Record):
            return result.payload
        self._damage.append(f"outstanding record {number}:{offset} does not verify")
        return None

    def _forget(self, ticket: int) -> None:
        """Drop an outstanding ticket whose record is unreadable."""
        self._outstanding.discard(ticket)
        number = ticket_position(ticket)[0]
        left = self._held.get(number, 0) - 1
        if left > 0:
            self._held[number] = left
        else:
            self._held.pop(number, None)
            if number in self._done_segments:
                self._done_segments.discard(number)
                self._delete_segment(number)

    def _advance(self) -> None:
        """Retire fully read segments (deleted unless outstanding tickets point into them)."""
        while self._full and self._read_pos >= self._full[0].size:
            segment = self._full.popleft()
            if self._rfd_number == segment.number:
                self._close_reader()
            self._read_pos = 0
            self._rbuf = b""
            self._rbuf_pos = 0
            if self._held.get(segment.number):
                self._done_segments.add(segment.number)
            else:
                self._delete_segment(segment.number)

    def _delete_segment(self, number: int) -> None:
        try:
            self._unlink_if_exists(self._path(segment_file_name(self._name, number)))
        except OSError as exc:
            # Harmless: the next start finds it behind the read position.
            self._damage.append(f"could not delete read segment {number}: {exc}")
        self._dir_dirty = True

    def _close_reader(self) -> None:
        if self._rfd is not None:
            os.close(self._rfd)
        self._rfd = None
        self._rfd_number = -1

    # --- writing -------------------------------------------------------------------------

    def _write(self, data: bytes, offset: int) -> None:
        if self._wfd is None:
            path = self._path(segment_file_name(self._name, self._write_file))
            self._wfd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            self._dir_dirty = True
        written = 0
        with memoryview(data) as view:
            total = len(view)
            while written < total:  # each pass writes at least one byte or raises
                n = os.pwrite(self._wfd, view[written:], offset + written)
                if n <= 0:
                    raise OSError(errno.EIO, "write made no progress")
                written += n
        self._unsynced_data = True
        if self._health_error is not None and "sync" not in self._health_error:
            self._health_error = None

    def _cut(self, start: int) -> None:
        """Take back bytes written at ``start`` and after by a failed write."""
        if self._rfd_number == self._write_file:
            self._rbuf = b""
        if self._wfd is not None:
            # The next write lands at the same offset and covers any junk; a
            # restart before that finds a torn tail and cuts it.
            with contextlib.suppress(OSError):
                os.ftruncate(self._wfd, start)
            with contextlib.suppress(OSError):
                os.close(self._wfd)
            self._wfd = None

    def _roll(self) -> None:
        """Finish the write segment and start the next one (created on first write).

        A finished segment with unsynced records keeps its descriptor until
        the next sync fsyncs it, so a durable publish waits for every record
        it wrote, whichever segment holds it.
        """
        if self._wfd is not None:
            if self._unsynced_data:
                self._old_fds.append(self._wfd)
            else:
                os.close(self._wfd)
            self._wfd = None
            self._unsynced_data = False
        self._full.append(
            _Segment(self._write_file, self._write_pos, self._write_unread, self._write_holes)
        )
        self._write_holes = collections.deque()
        self._write_file += 1
        self._write_pos = self._write_unread = 0
        self._advance()

    def _count_ops(self, count: int) -> None:
        self._ops += count
        if self._ops < self._config.sync_every:
            return
        if self.on_sync_due is not None:
            self.on_sync_due()
            return
        try:
            self._sync_now()
        except OSError as exc:
            raise self._fail("sync", exc) from exc

    def _journal_write(self, data: bytes) -> None:
        if self._journal_fd is None:
            path = self._path(_journal_name(self._name, self._journal_gen))
            self._journal_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._dir_dirty = True
        if os.write(self._journal_fd, data) != len(data):
            raise OSError(errno.EIO, "short write of the ack journal")
        self._journal_unsynced = True

    def _meta(self, *, rotate: bool) -> QueueMeta:
        """The position file now; with ``rotate``, acks from here on go to a new journal."""
        read_file = self._full[0].number if self._full else self._write_file
        generation: int | None = None
        outstanding: tuple[int, ...] = ()
        if self._acks:
            if rotate:
                self._rotate_journal()
            generation = self._journal_gen
            outstanding = tuple(sorted(self._outstanding))
        return QueueMeta(
            depth=self._depth,
            read_file=read_file,
            read_pos=self._read_pos,
            write_file=self._write_file,
            write_pos=self._write_pos,
            ack_generation=generation,
            outstanding=outstanding,
        )

    def _rotate_journal(self) -> None:
        """Start a new ack journal; the old one is retired once the checkpoint is saved."""
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
        old = self._path(_journal_name(self._name, self._journal_gen))
        if os.path.exists(old):
            self._retired.append(old)
        self._journal_gen += 1
        self._journal_unsynced = False
        self._marked = -1
        carried = sorted(self._skip)
        if self._handed_upto >= 0:
            carried.append(READ_MARK | self._handed_upto)
        if carried:
            # Acknowledgements of records not yet reached (and how far the last
            # run handed records out) live on in the new journal.
            self._journal_write(encode_acks(carried))

    def _sync_now(self) -> None:
        job = self.prepare_sync(checkpoint=True)
        if job is None:
            job = SyncJob(fds=[], directory=self._dir)
            job.meta_path = self._path(meta_file_name(self._name))
            job.meta = encode_meta(self._meta(rotate=False))
        try:
            job.run()
        except OSError as exc:
            job.discard()
            self.finish_sync(job, exc)
            raise
        self.finish_sync(job, None)
        self._ops = 0
        self._health_error = None

    # --- recovery ------------------------------------------------------------------------

    def _recover(self) -> None:
        sizes: dict[int, int] = {}
        names: list[str] = []
        for entry in os.scandir(self._dir):
            names.append(entry.name)
            number = parse_segment_number(self._name, entry.name)
            if number is not None and entry.is_file():
                sizes[number] = entry.stat().st_size
        meta: QueueMeta | None = None
        try:
            with open(self._path(meta_file_name(self._name)), "rb") as file:
                decoded = decode_meta(file.read(64 << 20))
        except FileNotFoundError:
            if sizes:
                self._damage.append("position file missing; serving every segment from its start")
        else:
            if isinstance(decoded, Corrupt):
                self._damage.append(
                    f"position file unreadable ({decoded.reason});"
                    " serving every segment from its start"
                )
            else:
                meta = decoded
        plan = plan_recovery(meta, sizes, acks=self._acks)
        if plan.meta_ignored:
            meta = None
        self._damage.extend(plan.notes)
        acked = self._recover_acks(meta, names)
        for number in plan.stale:
            self._unlink_if_exists(self._path(segment_file_name(self._name, number)))
            self._dir_dirty = True
        segments: list[_Segment] = []
        for index, number in enumerate(plan.scan):
            start = plan.read_pos if index == 0 else 0
            records, holes = self._scan_segment(number, start, sizes[number])
            size = sizes[number]
            if holes and holes[-1].end >= size and index == len(plan.scan) - 1:
                size = self._cut_tail(number, holes[-1].start)
            segments.append(_Segment(number, size, records, collections.deque(holes)))
        self._read_pos = plan.read_pos
        if segments:
            last = segments.pop()
            self._write_file = last.number
            self._write_pos = last.size
            self._write_unread = last.unread
            self._write_holes = last.holes
            if not segments:
                self._read_pos = min(plan.read_pos, last.size)
        else:
            self._write_file = plan.write_file
            self._read_pos = 0
        self._full.extend(segments)
        self._depth = self._write_unread + sum(segment.unread for segment in segments)
        self._count_out_skipped()
        self._depth += len(self._redeliver)
        if meta is not None and self._depth < meta.depth and not self._acks:
            self._damage.append(
                f"position file counted {meta.depth} records, {self._depth} found intact"
            )
        del acked
        self._advance()
        if self.on_sync_due is not None:
            # The owner's next checkpoint saves the recovered position, off its loop.
            self._ops = max(self._ops, 1)
            return
        try:
            self._sync_now()
        except OSError as exc:
            # A full disk must not stop a start: everything is served from
            # what is there, and the position is saved by a later sync.
            self._fail("saving the recovered position", exc)

    def _recover_acks(self, meta: QueueMeta | None, names: list[str]) -> set[int]:
        """Read the ack journals; set up the outstanding, redeliver and skip sets."""
        # Read even without acknowledgements: a data path that ran in durable
        # mode before still owes the records that were outstanding then.
        journals = _journal_generations(self._name, names)
        first = meta.ack_generation if meta is not None and meta.ack_generation else 0
        acked: set[int] = set()
        for generation, file_name in sorted(journals.items()):
            # Every journal is folded into the first checkpoint, which retires it.
            self._retired.append(self._path(file_name))
            if generation >= first:
                for ticket in self._read_journal(file_name):
                    if ticket & READ_MARK:
                        self._handed_upto = max(self._handed_upto, ticket & ~READ_MARK)
                    else:
                        acked.add(ticket)
        self._journal_gen = max([first, *journals]) + 1 if journals or first else 0
        outstanding = set(meta.outstanding) if meta is not None else set()
        pending = sorted(outstanding - acked)
        self._skip = acked - outstanding
        for ticket in pending:
            self._redeliver.append(ticket)
            self._outstanding.add(ticket)
            number = ticket_position(ticket)[0]
            self._held[number] = self._held.get(number, 0) + 1
        self.recovered_outstanding = len(pending)
        # Held segments before the read position are kept until acknowledged.
        read_file = meta.read_file if meta is not None else 0
        for number in self._held:
            if number < read_file:
                self._done_segments.add(number)
        return acked

    def _read_journal(self, file_name: str) -> list[int]:
        path = self._path(file_name)
        tickets: list[int] = []
        with open(path, "rb") as file:
            data = file.read()
        offset = 0
        while offset < len(data):  # every pass consumes a record or ends
            result = decode_record(data, offset, max(self._max_record, 1 << 20))
            if not isinstance(result, Record):
                if not isinstance(result, NeedData):
                    self._damage.append(f"{file_name}: {result.reason} at byte {offset}")
                break
            decoded = decode_acks(result.payload)
            if decoded is not None:
                tickets += decoded
            offset = result.end
        return tickets

    def _count_out_skipped(self) -> None:
        """Records acknowledged after the last checkpoint are not part of the depth."""
        if not self._skip:
            return
        live: set[int] = set()
        spans = [(s.number, s.size) for s in self._full]
        spans.append((self._write_file, self._write_pos))
        first = True
        for number, size in spans:
            start = self._read_pos if first else 0
            first = False
            for ticket in self._skip:
                seg, offset = ticket_position(ticket)
                if seg == number and start <= offset < size:
                    live.add(ticket)
        self._skip = live
        # Per-segment counts keep them: the reader passes over them (`take`).
        self._depth -= len(live)

    def _scan_segment(self, number: int, start: int, size: int) -> tuple[int, list[Hole]]:
        """Verify a segment from ``start``; return its intact records and its holes.

        Holes are copied to a ``.bad`` file when there is room (best effort).
        """
        scanner = RecordScanner(start=start, max_record_size=self._max_record)
        fd = os.open(self._path(segment_file_name(self._name, number)), os.O_RDONLY)
        try:
            pos = start
            while pos < size:  # pos grows every pass
                chunk = os.pread(fd, min(SCAN_CHUNK_SIZE, size - pos), pos)
                if not chunk:
                    break
                pos += len(chunk)
                scanner.feed(chunk)
        finally:
            os.close(fd)
        holes = scanner.finish()
        for hole in holes:
            self._report_hole(number, hole)
        return scanner.records, holes

    def _report_hole(self, number: int, hole: Hole) -> None:
        segment = segment_file_name(self._name, number)
        kept = self._copy_aside(segment, hole.start, hole.end)
        self._corrupt_records += 1
        self._corrupt_bytes += hole.end - hole.start
        self._damage.append(
            f"{segment}: {hole.reason} at byte {hole.start}; {hole.end - hole.start} bytes"
            f" skipped, reading resumes at byte {hole.end}; {kept}"
        )

    def _copy_aside(self, segment: str, start: int, end: int) -> str:
        """Copy damaged bytes to a new ``.bad`` file; say where, or why not."""
        try:
            bad_fd, bad = self._create_bad_file(segment)
        except OSError as exc:
            return f"not copied aside ({exc.strerror or exc})"
        try:
            src = os.open(self._path(segment), os.O_RDONLY)
            try:
                pos = start
                while pos < end:  # every pass moves bytes or ends
                    chunk = os.pread(src, min(SCAN_CHUNK_SIZE, end - pos), pos)
                    if not chunk:
                        break
                    os.write(bad_fd, chunk)
                    pos += len(chunk)
            finally:
                os.close(src)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.close(bad_fd)
            self._unlink_if_exists(self._path(bad))
            return f"not copied aside ({exc.strerror or exc})"
        os.close(bad_fd)
        self._dir_dirty = True
        return f"copied to {bad}"

    def _cut_tail(self, number: int, offset: int) -> int:
        """Cut a damaged tail off the write segment, so appends follow intact records."""
        try:
            fd = os.open(self._path(segment_file_name(self._name, number)), os.O_RDWR)
            try:
                os.ftruncate(fd, offset)
            finally:
                os.close(fd)
        except OSError as exc:
            # Appends then follow the damage, which readers skip as a hole.
            self._damage.append(f"could not cut the damaged tail of segment {number}: {exc}")
            return os.stat(self._path(segment_file_name(self._name, number))).st_size
        return offset

    def _create_bad_file(self, segment: str) -> tuple[int, str]:
        for serial in range(_MAX_BAD_FILES):
            name = bad_file_name(segment, serial)
            try:
                fd = os.open(self._path(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            return fd, name
        raise OSError(errno.EEXIST, f"{_MAX_BAD_FILES} .bad files already exist for {segment}")

    # --- helpers -------------------------------------------------------------------------

    def _path(self, file_name: str) -> str:
        return os.path.join(self._dir, file_name)

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(f"disk queue {self._name} is closed")

    def _fail(self, what: str, exc: OSError) -> BackendError:
        reason = exc.strerror or str(exc)
        self._health_error = f"disk queue {self._name}: {what} failed: {reason}"
        return BackendError(self._health_error)

    def _close_fds(self) -> None:
        self._close_reader()
        for fd in self._old_fds:
            os.close(fd)
        self._old_fds = []
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None

    def _reset_to(self, write_file: int) -> None:
        """Forget every record and ticket; the next segment number is ``write_file``."""
        self._full.clear()
        self._read_pos = self._write_pos = 0
        self._rbuf = b""
        self._rbuf_pos = 0
        self._write_unread = self._depth = 0
        self._write_holes = collections.deque()
        self._write_file = write_file
        self._unsynced_data = False
        self._outstanding.clear()
        self._held.clear()
        self._done_segments.clear()
        self._redeliver.clear()
        self._skip.clear()
        self._handed_upto = self._marked = -1
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
        self._journal_unsynced = False

    def _remove_files(self, *, bad_too: bool) -> None:
        prefix = self._name + ".diskqueue."
        journals = set(_journal_generations(self._name, os.listdir(self._dir)).values())
        for entry in os.scandir(self._dir):
            is_segment = parse_segment_number(self._name, entry.name) is not None
            is_bad = entry.name.startswith(prefix) and ".dat.bad." in entry.name
            if is_segment or entry.name in journals or (bad_too and is_bad):
                self._unlink_if_exists(entry.path)
                self._dir_dirty = True
        self._retired.clear()

    @staticmethod
    def _unlink_if_exists(path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


class DiskBackendFactory:
    """A `BackendFactory` giving ephemeral queues memory and the others a `DiskQueue`.

    It owns every fsync of the node's queues, and runs them in a worker
    thread so the event loop never waits on the disk:

    - `commit` is the durable publish's group commit: it returns once every
      record written before it was called is fsynced. Concurrent callers
      share rounds, so N publishers arriving during one fsync pay for one
      more fsync, not N.
    - `checkpoint` saves positions (and ack checkpoints) of queues with
      unsynced activity, every ``sync_timeout`` or sooner when a queue
      reached ``sync_every`` operations (`wait_sync_due`).

    Args:
        data_path: existing directory for every queue's files.
        config: limits and fsync policy shared by every queue.
        durable: channel queues keep records until acknowledged (durable mode).
    """

    __slots__ = (
        "_config",
        "_data_path",
        "_done",
        "_due",
        "_durable",
        "_failures",
        "_queues",
        "_round_done",
        "_running",
        "_started",
    )

    def __init__(
        self,
        data_path: str | os.PathLike[str],
        *,
        config: DiskQueueConfig | None = None,
        durable: bool = False,
    ) -> None:
        self._data_path = os.fspath(data_path)
        self._config = config if config is not None else DiskQueueConfig()
        self._durable = durable
        self._queues: list[DiskQueue] = []
        self._started = 0  # sync rounds started
        self._done = 0  # sync rounds finished
        self._running = False
        self._round_done: trio.Event | None = None
        self._failures: dict[int, str] = {}
        self._due: trio.Event | None = None

    def __call__(self, name: str, *, ephemeral: bool) -> Backend:
        """Open the backend for ``name``.

        Raises:
            BackendError: the queue's files could not be read.
            LocalProtocolError: a queue of that name is already open.
        """
        if ephemeral:
            return MemoryBackend()
        if any(queue.name == name for queue in self.open_queues()):
            raise LocalProtocolError(f"disk queue {name} is already open")
        acks = self._durable and ":" in name
        queue = DiskQueue(
            self._data_path, name, config=self._config, acks=acks, on_sync_due=self._sync_due
        )
        self._queues.append(queue)
        return queue

    def open_queues(self) -> list[DiskQueue]:
        """The disk queues opened here and not yet closed or deleted."""
        self._queues = [queue for queue in self._queues if not queue.closed]
        return list(self._queues)

    def _sync_due(self) -> None:
        if self._due is not None:
            self._due.set()

    async def wait_sync_due(self) -> None:
        """Return when a queue reached ``sync_every`` operations since its last sync."""
        self._due = trio.Event()
        await self._due.wait()

    async def commit(self) -> None:
        """Return once everything written before the call is fsynced (group commit).

        Raises:
            BackendError: the round that covered this call failed; what it
                covered is not durable and must be answered with an error.
        """
        need = self._started + 1  # a round that starts after this moment
        while self._done < need:  # every pass waits for or runs one round
            if self._running:
                assert self._round_done is not None
                await self._round_done.wait()
                continue
            await self._run_round(checkpoint=False)
        failure = self._failures.get(need)
        if failure is not None:
            raise BackendError(failure)

    async def checkpoint(self) -> None:
        """Fsync and save the position of every queue with unsynced activity, off the loop."""
        while self._running:  # every pass waits for one round to end
            assert self._round_done is not None
            await self._round_done.wait()
        await self._run_round(checkpoint=True)

    async def _run_round(self, *, checkpoint: bool) -> None:
        self._running = True
        self._started += 1
        number = self._started
        self._round_done = done = trio.Event()
        jobs: list[tuple[DiskQueue, SyncJob]] = []
        failure: str | None = None
        try:
            for queue in self.open_queues():
                try:
                    job = queue.prepare_sync(checkpoint=checkpoint)
                except BackendError as exc:
                    failure = failure or str(exc)
                    continue
                if job is not None:
                    jobs.append((queue, job))
            if jobs:
                errors = await trio.to_thread.run_sync(_run_jobs, [job for _, job in jobs])
                for (queue, job), error in zip(jobs, errors, strict=True):
                    queue.finish_sync(job, error)
                    if error is not None and failure is None:
                        failure = queue.health_error
        finally:
            if failure is not None:
                self._failures[number] = failure
                # Keep the record of recent failures short.
                for old in [n for n in self._failures if n < number - 64]:
                    del self._failures[old]
            self._done = number
            self._running = False
            done.set()

    def maybe_sync(self, now: float) -> None:
        """Call `DiskQueue.maybe_sync` on every open queue inline (tools and tests)."""
        for queue in self.open_queues():
            try:
                queue.maybe_sync(now)
            except BackendError:
                continue  # recorded in the queue's health_error

    @property
    def health_error(self) -> str | None:
        """The first open queue's `DiskQueue.health_error`, or None when all are healthy."""
        for queue in self.open_queues():
            if queue.health_error is not None:
                return queue.health_error
        return None

    @property
    def recovered_outstanding(self) -> int:
        """Records handed out again after a restart because they were never acknowledged."""
        return sum(queue.recovered_outstanding for queue in self.open_queues())


def _run_jobs(jobs: list[SyncJob]) -> list[OSError | None]:
    """Run sync jobs: every queue's data first, then positions; collect failures.

    Positions wait for all the data because one queue's position may rest
    on another's records: a topic's read position passes messages that now
    live in its channels' queues. If any data fsync fails, no position is
    saved this round (the next round tries again).
    """
    errors: list[OSError | None] = []
    for job in jobs:
        try:
            job.sync_data()
        except OSError as exc:
            errors.append(exc)
        else:
            errors.append(None)
    if any(error is not None for error in errors):
        return [error or OSError(errno.EIO, "another queue's fsync failed") for error in errors]
    for index, job in enumerate(jobs):
        try:
            job.save_position()
        except OSError as exc:
            errors[index] = exc
    return errors


def disk_backend_factory(
    data_path: str | os.PathLike[str],
    *,
    config: DiskQueueConfig | None = None,
    durable: bool = False,
) -> DiskBackendFactory:
    """Return the `BackendFactory` of a node with a data path (see `DiskBackendFactory`)."""
    return DiskBackendFactory(data_path, config=config, durable=durable)
