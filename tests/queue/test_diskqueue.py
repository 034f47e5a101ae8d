"""The pure part of the disk queue: records, scanning, names, the position file, recovery."""

from __future__ import annotations

import itertools
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import ConfigError, LocalProtocolError
from shoal.queue.diskqueue import (
    NEED_DATA,
    RECORD_HEADER,
    Corrupt,
    DiskQueueConfig,
    Hole,
    QueueMeta,
    Record,
    RecordScanner,
    bad_file_name,
    check_queue_name,
    decode_meta,
    decode_record,
    decode_records,
    encode_meta,
    encode_record,
    make_ticket,
    max_record_size,
    meta_file_name,
    parse_segment_number,
    plan_recovery,
    segment_file_name,
)

MAX = 1000
payloads = st.lists(st.binary(min_size=1, max_size=60), max_size=20)


def scan(data: bytes, *, chunk: int, start: int = 0) -> tuple[RecordScanner, list[Hole]]:
    scanner = RecordScanner(start=start, max_record_size=MAX)
    for index in range(0, len(data), chunk):
        scanner.feed(data[index : index + chunk])
    return scanner, scanner.finish()


# --- records ---------------------------------------------------------------------------------


def test_record_layout_is_length_crc_payload() -> None:
    assert encode_record(b"abc") == RECORD_HEADER.pack(3, zlib.crc32(b"abc")) + b"abc"


def test_record_refuses_empty_payload() -> None:
    with pytest.raises(LocalProtocolError):
        encode_record(b"")


@given(st.binary(min_size=1, max_size=MAX), st.binary(max_size=20))
def test_decode_record_round_trips_and_reports_end(payload: bytes, prefix: bytes) -> None:
    data = prefix + encode_record(payload) + b"trailing"
    assert decode_record(data, len(prefix), MAX) == Record(payload, len(data) - 8)


def test_decode_record_needs_data_for_every_proper_prefix() -> None:
    data = encode_record(b"hello world")
    for cut in range(len(data)):
        assert decode_record(data[:cut], 0, MAX) is NEED_DATA


@pytest.mark.parametrize("length", [0, MAX + 1, 0xFFFFFFFF])
def test_decode_record_refuses_length_outside_limit(length: int) -> None:
    data = RECORD_HEADER.pack(length, 0) + b"x" * 10
    result = decode_record(data, 0, MAX)
    assert isinstance(result, Corrupt)
    assert "length" in result.reason


def test_decode_record_detects_checksum_mismatch() -> None:
    data = bytearray(encode_record(b"hello"))
    data[-1] ^= 0x01
    result = decode_record(bytes(data), 0, MAX)
    assert result == Corrupt("checksum mismatch in a record of 5 bytes", 0)


def test_max_record_size_is_header_plus_body() -> None:
    assert max_record_size(100) == 126


# --- scanning --------------------------------------------------------------------------------


@given(payloads, st.integers(min_value=1, max_value=50))
def test_scanner_counts_every_record_whatever_the_chunking(
    records: list[bytes], chunk: int
) -> None:
    data = b"".join(encode_record(p) for p in records)
    scanner, holes = scan(data, chunk=chunk, start=7)
    assert holes == []
    assert scanner.records == len(records)
    assert scanner.position == 7 + len(data)


@given(payloads.filter(bool), st.data())
def test_scanner_reports_torn_tail_at_last_intact_record(
    records: list[bytes], data: st.DataObject
) -> None:
    whole = b"".join(encode_record(p) for p in records)
    last = len(encode_record(records[-1]))
    cut = data.draw(st.integers(min_value=1, max_value=last - 1))
    scanner, holes = scan(whole[: len(whole) - cut], chunk=13)
    assert len(holes) == 1
    assert holes[0].reason.startswith("torn record")
    assert scanner.records == len(records) - 1
    assert scanner.position == holes[0].start == len(whole) - last
    assert holes[0].end == len(whole) - cut


def test_scanner_resumes_at_the_next_record_that_verifies() -> None:
    good = encode_record(b"one") + encode_record(b"two")
    data = good + b"\xff" * 12 + encode_record(b"three")
    scanner, holes = scan(data, chunk=5)
    assert holes == [Hole(len(good), len(good) + 12, holes[0].reason)]
    assert "outside" in holes[0].reason
    assert (scanner.records, scanner.position) == (3, len(data))


@given(
    st.lists(st.binary(min_size=1, max_size=60), min_size=3, max_size=20),
    st.data(),
    st.integers(min_value=1, max_value=64),
)
def test_one_flipped_bit_loses_only_the_record_it_touches(
    records: list[bytes], data: st.DataObject, chunk: int
) -> None:
    frames = [encode_record(p) for p in records]
    whole = bytearray(b"".join(frames))
    bit = data.draw(st.integers(min_value=0, max_value=len(whole) * 8 - 1))
    whole[bit // 8] ^= 1 << (bit % 8)
    scanner, holes = scan(bytes(whole), chunk=chunk)
    assert len(holes) == 1
    # Every record but the one holding the bit is counted (a garbled length
    # may make its record swallow no more than the bytes it claimed).
    assert scanner.records == len(records) - 1


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=64))
def test_scanner_never_raises_and_accounts_for_every_byte(data: bytes, chunk: int) -> None:
    scanner, holes = scan(data, chunk=chunk)
    assert 0 <= scanner.position <= len(data)
    hole_bytes = sum(hole.end - hole.start for hole in holes)
    assert all(a.end <= b.start for a, b in itertools.pairwise(holes))
    assert (hole_bytes == 0) == (holes == [])
    if holes:
        assert holes[-1].end <= len(data)


# --- names -----------------------------------------------------------------------------------


def test_file_names_follow_nsqd_layout() -> None:
    assert segment_file_name("t:c", 7) == "t:c.diskqueue.000007.dat"
    assert meta_file_name("t:c") == "t:c.diskqueue.meta.dat"
    assert bad_file_name("t.diskqueue.000001.dat", 2) == "t.diskqueue.000001.dat.bad.2"


@pytest.mark.parametrize(
    ("file_name", "number"),
    [
        ("t.diskqueue.000007.dat", 7),
        ("t.diskqueue.1234567.dat", 1234567),
        ("t.diskqueue.meta.dat", None),
        ("t.diskqueue.000007.dat.bad.0", None),
        ("t.diskqueue.07.dat", None),
        ("t:c.diskqueue.000007.dat", None),
        ("tt.diskqueue.000007.dat", None),
    ],
)
def test_parse_segment_number_accepts_only_own_segments(file_name: str, number: int | None) -> None:
    assert parse_segment_number("t", file_name) == number


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\0b"])
def test_check_queue_name_refuses_unsafe_file_names(name: str) -> None:
    with pytest.raises(LocalProtocolError):
        check_queue_name(name)


def test_check_queue_name_keeps_channel_colon() -> None:
    check_queue_name("topic:channel#ephemeral")


# --- the position file -----------------------------------------------------------------------


META = QueueMeta(depth=5, read_file=2, read_pos=100, write_file=3, write_pos=40)


def test_meta_round_trips() -> None:
    assert decode_meta(encode_meta(META)) == META


def test_meta_is_nsqd_lines_plus_checksum() -> None:
    assert encode_meta(META).startswith(b"5\n2,100\n3,40\n")


@pytest.mark.parametrize("index", range(len(encode_meta(META))))
def test_meta_detects_any_flipped_byte(index: int) -> None:
    data = bytearray(encode_meta(META))
    data[index] ^= 0x04
    assert isinstance(decode_meta(bytes(data)), Corrupt)


@pytest.mark.parametrize("data", [b"", b"garbage", b"5\n2,100\n3,40\n", b"\xff" * 40])
def test_meta_refuses_garbage(data: bytes) -> None:
    assert isinstance(decode_meta(data), Corrupt)


# --- recovery --------------------------------------------------------------------------------


def meta(read_file: int, read_pos: int, write_file: int) -> QueueMeta:
    return QueueMeta(
        depth=1, read_file=read_file, read_pos=read_pos, write_file=write_file, write_pos=0
    )


def test_recovery_without_meta_serves_every_segment_from_start() -> None:
    plan = plan_recovery(None, {3: 10, 1: 10, 2: 10})
    assert (plan.stale, plan.scan, plan.read_pos, plan.write_file) == ((), (1, 2, 3), 0, 3)


def test_recovery_resumes_at_meta_read_position() -> None:
    plan = plan_recovery(meta(2, 40, 3), {2: 100, 3: 10})
    assert (plan.scan, plan.read_pos, plan.write_file, plan.notes) == ((2, 3), 40, 3, ())


def test_recovery_deletes_segments_before_read_position() -> None:
    plan = plan_recovery(meta(2, 0, 2), {0: 10, 1: 10, 2: 10})
    assert (plan.stale, plan.scan) == ((0, 1), (2,))


def test_recovery_skips_read_segment_deleted_before_sync() -> None:
    plan = plan_recovery(meta(2, 40, 3), {3: 10})
    assert (plan.scan, plan.read_pos, plan.notes) == ((3,), 0, ())


def test_recovery_reports_missing_segments() -> None:
    plan = plan_recovery(meta(1, 0, 5), {1: 10, 4: 10})
    assert plan.notes == ("segments 2..3 are missing",)


def test_recovery_serves_everything_when_the_read_position_is_past_its_segment() -> None:
    plan = plan_recovery(meta(1, 500, 1), {0: 100, 1: 100})
    assert (plan.stale, plan.scan, plan.read_pos, plan.meta_ignored) == ((), (0, 1), 0, True)
    assert "past the data" in plan.notes[0]


def test_recovery_never_deletes_segments_for_a_read_file_past_the_last() -> None:
    plan = plan_recovery(meta(9, 0, 9), dict.fromkeys(range(8), 10))
    assert (plan.stale, plan.scan, plan.meta_ignored) == ((), tuple(range(8)), True)


def test_recovery_keeps_read_segments_holding_outstanding_tickets() -> None:
    held = QueueMeta(
        depth=1, read_file=3, read_pos=0, write_file=3, write_pos=0,
        ack_generation=1, outstanding=(make_ticket(1, 40),),
    )  # fmt: skip
    plan = plan_recovery(held, {0: 10, 1: 10, 3: 10})
    assert (plan.stale, plan.scan) == ((0,), (3,))


def test_recovery_without_segments_keeps_numbering_upwards() -> None:
    assert plan_recovery(meta(4, 0, 4), {}).write_file == 4
    assert plan_recovery(None, {}).write_file == 0


def test_meta_with_acks_round_trips() -> None:
    value = QueueMeta(
        depth=3, read_file=1, read_pos=5, write_file=2, write_pos=9,
        ack_generation=4, outstanding=(make_ticket(1, 0), make_ticket(2, 77)),
    )  # fmt: skip
    assert decode_meta(encode_meta(value)) == value


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        {"max_bytes_per_file": 0},
        {"sync_every": 0},
        {"sync_timeout": 0.0},
        {"max_msg_size": 0},
        {"max_msg_size": 2**32},
    ],
)
def test_config_refuses_out_of_range(field: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        DiskQueueConfig(**field)  # type: ignore[arg-type]


# --- decode_records: the reader's runs ------------------------------------------------------


@given(payloads, st.integers(min_value=1, max_value=25))
def test_decode_records_matches_decode_record_one_by_one(items: list[bytes], limit: int) -> None:
    buf = b"".join(map(encode_record, items))
    got, end = decode_records(buf, 0, len(buf), MAX, limit)
    expected: list[bytes] = []
    offset = 0
    while len(expected) < limit:
        result = decode_record(buf, offset, MAX)
        if not isinstance(result, Record):
            break
        expected.append(result.payload)
        offset = result.end
    assert (got, end) == (expected, offset)


def test_decode_records_stops_before_damage_and_at_the_stop() -> None:
    good = [encode_record(b"a" * 10), encode_record(b"b" * 10)]
    rotten = bytearray(encode_record(b"c" * 10))
    rotten[-1] ^= 1
    buf = good[0] + good[1] + bytes(rotten) + encode_record(b"d")
    assert decode_records(buf, 0, len(buf), MAX, 10) == ([b"a" * 10, b"b" * 10], 36)
    # A record reaching past ``stop`` (a known hole, the data's end) is left alone.
    assert decode_records(buf, 0, 35, MAX, 10) == ([b"a" * 10], 18)
    # A length outside the limit is not trusted.
    assert decode_records(buf, 0, len(buf), 9, 10) == ([], 0)
