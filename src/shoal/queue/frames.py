"""Server-to-client framing of the NSQ TCP protocol V2 (nsq.md §1.1).

Every frame the server writes is ``[int32 size][int32 frame_type][data]``,
big-endian, where ``size`` counts the frame type and the data (4 + len(data)).
A message frame's data is the 26-byte message header (int64 timestamp in
nanoseconds, uint16 attempts, 16-byte ID) followed by the body, which is
exactly what `shoal.queue.message.encode_message` produces; an error frame's
data is ``<CODE> <description>``.

Encoding is the server's hot path, so `encode_message_frame` packs the frame
header and the message header with one ``struct`` call and joins the parts.
`FrameDecoder` is the client side (our own client, tests and benchmarks): it
is fed bytes and hands back whole frames, in the style of h11.
"""

from __future__ import annotations

import enum
import struct
from itertools import chain, repeat
from typing import TYPE_CHECKING

from shoal.errors import LocalProtocolError, RemoteProtocolError
from shoal.queue.message import decode_message

if TYPE_CHECKING:
    from collections.abc import Iterable

    from shoal.queue.message import Message, MessageBatch

__all__ = [
    "CLOSE_WAIT_FRAME",
    "DEFAULT_MAX_FRAME_SIZE",
    "HEARTBEAT_FRAME",
    "MAGIC_V2",
    "OK_FRAME",
    "FrameDecoder",
    "FrameType",
    "decode_message_frame",
    "encode_error",
    "encode_message_batches",
    "encode_message_frame",
    "encode_message_frames",
    "encode_response",
]

#: What a V2 client sends first: two spaces, ``V``, ``2``.
MAGIC_V2 = b"  V2"
#: Default largest ``size`` a `FrameDecoder` accepts before reading the data.
DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024


class FrameType(enum.IntEnum):
    """The ``frame_type`` field; on the wire, so append only."""

    RESPONSE = 0
    ERROR = 1
    MESSAGE = 2


_FRAME_HEAD = struct.Struct(">ii")
_FRAME_TYPES = tuple(FrameType)
# Frame size, frame type, then the message header (timestamp, attempts); the ID follows.
_MESSAGE_HEAD = struct.Struct(">iiqH")
# Frame type plus the 26-byte message header: what `size` counts besides the body.
_MESSAGE_OVERHEAD = 4 + 8 + 2 + 16


def encode_response(data: bytes) -> bytes:
    """Return a response frame (type 0) carrying ``data``."""
    return _FRAME_HEAD.pack(len(data) + 4, FrameType.RESPONSE) + data


def encode_error(code: str, description: str) -> bytes:
    """Return an error frame (type 1) carrying ``<code> <description>``."""
    data = f"{code} {description}".encode()
    return _FRAME_HEAD.pack(len(data) + 4, FrameType.ERROR) + data


def encode_message_frame(msg: Message) -> bytes:
    """Return the message frame (type 2) that delivers ``msg`` to a consumer.

    The caller has already incremented ``msg.attempts`` for this delivery.
    """
    body = msg.body
    # join copies each part once; chained + would copy the body twice.
    return b"".join(
        (
            _MESSAGE_HEAD.pack(len(body) + _MESSAGE_OVERHEAD, 2, msg.timestamp, msg.attempts),
            msg.id,
            body,
        )
    )


def encode_message_frames(msgs: Iterable[Message]) -> bytes:
    """Return the message frames of ``msgs``, back to back (one write's worth).

    The same bytes as joining `encode_message_frame` of each, with one join
    for the whole batch instead of one per message.
    """
    pack = _MESSAGE_HEAD.pack
    parts: list[bytes] = []
    extend = parts.extend
    for msg in msgs:
        body = msg.body
        extend((pack(len(body) + _MESSAGE_OVERHEAD, 2, msg.timestamp, msg.attempts), msg.id, body))
    return b"".join(parts)


def encode_message_batches(batches: Iterable[MessageBatch]) -> bytes:
    """Return the message frames of every message of ``batches``, in order.

    The same bytes as `encode_message_frames` of the equivalent `Message`
    objects. Messages of a batch share timestamp and attempts, so their frame
    headers differ at most by body size: with equal sizes one header serves
    the whole batch, and either way the frames are assembled by C-level
    iteration rather than a Python loop per message.
    """
    pack = _MESSAGE_HEAD.pack
    parts: list[bytes] = []
    for ids, bodies, timestamp, attempts in batches:
        if len(ids) == 1:
            body = bodies[0]
            parts += (pack(len(body) + _MESSAGE_OVERHEAD, 2, timestamp, attempts), ids[0], body)
            continue
        sizes = set(map(len, bodies))
        if len(sizes) == 1:
            heads: Iterable[bytes] = repeat(
                pack(sizes.pop() + _MESSAGE_OVERHEAD, 2, timestamp, attempts)
            )
        else:
            heads = map(
                pack,
                map(_MESSAGE_OVERHEAD.__add__, map(len, bodies)),
                repeat(2),
                repeat(timestamp),
                repeat(attempts),
            )
        parts += chain.from_iterable(zip(heads, ids, bodies, strict=False))
    return b"".join(parts)


#: The reply to a successful PUB, MPUB, DPUB, SUB or a plain IDENTIFY.
OK_FRAME = encode_response(b"OK")
#: Sent every heartbeat interval; clients answer with NOP (nsq.md §1.5).
HEARTBEAT_FRAME = encode_response(b"_heartbeat_")
#: The reply to CLS; the server then waits for the client to close.
CLOSE_WAIT_FRAME = encode_response(b"CLOSE_WAIT")

#: Parse the data of a MESSAGE frame; the layout is the message record's.
decode_message_frame = decode_message

# Compact the receive buffer once this much of it has been consumed.
_COMPACT_AT = 64 * 1024


class FrameDecoder:
    """Splits a server's byte stream into frames (client side).

    Feed bytes with `receive_data` and call `next_frame` until it returns
    ``None``. The size field is checked as soon as it arrives, so an absurd
    size is refused before its data is buffered.

    Args:
        max_frame_size: largest ``size`` field accepted (frame type plus data).
    """

    __slots__ = ("_buf", "_errored", "_max_frame_size", "_pos")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if max_frame_size < 4:
            raise LocalProtocolError(f"max_frame_size {max_frame_size} is below 4")
        self._max_frame_size = max_frame_size
        self._buf = bytearray()
        self._pos = 0
        self._errored = False

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the connection; nothing is parsed yet.

        Raises:
            LocalProtocolError: an earlier call raised `RemoteProtocolError`.
        """
        if self._errored:
            raise LocalProtocolError("frame decoder is unusable after a protocol error")
        self._buf += data

    def next_frame(self) -> tuple[FrameType, bytes] | None:
        """Return the next whole frame, or ``None`` when more data is needed.

        Returns:
            The frame type and the frame data (without size and type).

        Raises:
            RemoteProtocolError: the size is below 4 or above ``max_frame_size``,
                or the frame type is unknown. The decoder is then unusable.
            LocalProtocolError: an earlier call raised `RemoteProtocolError`.
        """
        if self._errored:
            raise LocalProtocolError("frame decoder is unusable after a protocol error")
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < 4:
            return None
        if avail >= 8:
            size, raw_type = _FRAME_HEAD.unpack_from(buf, pos)
        else:
            (size,) = struct.unpack_from(">i", buf, pos)
            raw_type = 0  # checked below, once the whole frame is here
        if size < 4 or size > self._max_frame_size:
            self._errored = True
            raise RemoteProtocolError(f"frame size {size} is outside 4..{self._max_frame_size}")
        if avail < 4 + size:
            return None
        # A tuple index rather than FrameType(raw_type): this runs per message.
        if not 0 <= raw_type < len(_FRAME_TYPES):
            self._errored = True
            raise RemoteProtocolError(f"unknown frame type {raw_type}") from None
        frame_type = _FRAME_TYPES[raw_type]
        end = pos + 4 + size
        data = bytes(buf[pos + 8 : end])
        pos = end
        if pos == len(buf):
            buf.clear()
            pos = 0
        elif pos >= _COMPACT_AT:
            del buf[:pos]
            pos = 0
        self._pos = pos
        return frame_type, data
