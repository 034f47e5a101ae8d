"""Messages, their 16-hex-character IDs, and the 26-byte header they travel with.

A message is what a publisher sent plus what the broker adds: an ID, the
publish timestamp and a delivery attempts counter. The same header layout is
used in message frames (docs/nsq.md §1.1) and in disk-queue records, so a record
read back from disk is sent to a client without re-encoding the body.

ID rules (docs/nsq.md §4.10): a 64-bit value made of a ~1.05 ms tick, the node ID
(10 bits) and a sequence (12 bits), rendered as 16 lowercase hex ASCII
characters. nsqd sleeps when the clock goes backwards or a tick runs out of
sequence numbers; a pure core cannot sleep, so the generator instead never
lets its tick go backwards and borrows the next tick when a tick is full.
IDs stay unique and increasing per generator; across nodes they are unique
only if node IDs are.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, TypeAlias

import msgspec

from shoal.errors import LocalProtocolError, RemoteProtocolError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "ID_SIZE",
    "Message",
    "MessageBatch",
    "MessageIDGenerator",
    "decode_message",
    "decode_message_batches",
    "encode_message",
    "encode_message_fields",
    "node_of",
]

ID_SIZE = 16
#: timestamp (int64 ns), attempts (uint16); the 16-byte ID follows.
HEADER = struct.Struct(">qH")
HEADER_SIZE = HEADER.size + ID_SIZE

_EPOCH_TICK = 1288834974288
_NODE_BITS = 10
_SEQ_BITS = 12
_SEQ_MASK = (1 << _SEQ_BITS) - 1
_SEQ_HEX = [b"%03x" % seq for seq in range(_SEQ_MASK + 1)]


class Message(msgspec.Struct, eq=False):
    """One message as topics and channels hold it.

    Attributes:
        id: 16 ASCII hex bytes; every channel copy shares it.
        body: the payload, opaque to the broker.
        timestamp: publish time, nanoseconds since the epoch.
        attempts: deliveries so far; incremented just before each delivery.
        defer: seconds to hold the message back before it is deliverable (DPUB);
            not persisted, as in nsqd (docs/nsq.md §4.4).
    """

    id: bytes
    body: bytes
    timestamp: int
    attempts: int = 0
    defer: float = 0.0

    def copy(self) -> Message:
        """Return an independent copy for another channel (same ID and body)."""
        return Message(self.id, self.body, self.timestamp, self.attempts, self.defer)


#: A run of messages sharing their timestamp and attempts: ``(ids, bodies,
#: timestamp, attempts)``, the two sequences in step. Topics and channels hold
#: idle messages this way instead of as `Message` objects (cheaper to build,
#: and tuples of bytes are not tracked by the garbage collector), and
#: channels can deliver them this way (`shoal.queue.channel.Channel.deliver_batches`).
MessageBatch: TypeAlias = "tuple[Sequence[bytes], Sequence[bytes], int, int]"


def encode_message(msg: Message) -> bytes:
    """Return the 26-byte header followed by the body (frame data, disk record)."""
    return HEADER.pack(msg.timestamp, msg.attempts) + msg.id + msg.body


def encode_message_fields(msg_id: bytes, body: bytes, timestamp: int, attempts: int) -> bytes:
    """Return what `encode_message` returns for a message with these fields.

    Topics and channels keep idle messages as plain fields rather than
    `Message` objects (see `shoal.queue.channel`); this writes them to a
    backend without building a `Message` first.
    """
    return HEADER.pack(timestamp, attempts) + msg_id + body


def decode_message(data: bytes) -> Message:
    """Parse what `encode_message` produced.

    Raises:
        RemoteProtocolError: the data is shorter than a header.
    """
    if len(data) < HEADER_SIZE:
        raise RemoteProtocolError(f"message of {len(data)} bytes is shorter than its header")
    timestamp, attempts = HEADER.unpack_from(data)
    return Message(bytes(data[10:26]), bytes(data[26:]), timestamp, attempts)


def decode_message_batches(records: Sequence[bytes]) -> list[MessageBatch]:
    """Parse records from `encode_message` into runs sharing timestamp and attempts.

    Records read back from a backend come in the runs they were published
    in (an MPUB's messages share a timestamp), so a run becomes one
    `MessageBatch` and what consumes it (delivery, fan-out) works per run,
    not per message.

    Returns:
        The batches, in record order; attempts as stored.

    Raises:
        RemoteProtocolError: a record is shorter than a header; nothing is
            returned.
    """
    out: list[MessageBatch] = []
    unpack = HEADER.unpack_from
    ids: list[bytes] = []
    bodies: list[bytes] = []
    current = (0, -1)  # no record has attempts -1: the first one starts a run
    for record in records:
        if len(record) < HEADER_SIZE:
            raise RemoteProtocolError(f"message of {len(record)} bytes is shorter than its header")
        fields = unpack(record)
        if fields != current:
            if ids:
                out.append((tuple(ids), tuple(bodies), current[0], current[1]))
                ids = []
                bodies = []
            current = fields
        ids.append(record[10:26])
        bodies.append(record[26:])
    if ids:
        out.append((tuple(ids), tuple(bodies), current[0], current[1]))
    return out


def node_of(msg_id: bytes) -> int | None:
    """The node ID a `MessageIDGenerator` wrote into ``msg_id`` (None: not 16 hex digits)."""
    if len(msg_id) != 16:
        return None
    try:
        value = int(msg_id, 16)
    except ValueError:
        return None
    return (value >> _SEQ_BITS) & ((1 << _NODE_BITS) - 1)


class MessageIDGenerator:
    """Hands out unique, increasing message IDs for one topic on one node."""

    __slots__ = ("_last_tick", "_node_bits", "_seq")

    def __init__(self, node_id: int) -> None:
        if not 0 <= node_id < (1 << _NODE_BITS):
            raise LocalProtocolError(f"node id {node_id} is outside 0..1023")
        self._node_bits = node_id << _SEQ_BITS
        self._last_tick = 0
        self._seq = 0

    def next_id(self, now_ns: int) -> bytes:
        """Return the next ID for a message published at ``now_ns``."""
        tick = (now_ns >> 20) - _EPOCH_TICK
        if tick > self._last_tick:
            self._last_tick = tick
            self._seq = 0
        else:
            self._seq += 1
            if self._seq > _SEQ_MASK:
                # The tick is full (or the clock went back): borrow the next one.
                self._last_tick += 1
                self._seq = 0
        value = (self._last_tick << (_NODE_BITS + _SEQ_BITS)) | self._node_bits | self._seq
        return b"%016x" % (value & 0xFFFFFFFFFFFFFFFF)

    def advance_past(self, msg_id: bytes) -> None:
        """Make every later ID greater than ``msg_id``, whatever the clock says.

        An ID that is not 16 hex digits is ignored.
        """
        try:
            value = int(msg_id, 16)
        except ValueError:
            return
        if len(msg_id) != 16:
            return
        tick = value >> (_NODE_BITS + _SEQ_BITS)
        if tick >= self._last_tick:
            # The next ID borrows the tick after it (see `next_id`).
            self._last_tick = tick
            self._seq = _SEQ_MASK

    def next_ids(self, now_ns: int, count: int) -> list[bytes]:
        """Return ``count`` IDs at once, as ``next_id`` called ``count`` times would.

        An MPUB batch gets its IDs in one call: one comprehension per tick
        instead of a method call per message.
        """
        tick = (now_ns >> 20) - _EPOCH_TICK
        if tick > self._last_tick:
            seq = 0
        else:
            tick = self._last_tick
            seq = self._seq + 1
        ids: list[bytes] = []
        while count > 0:
            if seq > _SEQ_MASK:
                tick += 1
                seq = 0
            take = min(count, _SEQ_MASK + 1 - seq)
            base = ((tick << (_NODE_BITS + _SEQ_BITS)) | self._node_bits) & 0xFFFFFFFFFFFFFFFF
            # The sequence is exactly the last three hex digits: format the
            # other thirteen once per tick.
            prefix = b"%013x" % (base >> _SEQ_BITS)
            ids += map(prefix.__add__, _SEQ_HEX[seq : seq + take])
            seq += take
            count -= take
        if ids:
            self._last_tick = tick
            self._seq = seq - 1
        return ids
