from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import LocalProtocolError, RemoteProtocolError
from shoal.queue.message import (
    HEADER_SIZE,
    Message,
    MessageIDGenerator,
    decode_message,
    decode_message_batches,
    encode_message,
    node_of,
)

NOW_NS = 1_795_000_000_000_000_000


def test_message_id_is_16_lowercase_hex_chars_with_node_id() -> None:
    msg_id = MessageIDGenerator(837).next_id(NOW_NS)
    assert len(msg_id) == 16
    assert msg_id == msg_id.lower()
    assert (int(msg_id, 16) >> 12) & 0x3FF == 837


def test_message_ids_increase_when_a_tick_runs_out_of_sequence_numbers() -> None:
    gen = MessageIDGenerator(1)
    ids = [gen.next_id(NOW_NS) for _ in range(10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_message_ids_never_repeat_when_the_clock_goes_back() -> None:
    gen = MessageIDGenerator(1)
    first = [gen.next_id(NOW_NS) for _ in range(10)]
    later = [gen.next_id(NOW_NS - 10**9) for _ in range(10)]
    assert later[0] > first[-1]
    assert len(set(first + later)) == 20


def test_message_id_generator_refuses_an_out_of_range_node_id() -> None:
    with pytest.raises(LocalProtocolError):
        MessageIDGenerator(1024)


@given(
    node_id=st.integers(0, 1023),
    steps=st.lists(st.tuples(st.integers(-(5 << 20), 5 << 20), st.integers(0, 9000)), max_size=6),
)
def test_next_ids_equals_next_id_called_count_times(
    node_id: int, steps: list[tuple[int, int]]
) -> None:
    one, bulk = MessageIDGenerator(node_id), MessageIDGenerator(node_id)
    now = NOW_NS
    for shift, count in steps:
        now += shift
        assert bulk.next_ids(now, count) == [one.next_id(now) for _ in range(count)]


def test_message_encoding_round_trips_header_and_body() -> None:
    msg = Message(b"0123456789abcdef", b"body \x00 bytes", NOW_NS, 7)
    data = encode_message(msg)
    assert len(data) == HEADER_SIZE + len(msg.body)
    back = decode_message(data)
    assert (back.id, back.body, back.timestamp, back.attempts) == (msg.id, msg.body, NOW_NS, 7)


def test_decode_message_refuses_data_shorter_than_a_header() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_message(b"x" * (HEADER_SIZE - 1))


def test_decode_message_batches_groups_runs_of_timestamp_and_attempts() -> None:
    msgs = [
        Message(b"%016x" % i, b"body%d" % i, timestamp=ts, attempts=attempts)
        for i, (ts, attempts) in enumerate([(5, 0), (5, 0), (5, 1), (6, 1), (6, 1), (5, 0)])
    ]
    batches = decode_message_batches([encode_message(msg) for msg in msgs])
    assert [(len(ids), ts, attempts) for ids, _, ts, attempts in batches] == [
        (2, 5, 0),
        (1, 5, 1),
        (2, 6, 1),
        (1, 5, 0),
    ]
    ids = [msg_id for batch in batches for msg_id in batch[0]]
    bodies = [body for batch in batches for body in batch[1]]
    assert ids == [msg.id for msg in msgs]
    assert bodies == [msg.body for msg in msgs]
    assert decode_message_batches([]) == []


def test_decode_message_batches_refuses_a_record_shorter_than_a_header() -> None:
    good = encode_message(Message(b"0" * 16, b"x", timestamp=1))
    with pytest.raises(RemoteProtocolError):
        decode_message_batches([good, b"short"])


def test_advance_past_keeps_later_ids_above_even_when_the_clock_went_back() -> None:
    gen = MessageIDGenerator(7)
    late = gen.next_id(2_000_000_000_000_000_000)
    fresh = MessageIDGenerator(7)  # a restart whose clock is years behind
    assert fresh.next_id(1_700_000_000_000_000_000) < late
    fresh.advance_past(late)
    assert fresh.next_id(1_700_000_000_000_000_000) > late
    assert min(fresh.next_ids(1_700_000_000_000_000_000, 5000)) > late
    fresh.advance_past(b"not-an-id")  # ignored
    fresh.advance_past(b"0" * 16)  # below: nothing changes
    assert fresh.next_id(1_700_000_000_000_000_000) > late


def test_node_of_reads_the_node_id_back() -> None:
    for node in (0, 7, 1023):
        gen = MessageIDGenerator(node)
        assert node_of(gen.next_id(1_700_000_000_000_000_000)) == node
        assert {node_of(i) for i in gen.next_ids(1_700_000_000_000_000_000, 5000)} == {node}
    assert node_of(b"short") is None
    assert node_of(b"zzzzzzzzzzzzzzzz") is None
