import contextlib
from typing import TYPE_CHECKING

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import RemoteProtocolError
from shoal.membership.codec import (
    MAX_PACKET_MESSAGES,
    PROTOCOL_VERSION,
    STREAM_REPLY_TYPES,
    CodecError,
    CodecLimits,
    decode_packet,
    decode_stream,
    encode_message,
    encode_packet,
    encode_stream,
)
from shoal.membership.messages import (
    Ack,
    Alive,
    Dead,
    Message,
    MessageType,
    Nack,
    Ping,
    PingReq,
    PushPull,
    PushPullEntry,
    Refused,
    Suspect,
    UserMsg,
)
from shoal.membership.state import MemberState

if TYPE_CHECKING:
    from collections.abc import Callable

LIMITS = CodecLimits()
REASONS = {
    "empty", "oversize", "version", "cbor", "trailing", "shape", "limit",
    "unknown_type", "unexpected_type",
}  # fmt: skip
VERSION = bytes((PROTOCOL_VERSION,))

names = st.text(min_size=1, max_size=30)
hosts = st.from_regex(r"[A-Za-z0-9._:%-]{1,40}", fullmatch=True)
addresses = st.tuples(hosts, st.integers(0, 65535))
metas = st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=6)
seqs = st.integers(0, 2**32 - 1)
incarnations = st.integers(0, 2**64 - 1)

pings = st.builds(Ping, seq=seqs, target=names, source=names)
ping_reqs = st.builds(
    PingReq, seq=seqs, target=names, target_address=addresses, nack=st.booleans(), source=names
)
acks = st.builds(Ack, seq=seqs)
nacks = st.builds(Nack, seq=seqs)
alives = st.builds(Alive, incarnation=incarnations, name=names, address=addresses, meta=metas)
suspects = st.builds(Suspect, incarnation=incarnations, name=names, source=names)
deads = st.builds(Dead, incarnation=incarnations, name=names, source=names)
refuseds = st.builds(Refused, incarnation=incarnations, name=names, source=names)
users = st.builds(UserMsg, key=names, data=st.binary(max_size=200))
entries = st.builds(
    PushPullEntry,
    name=names,
    address=addresses,
    incarnation=incarnations,
    state=st.sampled_from(MemberState),
    meta=metas,
)
push_pulls = st.builds(
    PushPull,
    source=names,
    join=st.booleans(),
    reply=st.booleans(),
    members=st.lists(entries, max_size=8, unique_by=lambda e: e.name).map(tuple),
    app_state=st.binary(max_size=200),
)
packet_messages = st.one_of(pings, ping_reqs, acks, nacks, alives, suspects, deads, users, refuseds)


@pytest.mark.slow
@given(st.lists(packet_messages, min_size=1, max_size=20))
def test_codec_packet_round_trip(messages: list[Message]) -> None:
    data = encode_packet([encode_message(m) for m in messages])
    assert data[0] == PROTOCOL_VERSION
    assert decode_packet(data, LIMITS) == messages


@pytest.mark.slow
@given(st.one_of(pings, push_pulls, users))
def test_codec_stream_request_round_trip(message: Message) -> None:
    assert decode_stream(encode_stream(message), LIMITS) == message


@pytest.mark.slow
@given(st.one_of(acks, push_pulls))
def test_codec_stream_reply_round_trip(message: Message) -> None:
    assert decode_stream(encode_stream(message), LIMITS, STREAM_REPLY_TYPES) == message


def test_codec_every_message_type_has_a_strategy() -> None:
    covered = {
        MessageType.PING,
        MessageType.PING_REQ,
        MessageType.ACK,
        MessageType.NACK,
        MessageType.ALIVE,
        MessageType.SUSPECT,
        MessageType.DEAD,
        MessageType.PUSH_PULL,
        MessageType.USER,
        MessageType.REFUSED,
    }
    assert covered == set(MessageType)


def test_codec_message_type_numbers_are_stable() -> None:
    # On the wire: these numbers must never change.
    assert [(t.name, t.value) for t in MessageType] == [
        ("PING", 0),
        ("PING_REQ", 1),
        ("ACK", 2),
        ("NACK", 3),
        ("ALIVE", 4),
        ("SUSPECT", 5),
        ("DEAD", 6),
        ("PUSH_PULL", 7),
        ("USER", 8),
        ("REFUSED", 9),
    ]


def test_codec_alive_wire_layout() -> None:
    message = Alive(incarnation=3, name="a", address=("h", 7), meta={"k": "v"})
    assert encode_message(message) == cbor2.dumps([4, 3, "a", ["h", 7], {"k": "v"}])


@pytest.mark.slow
@given(st.binary(max_size=300))
def test_codec_arbitrary_bytes_decode_or_raise_remote_protocol_error(data: bytes) -> None:
    for decode in (
        lambda: decode_packet(data, LIMITS),
        lambda: decode_stream(data, LIMITS),
        lambda: decode_stream(data, LIMITS, STREAM_REPLY_TYPES),
        lambda: decode_packet(VERSION + data, LIMITS),
        lambda: decode_stream(VERSION + data, LIMITS),
    ):
        with contextlib.suppress(RemoteProtocolError):
            decode()


@pytest.mark.slow
@given(st.lists(st.integers(0, 255), min_size=1, max_size=8), st.binary(max_size=60))
def test_codec_corrupted_packets_raise_only_codec_error(edits: list[int], tail: bytes) -> None:
    base = bytearray(
        encode_packet(
            [
                encode_message(Alive(incarnation=1, name="n", address=("h", 1), meta={"a": "b"})),
                encode_message(Ping(seq=5, target="t", source="s")),
            ]
        )
    )
    for i, value in enumerate(edits):
        base[(i * 7 + value) % len(base)] = value
    reason = None
    try:
        decode_packet(bytes(base) + tail, LIMITS)
    except CodecError as exc:
        reason = exc.reason
    assert reason is None or reason in REASONS


def _raw(item: object) -> bytes:
    return VERSION + cbor2.dumps(item)


def _reason(data: bytes, *, stream: bool = False) -> str:
    decode: Callable[[bytes, CodecLimits], object] = decode_stream if stream else decode_packet
    with pytest.raises(CodecError) as info:
        decode(data, LIMITS)
    return info.value.reason


def test_codec_rejects_empty_and_wrong_version() -> None:
    assert _reason(b"") == "empty"
    assert _reason(b"\x02" + cbor2.dumps([[2, 1]])) == "version"


def test_codec_rejects_oversize_before_parsing() -> None:
    limits = CodecLimits(max_packet_size=10)
    with pytest.raises(CodecError) as info:
        decode_packet(_raw([[2, 1]]) + b"\x00" * 20, limits)
    assert info.value.reason == "oversize"


def test_codec_rejects_trailing_bytes() -> None:
    assert _reason(_raw([[2, 1]]) + b"\x00") == "trailing"


def test_codec_rejects_duplicate_map_keys() -> None:
    # [[4, 1, "n", ["h", 1], {"a": "b", "a": "c"}]] with the key repeated by hand.
    meta = b"\xa2" + cbor2.dumps("a") + cbor2.dumps("b") + cbor2.dumps("a") + cbor2.dumps("c")
    message = b"\x85" + cbor2.dumps(4) + cbor2.dumps(1) + cbor2.dumps("n") + cbor2.dumps(["h", 1])
    assert _reason(VERSION + b"\x81" + message + meta) == "cbor"


def test_codec_rejects_unknown_type() -> None:
    assert _reason(_raw([[99, 1]])) == "unknown_type"


def test_codec_rejects_message_on_wrong_transport() -> None:
    push_pull = PushPull(source="a", join=False, reply=False, members=(), app_state=b"")
    assert _reason(encode_packet([encode_message(push_pull)])) == "unexpected_type"
    assert (
        _reason(
            encode_stream(Alive(incarnation=1, name="a", address=("h", 1), meta={})), stream=True
        )
        == "unexpected_type"
    )


def test_codec_rejects_tags_and_indefinite_items() -> None:
    assert _reason(VERSION + b"\x81\x82\x02\xc1\x01") == "cbor"  # epoch date tag
    assert _reason(VERSION + b"\x81\x82\x02\xd9\x0f\xa0\x01") == "cbor"  # unknown tag
    assert _reason(VERSION + b"\x81\x82\x02\xc2\x41\x01") == "cbor"  # bignum
    assert _reason(VERSION + b"\x9f\x82\x02\x01\xff") == "cbor"  # indefinite array


def test_codec_rejects_excessive_nesting() -> None:
    assert _reason(_raw([[2, [[[[1]]]]]])) == "cbor"


def test_codec_rejects_wrong_field_types() -> None:
    assert _reason(_raw([[2, True]])) == "shape"  # a bool is not a seq
    assert _reason(_raw([[2, -1]])) == "shape"
    assert _reason(_raw([[2, 2**32]])) == "shape"
    assert _reason(_raw([[2, 1, 2]])) == "shape"
    assert _reason(_raw([[4, 1, "", ["h", 1], {}]])) == "shape"
    assert _reason(_raw([[4, 1, "n", ["h", 70000], {}]])) == "shape"
    assert _reason(_raw([[4, 1, "n", ["h", 1], {"k": 1}]])) == "shape"
    assert _reason(_raw([])) == "shape"
    assert _reason(_raw({"a": 1})) == "shape"


def test_codec_rejects_oversized_fields() -> None:
    assert _reason(_raw([[4, 1, "n" * 300, ["h", 1], {}]])) == "limit"
    assert _reason(_raw([[4, 1, "n", ["h", 1], {"k": "v" * 600}]])) == "limit"
    assert _reason(_raw([[2, 1]] * (MAX_PACKET_MESSAGES + 1))) == "limit"
    limits = CodecLimits(max_push_pull_members=1)
    entry = ["a", ["h", 1], 1, 0, {}]
    with pytest.raises(CodecError) as info:
        decode_stream(_raw([7, "s", False, False, [entry, entry], b""]), limits)
    assert info.value.reason == "limit"


def test_codec_rejects_push_pull_naming_a_member_twice() -> None:
    entry = ["a", ["h", 1], 1, 0, {}]
    assert _reason(_raw([7, "s", False, False, [entry, entry], b""]), stream=True) == "shape"


def test_codec_rejects_unknown_member_state() -> None:
    entry = ["a", ["h", 1], 1, 9, {}]
    assert _reason(_raw([7, "s", False, False, [entry], b""]), stream=True) == "shape"


def test_codec_packet_header_counts_parts() -> None:
    part = encode_message(Ack(seq=1))
    for count in (1, 23, 24, 255):
        assert len(decode_packet(encode_packet([part] * count), LIMITS)) == count


def _array_head(count: int) -> bytes:
    return b"\x9a" + count.to_bytes(4, "big")


def test_codec_refuses_a_huge_declared_array_from_its_head() -> None:
    # The attack: a stream announcing 16.7 M empty arrays. Refused from the
    # head, before cbor2 builds any of them.
    count = LIMITS.max_stream_size - 16
    data = VERSION + _array_head(count) + b"\x80" * count
    assert _reason(data, stream=True) == "limit"


def test_codec_refuses_containers_wider_than_their_level() -> None:
    members = 3
    limits = CodecLimits(max_push_pull_members=members)
    entry = cbor2.dumps(["n", ["h", 1], 1, 0, {}])
    table = _array_head(members + 1) + entry * (members + 1)
    head = cbor2.dumps([7, "a", False, False])
    data = VERSION + b"\x86" + head[1:] + table + cbor2.dumps(b"")
    with pytest.raises(CodecError) as info:
        decode_stream(data, limits)
    assert info.value.reason == "limit"
    # An address (depth 4 in a record) holding thousands of items.
    record = b"\x85" + cbor2.dumps("n") + _array_head(5000) + b"\x00" * 5000
    data = VERSION + b"\x86" + head[1:] + b"\x81" + record + b"\x01\x00\xa0" + cbor2.dumps(b"")
    assert _reason(data, stream=True) == "limit"


def test_codec_refuses_declared_lengths_beyond_the_bytes_left() -> None:
    assert _reason(VERSION + b"\x81\x82\x08\x5a\xff\xff\xff\xff", stream=False) == "cbor"
    assert _reason(VERSION + b"\x81\x83\x08\x01" + _array_head(2), stream=False) == "limit"


def test_codec_refuses_more_items_than_the_budget() -> None:
    limits = CodecLimits(max_push_pull_members=2)
    # Two records whose meta maps are each as wide as allowed: within every
    # container's width, beyond the total a two-member table may hold.
    pairs = {f"k{i}": "" for i in range(200)}
    entry = cbor2.dumps(["n", ["h", 1], 1, 0, pairs])
    other = cbor2.dumps(["m", ["h", 1], 1, 0, pairs])
    head = cbor2.dumps([7, "a", False, False])
    data = VERSION + b"\x86" + head[1:] + b"\x82" + entry + other + cbor2.dumps(b"")
    with pytest.raises(CodecError) as info:
        decode_stream(data, limits)
    assert info.value.reason == "limit"


@pytest.mark.parametrize("host", ["127.0.0.1\x00", "a b", "h\n", "\u00e9t\u00e9", "x/y"])
def test_codec_refuses_hosts_no_socket_takes(host: str) -> None:
    # A forged member at "127.0.0.1\0" crashed the node's UDP sender.
    assert _reason(_raw([[4, 1, "n", [host, 1], {}]])) == "shape"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "fe80::1%eth0", "node-1.example.com"])
def test_codec_accepts_ip_literals_and_host_names(host: str) -> None:
    message = Alive(incarnation=1, name="n", address=(host, 1), meta={})
    assert decode_packet(encode_packet([encode_message(message)]), LIMITS) == [message]


def test_codec_refuses_a_push_pull_record_whose_host_no_socket_takes() -> None:
    head = cbor2.dumps([7, "a", False, False])
    table = cbor2.dumps([["n", ["127.0.0.1\x00", 1], 1, 0, {}]])
    assert _reason(VERSION + b"\x86" + head[1:] + table + cbor2.dumps(b""), stream=True) == "shape"
