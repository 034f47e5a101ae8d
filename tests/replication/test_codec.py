import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import RemoteProtocolError
from shoal.replication.codec import (
    Ack,
    Factor,
    Frame,
    Release,
    Resync,
    decode_frame,
    encode_frame,
)
from shoal.replication.records import (
    Abort,
    Batch,
    ChannelCreated,
    ChannelDropped,
    Finish,
    Publish,
    Pump,
    Record,
    Snapshot,
    TopicDropped,
)

names = st.from_regex(r"[a-z0-9_.-]{1,20}", fullmatch=True)
msg_ids = st.binary(min_size=16, max_size=16)
channel_lists = st.lists(names, max_size=3).map(tuple)


@st.composite
def publishes(draw: st.DrawFn) -> Publish:
    ids = tuple(draw(st.lists(msg_ids, max_size=4)))
    bodies = tuple(draw(st.binary(max_size=40)) for _ in ids)
    return Publish(
        ids=ids,
        bodies=bodies,
        timestamp=draw(st.integers(-(2**63), 2**63 - 1)),
        due=draw(st.floats(min_value=0, max_value=1e12)),
        channels=draw(st.none() | channel_lists),
    )


records: st.SearchStrategy[Record] = st.one_of(
    publishes(),
    st.builds(Pump, count=st.integers(0, 2**32 - 1), channels=channel_lists),
    st.builds(Finish, channel=names, ids=st.lists(msg_ids, max_size=4).map(tuple)),
    st.builds(ChannelCreated, channel=names),
    st.builds(ChannelDropped, channel=names, deleted=st.booleans()),
    st.builds(TopicDropped, deleted=st.booleans()),
    st.builds(Abort, seq=st.integers(0, 2**64 - 1)),
)
seqs = st.integers(0, 2**64 - 1)
snapshots = st.builds(
    Snapshot,
    applied=seqs,
    records=st.lists(records, max_size=4).map(tuple),
    tentative=st.dictionaries(seqs, st.lists(msg_ids, max_size=3).map(tuple), max_size=3),
)
frames: st.SearchStrategy[Frame] = st.one_of(
    st.builds(
        Batch,
        topic=names,
        first=seqs,
        records=st.lists(records, max_size=5).map(tuple),
        commit=seqs,
        snapshot=st.none(),
    ),
    st.builds(
        Batch, topic=names, first=st.just(0), records=st.just(()), commit=seqs, snapshot=snapshots
    ),
    st.builds(Ack, topic=names, seq=seqs),
    st.builds(Resync, topic=names),
    st.builds(Release, topic=names),
    st.builds(Factor, topic=names, factor=st.integers(2, 255)),
)


@given(frames)
def test_codec_round_trip(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame)) == frame


@given(st.binary(max_size=200))
def test_codec_arbitrary_bytes_decode_or_refuse(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_frame(data)


@given(frames, st.data())
def test_codec_truncated_or_extended_frames_are_refused(frame: Frame, data: st.DataObject) -> None:
    raw = encode_frame(frame)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(RemoteProtocolError):
        decode_frame(raw[:cut])
    with pytest.raises(RemoteProtocolError):
        decode_frame(raw + b"\x00")


def test_codec_refuses_a_count_its_bytes_cannot_hold() -> None:
    raw = bytearray(encode_frame(Batch(topic="t", first=1, records=(), commit=0)))
    raw[-4:] = (2**32 - 1).to_bytes(4, "big")  # four billion records in no bytes
    with pytest.raises(RemoteProtocolError, match="cannot hold"):
        decode_frame(bytes(raw))


def test_codec_refuses_invalid_names() -> None:
    with pytest.raises(RemoteProtocolError, match="invalid name"):
        decode_frame(encode_frame(Ack(topic="t", seq=1)).replace(b"\x01t", b"\x01!"))


def test_codec_refuses_a_factor_that_keeps_no_replica() -> None:
    raw = encode_frame(Factor(topic="t", factor=2))
    with pytest.raises(RemoteProtocolError, match="factor 1"):
        decode_frame(raw[:-1] + b"\x01")


def test_codec_still_decodes_the_interleaved_publish_layout() -> None:
    # Record type 1, as replica logs written before the packed layout hold it.
    ids = (b"a" * 16, b"b" * 16)
    bodies = (b"first", b"")
    record = struct.pack(">Bqd", 1, 5, 2.5) + b"\x01" + struct.pack(">H", 1) + b"\x01c"
    record += struct.pack(">I", 2)
    for msg_id, body in zip(ids, bodies, strict=True):
        record += msg_id + struct.pack(">I", len(body)) + body
    frame = bytes([1, 1]) + b"t" + struct.pack(">QQB", 3, 2, 0) + struct.pack(">I", 1) + record
    decoded = decode_frame(frame)
    expected = Publish(ids=ids, bodies=bodies, timestamp=5, due=2.5, channels=("c",))
    assert decoded == Batch(topic="t", first=3, records=(expected,), commit=2)
    # What is written now is the packed layout, which decodes to the same record.
    assert encode_frame(decoded) != frame
    assert decode_frame(encode_frame(decoded)) == decoded


def test_codec_refuses_a_packed_publish_whose_bodies_overrun() -> None:
    publish = Publish(ids=(b"a" * 16,), bodies=(b"xyz",), timestamp=1)
    data = encode_frame(Batch(topic="t", first=1, records=(publish,), commit=0))
    # Claim a longer body than the frame holds (the length sits before the body).
    forged = data[:-7] + (1000).to_bytes(4, "big") + data[-3:]
    with pytest.raises(RemoteProtocolError):
        decode_frame(forged)


@pytest.mark.parametrize(
    "bodies",
    [
        (b"same",) * 3,  # equal sizes: the kept format
        (b"a", b"", b"ccc"),  # mixed sizes: a format of their own
        (b"",) * 2,
        (),
    ],
)
def test_codec_packed_publish_bodies_of_equal_and_mixed_sizes(bodies: tuple[bytes, ...]) -> None:
    ids = tuple(bytes([65 + i]) * 16 for i in range(len(bodies)))
    for _ in range(2):  # the second time through the kept format
        batch = Batch(
            topic="t",
            first=1,
            records=(Publish(ids=ids, bodies=bodies, timestamp=1, channels=("c",)),),
            commit=0,
        )
        assert decode_frame(encode_frame(batch)) == batch
