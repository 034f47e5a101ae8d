"""Disk-queue records, file names and recovery rules, without any file I/O.

The disk queue (``shoal.cluster.disk_queue``) stores the overflow of a topic
or channel in numbered segment files, as nsqd's go-diskqueue does
(docs/nsq.md §4.5). This module holds everything about those files that can be
decided from bytes alone, so it is tested without touching a disk.

Rules:
1. A record is ``[uint32 BE length][uint32 BE crc32 of payload][payload]``.
   A length outside ``1..max_record_size`` or a checksum mismatch is
   corruption; bytes that end inside a record at the end of a segment are a
   torn write. nsqd stores no checksum and so cannot tell a torn tail from a
   short record; the checksum is what lets a restart keep every intact
   record and set the rest aside.
2. Decoding never trusts a length before checking it against the limit, so
   a garbled length can neither make a reader buffer gigabytes nor skip over
   good records.
3. The position file (``<name>.diskqueue.meta.dat``) only says where reading
   resumes. Depth and the write position are always recomputed by scanning
   the segments, so records written after the last position sync are served
   and a damaged or missing position file costs redelivery, never loss.

Theory of operation: a queue named ``n`` owns ``n.diskqueue.000000.dat``,
``n.diskqueue.000001.dat``, ... Writes append to the highest segment and roll
to the next number when a record would not fit; reads consume from the
lowest and delete a segment once it is fully read. On start the shell lists
the segments, reads the position file (`decode_meta`), asks `plan_recovery`
which segments are stale and where to start, and feeds each remaining
segment through a `RecordScanner`, which counts the intact records and says
where the first damage starts.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import struct
import zlib
from typing import TYPE_CHECKING

from shoal.errors import ConfigError, LocalProtocolError
from shoal.fields import setting
from shoal.queue.message import HEADER_SIZE

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "META_SUFFIX",
    "NEED_DATA",
    "RECORD_HEADER",
    "RECORD_HEADER_SIZE",
    "Corrupt",
    "DiskQueueConfig",
    "NeedData",
    "QueueMeta",
    "Record",
    "RecordScanner",
    "RecoveryPlan",
    "bad_file_name",
    "check_queue_name",
    "decode_meta",
    "decode_record",
    "encode_meta",
    "encode_record",
    "max_record_size",
    "meta_file_name",
    "parse_segment_number",
    "plan_recovery",
    "segment_file_name",
]

#: On disk: payload length, crc32 of the payload. Changing it breaks every
#: existing queue directory.
RECORD_HEADER = struct.Struct(">II")
RECORD_HEADER_SIZE = RECORD_HEADER.size
#: The length field is a uint32; no payload may reach this.
_MAX_LENGTH_FIELD = 0xFFFFFFFF

META_SUFFIX = ".diskqueue.meta.dat"
_SEGMENT_INFIX = ".diskqueue."
_SEGMENT_DIGITS = re.compile(r"[0-9]{6,}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DiskQueueConfig:
    """Limits and fsync policy of the disk queues, with nsqd's names and defaults.

    Attributes:
        max_bytes_per_file: a segment is rolled when the next record would take
            it past this size. Larger segments mean fewer files and fsyncs on
            roll; smaller ones free disk sooner, since a segment is deleted
            only once fully read. A record larger than this gets a segment of
            its own.
        sync_every: fsync data and position after this many puts plus gets.
            1 makes every put durable before it returns, at two fsyncs per
            put; larger values trade the records put since the last sync (on
            a power loss, or the unwritten part on a SIGKILL) for throughput.
        sync_timeout: the node also syncs a queue with unsynced activity at
            least this often (`DiskQueue.maybe_sync`), bounding how old the
            newest unsynced record can be.
        max_msg_size: largest message body; a record holds the 26-byte header
            plus the body, and anything longer on disk is taken as corruption.
            Lowering it below the size of stored records makes them unreadable.
    """

    max_bytes_per_file: int = setting(
        100 * 1024 * 1024,
        help="Size at which a disk queue starts a new segment file.",
        minimum=1,
    )
    sync_every: int = setting(
        2500,
        help="Fsync a disk queue after this many writes and reads; 1 = durable mode.",
        minimum=1,
    )
    sync_timeout: float = setting(
        2.0, help="Fsync disk queues with unsynced activity at least this often."
    )
    max_msg_size: int = 1_048_576

    def __post_init__(self) -> None:
        if self.max_bytes_per_file < 1:
            raise ConfigError("max-bytes-per-file must be positive")
        if self.sync_every < 1:
            raise ConfigError("sync-every must be at least 1")
        if not self.sync_timeout > 0:
            raise ConfigError("sync-timeout must be positive")
        if not 1 <= self.max_msg_size <= _MAX_LENGTH_FIELD - HEADER_SIZE:
            raise ConfigError(f"max-msg-size must be 1..{_MAX_LENGTH_FIELD - HEADER_SIZE}")


def max_record_size(max_msg_size: int) -> int:
    """Return the largest valid record payload: a message header plus the largest body."""
    return max_msg_size + HEADER_SIZE


# --- records -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """One intact record.

    Attributes:
        payload: the stored bytes (an encoded message).
        end: buffer offset just past the record.
    """

    payload: bytes
    end: int


@dataclasses.dataclass(frozen=True, slots=True)
class Corrupt:
    """Bytes that are not a valid record.

    Attributes:
        reason: one line saying what is wrong, for the node's log.
        offset: where the bad record starts (a buffer offset for
            `decode_record`, a file position for `RecordScanner`).
    """

    reason: str
    offset: int


class NeedData:
    """The buffer ends inside a record; give it more bytes. Use the `NEED_DATA` singleton."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()


def encode_record(payload: bytes) -> bytes:
    """Return the on-disk form of ``payload``: length, checksum, payload.

    Raises:
        LocalProtocolError: the payload is empty or too long for the length field.
    """
    size = len(payload)
    if not 1 <= size <= _MAX_LENGTH_FIELD:
        raise LocalProtocolError(f"a record payload must be 1..{_MAX_LENGTH_FIELD} bytes")
    return RECORD_HEADER.pack(size, zlib.crc32(payload)) + payload


def decode_record(
    buf: bytes | bytearray, offset: int, max_record_size: int
) -> Record | NeedData | Corrupt:
    """Decode the record starting at ``buf[offset]``.

    Args:
        buf: bytes read from a segment.
        offset: where the record starts.
        max_record_size: largest valid payload (`max_record_size`).

    Returns:
        The `Record`; `NEED_DATA` if ``buf`` ends inside it (at the end of a
        segment that means a torn write); or `Corrupt` with ``offset`` as given.
    """
    available = len(buf) - offset
    if available < RECORD_HEADER_SIZE:
        return NEED_DATA
    length, crc = RECORD_HEADER.unpack_from(buf, offset)
    if not 1 <= length <= max_record_size:
        return Corrupt(f"record length {length} is outside 1..{max_record_size}", offset)
    end = offset + RECORD_HEADER_SIZE + length
    if end > len(buf):
        return NEED_DATA
    payload = bytes(buf[offset + RECORD_HEADER_SIZE : end])
    if zlib.crc32(payload) != crc:
        return Corrupt(f"checksum mismatch in a record of {length} bytes", offset)
    return Record(payload, end)


class RecordScanner:
    """Counts the intact records of one segment, fed in chunks of any size.

    Used on start to verify everything from the read position on. It keeps at
    most one partial record between chunks and never copies payloads, so a
    gigabyte scans at checksum speed.

    Attributes:
        position: file position just past the last intact record; where a
            damaged segment is cut.
        records: intact records seen so far.
    """

    __slots__ = ("_corrupt", "_max_record_size", "_pending", "position", "records")

    def __init__(self, *, start: int, max_record_size: int) -> None:
        self.position = start
        self.records = 0
        self._max_record_size = max_record_size
        self._pending = bytearray()
        self._corrupt: Corrupt | None = None

    def feed(self, data: bytes) -> Corrupt | None:
        """Scan the next bytes of the segment.

        Returns:
            The first damage found (at a file position), now or by an earlier
            call; None while every complete record is intact. After damage the
            scanner ignores further input.
        """
        if self._corrupt is not None:
            return self._corrupt
        # Scan the chunk in place unless a partial record is waiting for it.
        buf: bytes | bytearray = data
        if self._pending:
            self._pending += data
            buf = self._pending
        limit = self._max_record_size
        unpack = RECORD_HEADER.unpack_from
        crc32 = zlib.crc32
        last_header = len(buf) - RECORD_HEADER_SIZE
        size = len(buf)
        offset = 0
        count = 0
        with memoryview(buf) as view:
            # Each pass consumes one whole record or leaves, so the loop ends.
            while offset <= last_header:
                length, crc = unpack(buf, offset)
                if not 1 <= length <= limit:
                    self._corrupt = Corrupt(
                        f"record length {length} is outside 1..{limit}", self.position + offset
                    )
                    break
                end = offset + RECORD_HEADER_SIZE + length
                if end > size:
                    break
                if crc32(view[offset + RECORD_HEADER_SIZE : end]) != crc:
                    self._corrupt = Corrupt(
                        f"checksum mismatch in a record of {length} bytes", self.position + offset
                    )
                    break
                offset = end
                count += 1
        if buf is self._pending:
            del self._pending[:offset]
        elif offset < size:
            self._pending += buf[offset:]
        self.position += offset
        self.records += count
        return self._corrupt

    def finish(self) -> Corrupt | None:
        """Declare the end of the segment.

        Returns:
            The damage found earlier, or a torn record if the segment ended
            inside one, or None when the whole segment is intact.
        """
        if self._corrupt is None and self._pending:
            left = len(self._pending)
            if left < RECORD_HEADER_SIZE:
                reason = f"torn record: segment ends {left} bytes into a record header"
            else:
                length = RECORD_HEADER.unpack_from(self._pending)[0]
                reason = (
                    f"torn record: segment ends {left - RECORD_HEADER_SIZE} bytes"
                    f" into a record of {length} bytes"
                )
            self._corrupt = Corrupt(reason, self.position)
        return self._corrupt


# --- file names ----------------------------------------------------------------------------


def check_queue_name(name: str) -> None:
    """Refuse a queue name that cannot be a file name in the data directory.

    Topic and channel names are validated long before (`shoal.queue.names`);
    this guards the file system against a caller that skipped that. The
    ``topic:channel`` colon is kept (Linux file names allow it).

    Raises:
        LocalProtocolError: the name is empty, ``.``/``..``, or holds ``/`` or NUL.
    """
    if not name or name in {".", ".."} or "/" in name or "\0" in name:
        raise LocalProtocolError(f"{name!r} cannot name a disk queue")


def segment_file_name(name: str, number: int) -> str:
    """Return the file name of segment ``number`` of queue ``name`` (nsqd's layout)."""
    return f"{name}{_SEGMENT_INFIX}{number:06d}.dat"


def meta_file_name(name: str) -> str:
    """Return the file name of the position file of queue ``name``."""
    return f"{name}{META_SUFFIX}"


def bad_file_name(segment: str, serial: int) -> str:
    """Return where damaged bytes cut from ``segment`` are kept (``serial`` avoids overwrites)."""
    return f"{segment}.bad.{serial}"


def parse_segment_number(name: str, file_name: str) -> int | None:
    """Return the segment number if ``file_name`` is a segment of queue ``name``, else None."""
    prefix = name + _SEGMENT_INFIX
    if not (file_name.startswith(prefix) and file_name.endswith(".dat")):
        return None
    digits = file_name[len(prefix) : -len(".dat")]
    if _SEGMENT_DIGITS.fullmatch(digits) is None:
        return None
    return int(digits)


# --- the position file ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class QueueMeta:
    """What the position file records at a sync.

    Attributes:
        depth: records stored at the sync (informative: recovery recounts).
        read_file: segment being read.
        read_pos: offset of the next unread record in it.
        write_file: segment being written.
        write_pos: its size (informative: recovery rescans).
    """

    depth: int
    read_file: int
    read_pos: int
    write_file: int
    write_pos: int


def encode_meta(meta: QueueMeta) -> bytes:
    """Return the position file: nsqd's three text lines plus a crc32 line."""
    body = (
        f"{meta.depth}\n{meta.read_file},{meta.read_pos}\n{meta.write_file},{meta.write_pos}\n"
    ).encode("ascii")
    return body + b"%08x\n" % zlib.crc32(body)


def decode_meta(data: bytes) -> QueueMeta | Corrupt:
    """Parse `encode_meta` output; anything else is `Corrupt` (offset 0)."""
    lines = data.split(b"\n")
    if len(lines) != 5 or lines[4] != b"":
        return Corrupt(f"position file has {len(lines) - 1} lines, expected 4", 0)
    body = b"\n".join(lines[:3]) + b"\n"
    if lines[3] != b"%08x" % zlib.crc32(body):
        return Corrupt("position file checksum mismatch", 0)
    try:
        depth = int(lines[0])
        read_file, read_pos = (int(field) for field in lines[1].split(b","))
        write_file, write_pos = (int(field) for field in lines[2].split(b","))
    except ValueError:
        return Corrupt("position file fields are not integers", 0)
    if min(depth, read_file, read_pos, write_file, write_pos) < 0 or read_file > write_file:
        return Corrupt("position file holds impossible positions", 0)
    return QueueMeta(
        depth=depth,
        read_file=read_file,
        read_pos=read_pos,
        write_file=write_file,
        write_pos=write_pos,
    )


# --- recovery ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryPlan:
    """Where a queue resumes after a start, before its segments are scanned.

    Attributes:
        stale: segments wholly before the read position: already consumed,
            their deletion was cut short; delete them.
        scan: segments to verify and serve, in order.
        read_pos: where to start scanning ``scan[0]``; the others start at 0.
        write_file: the segment to append to (``scan[-1]`` if any).
        notes: damage found by looking at names and sizes alone, one line each.
    """

    stale: tuple[int, ...]
    scan: tuple[int, ...]
    read_pos: int
    write_file: int
    notes: tuple[str, ...]


def plan_recovery(meta: QueueMeta | None, segments: Mapping[int, int]) -> RecoveryPlan:
    """Decide which segments to serve, given the position file and the files found.

    Args:
        meta: the position file, or None when it is missing or corrupt (then
            every segment is served from its start: redelivery, not loss).
        segments: segment number to file size, for every segment on disk.

    Returns:
        The plan. A missing read segment is normal (it was fully read and
        deleted before the position was synced); gaps after it are damage.
    """
    numbers = sorted(segments)
    notes: list[str] = []
    if meta is None:
        stale: list[int] = []
        scan = numbers
        read_pos = 0
    else:
        stale = [n for n in numbers if n < meta.read_file]
        scan = [n for n in numbers if n >= meta.read_file]
        read_pos = 0
        if scan and scan[0] == meta.read_file:
            read_pos = meta.read_pos
            size = segments[meta.read_file]
            if read_pos > size:
                notes.append(
                    f"segment {meta.read_file} is {size} bytes, shorter than the read"
                    f" position {read_pos}; nothing in it is served"
                )
                read_pos = size
        elif scan and scan[0] > meta.read_file + 1:
            notes.append(f"segments {meta.read_file + 1}..{scan[0] - 1} are missing")
    for previous, current in itertools.pairwise(scan):
        if current > previous + 1:
            notes.append(f"segments {previous + 1}..{current - 1} are missing")
    if scan:
        write_file = scan[-1]
    elif meta is not None:
        # Nothing left to read: keep numbering upwards so no old name is reused.
        write_file = max(meta.write_file, meta.read_file, *(n + 1 for n in stale))
    else:
        write_file = 0
    return RecoveryPlan(
        stale=tuple(stale),
        scan=tuple(scan),
        read_pos=read_pos,
        write_file=write_file,
        notes=tuple(notes),
    )
