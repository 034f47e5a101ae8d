"""The replication stream's wire format: batches one way, acknowledgements back.

Rules:
1. One frame is one sealed message of the replication stream on the gossip
   port (the transport frames, seals and authenticates it; this module only
   turns frames into bytes and back).
2. Big-endian fixed-width fields and length-prefixed strings, not CBOR: a
   batch is mostly message bodies, which this copies once, and every count
   can be checked against the bytes that remain before anything is built
   (each item takes a known minimum of bytes), so a hostile or corrupt frame
   costs at most one pass over its own bytes.
3. Decoding is strict: unknown kinds, names that are not valid topic or
   channel names, counts larger than the bytes left could hold, and
   trailing bytes raise `RemoteProtocolError`; nothing else escapes.
4. Kinds and record types are on the wire: append only.

Layout (``u8``/``u16``/``u32``/``u64`` unsigned, ``i64`` signed, ``f64``
IEEE double, ``name`` = ``u8`` length + ASCII, ``names`` = ``u16`` count +
names, ``ids`` = ``u32`` count + 16-byte IDs):

    frame    = u8 kind, then
      BATCH  = name topic, u64 first, u64 commit, u8 has_snapshot,
               [u64 applied, u32 n, n * (u64 seq, ids)]   (snapshot only)
               u32 count, count * record
      ACK    = name topic, u64 seq
      RESYNC = name topic
      FACTOR = name topic, u8 factor
      RELEASE = name topic
    record   = u8 type, then
      PUBLISH  = i64 timestamp, f64 due, u8 has_channels, [names],
                 u32 n, n * (16-byte id, u32 length, body)   (decoded only)
      PACKED   = i64 timestamp, f64 due, u8 has_channels, [names],
                 u32 n, n * 16-byte id, n * u32 length, the n bodies
      PUMP     = u32 count, names
      FINISH   = name channel, ids
      CREATED  = name channel
      DROPPED  = name channel, u8 deleted
      TOPIC    = u8 deleted
      ABORT    = u64 seq

A snapshot's records travel in the ``count * record`` part.

A publish is encoded as PACKED: its IDs, lengths and bodies each in one
block, so both ends handle a message without a Python-level step per field
(one join per block to encode, one unpack for the lengths to decode).
Decoding leaves the IDs and bodies in the frame (`shoal.replication.packed`):
they are cut when something reads them, which for most acknowledged
publishes is never.
The older interleaved PUBLISH layout is still decoded: replica logs
written with it replay.
"""

from __future__ import annotations

import enum
import functools
import math
import struct
from typing import TYPE_CHECKING, Final

import msgspec

from shoal.errors import LocalProtocolError, RemoteProtocolError
from shoal.queue.message import ID_SIZE
from shoal.queue.names import is_valid_channel_name, is_valid_topic_name
from shoal.replication.packed import PackedField
from shoal.replication.records import (
    Abort,
    Batch,
    ChannelCreated,
    ChannelDropped,
    Finish,
    Publish,
    Pump,
    Snapshot,
    TopicDropped,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from shoal.replication.records import Record

__all__ = [
    "Ack",
    "Factor",
    "Frame",
    "FrameKind",
    "Release",
    "Resync",
    "decode_frame",
    "encode_frame",
]


class FrameKind(enum.IntEnum):
    """The first byte of a frame. On the wire: append only."""

    BATCH = 1
    ACK = 2
    RESYNC = 3
    FACTOR = 4
    RELEASE = 5


class _RecordType(enum.IntEnum):
    """The first byte of a record. On the wire: append only."""

    PUBLISH = 1
    PUMP = 2
    FINISH = 3
    CREATED = 4
    DROPPED = 5
    TOPIC = 6
    ABORT = 7
    PACKED = 8


class Ack(msgspec.Struct, frozen=True, kw_only=True):
    """The replica holds every record of ``topic`` up to ``seq``."""

    topic: str
    seq: int


class Resync(msgspec.Struct, frozen=True, kw_only=True):
    """The replica cannot apply what it got for ``topic``: send a snapshot."""

    topic: str


class Factor(msgspec.Struct, frozen=True, kw_only=True):
    """The owner keeps ``factor`` copies of ``topic``, its own included.

    Sent before a topic's first batch on every connection, so a replica
    judges placement (who adopts, whether its copy is still wanted) with
    the topic's own factor, which may differ from its node's default.
    """

    topic: str
    factor: int


class Release(msgspec.Struct, frozen=True, kw_only=True):
    """The owner's current replicas hold everything this former replica held of ``topic``.

    Sent to a member that left the topic's replica set, once the set has
    acknowledged the log end at the moment it left
    (`shoal.replication.owner.OwnerTopic.releasable`): only then may it
    drop its copy (`shoal.replication.failover.holder_action`).
    """

    topic: str


Frame = Batch | Ack | Resync | Factor | Release

_U8: Final = struct.Struct(">B")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_HEAD_PUBLISH: Final = struct.Struct(">qd")
_HEAD_BATCH: Final = struct.Struct(">QQB")
_BODY_LEN: Final = _U32
_ID_FORMAT: Final = f"{ID_SIZE}s"

#: Names repeat from frame to frame (a link's few topics and their channels):
#: each distinct one is checked once, not in every frame.
_valid_topic: Final = functools.lru_cache(maxsize=256)(is_valid_topic_name)
_valid_channel: Final = functools.lru_cache(maxsize=256)(is_valid_channel_name)

#: The fewest bytes one item of each kind can take, for count checks.
_MIN_NAME: Final = 2
_MIN_RECORD: Final = 2
_MIN_MESSAGE: Final = ID_SIZE + _BODY_LEN.size
_MIN_TENTATIVE: Final = _U64.size + _U32.size


def _name(value: str) -> bytes:
    data = value.encode("ascii")
    return _U8.pack(len(data)) + data


def _names(values: tuple[str, ...]) -> bytes:
    return _U16.pack(len(values)) + b"".join(map(_name, values))


def _ids(values: Sequence[bytes]) -> bytes:
    return _U32.pack(len(values)) + b"".join(values)


def _encode_record(record: Record, out: list[bytes | memoryview]) -> None:
    match record:
        case Publish(ids=ids, bodies=bodies, timestamp=timestamp, due=due, channels=channels):
            count = len(ids)
            if len(bodies) != count:
                raise LocalProtocolError("a publish record needs one body per ID")
            block = ids.block() if type(ids) is PackedField else b"".join(ids)
            if len(block) != count * ID_SIZE:
                raise LocalProtocolError(f"message IDs are {ID_SIZE} bytes")
            out.append(_U8.pack(_RecordType.PACKED))
            out.append(_HEAD_PUBLISH.pack(timestamp, due))
            out.append(b"\x00" if channels is None else b"\x01" + _names(channels))
            out.append(_U32.pack(count))
            out.append(block)
            if type(bodies) is PackedField:
                # Relayed as it came (a replica's log rewrite, a test's round trip).
                out.append(struct.pack(f">{count}I", *bodies.lengths))
                out.append(bodies.block())
            else:
                out.append(struct.pack(f">{count}I", *map(len, bodies)))
                out.extend(bodies)
        case Pump(count=count, channels=channels):
            out.append(_U8.pack(_RecordType.PUMP) + _U32.pack(count) + _names(channels))
        case Finish(channel=channel, ids=ids):
            out.append(_U8.pack(_RecordType.FINISH) + _name(channel) + _ids(ids))
        case ChannelCreated(channel=channel):
            out.append(_U8.pack(_RecordType.CREATED) + _name(channel))
        case ChannelDropped(channel=channel, deleted=deleted):
            out.append(_U8.pack(_RecordType.DROPPED) + _name(channel) + _U8.pack(deleted))
        case TopicDropped(deleted=deleted):
            out.append(_U8.pack(_RecordType.TOPIC) + _U8.pack(deleted))
        case Abort(seq=seq):
            out.append(_U8.pack(_RecordType.ABORT) + _U64.pack(seq))


def encode_frame(frame: Frame) -> bytes:
    """The bytes of one frame."""
    out: list[bytes | memoryview] = []
    match frame:
        case Batch(topic=topic, first=first, records=records, commit=commit, snapshot=snapshot):
            out.append(_U8.pack(FrameKind.BATCH) + _name(topic))
            out.append(_HEAD_BATCH.pack(first, commit, snapshot is not None))
            if snapshot is not None:
                records = snapshot.records
                out.append(_U64.pack(snapshot.applied) + _U32.pack(len(snapshot.tentative)))
                for seq, ids in snapshot.tentative.items():
                    out.append(_U64.pack(seq) + _ids(ids))
            out.append(_U32.pack(len(records)))
            for record in records:
                _encode_record(record, out)
        case Ack(topic=topic, seq=seq):
            out.append(_U8.pack(FrameKind.ACK) + _name(topic) + _U64.pack(seq))
        case Resync(topic=topic):
            out.append(_U8.pack(FrameKind.RESYNC) + _name(topic))
        case Factor(topic=topic, factor=factor):
            out.append(_U8.pack(FrameKind.FACTOR) + _name(topic) + _U8.pack(factor))
        case Release(topic=topic):
            out.append(_U8.pack(FrameKind.RELEASE) + _name(topic))
    return b"".join(out)


class _Reader:
    """A cursor over one frame that refuses to read past its end."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise RemoteProtocolError("replication frame is truncated")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[int | float, ...]:
        if self.pos + fmt.size > len(self.data):
            raise RemoteProtocolError("replication frame is truncated")
        values: tuple[int | float, ...] = fmt.unpack_from(self.data, self.pos)
        self.pos += fmt.size
        return values

    def uint(self, fmt: struct.Struct) -> int:
        return int(self.unpack(fmt)[0])

    def count(self, fmt: struct.Struct, smallest: int) -> int:
        """A count of items that each take at least ``smallest`` bytes."""
        count = self.uint(fmt)
        if count * smallest > len(self.data) - self.pos:
            raise RemoteProtocolError(f"replication frame announces {count} items it cannot hold")
        return count

    def name(self, valid: Callable[[str], bool]) -> str:
        raw = self.take(self.uint(_U8))
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise RemoteProtocolError("replication frame holds a non-ASCII name") from None
        if not valid(text):
            raise RemoteProtocolError(f"replication frame holds an invalid name {text!r}")
        return text

    def names(self) -> tuple[str, ...]:
        return tuple(self.name(_valid_channel) for _ in range(self.count(_U16, _MIN_NAME)))

    def ids(self) -> tuple[bytes, ...]:
        return tuple(self.take(ID_SIZE) for _ in range(self.count(_U32, ID_SIZE)))

    def flag(self) -> bool:
        value = self.uint(_U8)
        if value > 1:
            raise RemoteProtocolError(f"replication frame holds flag {value}")
        return bool(value)


def _decode_packed(reader: _Reader) -> tuple[PackedField, PackedField]:
    """The IDs and bodies of a PACKED publish, checked but not cut.

    Only the lengths block is read (it says where the frame's next record
    starts); the IDs and bodies stay in the frame until something reads
    them (`shoal.replication.packed`), which for most acknowledged
    publishes is never.
    """
    count = reader.count(_U32, _MIN_MESSAGE)
    data = reader.data
    start = reader.pos
    lengths_at = start + count * ID_SIZE
    bodies_at = lengths_at + count * _BODY_LEN.size
    # The count check above already guarantees that both blocks fit.
    lengths: tuple[int, ...] = struct.unpack_from(f">{count}I", data, lengths_at)
    bodies = PackedField(data, bodies_at, lengths)
    end = bodies_at + bodies.size
    if end > len(data):
        raise RemoteProtocolError("replication frame is truncated")
    reader.pos = end
    return PackedField.equal(data, start, count, ID_SIZE), bodies


def _decode_record(reader: _Reader) -> Record:
    kind = reader.uint(_U8)
    if kind in (_RecordType.PACKED, _RecordType.PUBLISH):
        timestamp, due = reader.unpack(_HEAD_PUBLISH)
        if not math.isfinite(due) or due < 0:
            raise RemoteProtocolError(f"replication frame holds due time {due}")
        channels = reader.names() if reader.flag() else None
        if kind == _RecordType.PACKED:
            packed_ids, packed_bodies = _decode_packed(reader)
            return Publish(
                ids=packed_ids,
                bodies=packed_bodies,
                timestamp=int(timestamp),
                due=float(due),
                channels=channels,
            )
        ids: list[bytes] = []
        bodies: list[bytes] = []
        # The hot loop of a replica: locals, no method calls per message.
        count = reader.count(_U32, _MIN_MESSAGE)
        data = reader.data
        size = len(data)
        pos = reader.pos
        unpack_length = _BODY_LEN.unpack_from
        head = ID_SIZE + _BODY_LEN.size
        for _ in range(count):
            if pos + head > size:
                raise RemoteProtocolError("replication frame is truncated")
            ids.append(data[pos : pos + ID_SIZE])
            (length,) = unpack_length(data, pos + ID_SIZE)
            pos += head
            end = pos + length
            if end > size:
                raise RemoteProtocolError("replication frame is truncated")
            bodies.append(data[pos:end])
            pos = end
        reader.pos = pos
        return Publish(
            ids=tuple(ids),
            bodies=tuple(bodies),
            timestamp=int(timestamp),
            due=float(due),
            channels=channels,
        )
    if kind == _RecordType.PUMP:
        return Pump(count=reader.uint(_U32), channels=reader.names())
    if kind == _RecordType.FINISH:
        return Finish(channel=reader.name(_valid_channel), ids=reader.ids())
    if kind == _RecordType.CREATED:
        return ChannelCreated(channel=reader.name(_valid_channel))
    if kind == _RecordType.DROPPED:
        return ChannelDropped(channel=reader.name(_valid_channel), deleted=reader.flag())
    if kind == _RecordType.TOPIC:
        return TopicDropped(deleted=reader.flag())
    if kind == _RecordType.ABORT:
        return Abort(seq=reader.uint(_U64))
    raise RemoteProtocolError(f"unknown replication record type {kind}")


def decode_frame(data: bytes) -> Frame:
    """Parse one frame.

    Raises:
        RemoteProtocolError: the bytes are not exactly one valid frame.
    """
    reader = _Reader(data)
    kind = reader.uint(_U8)
    topic = reader.name(_valid_topic)
    frame: Frame
    if kind == FrameKind.BATCH:
        first, commit, has_snapshot = reader.unpack(_HEAD_BATCH)
        if has_snapshot > 1:
            raise RemoteProtocolError(f"replication frame holds flag {has_snapshot}")
        snapshot_head = None
        if has_snapshot:
            applied = reader.uint(_U64)
            tentative: dict[int, Sequence[bytes]] = {}
            for _ in range(reader.count(_U32, _MIN_TENTATIVE)):
                seq = reader.uint(_U64)
                tentative[seq] = reader.ids()
            snapshot_head = (applied, tentative)
        records = tuple(_decode_record(reader) for _ in range(reader.count(_U32, _MIN_RECORD)))
        snapshot = None
        if snapshot_head is not None:
            snapshot = Snapshot(
                applied=snapshot_head[0], records=records, tentative=snapshot_head[1]
            )
            records = ()
        frame = Batch(
            topic=topic, first=int(first), records=records, commit=int(commit), snapshot=snapshot
        )
    elif kind == FrameKind.ACK:
        frame = Ack(topic=topic, seq=reader.uint(_U64))
    elif kind == FrameKind.RESYNC:
        frame = Resync(topic=topic)
    elif kind == FrameKind.FACTOR:
        factor = reader.uint(_U8)
        if factor < 2:
            raise RemoteProtocolError(f"replication factor {factor} announced for a replica")
        frame = Factor(topic=topic, factor=factor)
    elif kind == FrameKind.RELEASE:
        frame = Release(topic=topic)
    else:
        raise RemoteProtocolError(f"unknown replication frame kind {kind}")
    if reader.pos != len(data):
        raise RemoteProtocolError(f"{len(data) - reader.pos} bytes after a replication frame")
    return frame
