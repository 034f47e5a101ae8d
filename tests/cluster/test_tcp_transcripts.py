"""Raw-socket transcripts against a real node: the V2 protocol byte for byte.

Deferrals and timeouts are checked against ``time.time()``, the clock the node
keeps its deadlines by (as nsqd does): the monotonic clock may run at another
rate (while NTP slews the wall clock), enough to make a delay look a
millisecond short.
"""

from __future__ import annotations

import json
import struct
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from shoal.queue.commands import Fin, Nop, Pub, encode_command
from shoal.queue.frames import FrameType
from shoal.testing.wire import NsqConnection

if TYPE_CHECKING:
    from shoal.testing.process import NodeProcess

pytestmark = pytest.mark.integration


def topic_name() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def consumer(
    node: NodeProcess, topic: str, channel: str, *, rdy: int = 1, **identify: object
) -> NsqConnection:
    conn = NsqConnection(node.tcp)
    if identify:
        conn.identify(**identify)
    conn.sub(topic, channel)
    conn.rdy(rdy)
    return conn


def test_identify_feature_negotiation_answers_every_nsqd_key(node: NodeProcess) -> None:
    with NsqConnection(node.tcp) as conn:
        data = json.loads(conn.identify(feature_negotiation=True, client_id="c1", msg_timeout=5000))
    expected = {
        "max_rdy_count", "version", "max_msg_timeout", "msg_timeout", "tls_v1", "deflate",
        "deflate_level", "max_deflate_level", "snappy", "sample_rate", "auth_required",
        "output_buffer_size", "output_buffer_timeout",
    }  # fmt: skip
    assert expected <= data.keys()
    assert data["max_rdy_count"] == 2500
    assert data["msg_timeout"] == 5000
    assert data["tls_v1"] is False
    assert data["snappy"] is False
    assert data["deflate"] is False


def test_identify_without_negotiation_answers_ok(node: NodeProcess) -> None:
    with NsqConnection(node.tcp) as conn:
        assert conn.identify(client_id="plain") == b"OK"


def test_publish_and_consume_each_message_once(node: NodeProcess) -> None:
    topic = topic_name()
    with NsqConnection(node.tcp) as pub:
        pub.mpub(topic, [b"m%d" % i for i in range(100)])
    with consumer(node, topic, "ch", rdy=100) as sub:
        seen = []
        for _ in range(100):
            msg = sub.read_message()
            assert msg.attempts == 1
            seen.append(msg.body)
            sub.fin(msg.id)
        assert sorted(seen) == sorted(b"m%d" % i for i in range(100))


def test_two_channels_each_receive_every_message(node: NodeProcess) -> None:
    topic = topic_name()
    with consumer(node, topic, "a", rdy=10) as a, consumer(node, topic, "b", rdy=10) as b:
        with NsqConnection(node.tcp) as pub:
            pub.mpub(topic, [b"x", b"y", b"z"])
        for sub in (a, b):
            bodies = set()
            for _ in range(3):
                msg = sub.read_message()
                bodies.add(msg.body)
                sub.fin(msg.id)
            assert bodies == {b"x", b"y", b"z"}


def test_unanswered_message_is_redelivered_after_timeout_with_attempts_2(node: NodeProcess) -> None:
    topic = topic_name()
    with consumer(node, topic, "ch", msg_timeout=1000) as sub:
        with NsqConnection(node.tcp) as pub:
            pub.pub(topic, b"late")
        first = sub.read_message()
        started = time.time()
        second = sub.read_message()
        assert time.time() - started >= 0.9
        assert second.id == first.id
        assert (first.attempts, second.attempts) == (1, 2)


def test_req_with_delay_redelivers_no_earlier_than_the_delay(node: NodeProcess) -> None:
    topic = topic_name()
    with consumer(node, topic, "ch") as sub:
        with NsqConnection(node.tcp) as pub:
            pub.pub(topic, b"again")
        msg = sub.read_message()
        sent = time.time()
        sub.req(msg.id, 700)
        again = sub.read_message()
        assert time.time() - sent >= 0.7
        assert again.id == msg.id
        assert again.attempts == 2


def test_dpub_is_delivered_no_earlier_than_its_defer(node: NodeProcess) -> None:
    topic = topic_name()
    with consumer(node, topic, "ch") as sub:
        with NsqConnection(node.tcp) as pub:
            sent = time.time()
            pub.dpub(topic, 600, b"later")
        msg = sub.read_message()
        assert time.time() - sent >= 0.6
        assert msg.body == b"later"


def test_touch_extends_the_deadline(node: NodeProcess) -> None:
    topic = topic_name()
    with consumer(node, topic, "ch", msg_timeout=1000) as sub:
        with NsqConnection(node.tcp) as pub:
            pub.pub(topic, b"slow work")
        msg = sub.read_message()
        for _ in range(3):
            time.sleep(0.5)
            sub.touch(msg.id)
        # 1.5 s after delivery, past the 1 s timeout: still ours, so FIN succeeds
        # (a failed FIN would put E_FIN_FAILED ahead of the PUB's OK).
        sub.fin(msg.id)
        sub.send(Pub(topic_name(), b"probe"))
        assert sub.read_response() == b"OK"


def test_fin_of_unknown_id_is_non_fatal(node: NodeProcess) -> None:
    topic = topic_name()
    with consumer(node, topic, "ch") as sub:
        sub.fin(b"0123456789abcdef")
        assert sub.read_error().startswith(b"E_FIN_FAILED ")
        sub.send(Pub(topic, b"still open"))
        assert sub.read_response() == b"OK"
        assert sub.read_message().body == b"still open"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"BOGUS\n", b"E_INVALID"),
        (b"PUB bad!topic\n" + struct.pack(">i", 1) + b"x", b"E_BAD_TOPIC"),
        (b"PUB t\n" + struct.pack(">i", 2_000_000), b"E_BAD_MESSAGE"),
        (b"MPUB t\n" + struct.pack(">i", 10_000_000), b"E_BAD_BODY"),
        (b"IDENTIFY\n" + struct.pack(">i", 5) + b"{nope", b"E_BAD_BODY"),
        (b"RDY 5\n", b"E_INVALID"),
        (b"FIN short\n", b"E_INVALID"),
        (b"FIN 0123456789abcdef\n", b"E_INVALID"),  # before SUB
    ],
)
def test_bad_input_gives_its_error_frame_and_closes(
    node: NodeProcess, payload: bytes, code: bytes
) -> None:
    with NsqConnection(node.tcp, timeout=5) as conn:
        conn.send_raw(payload)
        ftype, data = conn.read_frame()
        assert ftype == FrameType.ERROR
        assert data.split(b" ", 1)[0] == code
        assert conn.is_closed()


def test_bad_magic_gives_e_bad_protocol_and_closes(node: NodeProcess) -> None:
    with NsqConnection(node.tcp, magic=b"  V1", timeout=5) as conn:
        assert conn.read_error().startswith(b"E_BAD_PROTOCOL")
        assert conn.is_closed()


def test_silent_client_is_disconnected_after_two_heartbeats(node: NodeProcess) -> None:
    with NsqConnection(node.tcp, timeout=10) as conn:
        conn.identify(heartbeat_interval=1000)
        ftype, data = conn.read_frame(skip_heartbeats=False)
        assert (ftype, data) == (FrameType.RESPONSE, b"_heartbeat_")
        started = time.monotonic()
        assert conn.is_closed()
        assert time.monotonic() - started < 5


def test_answered_heartbeats_keep_the_connection(node: NodeProcess) -> None:
    topic = topic_name()
    with NsqConnection(node.tcp, timeout=10) as conn:
        conn.identify(heartbeat_interval=1000)
        for _ in range(3):
            assert conn.read_frame(skip_heartbeats=False)[1] == b"_heartbeat_"
            conn.send(Nop())
        conn.pub(topic, b"alive")


def test_cls_answers_close_wait_and_stops_delivery(node: NodeProcess) -> None:
    topic = topic_name()
    with consumer(node, topic, "ch", rdy=5) as sub:
        sub.send_raw(b"CLS\n")
        assert sub.read_response() == b"CLOSE_WAIT"
        with NsqConnection(node.tcp) as pub:
            pub.pub(topic, b"not for a closing client")
        sub.send(Pub(topic_name(), b"probe"))
        assert sub.read_response() == b"OK"


def test_fin_run_in_one_write_refuses_only_the_bad_ids_in_order(node: NodeProcess) -> None:
    topic = topic_name()
    with NsqConnection(node.tcp) as pub:
        pub.mpub(topic, [b"a", b"b", b"c"])
    with consumer(node, topic, "ch", rdy=3) as sub:
        ids = [sub.read_message().id for _ in range(3)]
        unknown = b"f" * 16
        sub.send(Fin(ids[0]), Fin(unknown), Fin(ids[1]), Fin(ids[0]), Fin(ids[2]))
        assert sub.read_error() == b"E_FIN_FAILED FIN " + unknown + b" failed ID not in flight"
        assert sub.read_error() == b"E_FIN_FAILED FIN " + ids[0] + b" failed ID not in flight"
        # All three were finished: RDY 3 has room for three new messages at once.
        with NsqConnection(node.tcp) as pub:
            pub.mpub(topic, [b"d", b"e", b"f"])
        assert sorted(sub.read_message().body for _ in range(3)) == [b"d", b"e", b"f"]


def test_pipelined_commands_get_their_answers_in_order(node: NodeProcess) -> None:
    topic = topic_name()
    with NsqConnection(node.tcp, timeout=5) as conn:
        conn.send(*[Pub(topic, b"m%d" % n) for n in range(50)], Nop(), Pub(topic, b"last"))
        assert [conn.read_response() for _ in range(51)] == [b"OK"] * 51
        conn.send_raw(encode_command(Pub(topic, b"x")) + b"BOGUS\n" + encode_command(Nop()))
        assert conn.read_response() == b"OK"
        assert conn.read_error() == b"E_INVALID invalid command BOGUS"
        assert conn.is_closed()


def test_deliveries_larger_than_socket_buffers_arrive_whole(node: NodeProcess) -> None:
    topic = topic_name()
    bodies = [bytes([65 + n]) * 300_000 for n in range(24)]  # about 7 MB
    with NsqConnection(node.tcp, timeout=20) as pub:
        pub.mpub(topic, bodies[:12])
        pub.mpub(topic, bodies[12:])
    with consumer(node, topic, "ch", rdy=24) as sub:
        got = []
        for _ in range(24):
            msg = sub.read_message()
            got.append(msg.body)
            sub.fin(msg.id)
        assert sorted(got) == bodies
