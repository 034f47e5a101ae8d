from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import LocalProtocolError, RemoteProtocolError
from shoal.queue.frames import (
    CLOSE_WAIT_FRAME,
    HEARTBEAT_FRAME,
    MAGIC_V2,
    OK_FRAME,
    FrameDecoder,
    FrameType,
    decode_message_frame,
    encode_error,
    encode_message_batches,
    encode_message_frame,
    encode_message_frames,
    encode_response,
)
from shoal.queue.message import Message, encode_message

MSG_ID = b"0123456789abcdef"


def frame(size: int, frame_type: int, data: bytes = b"") -> bytes:
    return struct.pack(">ii", size, frame_type) + data


def drain(decoder: FrameDecoder) -> list[tuple[FrameType, bytes]]:
    frames = []
    while (item := decoder.next_frame()) is not None:
        frames.append(item)
    return frames


def test_frame_type_values_are_wire_values() -> None:
    assert [int(t) for t in FrameType] == [0, 1, 2]
    assert [t.name for t in FrameType] == ["RESPONSE", "ERROR", "MESSAGE"]


def test_magic_is_two_spaces_v2() -> None:
    assert MAGIC_V2 == b"\x20\x20\x56\x32"


def test_encode_response_layout() -> None:
    assert encode_response(b"OK") == b"\x00\x00\x00\x06\x00\x00\x00\x00OK"


def test_constant_frames_are_response_frames() -> None:
    assert encode_response(b"OK") == OK_FRAME
    assert HEARTBEAT_FRAME == b"\x00\x00\x00\x0f\x00\x00\x00\x00_heartbeat_"
    assert encode_response(b"CLOSE_WAIT") == CLOSE_WAIT_FRAME


def test_encode_error_layout() -> None:
    data = b"E_INVALID invalid command FOO"
    assert encode_error("E_INVALID", "invalid command FOO") == frame(len(data) + 4, 1, data)


def test_encode_message_frame_layout() -> None:
    msg = Message(MSG_ID, b"hello", timestamp=1_700_000_000_123_456_789, attempts=3)
    expected = (
        struct.pack(">ii", 4 + 26 + 5, 2)
        + struct.pack(">qH", 1_700_000_000_123_456_789, 3)
        + MSG_ID
        + b"hello"
    )
    assert encode_message_frame(msg) == expected


def test_encode_message_frame_data_is_the_message_record() -> None:
    msg = Message(MSG_ID, b"body", timestamp=42, attempts=1)
    assert encode_message_frame(msg)[8:] == encode_message(msg)


def test_frame_decoder_returns_none_until_frame_complete() -> None:
    decoder = FrameDecoder()
    wire = OK_FRAME
    for byte in wire[:-1]:
        decoder.receive_data(bytes([byte]))
        assert decoder.next_frame() is None
    decoder.receive_data(wire[-1:])
    assert decoder.next_frame() == (FrameType.RESPONSE, b"OK")
    assert decoder.next_frame() is None


def test_frame_decoder_splits_pipelined_frames() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(OK_FRAME + encode_error("E_BAD_TOPIC", "x") + HEARTBEAT_FRAME)
    assert drain(decoder) == [
        (FrameType.RESPONSE, b"OK"),
        (FrameType.ERROR, b"E_BAD_TOPIC x"),
        (FrameType.RESPONSE, b"_heartbeat_"),
    ]


def test_frame_decoder_message_round_trip() -> None:
    msg = Message(MSG_ID, b"payload", timestamp=123456789, attempts=7)
    decoder = FrameDecoder()
    decoder.receive_data(encode_message_frame(msg))
    frame_type, data = drain(decoder)[0]
    assert frame_type is FrameType.MESSAGE
    got = decode_message_frame(data)
    assert (got.id, got.body, got.timestamp, got.attempts) == (MSG_ID, b"payload", 123456789, 7)


def test_frame_decoder_accepts_empty_data() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(frame(4, 0))
    assert decoder.next_frame() == (FrameType.RESPONSE, b"")


@pytest.mark.parametrize("size", [3, 0, -1, -(2**31)])
def test_frame_decoder_rejects_size_below_four(size: int) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(frame(size, 0))
    with pytest.raises(RemoteProtocolError):
        decoder.next_frame()


def test_frame_decoder_rejects_oversize_before_data_arrives() -> None:
    decoder = FrameDecoder(max_frame_size=100)
    decoder.receive_data(struct.pack(">i", 101))
    with pytest.raises(RemoteProtocolError):
        decoder.next_frame()


def test_frame_decoder_accepts_frame_of_exactly_max_size() -> None:
    decoder = FrameDecoder(max_frame_size=100)
    decoder.receive_data(frame(100, 0, b"x" * 96))
    assert decoder.next_frame() == (FrameType.RESPONSE, b"x" * 96)


def test_frame_decoder_rejects_unknown_frame_type() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(frame(6, 3, b"OK"))
    with pytest.raises(RemoteProtocolError):
        decoder.next_frame()


def test_frame_decoder_unusable_after_error() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(frame(2, 0))
    with pytest.raises(RemoteProtocolError):
        decoder.next_frame()
    with pytest.raises(LocalProtocolError):
        decoder.next_frame()
    with pytest.raises(LocalProtocolError):
        decoder.receive_data(OK_FRAME)


def test_frame_decoder_rejects_max_frame_size_below_four() -> None:
    with pytest.raises(LocalProtocolError):
        FrameDecoder(max_frame_size=3)


def test_decode_message_frame_rejects_short_data() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_message_frame(b"\x00" * 25)


frames_strategy = st.lists(
    st.one_of(
        st.binary(max_size=32).map(lambda d: (FrameType.RESPONSE, d)),
        st.binary(max_size=32).map(lambda d: (FrameType.ERROR, d)),
        st.builds(
            Message,
            id=st.binary(min_size=16, max_size=16),
            body=st.binary(max_size=32),
            timestamp=st.integers(-(2**63), 2**63 - 1),
            attempts=st.integers(0, 2**16 - 1),
        ).map(lambda m: (FrameType.MESSAGE, encode_message(m))),
    ),
    max_size=6,
)


def encode_frame(frame_type: FrameType, data: bytes) -> bytes:
    return struct.pack(">ii", len(data) + 4, frame_type) + data


@given(frames_strategy, st.data())
def test_frame_decoder_round_trip_at_any_split(
    frames: list[tuple[FrameType, bytes]], data: st.DataObject
) -> None:
    wire = b"".join(encode_frame(t, d) for t, d in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    decoder = FrameDecoder()
    got = []
    start = 0
    for cut in [*cuts, len(wire)]:
        decoder.receive_data(wire[start:cut])
        start = cut
        got.extend(drain(decoder))
    assert got == frames


@given(
    st.binary(min_size=16, max_size=16),
    st.binary(max_size=64),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(0, 2**16 - 1),
)
def test_encode_message_frame_round_trip(
    msg_id: bytes, body: bytes, timestamp: int, attempts: int
) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_message_frame(Message(msg_id, body, timestamp, attempts)))
    frame_type, data = drain(decoder)[0]
    got = decode_message_frame(data)
    assert frame_type is FrameType.MESSAGE
    assert (got.id, got.body, got.timestamp, got.attempts) == (msg_id, body, timestamp, attempts)


def batch_messages(batch: tuple[list[bytes], list[bytes], int, int]) -> list[Message]:
    ids, bodies, timestamp, attempts = batch
    return [Message(i, b, timestamp, attempts) for i, b in zip(ids, bodies, strict=True)]


@pytest.mark.parametrize(
    "bodies",
    [
        [b"one"],
        [b"same"] * 5,
        [b"a", b"bb", b"", b"cccc", b"bb"],
    ],
)
def test_encode_message_batches_equals_frames_of_each_message(bodies: list[bytes]) -> None:
    ids = [b"%016x" % i for i in range(len(bodies))]
    batches = [(ids, bodies, 123_456_789, 3), ([b"f" * 16], [b"last"], 7, 1)]
    expected = b"".join(encode_message_frame(m) for batch in batches for m in batch_messages(batch))
    assert encode_message_batches(batches) == expected
    assert encode_message_frames([m for b in batches for m in batch_messages(b)]) == expected


def test_encode_message_batches_of_nothing_is_empty() -> None:
    assert encode_message_batches([]) == b""
    assert encode_message_frames([]) == b""
