"""Recalled push-pull tables: the same table decodes once, and nothing else changes."""

import dataclasses
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.membership import MembershipConfig, MemberState
from shoal.membership.codec import (
    STREAM_REPLY_TYPES,
    CodecError,
    CodecLimits,
    decode_stream,
    encode_push_pull,
    encode_table,
)
from shoal.membership.engine import Membership
from shoal.membership.messages import PushPull, PushPullEntry
from shoal.testing.strategies import message_strategies

LIMITS = CodecLimits()

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=20)
PUSH_PULLS = message_strategies(
    names=names,
    addresses=st.tuples(st.sampled_from(["10.0.0.1", "10.0.0.2", "host-a"]), st.integers(0, 65535)),
    incarnations=st.integers(0, 2**64 - 1),
    metas=st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=2),
    app_states=st.binary(max_size=300),
    user_data=st.binary(max_size=10),
).push_pulls


def table(n: int, incarnation: int = 1) -> bytes:
    return encode_table(
        PushPullEntry(f"node-{i}", (f"10.0.0.{i}", 4160), incarnation, MemberState.ALIVE, {})
        for i in range(n)
    )


def decode(data: bytes, limits: CodecLimits = LIMITS) -> PushPull:
    message = decode_stream(data, limits, STREAM_REPLY_TYPES)
    assert isinstance(message, PushPull)
    return message


def test_recall_same_table_from_another_sender_shares_the_records() -> None:
    records = table(50, incarnation=7)
    first = decode(encode_push_pull("node-1", False, True, records, b"one"))
    second = decode(encode_push_pull("node-2", True, False, records, b"two"))
    assert second.members is first.members
    assert (second.source, second.join, second.reply, second.app_state) == (
        "node-2",
        True,
        False,
        b"two",
    )


def test_recall_changed_table_is_decoded_afresh() -> None:
    first = decode(encode_push_pull("node-1", False, True, table(50), b""))
    second = decode(encode_push_pull("node-1", False, True, table(50, incarnation=2), b""))
    assert second.members is not first.members
    assert {m.incarnation for m in second.members} == {2}


def test_recall_refuses_trailing_bytes_after_a_remembered_table() -> None:
    records = table(20, incarnation=11)
    decode(encode_push_pull("node-1", False, True, records, b""))
    with pytest.raises(CodecError) as info:
        decode(encode_push_pull("node-1", False, True, records, b"") + b"\x00")
    assert info.value.reason == "trailing"


def test_recall_applies_the_limits_of_the_decoder() -> None:
    records = table(20, incarnation=12)
    decode(encode_push_pull("node-1", False, True, records, b""))
    tight = dataclasses.replace(LIMITS, max_push_pull_members=10)
    with pytest.raises(CodecError) as info:
        decode(encode_push_pull("node-1", False, True, records, b""), tight)
    assert info.value.reason == "limit"


def test_recall_refuses_a_source_longer_than_the_limit() -> None:
    records = table(20, incarnation=13)
    decode(encode_push_pull("node-1", False, True, records, b""))
    with pytest.raises(CodecError):
        decode(encode_push_pull("n" * 300, False, True, records, b""))


def test_decoded_addresses_are_one_object_per_address() -> None:
    first = decode(encode_push_pull("node-1", False, True, table(30, incarnation=3), b""))
    second = decode(encode_push_pull("node-1", False, True, table(30, incarnation=4), b""))
    assert second.members is not first.members
    for a, b in zip(first.members, second.members, strict=True):
        assert a.address is b.address
        assert a.name is b.name


def test_engine_table_is_in_name_order_whatever_the_order_learned() -> None:
    config = MembershipConfig.local()
    names = [f"node-{i}" for i in range(12)]

    def engine_learning(order: list[str], seed: int) -> Membership:
        engine = Membership(
            config, name="node-0", address=("10.0.0.0", 4160), rng=random.Random(seed), now=0.0
        )
        records = encode_table(
            PushPullEntry(n, (f"10.0.0.{n[5:]}", 4160), 1, MemberState.ALIVE, {}) for n in order
        )
        reply = encode_push_pull("node-0", False, True, records, b"")
        engine.receive_stream_reply(reply, ("10.0.0.0", 4160), 0.0)
        return engine

    a = engine_learning(names, 1)
    b = engine_learning(list(reversed(names)), 2)
    a.join([("10.0.0.99", 4160)], 1.0)
    b.join([("10.0.0.99", 4160)], 1.0)
    (_, request_a), *_ = a.streams_to_open()
    (_, request_b), *_ = b.streams_to_open()
    sent_a = decode_stream(request_a, LIMITS)
    sent_b = decode_stream(request_b, LIMITS)
    assert isinstance(sent_a, PushPull)
    assert isinstance(sent_b, PushPull)
    assert [m.name for m in sent_a.members] == sorted(names)
    # Byte-identical tables: the second is recalled, not decoded again.
    assert sent_b.members is sent_a.members


@given(PUSH_PULLS, names, st.booleans(), st.booleans(), st.binary(max_size=70_000))
def test_recalled_push_pull_equals_its_full_decode(
    first: PushPull, source: str, join: bool, reply: bool, app_state: bytes
) -> None:
    decoded = decode(
        encode_push_pull(
            first.source, first.join, first.reply, encode_table(first.members), first.app_state
        )
    )
    assert decoded == first
    again = PushPull(
        source=source, join=join, reply=reply, members=first.members, app_state=app_state
    )
    recalled = decode(encode_push_pull(source, join, reply, encode_table(first.members), app_state))
    assert recalled == again
    assert recalled.members is decoded.members
