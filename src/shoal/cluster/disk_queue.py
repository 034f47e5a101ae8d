"""The file-backed `Backend`: nsqd's disk queue with checksums and honest recovery.

Every non-ephemeral topic and channel spills its overflow into a `DiskQueue`
(docs/nsq.md §4.5). The record format, file names and recovery decisions live in
the pure `shoal.queue.diskqueue`; this module does the files.

Rules:
1. ``put`` stores the record or raises `BackendError` with the queue as it
   was: a failed write is cut off again (or overwritten by the next write,
   which goes to the same offset) and never reaches a reader.
2. Under ``sync_every=1`` a put returns only after its record is fsynced, so
   a SIGKILL or power loss after that keeps it. With larger values a SIGKILL
   loses the records still in the write buffer (put since the last sync and
   less than `WRITE_BUFFER_SIZE`), and a power loss those since the last
   sync.
3. A restart serves every intact record from the read position on,
   including ones written after the last position sync. Damage (a torn or
   garbled tail, garbage inside a segment) is cut at the last intact record,
   the cut bytes are kept in ``<segment>.bad.<n>`` for inspection, and the
   queue reports it in `DiskQueue.damage`. Records after damage in the same
   segment are in that file, not served.
4. A fully read segment is deleted; ``.bad`` files are removed only by
   `DiskQueue.delete`.

Theory of operation: records are appended to an in-memory write buffer and
written with ``pwrite`` at the known end of the data, in large blocks (on
buffer size, sync, roll, close). The buffer is hand-rolled rather than a
``BufferedWriter`` so a failed write has a known extent: the file offset of
the last complete block is remembered, and partial bytes beyond it are
truncated or overwritten. Reads use ``pread`` of about a megabyte at a time
from a separate descriptor, and records still in the write buffer are read
from memory, so a reader never forces a write. Syncing flushes the buffer,
fsyncs the segment, and atomically replaces the position file (temp, fsync,
rename); the directory is fsynced when segments were created or removed.

Error handling: file errors become `BackendError` and set `health_error`,
which the node reports on ``/ping`` until a later write or sync succeeds.
A get whose record was read but whose periodic sync failed still returns the
record (the failure is only recorded), since the record would otherwise be
lost.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import os

from shoal.errors import LocalProtocolError
from shoal.queue.backend import Backend, BackendError, MemoryBackend
from shoal.queue.diskqueue import (
    RECORD_HEADER_SIZE,
    Corrupt,
    DiskQueueConfig,
    NeedData,
    QueueMeta,
    Record,
    RecordScanner,
    bad_file_name,
    check_queue_name,
    decode_meta,
    decode_record,
    encode_meta,
    encode_record,
    max_record_size,
    meta_file_name,
    parse_segment_number,
    plan_recovery,
    segment_file_name,
)

__all__ = ["DiskBackendFactory", "DiskQueue", "DiskQueueConfig", "disk_backend_factory"]

#: The write buffer is written out once it holds this many bytes.
WRITE_BUFFER_SIZE = 1 << 20
#: Bytes read per ``pread`` when serving records (at least one largest record).
READ_CHUNK_SIZE = 1 << 20
#: Bytes read per ``pread`` when verifying segments on start.
SCAN_CHUNK_SIZE = 4 << 20
#: Bound on ``.bad.<n>`` serials tried when setting damaged bytes aside.
_MAX_BAD_FILES = 100_000


@dataclasses.dataclass(slots=True)
class _Segment:
    """A segment before the write segment: its final size and unread records."""

    number: int
    size: int
    unread: int


class DiskQueue:
    """One topic's or channel's overflow records in segment files under ``data_path``.

    Opening a queue recovers it (see the module docstring): read `damage`,
    `corrupt_records` and `corrupt_bytes` afterwards to log what was found.

    Args:
        data_path: existing directory holding the queue's files.
        name: the topic name or ``topic:channel``.
        config: limits and fsync policy.

    Raises:
        BackendError: the files could not be read or repaired.
        LocalProtocolError: ``name`` cannot be a file name.
    """

    __slots__ = (
        "_closed",
        "_config",
        "_corrupt_bytes",
        "_corrupt_records",
        "_damage",
        "_depth",
        "_dir",
        "_dir_dirty",
        "_flushed",
        "_full",
        "_health_error",
        "_last_sync_at",
        "_max_record",
        "_name",
        "_ops",
        "_rbuf",
        "_rbuf_pos",
        "_read_pos",
        "_rfd",
        "_rfd_number",
        "_unsynced_data",
        "_wbuf",
        "_wfd",
        "_write_file",
        "_write_pos",
        "_write_unread",
    )

    def __init__(
        self,
        data_path: str | os.PathLike[str],
        name: str,
        *,
        config: DiskQueueConfig | None = None,
    ) -> None:
        check_queue_name(name)
        self._dir = os.fspath(data_path)
        self._name = name
        self._config = config if config is not None else DiskQueueConfig()
        self._max_record = max_record_size(self._config.max_msg_size)
        # Segments before the write segment, oldest (the read segment) first.
        self._full: collections.deque[_Segment] = collections.deque()
        # Reading: offset in the read segment (``_full[0]`` or the write segment).
        self._read_pos = 0
        self._rfd: int | None = None
        self._rfd_number = -1
        self._rbuf = b""
        self._rbuf_pos = 0
        # Writing: ``_flushed`` bytes are in the file, ``_wbuf`` follows them.
        self._write_file = 0
        self._write_pos = 0
        self._write_unread = 0
        self._flushed = 0
        self._wbuf = bytearray()
        self._wfd: int | None = None
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
        try:
            self._recover()
        except OSError as exc:
            self._close_fds()
            self._closed = True
            raise self._fail("recovery", exc) from exc

    # --- observation ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The topic name or ``topic:channel``."""
        return self._name

    @property
    def depth(self) -> int:
        """Records stored and not yet read."""
        return self._depth

    @property
    def closed(self) -> bool:
        """Whether `close` or `delete` was called (or opening failed)."""
        return self._closed

    @property
    def health_error(self) -> str | None:
        """Why the last write or sync failed, until a later one succeeds; None when healthy."""
        return self._health_error

    @property
    def corrupt_records(self) -> int:
        """Damaged regions set aside: each is a bad record plus the rest of its segment."""
        return self._corrupt_records

    @property
    def corrupt_bytes(self) -> int:
        """Bytes moved to ``.bad`` files."""
        return self._corrupt_bytes

    @property
    def damage(self) -> list[str]:
        """One line per problem found, oldest first, for the node's log."""
        return list(self._damage)

    # --- Backend -------------------------------------------------------------------------

    def put(self, record: bytes) -> None:
        """Append one record; with ``sync_every=1`` it is fsynced before this returns.

        Raises:
            BackendError: the record is too large or could not be written; the
                queue is unchanged and `health_error` says why.
        """
        self._check_open()
        if not 1 <= len(record) <= self._max_record:
            raise BackendError(f"a record of {len(record)} bytes is outside 1..{self._max_record}")
        frame = encode_record(record)
        if self._write_pos > 0 and self._write_pos + len(frame) > self._config.max_bytes_per_file:
            try:
                self._roll()
            except OSError as exc:
                raise self._fail("rolling to a new segment", exc) from exc
        start = self._write_pos
        self._wbuf += frame
        self._write_pos += len(frame)
        self._write_unread += 1
        self._depth += 1
        self._ops += 1
        try:
            if len(self._wbuf) >= WRITE_BUFFER_SIZE:
                self._flush()
            if self._ops >= self._config.sync_every:
                self._sync_now()
        except OSError as exc:
            self._unput(start)
            raise self._fail("write", exc) from exc

    def get(self) -> bytes | None:
        """Remove and return the oldest record, or None when empty.

        Damage met while reading is set aside as on start (and reported in
        `damage`); the next intact record is returned instead.

        Raises:
            BackendError: the segment could not be read; the record stays queued.
        """
        self._check_open()
        # Each pass returns a record or sets aside the rest of one segment.
        for _ in range(len(self._full) + 2):
            if self._depth == 0:
                return None
            try:
                result = self._next_record()
                if isinstance(result, Corrupt):
                    self._set_aside_read_segment(result.reason)
                    continue
            except OSError as exc:
                raise self._fail("read", exc) from exc
            self._read_pos += RECORD_HEADER_SIZE + len(result.payload)
            if self._full:
                self._full[0].unread -= 1
            else:
                self._write_unread -= 1
            self._depth -= 1
            self._ops += 1
            self._advance()
            if self._ops >= self._config.sync_every:
                try:
                    self._sync_now()
                except OSError as exc:
                    self._fail("sync", exc)
            return result.payload
        raise LocalProtocolError(f"disk queue {self._name}: depth {self._depth} but no records")

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
            self._sync_now()
        except OSError as exc:
            raise self._fail("empty", exc) from exc

    def sync(self) -> None:
        """Write out buffered records, fsync them and save the read position.

        Raises:
            BackendError: a write or fsync failed; records stay queued in memory
                and the next sync tries again.
        """
        self._check_open()
        try:
            self._sync_now()
        except OSError as exc:
            raise self._fail("sync", exc) from exc

    def maybe_sync(self, now: float) -> bool:
        """Sync if anything happened since the last sync and ``sync_timeout`` has passed.

        The node calls this every ``sync_timeout`` seconds (nsqd's sync ticker);
        calling it more often is harmless, as syncs made here are at least
        ``sync_timeout`` apart. Syncs forced by ``sync_every`` do not move that
        clock, which at worst costs one extra sync.

        Args:
            now: the caller's clock, in seconds.

        Returns:
            Whether a sync happened.

        Raises:
            BackendError: as `sync`.
        """
        if self._closed or self._ops == 0:
            return False
        if self._last_sync_at is not None and now - self._last_sync_at < self._config.sync_timeout:
            return False
        self._last_sync_at = now
        self.sync()
        return True

    def close(self) -> None:
        """Sync and release the files, keeping the records for the next start.

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

    def _next_record(self) -> Record | Corrupt:
        if self._full:
            return self._read_from_file(self._full[0].number, self._full[0].size)
        if self._read_pos < self._flushed:
            return self._read_from_file(self._write_file, self._flushed)
        result = decode_record(self._wbuf, self._read_pos - self._flushed, self._max_record)
        if isinstance(result, NeedData):
            return Corrupt("write buffer ends inside a record", self._read_pos)
        return result

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

    def _advance(self) -> None:
        """Delete fully read segments and move the reader to the next one."""
        while self._full and self._read_pos >= self._full[0].size:
            segment = self._full.popleft()
            if self._rfd_number == segment.number:
                self._close_reader()
            self._read_pos = 0
            self._rbuf = b""
            self._rbuf_pos = 0
            try:
                self._unlink_if_exists(self._path(segment_file_name(self._name, segment.number)))
            except OSError as exc:
                # Harmless: the next start finds it behind the read position.
                self._damage.append(f"could not delete read segment {segment.number}: {exc}")
            self._dir_dirty = True

    def _set_aside_read_segment(self, reason: str) -> None:
        """Cut the read segment at the read position and skip what followed."""
        if not self._full:
            # The damage is in the write segment: finish it so it can be cut.
            self._roll()
        segment = self._full[0]
        self._close_reader()
        self._rbuf = b""
        self._set_aside(segment.number, self._read_pos, reason)
        self._depth -= segment.unread
        segment.unread = 0
        segment.size = self._read_pos
        self._advance()

    def _close_reader(self) -> None:
        if self._rfd is not None:
            os.close(self._rfd)
        self._rfd = None
        self._rfd_number = -1

    # --- writing -------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write the buffer at the end of the data; on failure nothing moves."""
        if not self._wbuf:
            return
        if self._wfd is None:
            path = self._path(segment_file_name(self._name, self._write_file))
            self._wfd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            self._dir_dirty = True
        written = 0
        with memoryview(self._wbuf) as view:
            total = len(view)
            while written < total:  # each pass writes at least one byte or raises
                n = os.pwrite(self._wfd, view[written:], self._flushed + written)
                if n <= 0:
                    raise OSError(errno.EIO, "write made no progress")
                written += n
        self._flushed += written
        self._wbuf.clear()
        self._unsynced_data = True
        self._health_error = None

    def _unput(self, start: int) -> None:
        """Take back the record put at ``start`` after its write or sync failed."""
        if start >= self._flushed:
            del self._wbuf[start - self._flushed :]
        else:
            # It reached the file (the write buffer is empty then): cut it off.
            self._flushed = start
            if self._rfd_number == self._write_file:
                self._rbuf = b""
        if self._wfd is not None:
            # The next write lands at the same offset and covers any junk; a
            # restart before that sees a torn tail and sets it aside. Reopening
            # lets a replaced or repaired file take effect.
            with contextlib.suppress(OSError):
                os.ftruncate(self._wfd, self._flushed)
            with contextlib.suppress(OSError):
                os.close(self._wfd)
            self._wfd = None
        self._write_pos = start
        self._write_unread -= 1
        self._depth -= 1
        self._ops -= 1

    def _roll(self) -> None:
        """Finish the write segment and start the next one (created on first write)."""
        self._flush()
        if self._wfd is not None:
            if self._unsynced_data:
                os.fsync(self._wfd)
                self._unsynced_data = False
            os.close(self._wfd)
            self._wfd = None
        self._full.append(_Segment(self._write_file, self._write_pos, self._write_unread))
        self._write_file += 1
        self._write_pos = self._flushed = self._write_unread = 0
        self._advance()

    def _sync_now(self) -> None:
        self._flush()
        if self._wfd is not None and self._unsynced_data:
            os.fsync(self._wfd)
        self._unsynced_data = False
        self._write_meta()
        if self._dir_dirty:
            self._fsync_dir()
        self._ops = 0
        self._health_error = None

    def _write_meta(self) -> None:
        read_file = self._full[0].number if self._full else self._write_file
        data = encode_meta(
            QueueMeta(
                depth=self._depth,
                read_file=read_file,
                read_pos=self._read_pos,
                write_file=self._write_file,
                write_pos=self._write_pos,
            )
        )
        path = self._path(meta_file_name(self._name))
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.EIO, "short write of the position file")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def _fsync_dir(self) -> None:
        fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._dir_dirty = False

    # --- recovery ------------------------------------------------------------------------

    def _recover(self) -> None:
        sizes: dict[int, int] = {}
        for entry in os.scandir(self._dir):
            number = parse_segment_number(self._name, entry.name)
            if number is not None and entry.is_file():
                sizes[number] = entry.stat().st_size
        meta: QueueMeta | None = None
        try:
            with open(self._path(meta_file_name(self._name)), "rb") as file:
                decoded = decode_meta(file.read(4096))
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
        plan = plan_recovery(meta, sizes)
        self._damage.extend(plan.notes)
        for number in plan.stale:
            self._unlink_if_exists(self._path(segment_file_name(self._name, number)))
            self._dir_dirty = True
        segments: list[_Segment] = []
        for index, number in enumerate(plan.scan):
            start = plan.read_pos if index == 0 else 0
            records, end = self._verify_segment(number, start, sizes[number])
            segments.append(_Segment(number, end, records))
        self._read_pos = plan.read_pos
        if segments:
            last = segments.pop()
            self._write_file = last.number
            self._write_pos = self._flushed = last.size
            self._write_unread = last.unread
            if not segments:
                # The read segment is the write segment: keep the read position.
                self._read_pos = min(plan.read_pos, last.size)
        else:
            self._write_file = plan.write_file
            self._read_pos = 0
        self._full.extend(segments)
        self._depth = self._write_unread + sum(segment.unread for segment in segments)
        if meta is not None and self._depth < meta.depth:
            self._damage.append(
                f"position file counted {meta.depth} records, {self._depth} found intact"
            )
        self._advance()
        self._sync_now()

    def _verify_segment(self, number: int, start: int, size: int) -> tuple[int, int]:
        """Scan a segment from ``start``; cut it at the first damage.

        Returns:
            Intact records after ``start`` and the segment's size after any cut.
        """
        scanner = RecordScanner(start=start, max_record_size=self._max_record)
        corrupt: Corrupt | None = None
        fd = os.open(self._path(segment_file_name(self._name, number)), os.O_RDONLY)
        try:
            pos = start
            while pos < size and corrupt is None:  # pos grows every pass
                chunk = os.pread(fd, min(SCAN_CHUNK_SIZE, size - pos), pos)
                if not chunk:
                    break
                pos += len(chunk)
                corrupt = scanner.feed(chunk)
        finally:
            os.close(fd)
        if corrupt is None:
            corrupt = scanner.finish()
        if corrupt is not None:
            self._set_aside(number, scanner.position, corrupt.reason)
        return scanner.records, scanner.position

    def _set_aside(self, number: int, offset: int, reason: str) -> None:
        """Copy segment bytes from ``offset`` on to a new ``.bad`` file, then cut them off."""
        segment = segment_file_name(self._name, number)
        path = self._path(segment)
        bad_fd, bad = self._create_bad_file(segment)
        moved = 0
        try:
            src = os.open(path, os.O_RDWR)
            try:
                while True:  # ends at end of file; every pass moves bytes
                    chunk = os.pread(src, SCAN_CHUNK_SIZE, offset + moved)
                    if not chunk:
                        break
                    os.write(bad_fd, chunk)
                    moved += len(chunk)
                os.fsync(bad_fd)
                os.ftruncate(src, offset)
                os.fsync(src)
            finally:
                os.close(src)
        finally:
            os.close(bad_fd)
        self._dir_dirty = True
        self._corrupt_records += 1
        self._corrupt_bytes += moved
        self._damage.append(f"{segment}: {reason} at byte {offset}; {moved} bytes moved to {bad}")

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
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None

    def _reset_to(self, write_file: int) -> None:
        """Forget every record; the next segment number is ``write_file``."""
        self._full.clear()
        self._read_pos = self._write_pos = self._flushed = 0
        self._rbuf = b""
        self._rbuf_pos = 0
        self._wbuf.clear()
        self._write_unread = self._depth = 0
        self._write_file = write_file
        self._unsynced_data = False

    def _remove_files(self, *, bad_too: bool) -> None:
        prefix = self._name + ".diskqueue."
        for entry in os.scandir(self._dir):
            is_segment = parse_segment_number(self._name, entry.name) is not None
            is_bad = entry.name.startswith(prefix) and ".dat.bad." in entry.name
            if is_segment or (bad_too and is_bad):
                self._unlink_if_exists(entry.path)
                self._dir_dirty = True

    @staticmethod
    def _unlink_if_exists(path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


class DiskBackendFactory:
    """A `BackendFactory` giving ephemeral queues memory and the others a `DiskQueue`.

    It remembers the disk queues it opened so the node can sync them on its
    ``sync_timeout`` tick and report their health.

    Args:
        data_path: existing directory for every queue's files.
        config: limits and fsync policy shared by every queue.
    """

    __slots__ = ("_config", "_data_path", "_queues")

    def __init__(
        self, data_path: str | os.PathLike[str], *, config: DiskQueueConfig | None = None
    ) -> None:
        self._data_path = os.fspath(data_path)
        self._config = config if config is not None else DiskQueueConfig()
        self._queues: list[DiskQueue] = []

    def __call__(self, name: str, *, ephemeral: bool) -> Backend:
        """Open the backend for ``name``.

        Raises:
            BackendError: the queue's files could not be recovered.
            LocalProtocolError: a queue of that name is already open.
        """
        if ephemeral:
            return MemoryBackend()
        if any(queue.name == name for queue in self.open_queues()):
            raise LocalProtocolError(f"disk queue {name} is already open")
        queue = DiskQueue(self._data_path, name, config=self._config)
        self._queues.append(queue)
        return queue

    def open_queues(self) -> list[DiskQueue]:
        """The disk queues opened here and not yet closed or deleted."""
        self._queues = [queue for queue in self._queues if not queue.closed]
        return list(self._queues)

    def maybe_sync(self, now: float) -> None:
        """Call `DiskQueue.maybe_sync` on every open queue; failures land in `health_error`."""
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


def disk_backend_factory(
    data_path: str | os.PathLike[str], *, config: DiskQueueConfig | None = None
) -> DiskBackendFactory:
    """Return the `BackendFactory` of a node with a data path (see `DiskBackendFactory`)."""
    return DiskBackendFactory(data_path, config=config)
