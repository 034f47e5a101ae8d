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
import math
import re
import struct
import zlib
from typing import TYPE_CHECKING

import msgspec

from shoal.errors import ConfigError, LocalProtocolError
from shoal.fields import setting
from shoal.queue.message import HEADER_SIZE

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "META_SUFFIX",
    "NEED_DATA",
    "READ_MARK",
    "RECORD_HEADER",
    "RECORD_HEADER_SIZE",
    "TICKET_SHIFT",
    "Corrupt",
    "DiskQueueConfig",
    "Hole",
    "NeedData",
    "QueueMeta",
    "Record",
    "RecordScanner",
    "RecoveryPlan",
    "bad_file_name",
    "check_queue_name",
    "decode_acks",
    "decode_deferred",
    "decode_meta",
    "decode_record",
    "decode_records",
    "encode_acks",
    "encode_deferred",
    "encode_meta",
    "encode_record",
    "make_ticket",
    "max_record_size",
    "meta_file_name",
    "parse_segment_number",
    "plan_recovery",
    "segment_file_name",
    "ticket_position",
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


class Record(msgspec.Struct, frozen=True):
    """One intact record.

    Attributes:
        payload: the stored bytes (an encoded message).
        end: buffer offset just past the record.
    """

    payload: bytes
    end: int


class Corrupt(msgspec.Struct, frozen=True):
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


def decode_records(
    buf: bytes, offset: int, stop: int, max_record_size: int, limit: int
) -> tuple[list[bytes], int]:
    """Decode up to ``limit`` consecutive intact records from ``buf[offset:stop]``.

    The reader's fast path: one call per read-ahead buffer instead of one
    `decode_record` (and its result object) per record. It stops, without
    judging, at the first record that does not verify or does not end by
    ``stop``; the caller hands that position to `decode_record`, which says
    whether it is damage or a record cut by the end of the buffer.

    Args:
        buf: bytes read from a segment.
        offset: where the first record starts.
        stop: buffer offset no record may reach past (the end of the data,
            or where a known hole starts); clamped to ``len(buf)``.
        max_record_size: largest valid payload (`max_record_size`).
        limit: most records to return.

    Returns:
        The payloads, oldest first, and the offset just past the last one
        (``offset`` when none was decoded).
    """
    stop = min(stop, len(buf))
    unpack = RECORD_HEADER.unpack_from
    crc32 = zlib.crc32
    payloads: list[bytes] = []
    append = payloads.append
    # Bounded: every pass consumes a record or ends, and at most ``limit`` pass.
    for _ in range(limit):
        start = offset + RECORD_HEADER_SIZE
        if start > stop:
            break
        length, crc = unpack(buf, offset)
        end = start + length
        if not 1 <= length <= max_record_size or end > stop:
            break
        payload = buf[start:end]
        if crc32(payload) != crc:
            break
        append(payload)
        offset = end
    return payloads, offset


class Hole(msgspec.Struct, frozen=True):
    """Bytes of a segment that hold no intact record, between two that do (or the end).

    Attributes:
        start: file position where the damage starts.
        end: file position of the next intact record, or the end of the data.
        reason: what was wrong at ``start``, one line.
    """

    start: int
    end: int
    reason: str


class RecordScanner:
    """Counts the intact records of one segment, fed in chunks of any size.

    Used on start to verify everything from the read position on. A record
    that does not verify starts a `Hole`: the scanner then looks at every
    following byte offset for a header whose length is in range and whose
    checksum matches the payload after it, and resumes counting there, so a
    flipped bit costs the records it touches and nothing after them. (A
    random offset passes both checks with odds below 2**-32 per offset.)
    It keeps at most one partial record between chunks and never copies
    payloads, so a gigabyte scans at checksum speed.

    Attributes:
        position: file position just past the last intact record.
        records: intact records seen so far.
        holes: the damaged stretches found so far, in file order.
    """

    __slots__ = (
        "_hole",
        "_max_record_size",
        "_pending",
        "_pending_at",
        "holes",
        "position",
        "records",
    )

    def __init__(self, *, start: int, max_record_size: int) -> None:
        self.position = start
        self.records = 0
        self.holes: list[Hole] = []
        self._max_record_size = max_record_size
        self._pending = bytearray()
        self._pending_at = start  # file position of ``_pending[0]``
        self._hole: tuple[int, str] | None = None  # (start, reason) while searching

    def feed(self, data: bytes) -> None:
        """Scan the next bytes of the segment."""
        self._scan(data, eof=False)

    def _scan(self, data: bytes, *, eof: bool) -> None:
        buf: bytes | bytearray = data
        base = self._pending_at
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
        hole = self._hole
        with memoryview(buf) as view:
            # Each pass consumes one whole record, or one byte of a hole, or leaves.
            while offset <= last_header:
                length, crc = unpack(buf, offset)
                if not 1 <= length <= limit:
                    if hole is None:
                        hole = (base + offset, f"record length {length} is outside 1..{limit}")
                    offset += 1
                    continue
                end = offset + RECORD_HEADER_SIZE + length
                if end > size:
                    if not eof:
                        break
                    # At the end of the data: a torn write, or a damaged length.
                    if hole is None:
                        hole = (
                            base + offset,
                            f"torn record: segment ends {size - offset - RECORD_HEADER_SIZE}"
                            f" bytes into a record of {length} bytes",
                        )
                    offset += 1
                    continue
                if crc32(view[offset + RECORD_HEADER_SIZE : end]) != crc:
                    if hole is None:
                        hole = (base + offset, f"checksum mismatch in a record of {length} bytes")
                    offset += 1
                    continue
                if hole is not None:
                    self.holes.append(Hole(hole[0], base + offset, hole[1]))
                    hole = None
                offset = end
                count += 1
                self.position = base + end
        self._hole = hole
        if buf is self._pending:
            del self._pending[:offset]
        elif offset < size:
            self._pending += buf[offset:]
        self._pending_at = base + offset
        self.records += count

    def finish(self) -> list[Hole]:
        """Declare the end of the segment.

        Returns:
            Every hole found, the last one reaching the end of the data when
            the segment ends in damage or inside a record (a torn write).
        """
        end = self._pending_at + len(self._pending)
        if self._pending:
            # Records may still follow a damaged length that points past the end.
            self._scan(b"", eof=True)
        if self._pending and self._hole is None:
            left = len(self._pending)
            self._hole = (
                self._pending_at,
                f"torn record: segment ends {left} bytes into a record header",
            )
        if self._hole is not None:
            self.holes.append(Hole(self._hole[0], end, self._hole[1]))
            self._hole = None
        self._pending.clear()
        self._pending_at = end
        return list(self.holes)


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


class QueueMeta(msgspec.Struct, frozen=True, kw_only=True):
    """What the position file records at a sync.

    Attributes:
        depth: records stored at the sync (informative: recovery recounts).
        read_file: segment being read.
        read_pos: offset of the next unread record in it.
        write_file: segment being written.
        write_pos: its size (informative: recovery rescans).
        ack_generation: with acknowledgements, the first ack journal that
            is not already folded into ``outstanding`` (see `DiskQueue`).
        outstanding: with acknowledgements, the tickets (`make_ticket`) of
            records read before the sync and not yet acknowledged.
    """

    depth: int
    read_file: int
    read_pos: int
    write_file: int
    write_pos: int
    ack_generation: int | None = None
    outstanding: tuple[int, ...] = ()


def encode_meta(meta: QueueMeta) -> bytes:
    """Return the position file: nsqd's three text lines, the acks line if any, a crc32 line."""
    body = (
        f"{meta.depth}\n{meta.read_file},{meta.read_pos}\n{meta.write_file},{meta.write_pos}\n"
    ).encode("ascii")
    if meta.ack_generation is not None:
        tickets = ",".join(f"{ticket:x}" for ticket in meta.outstanding)
        body += f"{meta.ack_generation};{tickets}\n".encode("ascii")
    return body + b"%08x\n" % zlib.crc32(body)


def decode_meta(data: bytes) -> QueueMeta | Corrupt:
    """Parse `encode_meta` output; anything else is `Corrupt` (offset 0)."""
    lines = data.split(b"\n")
    if len(lines) not in (5, 6) or lines[-1] != b"":
        return Corrupt(f"position file has {len(lines) - 1} lines, expected 4 or 5", 0)
    body = b"\n".join(lines[:-2]) + b"\n"
    if lines[-2] != b"%08x" % zlib.crc32(body):
        return Corrupt("position file checksum mismatch", 0)
    generation: int | None = None
    outstanding: tuple[int, ...] = ()
    try:
        depth = int(lines[0])
        read_file, read_pos = (int(field) for field in lines[1].split(b","))
        write_file, write_pos = (int(field) for field in lines[2].split(b","))
        if len(lines) == 6:
            gen_text, _, tickets = lines[3].partition(b";")
            generation = int(gen_text)
            outstanding = tuple(int(t, 16) for t in tickets.split(b",")) if tickets else ()
    except ValueError:
        return Corrupt("position file fields are not integers", 0)
    if min(depth, read_file, read_pos, write_file, write_pos, generation or 0, *outstanding) < 0:
        return Corrupt("position file holds impossible positions", 0)
    return QueueMeta(
        depth=depth,
        read_file=read_file,
        read_pos=read_pos,
        write_file=write_file,
        write_pos=write_pos,
        ack_generation=generation,
        outstanding=outstanding,
    )


# --- acknowledgements and deferred records ---------------------------------------------------

#: A ticket is ``segment << TICKET_SHIFT | offset``: where a record starts.
TICKET_SHIFT = 40
#: Set on a journal entry that marks how far records were handed out (not an ack).
READ_MARK = 1 << 63
_TICKET = struct.Struct(">Q")
_DUE = struct.Struct(">d")


def make_ticket(segment: int, offset: int) -> int:
    """Return the ticket naming the record at ``offset`` of ``segment``."""
    return segment << TICKET_SHIFT | offset


def ticket_position(ticket: int) -> tuple[int, int]:
    """Return ``(segment, offset)`` of a ticket."""
    return ticket >> TICKET_SHIFT, ticket & ((1 << TICKET_SHIFT) - 1)


def encode_acks(tickets: Sequence[int]) -> bytes:
    """Return one ack-journal record acknowledging ``tickets`` (non-empty)."""
    return encode_record(b"".join(map(_TICKET.pack, tickets)))


def decode_acks(payload: bytes) -> list[int] | None:
    """Return the tickets of an ack-journal record payload, or None if it is malformed."""
    if len(payload) % _TICKET.size:
        return None
    return [ticket for (ticket,) in _TICKET.iter_unpack(payload)]


def encode_deferred(due: float, record: bytes) -> bytes:
    """Return a deferred-queue record: the wall-clock due time, then the message record."""
    return _DUE.pack(due) + record


def decode_deferred(payload: bytes) -> tuple[float, bytes] | None:
    """Return ``(due, message record)`` of a deferred-queue record, or None if malformed."""
    if len(payload) <= _DUE.size:
        return None
    (due,) = _DUE.unpack_from(payload)
    if not math.isfinite(due):
        return None
    return due, payload[_DUE.size :]


# --- recovery ------------------------------------------------------------------------------


class RecoveryPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Where a queue resumes after a start, before its segments are scanned.

    Attributes:
        stale: segments wholly before the read position: already consumed,
            their deletion was cut short; delete them. Segments holding
            outstanding tickets are never stale.
        scan: segments to verify and serve, in order.
        read_pos: where to start scanning ``scan[0]``; the others start at 0.
        write_file: the segment to append to (``scan[-1]`` if any).
        notes: damage found by looking at names and sizes alone, one line each.
        meta_ignored: the position file pointed past the data and was not used.
    """

    stale: tuple[int, ...]
    scan: tuple[int, ...]
    read_pos: int
    write_file: int
    notes: tuple[str, ...]
    meta_ignored: bool = False


def plan_recovery(
    meta: QueueMeta | None, segments: Mapping[int, int], *, acks: bool = False
) -> RecoveryPlan:
    """Decide which segments to serve, given the position file and the files found.

    Args:
        meta: the position file, or None when it is missing or corrupt (then
            every segment is served from its start: redelivery, not loss).
        segments: segment number to file size, for every segment on disk.
        acks: the queue keeps records until acknowledged, so a segment read
            and acknowledged may be gone while an older one is still held:
            gaps are not damage.

    Returns:
        The plan. A missing read segment is normal (it was fully read and
        deleted before the position was synced); gaps after it are damage.
    """
    numbers = sorted(segments)
    notes: list[str] = []
    ignored = False
    if meta is not None and numbers:
        past = None
        if meta.read_file > numbers[-1]:
            past = f"read segment {meta.read_file} is after the last segment {numbers[-1]}"
        elif meta.read_file in segments and meta.read_pos > segments[meta.read_file]:
            past = (
                f"segment {meta.read_file} is {segments[meta.read_file]} bytes, shorter than"
                f" the read position {meta.read_pos}"
            )
        if past is not None:
            # A position past the data is not evidence that anything was read:
            # serve everything that verifies rather than delete it.
            notes.append(f"position file points past the data ({past}); serving every segment")
            meta = None
            ignored = True
    if meta is None:
        stale: list[int] = []
        scan = numbers
        read_pos = 0
    else:
        # A read segment still holding unacknowledged records stays (see `DiskQueue`).
        held = {ticket_position(t)[0] for t in meta.outstanding}
        stale = [n for n in numbers if n < meta.read_file and n not in held]
        scan = [n for n in numbers if n >= meta.read_file]
        read_pos = 0
        if scan and scan[0] == meta.read_file:
            read_pos = meta.read_pos
        elif scan and scan[0] > meta.read_file + 1 and not acks:
            notes.append(f"segments {meta.read_file + 1}..{scan[0] - 1} are missing")
    for previous, current in itertools.pairwise(scan):
        if current > previous + 1 and not acks:
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
        meta_ignored=ignored,
    )
