from __future__ import annotations

import pickle
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import LocalProtocolError, ShoalError
from shoal.queue import errors
from shoal.queue.commands import (
    MAX_LINE_SIZE,
    Auth,
    Cls,
    Command,
    CommandDecoder,
    Dpub,
    Fin,
    Identify,
    Mpub,
    Nop,
    Pub,
    Rdy,
    Req,
    Sub,
    Touch,
    encode_command,
)
from shoal.queue.errors import ClientError, FatalClientError
from shoal.queue.frames import encode_error

MSG_ID = b"0123456789abcdef"
# nsqd's defaults (docs/nsq.md §1.6).
LIMITS = {
    "max_msg_size": 1_048_576,
    "max_body_size": 5_242_880,
    "max_req_timeout_ms": 3_600_000,
    "max_rdy_count": 2500,
}
# Small limits so that properties reach every bound.
SMALL = {"max_msg_size": 16, "max_body_size": 64, "max_req_timeout_ms": 1000, "max_rdy_count": 10}


def decoder(**overrides: object) -> CommandDecoder:
    return CommandDecoder(**{**LIMITS, "expect_magic": False, **overrides})  # type: ignore[arg-type]


def drain(dec: CommandDecoder) -> list[Command]:
    out = []
    while (cmd := dec.next_command()) is not None:
        out.append(cmd)
    return out


def decode(wire: bytes, **overrides: object) -> list[Command]:
    dec = decoder(**overrides)
    dec.receive_data(wire)
    return drain(dec)


def refused(wire: bytes, **overrides: object) -> FatalClientError:
    dec = decoder(**overrides)
    dec.receive_data(wire)
    with pytest.raises(FatalClientError) as info:
        drain(dec)
    return info.value


def sized(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


def i32(value: int) -> bytes:
    return struct.pack(">i", value)


# --- errors.py ------------------------------------------------------------------


def test_client_error_is_not_fatal() -> None:
    err = ClientError(errors.E_FIN_FAILED, "FIN x failed ID not in flight")
    assert not err.fatal
    assert isinstance(err, ShoalError)


def test_fatal_client_error_is_fatal_client_error() -> None:
    err = FatalClientError(errors.E_INVALID, "invalid command FOO")
    assert err.fatal
    assert isinstance(err, ClientError)


def test_client_error_frame_carries_code_and_description() -> None:
    err = FatalClientError(errors.E_INVALID, "invalid command FOO")
    assert err.frame() == encode_error("E_INVALID", "invalid command FOO")
    assert str(err) == "E_INVALID invalid command FOO"


def test_client_error_survives_pickling() -> None:
    err = pickle.loads(pickle.dumps(FatalClientError(errors.E_BAD_BODY, "x")))
    assert (type(err), err.code, err.description) == (FatalClientError, "E_BAD_BODY", "x")


def test_non_fatal_codes_are_the_three_failed_ones() -> None:
    assert frozenset({"E_FIN_FAILED", "E_REQ_FAILED", "E_TOUCH_FAILED"}) == errors.NON_FATAL


def test_error_code_constants_spell_their_names() -> None:
    names = [n for n in errors.__all__ if n.startswith("E_")]
    assert len(names) == 19
    assert all(getattr(errors, n) == n for n in names)


# --- happy paths ------------------------------------------------------------------


def test_decoder_accepts_magic_then_commands() -> None:
    dec = decoder(expect_magic=True)
    dec.receive_data(b"  V2NOP\n")
    assert drain(dec) == [Nop()]


def test_identify_carries_raw_json() -> None:
    assert decode(b"IDENTIFY\n" + sized(b'{"client_id":"a"}')) == [Identify(b'{"client_id":"a"}')]


def test_auth_carries_secret() -> None:
    assert decode(b"AUTH\n" + sized(b"s3cret")) == [Auth(b"s3cret")]


def test_sub_carries_topic_and_channel() -> None:
    assert decode(b"SUB orders billing\n") == [Sub("orders", "billing")]


def test_sub_accepts_ephemeral_names() -> None:
    assert decode(b"SUB t#ephemeral c#ephemeral\n") == [Sub("t#ephemeral", "c#ephemeral")]


def test_pub_carries_topic_and_body() -> None:
    assert decode(b"PUB orders\n" + sized(b"hello")) == [Pub("orders", b"hello")]


def test_pub_body_may_contain_newlines() -> None:
    assert decode(b"PUB t\n" + sized(b"a\nb\n") + b"NOP\n") == [Pub("t", b"a\nb\n"), Nop()]


def test_pub_accepts_body_of_exactly_max_msg_size() -> None:
    assert decode(b"PUB t\n" + sized(b"x" * 16), max_msg_size=16) == [Pub("t", b"x" * 16)]


def test_mpub_keeps_bodies_in_order() -> None:
    wire = b"MPUB t\n" + i32(4 + 5 + 6) + i32(2) + sized(b"a") + sized(b"bb")
    assert decode(wire) == [Mpub("t", [b"a", b"bb"])]


def test_mpub_ignores_declared_body_length() -> None:
    # nsqd reads the messages the count announces, whatever the body length says.
    wire = b"MPUB t\n" + i32(1) + i32(2) + sized(b"a") + sized(b"bb")
    assert decode(wire) == [Mpub("t", [b"a", b"bb"])]


def test_mpub_of_one_whole_in_one_read_is_followed_by_the_next_command() -> None:
    wire = encode_command(Mpub("t", [b"body"])) + b"NOP\n"
    assert decode(wire) == [Mpub("t", [b"body"]), Nop()]


def test_mpub_of_one_ignores_declared_body_length() -> None:
    wire = b"MPUB t\n" + i32(1) + i32(1) + sized(b"abc") + b"NOP\n"
    assert decode(wire) == [Mpub("t", [b"abc"]), Nop()]


def test_mpub_of_one_waits_for_its_whole_body() -> None:
    wire = encode_command(Mpub("t", [b"body"]))
    dec = decoder()
    dec.receive_data(wire[:-1])
    assert dec.next_command() is None
    dec.receive_data(wire[-1:])
    assert drain(dec) == [Mpub("t", [b"body"])]


def test_mpub_decodes_large_batch() -> None:
    bodies = [bytes([i % 256]) * 200 for i in range(200)]
    assert decode(encode_command(Mpub("t", bodies))) == [Mpub("t", bodies)]


def test_dpub_carries_topic_defer_and_body() -> None:
    assert decode(b"DPUB t 1500\n" + sized(b"later")) == [Dpub("t", 1500, b"later")]


def test_dpub_accepts_defer_of_max_req_timeout() -> None:
    assert decode(b"DPUB t 3600000\n" + sized(b"x")) == [Dpub("t", 3_600_000, b"x")]


def test_rdy_carries_count() -> None:
    assert decode(b"RDY 2500\n") == [Rdy(2500)]


def test_rdy_without_count_is_one() -> None:
    assert decode(b"RDY\n") == [Rdy(1)]


def test_rdy_accepts_zero() -> None:
    assert decode(b"RDY 0\n") == [Rdy(0)]


def test_rdy_empty_count_is_zero() -> None:
    # nsqd's ByteToBase10 reads an empty parameter as 0.
    assert decode(b"RDY \n") == [Rdy(0)]


def test_fin_carries_message_id() -> None:
    assert decode(b"FIN " + MSG_ID + b"\n") == [Fin(MSG_ID)]


def test_req_carries_message_id_and_timeout() -> None:
    assert decode(b"REQ " + MSG_ID + b" 250\n") == [Req(MSG_ID, 250)]


def test_req_timeout_beyond_max_is_not_clamped_by_decoder() -> None:
    assert decode(b"REQ " + MSG_ID + b" 99999999999\n") == [Req(MSG_ID, 99_999_999_999)]


def test_touch_carries_message_id() -> None:
    assert decode(b"TOUCH " + MSG_ID + b"\n") == [Touch(MSG_ID)]


def test_cls_decodes() -> None:
    assert decode(b"CLS\n") == [Cls()]


def test_nop_decodes() -> None:
    assert decode(b"NOP\n") == [Nop()]


def test_decoder_tolerates_crlf_line_endings() -> None:
    assert decode(b"RDY 5\r\nNOP\r\n") == [Rdy(5), Nop()]


def test_decoder_ignores_extra_params_like_nsqd() -> None:
    assert decode(b"FIN " + MSG_ID + b" extra\nSUB t c x y\n") == [Fin(MSG_ID), Sub("t", "c")]


def test_decoder_accepts_line_of_max_size() -> None:
    line = b"SUB t c" + b" " * (MAX_LINE_SIZE - 7)
    assert decode(line + b"\n") == [Sub("t", "c")]


def test_decoder_needs_data_for_incomplete_command() -> None:
    dec = decoder()
    dec.receive_data(b"PUB t\n" + sized(b"hello")[:-1])
    assert dec.next_command() is None
    dec.receive_data(b"o")
    assert dec.next_command() == Pub("t", b"hello")


def test_decoder_split_at_every_byte_decodes_identically() -> None:
    commands: list[Command] = [
        Identify(b"{}"),
        Sub("t", "c"),
        Mpub("t", [b"a\n", b"bb"]),
        Dpub("t", 5, b"x"),
        Req(MSG_ID, 3),
    ]
    wire = b"  V2" + b"".join(encode_command(c) for c in commands)
    for cut in range(len(wire) + 1):
        dec = decoder(expect_magic=True)
        dec.receive_data(wire[:cut])
        got = drain(dec)
        dec.receive_data(wire[cut:])
        assert got + drain(dec) == commands


def test_encode_command_mpub_layout() -> None:
    wire = encode_command(Mpub("t", [b"a", b"bc"]))
    assert wire == b"MPUB t\n" + i32(4 + 5 + 6) + i32(2) + i32(1) + b"a" + i32(2) + b"bc"


def test_encode_command_line_layouts() -> None:
    assert encode_command(Pub("t", b"xy")) == b"PUB t\n\x00\x00\x00\x02xy"
    assert encode_command(Dpub("t", 7, b"x")) == b"DPUB t 7\n\x00\x00\x00\x01x"
    assert encode_command(Req(MSG_ID, 0)) == b"REQ " + MSG_ID + b" 0\n"
    assert encode_command(Rdy(1)) == b"RDY 1\n"
    assert encode_command(Sub("t", "c")) == b"SUB t c\n"
    assert encode_command(Identify(b"{}")) == b"IDENTIFY\n\x00\x00\x00\x02{}"


# --- errors -----------------------------------------------------------------------


def assert_refused(err: FatalClientError, code: str, description: str) -> None:
    assert err.fatal
    assert (err.code, err.description) == (code, description)


def test_bad_magic_is_bad_protocol() -> None:
    dec = decoder(expect_magic=True)
    dec.receive_data(b"  V1")
    with pytest.raises(FatalClientError) as info:
        dec.next_command()
    assert info.value.code == errors.E_BAD_PROTOCOL
    assert info.value.fatal


def test_unknown_verb_is_invalid_command() -> None:
    assert_refused(refused(b"FOO bar\n"), "E_INVALID", "invalid command FOO")


def test_verbs_are_case_sensitive() -> None:
    assert_refused(refused(b"nop\n"), "E_INVALID", "invalid command nop")


def test_empty_line_is_invalid_command() -> None:
    assert_refused(refused(b"\n"), "E_INVALID", "invalid command ")


def test_commands_before_error_are_returned_first() -> None:
    dec = decoder()
    dec.receive_data(b"NOP\nFOO\n")
    assert dec.next_command() == Nop()
    with pytest.raises(FatalClientError):
        dec.next_command()


def test_line_too_long_without_newline_is_invalid() -> None:
    assert refused(b"PUB " + b"a" * MAX_LINE_SIZE).code == errors.E_INVALID


def test_line_too_long_with_newline_is_invalid() -> None:
    assert refused(b"NOP" + b" " * MAX_LINE_SIZE + b"\n").code == errors.E_INVALID


@pytest.mark.parametrize(
    ("wire", "description"),
    [
        (b"PUB\n", "PUB insufficient number of parameters"),
        (b"MPUB\n", "MPUB insufficient number of parameters"),
        (b"DPUB t\n", "DPUB insufficient number of parameters"),
        (b"SUB t\n", "SUB insufficient number of parameters"),
        (b"FIN\n", "FIN insufficient number of params"),
        (b"REQ " + MSG_ID + b"\n", "REQ insufficient number of params"),
        (b"TOUCH\n", "TOUCH insufficient number of params"),
        (b"AUTH x\n", "AUTH invalid number of parameters"),
    ],
)
def test_wrong_param_count_is_invalid(wire: bytes, description: str) -> None:
    assert_refused(refused(wire), "E_INVALID", description)


def test_pub_bad_topic() -> None:
    assert_refused(refused(b"PUB a*b\n"), "E_BAD_TOPIC", 'PUB topic name "a*b" is not valid')


def test_pub_topic_too_long() -> None:
    err = refused(b"PUB " + b"a" * 65 + b"\n")
    assert err.code == errors.E_BAD_TOPIC


def test_bad_topic_description_quotes_like_go() -> None:
    err = refused(b'PUB a"\x01\xff\n')
    assert err.description == 'PUB topic name "a\\"\\x01\\xff" is not valid'


def test_mpub_bad_topic_repeats_code_like_nsqd() -> None:
    err = refused(b"MPUB a*b\n")
    assert err.frame().endswith(b'E_BAD_TOPIC E_BAD_TOPIC MPUB topic name "a*b" is not valid')


def test_dpub_bad_topic() -> None:
    assert_refused(refused(b"DPUB a* 5\n"), "E_BAD_TOPIC", 'DPUB topic name "a*" is not valid')


def test_sub_bad_topic() -> None:
    assert_refused(refused(b"SUB a* c\n"), "E_BAD_TOPIC", 'SUB topic name "a*" is not valid')


def test_sub_bad_channel() -> None:
    assert_refused(refused(b"SUB t c*\n"), "E_BAD_CHANNEL", 'SUB channel name "c*" is not valid')


@pytest.mark.parametrize("verb", [b"PUB", b"DPUB"])
@pytest.mark.parametrize("size", [0, -1])
def test_pub_nonpositive_size_is_bad_message(verb: bytes, size: int) -> None:
    head = b"PUB t\n" if verb == b"PUB" else b"DPUB t 0\n"
    err = refused(head + i32(size))
    assert_refused(err, "E_BAD_MESSAGE", f"{verb.decode()} invalid message body size {size}")


def test_pub_too_big_is_bad_message() -> None:
    err = refused(b"PUB t\n" + i32(2_000_000))
    assert_refused(err, "E_BAD_MESSAGE", "PUB message too big 2000000 > 1048576")
    assert err.frame().endswith(b"E_BAD_MESSAGE PUB message too big 2000000 > 1048576")


def test_dpub_too_big_is_bad_message() -> None:
    err = refused(b"DPUB t 10\n" + i32(17), max_msg_size=16)
    assert_refused(err, "E_BAD_MESSAGE", "DPUB message too big 17 > 16")


def test_oversize_is_refused_before_body_arrives() -> None:
    dec = decoder()
    dec.receive_data(b"PUB t\n" + i32(2_000_000))
    with pytest.raises(FatalClientError):
        dec.next_command()


@pytest.mark.parametrize("defer", [b"-1", b"abc", b"1.5", b"\xd9\xa1"])
def test_dpub_unparsable_defer_is_invalid(defer: bytes) -> None:
    err = refused(b"DPUB t " + defer + b"\n")
    assert err.code == errors.E_INVALID
    assert err.description.startswith("DPUB could not parse timeout")


def test_dpub_defer_out_of_range_is_invalid() -> None:
    err = refused(b"DPUB t 3600001\n")
    assert_refused(err, "E_INVALID", "DPUB timeout 3600001 out of range 0-3600000")


@pytest.mark.parametrize("verb", ["IDENTIFY", "AUTH"])
@pytest.mark.parametrize("size", [0, -5])
def test_identify_and_auth_nonpositive_body_is_bad_body(verb: str, size: int) -> None:
    err = refused(verb.encode() + b"\n" + i32(size))
    assert_refused(err, "E_BAD_BODY", f"{verb} invalid body size {size}")


@pytest.mark.parametrize("verb", ["IDENTIFY", "AUTH"])
def test_identify_and_auth_too_big_is_bad_body(verb: str) -> None:
    err = refused(verb.encode() + b"\n" + i32(65), max_body_size=64)
    assert_refused(err, "E_BAD_BODY", f"{verb} body too big 65 > 64")


@pytest.mark.parametrize("size", [0, -1])
def test_mpub_nonpositive_body_is_bad_body(size: int) -> None:
    assert_refused(refused(b"MPUB t\n" + i32(size)), "E_BAD_BODY", f"MPUB invalid body size {size}")


def test_mpub_body_too_big_is_bad_body() -> None:
    err = refused(b"MPUB t\n" + i32(65), max_body_size=64)
    assert_refused(err, "E_BAD_BODY", "MPUB body too big 65 > 64")


@pytest.mark.parametrize("count", [0, -1, 13])
def test_mpub_bad_count_is_bad_body(count: int) -> None:
    # (64 - 4) // 5 == 12 messages at most.
    err = refused(b"MPUB t\n" + i32(64) + i32(count), max_body_size=64)
    assert_refused(err, "E_BAD_BODY", f"MPUB invalid message count {count}")


def test_mpub_nonpositive_message_is_bad_message() -> None:
    err = refused(b"MPUB t\n" + i32(20) + i32(2) + sized(b"a") + i32(0))
    assert_refused(err, "E_BAD_MESSAGE", "MPUB invalid message(1) body size 0")


def test_mpub_message_too_big_is_bad_message() -> None:
    err = refused(b"MPUB t\n" + i32(30) + i32(1) + i32(17), max_msg_size=16)
    assert_refused(err, "E_BAD_MESSAGE", "MPUB message too big 17 > 16")


def test_mpub_of_one_message_too_big_is_bad_message_whole_or_split() -> None:
    wire = b"MPUB t\n" + i32(4 + 4 + 17) + i32(1) + sized(b"x" * 17)
    err = refused(wire, max_msg_size=16)
    assert_refused(err, "E_BAD_MESSAGE", "MPUB message too big 17 > 16")
    dec = decoder(max_msg_size=16)
    dec.receive_data(wire[:19])  # up to the message size: refused before its body
    with pytest.raises(FatalClientError) as info:
        dec.next_command()
    assert_refused(info.value, "E_BAD_MESSAGE", "MPUB message too big 17 > 16")


def test_mpub_messages_beyond_max_body_are_bad_body() -> None:
    # Declares a small body but sends more than max_body_size of messages.
    message = i32(16) + b"x" * 16
    wire = b"MPUB t\n" + i32(10) + i32(4) + message * 3 + i32(16)
    err = refused(wire, max_body_size=64)
    assert_refused(err, "E_BAD_BODY", "MPUB body too big 84 > 64")


@pytest.mark.parametrize("count", [b"-1", b"x", b"1e3"])
def test_rdy_unparsable_count_is_invalid(count: bytes) -> None:
    err = refused(b"RDY " + count + b"\n")
    assert_refused(err, "E_INVALID", f"RDY could not parse count {count.decode()}")


def test_rdy_count_out_of_range_is_invalid() -> None:
    assert_refused(refused(b"RDY 3000\n"), "E_INVALID", "RDY count 3000 out of range 0-2500")


@pytest.mark.parametrize("verb", [b"FIN", b"TOUCH"])
@pytest.mark.parametrize("msg_id", [b"abc", MSG_ID + b"0", b""])
def test_bad_message_id_length_is_invalid(verb: bytes, msg_id: bytes) -> None:
    assert_refused(refused(verb + b" " + msg_id + b"\n"), "E_INVALID", "invalid message ID")


def test_req_bad_message_id_is_invalid() -> None:
    assert_refused(refused(b"REQ short 10\n"), "E_INVALID", "invalid message ID")


def test_req_unparsable_timeout_is_invalid() -> None:
    err = refused(b"REQ " + MSG_ID + b" -5\n")
    assert_refused(err, "E_INVALID", "REQ could not parse timeout -5")


def test_decoder_unusable_after_fatal_error() -> None:
    dec = decoder()
    dec.receive_data(b"FOO\n")
    with pytest.raises(FatalClientError):
        dec.next_command()
    with pytest.raises(LocalProtocolError):
        dec.next_command()
    with pytest.raises(LocalProtocolError):
        dec.receive_data(b"NOP\n")


# --- properties -------------------------------------------------------------------

ids = st.text("0123456789abcdef", min_size=16, max_size=16).map(str.encode)
names = st.text("abcXYZ019._-", min_size=1, max_size=10) | st.just("n#ephemeral")
small_bodies = st.binary(min_size=1, max_size=SMALL["max_msg_size"])
commands = st.one_of(
    st.builds(Identify, st.binary(min_size=1, max_size=SMALL["max_body_size"])),
    st.builds(Auth, st.binary(min_size=1, max_size=SMALL["max_body_size"])),
    st.builds(Sub, names, names),
    st.builds(Pub, names, small_bodies),
    # 3 bodies of up to 16 bytes fit in 64: 4 + 3 * (4 + 16) = 64.
    st.builds(Mpub, names, st.lists(small_bodies, min_size=1, max_size=3)),
    st.builds(Dpub, names, st.integers(0, SMALL["max_req_timeout_ms"]), small_bodies),
    st.builds(Rdy, st.integers(0, SMALL["max_rdy_count"])),
    st.builds(Fin, ids),
    st.builds(Req, ids, st.integers(0, 10**12)),
    st.builds(Touch, ids),
    st.builds(Cls),
    st.builds(Nop),
)

# Fragments that reach deep into the grammar when glued together at random.
fragments = st.one_of(
    commands.map(encode_command),
    st.sampled_from(
        [
            b"PUB ",
            b"MPUB ",
            b"DPUB ",
            b"SUB ",
            b"RDY ",
            b"FIN ",
            b"REQ ",
            b"TOUCH ",
            b"AUTH",
            b"IDENTIFY",
            b"NOP",
            b"CLS",
            b"t",
            b" ",
            b"\n",
            b"\r\n",
            b"5",
            b"-1",
            MSG_ID,
            b"x" * (MAX_LINE_SIZE + 1),
        ]
    ),
    st.integers(-(2**31), 2**31 - 1).map(i32),
    st.integers(-2, 70).map(i32),
    st.binary(max_size=12),
)


def outcome(
    chunks: list[bytes], expect_magic: bool
) -> tuple[list[Command], tuple[str, str] | None]:
    """Feed chunks, draining after each; return commands and the error, if any.

    Any exception other than FatalClientError propagates and fails the test.
    """
    dec = decoder(**SMALL, expect_magic=expect_magic)
    got: list[Command] = []
    for chunk in chunks:
        dec.receive_data(chunk)
        try:
            while (cmd := dec.next_command()) is not None:
                got.append(cmd)
        except FatalClientError as err:
            return got, (err.code, err.description)
    return got, None


@given(st.lists(fragments, max_size=12), st.booleans(), st.data())
def test_decoder_any_input_any_split_same_outcome(
    parts: list[bytes], magic: bool, data: st.DataObject
) -> None:
    wire = (b"  V2" if magic and data.draw(st.booleans()) else b"") + b"".join(parts)
    whole = outcome([wire], magic)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    assert outcome(chunks, magic) == whole


@given(st.binary(max_size=200), st.booleans())
def test_decoder_random_bytes_never_raise_other_errors(wire: bytes, magic: bool) -> None:
    whole = outcome([wire], magic)
    assert outcome([bytes([b]) for b in wire], magic) == whole


@given(st.lists(commands, max_size=10))
def test_decoder_round_trips_encoded_commands(cmds: list[Command]) -> None:
    wire = b"  V2" + b"".join(encode_command(c) for c in cmds)
    assert outcome([wire], expect_magic=True) == (cmds, None)
    assert outcome([bytes([b]) for b in wire], expect_magic=True) == (cmds, None)


# --- the FIN run and equal-sized MPUB fast paths ----------------------------------


def fin_line(msg_id: bytes) -> bytes:
    return b"FIN " + msg_id + b"\n"


def test_next_fins_takes_the_run_of_plain_fins_and_stops_at_another_command() -> None:
    ids = [b"%016x" % i for i in range(5)]
    dec = decoder()
    dec.receive_data(b"".join(fin_line(i) for i in ids[:3]) + b"RDY 4\n" + fin_line(ids[3]))
    assert dec.next_fins() == ids[:3]
    assert dec.next_fins() == []
    assert dec.next_command() == Rdy(4)
    assert dec.next_fins() == [ids[3]]
    assert dec.next_command() is None
    dec.receive_data(fin_line(ids[4])[:10])
    assert dec.next_fins() == []  # incomplete
    dec.receive_data(fin_line(ids[4])[10:])
    assert dec.next_fins() == [ids[4]]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"FIN " + MSG_ID + b"\r\n", Fin(MSG_ID)),
        (b"FIN " + MSG_ID + b" extra\n", Fin(MSG_ID)),
        (b"FIN 0123456789abcde\r\n", None),  # 15 bytes once the \r is stripped
        (b"FIN 01234567 9abcdef\n", None),  # a space splits the ID
        (b"FIN 0123456789abcdef0\n", None),  # 17 bytes
    ],
)
def test_next_fins_leaves_other_spellings_to_next_command(
    line: bytes, expected: Command | None
) -> None:
    dec = decoder()
    dec.receive_data(fin_line(MSG_ID) + line + fin_line(MSG_ID))
    assert dec.next_fins() == [MSG_ID]
    assert dec.next_fins() == []
    if expected is None:
        with pytest.raises(FatalClientError) as info:
            dec.next_command()
        assert (info.value.code, info.value.description) == (errors.E_INVALID, "invalid message ID")
        with pytest.raises(LocalProtocolError):
            dec.next_fins()
    else:
        assert dec.next_command() == expected
        assert dec.next_fins() == [MSG_ID]


def test_next_fins_waits_for_the_magic_and_for_bodies() -> None:
    dec = decoder(expect_magic=True)
    dec.receive_data(fin_line(MSG_ID))
    assert dec.next_fins() == []  # the magic comes first
    with pytest.raises(FatalClientError):
        dec.next_command()
    dec = decoder()
    body = fin_line(MSG_ID) * 2
    dec.receive_data(b"PUB t\n" + sized(body))
    assert dec.next_command() == Pub("t", body)  # FIN lines inside a body are data
    assert dec.next_fins() == []


def fin_outcome(
    chunks: list[bytes], expect_magic: bool
) -> tuple[list[Command], tuple[str, str] | None]:
    """As `outcome`, taking plain FIN runs with `next_fins` before each command."""
    dec = decoder(**SMALL, expect_magic=expect_magic)
    got: list[Command] = []
    for chunk in chunks:
        dec.receive_data(chunk)
        try:
            while True:
                got += [Fin(msg_id) for msg_id in dec.next_fins()]
                cmd = dec.next_command()
                if cmd is None:
                    break
                got.append(cmd)
        except FatalClientError as err:
            return got, (err.code, err.description)
    return got, None


fin_fragments = st.one_of(
    fragments,
    ids.map(fin_line),
    st.sampled_from(
        [
            fin_line(MSG_ID) * 3,
            b"FIN " + MSG_ID + b"\r\n",
            b"FIN 0123456789abcde\r\n",
            b"FIN 01234567 9abcdef\n",
            b"FIN 012345678\n9abcdef\n",
            b"FIN " + MSG_ID,
        ]
    ),
)


@given(st.lists(fin_fragments, max_size=12), st.booleans(), st.data())
def test_next_fins_then_next_command_equals_next_command_alone(
    parts: list[bytes], magic: bool, data: st.DataObject
) -> None:
    wire = (b"  V2" if magic and data.draw(st.booleans()) else b"") + b"".join(parts)
    whole = outcome([wire], magic)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    assert fin_outcome(chunks, magic) == whole
    assert fin_outcome([wire], magic) == whole


def mpub_wire(
    bodies: list[bytes], *, sizes: list[int] | None = None, declared: int | None = None
) -> bytes:
    """An MPUB of ``bodies``; ``sizes`` and ``declared`` override the size fields."""
    sizes = sizes if sizes is not None else [len(b) for b in bodies]
    payload = b"".join(i32(n) + b for n, b in zip(sizes, bodies, strict=True))
    declared = declared if declared is not None else len(payload) + 4
    return b"MPUB t\n" + i32(declared) + i32(len(bodies)) + payload


def test_mpub_of_many_equal_bodies_keeps_every_body_in_order() -> None:
    bodies = [b"%05d" % i for i in range(700)]  # more than one struct run
    assert decode(mpub_wire(bodies)) == [Mpub("t", bodies)]


def test_mpub_equal_bodies_then_others_keeps_order() -> None:
    bodies = [b"aaaa"] * 5 + [b"bb", b"cccccc"] + [b"dddd"] * 3
    assert decode(mpub_wire(bodies)) == [Mpub("t", bodies)]


def test_mpub_equal_sizes_with_a_bad_one_names_that_message() -> None:
    bodies = [b"abcd"] * 8
    sizes = [4] * 8
    sizes[5] = 0
    err = refused(mpub_wire(bodies, sizes=sizes))
    assert (err.code, err.description) == (
        errors.E_BAD_MESSAGE,
        "MPUB invalid message(5) body size 0",
    )


def test_mpub_equal_sizes_beyond_max_body_report_the_first_excess() -> None:
    # 4 + n * (4 + 4) > 64 from the 8th message on; the declared length is
    # not cross-checked (as in nsqd), so only the messages give it away.
    err = refused(mpub_wire([b"abcd"] * 9, declared=64), **SMALL)
    assert (err.code, err.description) == (errors.E_BAD_BODY, "MPUB body too big 68 > 64")


@given(
    st.lists(st.integers(1, 6), min_size=1, max_size=40),
    st.lists(st.integers(1, 200), max_size=6),
)
def test_mpub_decodes_the_same_however_it_is_split(sizes: list[int], cuts: list[int]) -> None:
    bodies = [bytes([65 + i % 26]) * n for i, n in enumerate(sizes)]
    wire = mpub_wire(bodies) + b"NOP\n"
    points = sorted({min(c, len(wire)) for c in cuts})
    chunks = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    dec = decoder()
    got: list[Command] = []
    for chunk in chunks:
        dec.receive_data(chunk)
        got += drain(dec)
    assert got == [Mpub("t", bodies), Nop()]


def test_decoder_accepts_bytearray_and_memoryview_input() -> None:
    dec = decoder()
    dec.receive_data(bytearray(b"PUB t\n" + sized(b"x")))
    dec.receive_data(memoryview(b"NOP\n"))
    got = drain(dec)
    assert got == [Pub("t", b"x"), Nop()]
    assert isinstance(got[0], Pub)
    assert type(got[0].body) is bytes
