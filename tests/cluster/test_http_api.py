"""The nsqd HTTP API, endpoint by endpoint, against nsqd v1.3.0's answers.

Requests go over in-memory streams into `HTTPServer.handle` (one connection
each), with a fixed clock; the /stats workload and the subscriber tests add
a real `TCPServer` on 127.0.0.1 port 0 with raw V2 clients.
"""

from __future__ import annotations

import json
import logging
import struct
from typing import TYPE_CHECKING, Any

import h11
import pytest
import trio
import trio.testing

from shoal.cluster.http_api import NodeHTTPAPI, NodeInfo, parse_mpub_binary
from shoal.cluster.http_server import HTTPServer, Response
from shoal.cluster.tcp_server import TCPServer
from shoal.config import NodeConfig
from shoal.queue.broker import Broker
from shoal.queue.commands import Command, Identify, Pub, Rdy, Sub, encode_command
from shoal.queue.config import QueueConfig
from shoal.queue.frames import MAGIC_V2, FrameDecoder, FrameType
from shoal.queue.message import Message, decode_message
from shoal.queue.stats import MEMORY_KEYS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from shoal.queue.channel import Channel

T0 = 1_700_000_000.25
JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"


class Reply:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = {k.decode().lower(): v.decode() for k, v in headers}
        self.body = body

    def json(self) -> Any:
        assert self.headers["content-type"] == JSON_TYPE
        return json.loads(self.body)


class Harness:
    """A broker, its API, a fixed clock and the hooks' records."""

    def __init__(self, nursery: trio.Nursery, queue: QueueConfig | None = None) -> None:
        self.nursery = nursery
        self.now = T0
        self.kicks = 0
        self.deleted: list[Channel] = []
        self.unhealthy: str | None = None
        self.also_on_deleted: Callable[[Channel], None] | None = None
        self.nsq_clients: list[NsqClient] = []
        queue = queue if queue is not None else QueueConfig()
        self.config = NodeConfig(
            tcp_address="127.0.0.1:0",
            http_address="127.0.0.1:0",
            broadcast_address="node-a",
            data_path=None,
            queue=queue,
        )
        self.broker = Broker(queue)
        self.tcp: TCPServer | None = None
        self.tcp_port = 0
        self.api = self.make_api()
        self.server = HTTPServer(self.api.router)

    def make_api(self, tcp: TCPServer | None = None) -> NodeHTTPAPI:
        def kick() -> None:
            self.kicks += 1

        return NodeHTTPAPI(
            self.broker,
            self.config,
            node_info=lambda: NodeInfo(
                version="0.1.0",
                broadcast_address="node-a",
                hostname="host-a",
                tcp_port=4150,
                http_port=4151,
                start_time=T0 - 60,
            ),
            tcp_server=tcp,
            health=lambda: self.unhealthy,
            kick_backlog=kick,
            on_channel_deleted=self.on_deleted,
            clock=lambda: self.now,
        )

    def on_deleted(self, channel: Channel) -> None:
        self.deleted.append(channel)
        if self.also_on_deleted is not None:
            self.also_on_deleted(channel)

    async def attach_tcp(self) -> int:
        """Serve a real TCP server for this broker; returns its port."""
        self.tcp = TCPServer(self.broker, self.config.queue)
        self.api = self.make_api(self.tcp)
        self.server = HTTPServer(self.api.router)
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await self.nursery.start(self.tcp.serve, listeners)
        self.tcp_port = int(listeners[0].socket.getsockname()[1])
        return self.tcp_port

    async def nsq(self) -> NsqClient:
        """A raw V2 client of the TCP server, closed at teardown."""
        client = await NsqClient.connect(self.tcp_port)
        self.nsq_clients.append(client)
        return client

    async def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Reply:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.server.handle, server_stream)
        conn = h11.Connection(h11.CLIENT)
        hdrs = [("Host", "node-a"), ("Content-Length", str(len(body))), *headers]
        data = conn.send(h11.Request(method=method, target=target, headers=hdrs)) or b""
        if body:
            data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await client_stream.send_all(data)
        status, head, chunks = 0, [], []
        with trio.fail_after(10):
            for _ in range(1000):
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(bytes(await client_stream.receive_some(65536)))
                elif isinstance(event, h11.Response):
                    status, head = event.status_code, list(event.headers)
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
        await client_stream.aclose()
        return Reply(status, head, b"".join(chunks))

    async def post(self, target: str, body: bytes = b"") -> Reply:
        return await self.request("POST", target, body)

    async def get(self, target: str) -> Reply:
        return await self.request("GET", target)

    def drain(self, channel: Channel, limit: int = 1000) -> list[Message]:
        return channel.deliver(99, self.now, 60.0, limit)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async with trio.open_nursery() as nursery:
        harness = Harness(nursery)
        yield harness
        for client in harness.nsq_clients:
            await client.stream.aclose()
        nursery.cancel_scope.cancel()


def assert_ok_empty(reply: Reply) -> None:
    assert reply.status == 200
    assert reply.body == b""
    assert reply.headers["x-nsq-content-type"] == "nsq; version=1.0"


def assert_error(reply: Reply, status: int, message: str) -> None:
    assert (reply.status, reply.json()) == (status, {"message": message})
    assert reply.headers["x-nsq-content-type"] == "nsq; version=1.0"


def binary_mpub(*bodies: bytes, count: int | None = None) -> bytes:
    n = len(bodies) if count is None else count
    return struct.pack(">i", n) + b"".join(struct.pack(">i", len(b)) + b for b in bodies)


# -- /ping and /info ------------------------------------------------------------------


async def test_ping_answers_plain_ok(h: Harness) -> None:
    reply = await h.get("/ping")
    assert (reply.status, reply.body) == (200, b"OK")
    assert reply.headers["content-type"] == TEXT_TYPE
    assert reply.headers["x-nsq-content-type"] == "nsq; version=1.0"


async def test_ping_answers_500_nok_when_unhealthy(h: Harness) -> None:
    h.unhealthy = "failed to write message to disk"
    reply = await h.get("/ping")
    assert (reply.status, reply.body) == (500, b"NOK - failed to write message to disk")


async def test_info_reports_nsqd_keys_with_go_durations(h: Harness) -> None:
    reply = await h.get("/info")
    assert reply.status == 200
    assert reply.headers["x-nsq-content-type"] == "nsq; version=1.0"
    assert reply.json() == {
        "version": "0.1.0",
        "broadcast_address": "node-a",
        "hostname": "host-a",
        "http_port": 4151,
        "tcp_port": 4150,
        "start_time": int(T0 - 60),
        "max_heartbeat_interval": 60_000_000_000,
        "max_output_buffer_size": 65536,
        "max_output_buffer_timeout": 30_000_000_000,
        "max_deflate_level": 6,
        "topology_zone": "",
        "topology_region": "",
    }


# -- /pub ---------------------------------------------------------------------------


async def test_pub_publishes_one_message_through_the_topic(h: Harness) -> None:
    await h.post("/topic/create?topic=t")
    await h.post("/channel/create?topic=t&channel=c")
    reply = await h.post("/pub?topic=t", b"hello")
    assert (reply.status, reply.body) == (200, b"OK")
    assert reply.headers["content-type"] == TEXT_TYPE
    topic = h.broker.topics["t"]
    assert (topic.message_count, topic.message_bytes) == (1, 5)
    (msg,) = h.drain(topic.channels["c"])
    assert msg.body == b"hello"
    assert msg.timestamp == int(T0 * 1e9)


async def test_pub_creates_the_topic(h: Harness) -> None:
    assert (await h.post("/pub?topic=fresh", b"x")).status == 200
    assert h.broker.topics["fresh"].depth == 1


@pytest.mark.parametrize(
    ("target", "body", "status", "message"),
    [
        ("/pub?topic=t", b"", 400, "MSG_EMPTY"),
        ("/pub", b"x", 400, "MISSING_ARG_TOPIC"),
        ("/pub?topic=", b"x", 400, "INVALID_TOPIC"),
        ("/pub?topic=bad!name", b"x", 400, "INVALID_TOPIC"),
        ("/pub?topic=t", b"x" * 1_048_577, 413, "MSG_TOO_BIG"),
        ("/pub", b"", 400, "MSG_EMPTY"),  # nsqd checks the body first
    ],
)
async def test_pub_refusals(
    h: Harness, target: str, body: bytes, status: int, message: str
) -> None:
    assert_error(await h.post(target, body), status, message)
    assert h.broker.topics == {}


@pytest.mark.parametrize("defer", ["abc", "1.5", "-1", "3600001", "99999999999999999999", ""])
async def test_pub_invalid_defer_after_the_topic_exists(h: Harness, defer: str) -> None:
    # nsqd creates the topic before it parses ``defer``.
    assert_error(await h.post(f"/pub?topic=t&defer={defer}", b"x"), 400, "INVALID_DEFER")
    assert h.broker.topics["t"].message_count == 0


async def test_pub_defer_of_max_req_timeout_is_accepted(h: Harness) -> None:
    assert (await h.post("/pub?topic=t&defer=3600000", b"x")).status == 200


async def test_pub_accepts_a_message_of_exactly_max_msg_size(h: Harness) -> None:
    assert (await h.post("/pub?topic=t", b"x" * 1_048_576)).status == 200


async def test_pub_is_post_only(h: Harness) -> None:
    reply = await h.get("/pub?topic=t")
    assert_error(reply, 405, "METHOD_NOT_ALLOWED")
    assert reply.headers["allow"] == "OPTIONS, POST"


async def test_pub_defer_holds_the_message_until_due(h: Harness) -> None:
    await h.post("/topic/create?topic=t")
    await h.post("/channel/create?topic=t&channel=c")
    assert (await h.post("/pub?topic=t&defer=5000", b"later")).status == 200
    channel = h.broker.topics["t"].channels["c"]
    assert (channel.deferred_count, channel.depth, channel.message_count) == (1, 0, 1)
    assert h.drain(channel) == []
    h.broker.process(T0 + 4.999)
    assert h.drain(channel) == []
    h.broker.process(T0 + 5.0)
    assert channel.deferred_count == 0
    (msg,) = h.drain(channel)
    assert msg.body == b"later"


async def test_pub_defer_zero_and_plus_sign_are_immediate(h: Harness) -> None:
    await h.post("/topic/create?topic=t")
    await h.post("/channel/create?topic=t&channel=c")
    assert (await h.post("/pub?topic=t&defer=0", b"a")).status == 200
    assert (await h.post("/pub?topic=t&defer=%2B0", b"b")).status == 200
    channel = h.broker.topics["t"].channels["c"]
    assert [m.body for m in h.drain(channel)] == [b"a", b"b"]


# -- /mpub --------------------------------------------------------------------------


async def test_mpub_text_publishes_one_message_per_line_skipping_empty_ones(h: Harness) -> None:
    await h.post("/topic/create?topic=t")
    await h.post("/channel/create?topic=t&channel=c")
    reply = await h.post("/mpub?topic=t", b"one\n\ntwo\nthree\n")
    assert (reply.status, reply.body) == (200, b"OK")
    channel = h.broker.topics["t"].channels["c"]
    assert [m.body for m in h.drain(channel)] == [b"one", b"two", b"three"]


@pytest.mark.parametrize("flag", ["true", "1"])
async def test_mpub_binary_publishes_framed_messages(h: Harness, flag: str) -> None:
    await h.post("/topic/create?topic=t")
    await h.post("/channel/create?topic=t&channel=c")
    body = binary_mpub(b"a\nb", b"c")
    reply = await h.post(f"/mpub?topic=t&binary={flag}", body)
    assert (reply.status, reply.body) == (200, b"OK")
    channel = h.broker.topics["t"].channels["c"]
    assert [m.body for m in h.drain(channel)] == [b"a\nb", b"c"]


@pytest.mark.parametrize("flag", ["false", "0"])
async def test_mpub_binary_false_is_text(h: Harness, flag: str) -> None:
    await h.post(f"/mpub?topic=t&binary={flag}", b"x\ny")
    assert h.broker.topics["t"].message_count == 2


async def test_mpub_unknown_binary_value_means_binary(h: Harness) -> None:
    assert (await h.post("/mpub?topic=t&binary=yes", binary_mpub(b"x"))).status == 200
    assert h.broker.topics["t"].message_count == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x00\x00", "BAD_BODY"),
        (binary_mpub(count=0), "BAD_BODY"),
        (struct.pack(">i", -1), "BAD_BODY"),
        (struct.pack(">i", 2_000_000), "BAD_BODY"),
        (binary_mpub(b"x", count=2), "BAD_MESSAGE"),
        (struct.pack(">ii", 1, 0), "BAD_MESSAGE"),
        (struct.pack(">ii", 1, -3), "BAD_MESSAGE"),
        (struct.pack(">ii", 1, 1_048_577) + b"x", "BAD_MESSAGE"),
        (struct.pack(">ii", 1, 10) + b"short", "BAD_MESSAGE"),
    ],
)
async def test_mpub_binary_errors_are_413_with_tcp_code(
    h: Harness, body: bytes, message: str
) -> None:
    assert_error(await h.post("/mpub?topic=t&binary=true", body), 413, message)
    assert h.broker.topics["t"].message_count == 0


async def test_mpub_text_line_too_big(h: Harness) -> None:
    body = b"ok\n" + b"x" * 1_048_577 + b"\n"
    assert_error(await h.post("/mpub?topic=t", body), 413, "MSG_TOO_BIG")
    assert h.broker.topics["t"].message_count == 0


async def test_mpub_body_too_big(h: Harness) -> None:
    assert_error(await h.post("/mpub?topic=t", b"x\n" * 2_621_441), 413, "BODY_TOO_BIG")
    assert "t" not in h.broker.topics


async def test_mpub_topic_errors(h: Harness) -> None:
    assert_error(await h.post("/mpub", b"x"), 400, "MISSING_ARG_TOPIC")
    assert_error(await h.post("/mpub?topic=a:b", b"x"), 400, "INVALID_TOPIC")


async def test_mpub_empty_text_body_is_ok_with_no_messages(h: Harness) -> None:
    reply = await h.post("/mpub?topic=t", b"\n\n")
    assert (reply.status, reply.body) == (200, b"OK")
    assert h.broker.topics["t"].message_count == 0


def test_parse_mpub_binary_ignores_trailing_bytes() -> None:
    body = binary_mpub(b"ab", b"c") + b"junk"
    assert parse_mpub_binary(body, max_msg_size=10, max_body_size=100) == [b"ab", b"c"]


# -- topics ---------------------------------------------------------------------------


async def test_topic_create_is_idempotent_and_answers_empty(h: Harness) -> None:
    first = await h.post("/topic/create?topic=t")
    assert_ok_empty(first)
    assert first.headers["content-type"] == TEXT_TYPE
    assert_ok_empty(await h.post("/topic/create?topic=t"))
    assert list(h.broker.topics) == ["t"]


async def test_topic_create_refusals(h: Harness) -> None:
    assert_error(await h.post("/topic/create"), 400, "MISSING_ARG_TOPIC")
    assert_error(await h.post("/topic/create?topic=" + "x" * 65), 400, "INVALID_TOPIC")
    assert h.broker.topics == {}


async def test_topic_delete_removes_channels_and_reports_them(h: Harness) -> None:
    await h.post("/topic/create?topic=t")
    await h.post("/channel/create?topic=t&channel=a")
    await h.post("/channel/create?topic=t&channel=b")
    channels = dict(h.broker.topics["t"].channels)
    assert_ok_empty(await h.post("/topic/delete?topic=t"))
    assert "t" not in h.broker.topics
    assert sorted(c.name for c in h.deleted) == ["a", "b"]
    assert all(c.deleted for c in channels.values())


async def test_topic_delete_refusals(h: Harness) -> None:
    assert_error(await h.post("/topic/delete"), 400, "MISSING_ARG_TOPIC")
    assert_error(await h.post("/topic/delete?topic=nope"), 404, "TOPIC_NOT_FOUND")


async def test_topic_empty_drops_the_topic_backlog_only(h: Harness) -> None:
    await h.post("/mpub?topic=t", b"a\nb")
    await h.post("/channel/create?topic=t&channel=c")
    await h.post("/pub?topic=t", b"in channel")  # fanned out: the channel has it
    h.broker.pause_topic("t", True)
    await h.post("/pub?topic=t", b"held")
    topic = h.broker.topics["t"]
    assert topic.depth == 3
    assert_ok_empty(await h.post("/topic/empty?topic=t"))
    assert topic.depth == 0
    assert topic.channels["c"].depth == 1


async def test_topic_empty_refusals(h: Harness) -> None:
    assert_error(await h.post("/topic/empty"), 400, "MISSING_ARG_TOPIC")
    assert_error(await h.post("/topic/empty?topic=a%20b"), 400, "INVALID_TOPIC")
    assert_error(await h.post("/topic/empty?topic=nope"), 404, "TOPIC_NOT_FOUND")


async def test_topic_pause_holds_messages_and_unpause_kicks_the_backlog(h: Harness) -> None:
    await h.post("/topic/create?topic=t")
    await h.post("/channel/create?topic=t&channel=c")
    assert_ok_empty(await h.post("/topic/pause?topic=t"))
    topic = h.broker.topics["t"]
    assert topic.paused
    await h.post("/pub?topic=t", b"held")
    assert (topic.depth, topic.channels["c"].depth) == (1, 0)
    kicks = h.kicks
    assert_ok_empty(await h.post("/topic/unpause?topic=t"))
    assert not h.broker.topics["t"].paused
    assert h.kicks == kicks + 1
    assert topic.pump(h.now, 10) == 1
    assert topic.channels["c"].depth == 1


async def test_topic_unpause_without_backlog_does_not_kick(h: Harness) -> None:
    await h.post("/topic/create?topic=t")
    await h.post("/topic/pause?topic=t")
    await h.post("/topic/unpause?topic=t")
    assert h.kicks == 0


@pytest.mark.parametrize("action", ["pause", "unpause"])
async def test_topic_pause_refusals(h: Harness, action: str) -> None:
    assert_error(await h.post(f"/topic/{action}"), 400, "MISSING_ARG_TOPIC")
    assert_error(await h.post(f"/topic/{action}?topic=nope"), 404, "TOPIC_NOT_FOUND")


# -- channels ---------------------------------------------------------------------------


async def test_channel_create_needs_the_topic_and_kicks_a_backlog(h: Harness) -> None:
    assert_error(await h.post("/channel/create?topic=t&channel=c"), 404, "TOPIC_NOT_FOUND")
    await h.post("/mpub?topic=t", b"a\nb")
    assert h.kicks == 0
    assert_ok_empty(await h.post("/channel/create?topic=t&channel=c"))
    assert h.kicks == 1
    topic = h.broker.topics["t"]
    assert topic.pump(h.now, 10) == 2
    assert topic.channels["c"].depth == 2


@pytest.mark.parametrize(
    "action", ["create", "delete", "empty", "pause", "unpause"], ids=lambda a: f"channel-{a}"
)
@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("", 400, "MISSING_ARG_TOPIC"),
        ("?topic=bad*&channel=c", 400, "INVALID_ARG_TOPIC"),
        ("?topic=t", 400, "MISSING_ARG_CHANNEL"),
        ("?topic=t&channel=bad*", 400, "INVALID_ARG_CHANNEL"),
        ("?topic=nope&channel=c", 404, "TOPIC_NOT_FOUND"),
    ],
)
async def test_channel_argument_refusals(
    h: Harness, action: str, query: str, status: int, message: str
) -> None:
    await h.post("/topic/create?topic=t")
    assert_error(await h.post(f"/channel/{action}{query}"), status, message)


@pytest.mark.parametrize("action", ["delete", "empty", "pause", "unpause"])
async def test_channel_not_found(h: Harness, action: str) -> None:
    await h.post("/topic/create?topic=t")
    assert_error(await h.post(f"/channel/{action}?topic=t&channel=c"), 404, "CHANNEL_NOT_FOUND")


async def test_channel_delete_reports_the_channel(h: Harness) -> None:
    await h.post("/topic/create?topic=t")
    await h.post("/channel/create?topic=t&channel=c")
    channel = h.broker.topics["t"].channels["c"]
    assert_ok_empty(await h.post("/channel/delete?topic=t&channel=c"))
    assert h.deleted == [channel]
    assert channel.deleted
    assert h.broker.topics["t"].channels == {}


async def test_deleting_last_channel_of_ephemeral_topic_deletes_the_topic(h: Harness) -> None:
    await h.post("/topic/create?topic=e%23ephemeral")
    await h.post("/channel/create?topic=e%23ephemeral&channel=c")
    assert_ok_empty(await h.post("/channel/delete?topic=e%23ephemeral&channel=c"))
    assert "e#ephemeral" not in h.broker.topics


async def test_channel_empty_drops_ready_in_flight_and_deferred(h: Harness) -> None:
    await h.post("/topic/create?topic=t")
    await h.post("/channel/create?topic=t&channel=c")
    await h.post("/mpub?topic=t", b"a\nb\nc")
    await h.post("/pub?topic=t&defer=1000", b"d")
    channel = h.broker.topics["t"].channels["c"]
    (_in_flight,) = channel.deliver(1, h.now, 60.0, 1)
    assert (channel.depth, channel.in_flight_count, channel.deferred_count) == (2, 1, 1)
    assert_ok_empty(await h.post("/channel/empty?topic=t&channel=c"))
    assert (channel.depth, channel.in_flight_count, channel.deferred_count) == (0, 0, 0)


async def test_channel_pause_stops_delivery_until_unpaused(h: Harness) -> None:
    await h.post("/topic/create?topic=t")
    await h.post("/channel/create?topic=t&channel=c")
    await h.post("/pub?topic=t", b"x")
    channel = h.broker.topics["t"].channels["c"]
    assert_ok_empty(await h.post("/channel/pause?topic=t&channel=c"))
    assert channel.paused
    assert h.drain(channel) == []
    assert_ok_empty(await h.post("/channel/unpause?topic=t&channel=c"))
    assert not h.broker.topics["t"].channels["c"].paused
    assert [m.body for m in h.drain(channel)] == [b"x"]


# -- /config ------------------------------------------------------------------------------


@pytest.fixture
def shoal_log_level() -> Iterator[None]:
    logger = logging.getLogger("shoal")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.mark.parametrize(
    ("opt", "value"),
    [
        ("id", 0),
        ("mem_queue_size", 10000),
        ("msg_timeout", 60_000_000_000),
        ("max_req_timeout", 3_600_000_000_000),
        ("max_msg_size", 1048576),
        ("max_rdy_count", 2500),
        ("tcp_address", "127.0.0.1:0"),
        ("broadcast_address", "node-a"),
        ("data_path", ""),
        ("nsqlookupd_tcp_addresses", []),
        ("deflate", True),
        ("snappy", True),
        ("tls_required", 0),
        ("tls_cert", ""),
    ],
)
async def test_config_get_reports_values_in_nsqd_types(h: Harness, opt: str, value: Any) -> None:
    reply = await h.get(f"/config/{opt}")
    assert reply.status == 200
    assert reply.json() == value


async def test_config_get_log_level_is_nsqd_integer(h: Harness, shoal_log_level: None) -> None:
    logging.getLogger("shoal").setLevel(logging.WARNING)
    assert (await h.get("/config/log_level")).json() == 3


async def test_config_get_unknown_option(h: Harness) -> None:
    assert_error(await h.get("/config/no_such_option"), 400, "INVALID_OPTION")


async def test_config_put_lookupd_addresses_is_stored(h: Harness) -> None:
    reply = await h.request("PUT", "/config/nsqlookupd_tcp_addresses", b'["a:4160","b:4160"]')
    assert reply.json() == ["a:4160", "b:4160"]
    assert h.api.nsqlookupd_tcp_addresses == ["a:4160", "b:4160"]
    assert (await h.get("/config/nsqlookupd_tcp_addresses")).json() == ["a:4160", "b:4160"]


async def test_config_put_log_level_sets_the_logger(h: Harness, shoal_log_level: None) -> None:
    reply = await h.request("PUT", "/config/log_level", b"DEBUG")
    assert reply.json() == 1
    assert logging.getLogger("shoal").level == logging.DEBUG


@pytest.mark.parametrize(
    ("opt", "body", "status", "message"),
    [
        ("nsqlookupd_tcp_addresses", b"not json", 400, "INVALID_VALUE"),
        ("nsqlookupd_tcp_addresses", b'{"a": 1}', 400, "INVALID_VALUE"),
        ("nsqlookupd_tcp_addresses", b"[1, 2]", 400, "INVALID_VALUE"),
        ("log_level", b"loud", 400, "INVALID_VALUE"),
        ("log_level", b"", 413, "INVALID_VALUE"),
        ("mem_queue_size", b"5", 400, "INVALID_OPTION"),
        ("log_level", b"x" * 1_048_577, 413, "INVALID_VALUE"),
    ],
)
async def test_config_put_refusals(
    h: Harness, shoal_log_level: None, opt: str, body: bytes, status: int, message: str
) -> None:
    assert_error(await h.request("PUT", f"/config/{opt}", body), status, message)
    assert h.api.nsqlookupd_tcp_addresses == []


# -- every reply ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/ping"),
        ("GET", "/info"),
        ("GET", "/stats"),
        ("GET", "/stats?format=json"),
        ("POST", "/pub?topic=t"),
        ("POST", "/topic/create?topic=t"),
        ("GET", "/config/id"),
        ("GET", "/nothing-here"),
        ("DELETE", "/stats"),
        ("POST", "/channel/create"),
    ],
)
async def test_every_reply_carries_the_nsq_header(h: Harness, method: str, target: str) -> None:
    reply = await h.request(method, target, b"x" if method == "POST" else b"")
    assert reply.headers["x-nsq-content-type"] == "nsq; version=1.0"
    if reply.status != 200:
        assert reply.headers["content-type"] == JSON_TYPE
        assert set(reply.json()) == {"message"}


async def test_router_takes_more_routes_on_the_same_port(h: Harness) -> None:
    h.api.router.add("GET", "/lookup", lambda request: Response.json({"producers": []}))
    reply = await h.get("/lookup")
    assert reply.json() == {"producers": []}
    assert reply.headers["x-nsq-content-type"] == "nsq; version=1.0"


# -- /stats --------------------------------------------------------------------------------


class NsqClient:
    """A raw V2 client over a trio stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.frames = FrameDecoder()

    @classmethod
    async def connect(cls, port: int) -> NsqClient:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(MAGIC_V2)
        return cls(stream)

    async def send(self, *commands: Command) -> None:
        await self.stream.send_all(b"".join(encode_command(c) for c in commands))

    async def read_frame(self) -> tuple[FrameType, bytes]:
        for _ in range(10_000):
            frame = self.frames.next_frame()
            if frame is not None:
                if frame == (FrameType.RESPONSE, b"_heartbeat_"):
                    continue
                return frame
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError
            self.frames.receive_data(data)
        raise AssertionError("no frame")

    async def expect_ok(self) -> None:
        assert await self.read_frame() == (FrameType.RESPONSE, b"OK")

    async def read_message(self) -> Message:
        kind, data = await self.read_frame()
        assert kind is FrameType.MESSAGE
        return decode_message(data)


def client_keys() -> set[str]:
    return {
        "client_id", "hostname", "version", "remote_address", "state", "ready_count",
        "in_flight_count", "message_count", "finish_count", "requeue_count", "connect_ts",
        "sample_rate", "deflate", "snappy", "user_agent", "tls", "tls_cipher_suite",
        "tls_version", "tls_negotiated_protocol", "tls_negotiated_protocol_is_mutual",
    }  # fmt: skip


async def test_stats_after_a_scripted_workload(h: Harness) -> None:
    await h.attach_tcp()
    with trio.fail_after(10):
        assert_ok_empty(await h.post("/topic/create?topic=t"))
        assert_ok_empty(await h.post("/channel/create?topic=t&channel=d"))
        consumer = await h.nsq()
        await consumer.send(
            Identify(b'{"client_id":"cons","hostname":"h1","user_agent":"test/1"}'),
            Sub("t", "c"),
            Rdy(1),
        )
        await consumer.expect_ok()
        await consumer.expect_ok()
        producer = await h.nsq()
        await producer.send(Pub("t", b"a"), Pub("t", b"b"), Pub("t", b"c"))
        for _ in range(3):
            await producer.expect_ok()
        assert (await h.post("/pub?topic=t", b"x")).status == 200
        assert (await h.post("/mpub?topic=t", b"y\nzz")).status == 200
        await consumer.read_message()  # one in flight, unanswered
        reply = await h.get("/stats?format=json")

    doc = reply.json()
    assert list(doc) == ["version", "health", "start_time", "topics", "memory", "producers"]
    assert (doc["version"], doc["health"], doc["start_time"]) == ("0.1.0", "OK", int(T0 - 60))
    memory = doc["memory"]
    assert set(MEMORY_KEYS) <= set(memory)
    assert all(type(memory[key]) is int for key in MEMORY_KEYS)
    assert memory["heap_in_use_bytes"] > 0
    assert memory["heap_objects"] > 0

    (topic,) = doc["topics"]
    assert topic == {
        "topic_name": "t",
        "channels": topic["channels"],
        "depth": 0,
        "backend_depth": 0,
        "message_count": 6,
        "message_bytes": 7,
        "paused": False,
        "e2e_processing_latency": {"count": 0, "percentiles": None},
    }
    c, d = topic["channels"]
    assert c == {
        "channel_name": "c",
        "depth": 5,
        "backend_depth": 0,
        "in_flight_count": 1,
        "deferred_count": 0,
        "message_count": 6,
        "requeue_count": 0,
        "timeout_count": 0,
        "client_count": 1,
        "clients": c["clients"],
        "paused": False,
        "e2e_processing_latency": {"count": 0, "percentiles": None},
    }
    assert d["channel_name"] == "d"
    assert (d["depth"], d["in_flight_count"], d["client_count"], d["clients"]) == (6, 0, 0, [])

    for obj in (topic, c, d):
        assert all(type(obj[k]) is int for k in obj if k.endswith(("_count", "depth", "_bytes")))
        assert type(obj["paused"]) is bool
    (client,) = c["clients"]
    assert set(client) == client_keys()
    assert all(type(client[k]) is int for k in client if k.endswith("_count"))
    assert all(type(client[k]) is bool for k in ("deflate", "snappy", "tls"))
    assert client["client_id"] == "cons"
    assert client["hostname"] == "h1"
    assert client["user_agent"] == "test/1"
    assert client["version"] == "V2"
    assert client["remote_address"].startswith("127.0.0.1:")
    assert (client["state"], client["ready_count"], client["in_flight_count"]) == (3, 1, 1)
    assert (client["message_count"], client["finish_count"], client["requeue_count"]) == (1, 0, 0)
    assert type(client["connect_ts"]) is int

    (prod,) = doc["producers"]
    assert set(prod) == client_keys() | {"pub_counts"}
    assert prod["pub_counts"] == [{"topic": "t", "count": 3}]
    assert prod["state"] == 0


async def test_stats_filters_and_nulls(h: Harness) -> None:
    await h.post("/mpub?topic=a", b"1\n2")
    await h.post("/channel/create?topic=a&channel=x")
    await h.post("/channel/create?topic=a&channel=y")
    await h.post("/topic/create?topic=b")
    await h.post("/channel/create?topic=b&channel=y")
    await h.post("/topic/create?topic=c")

    full = (await h.get("/stats?format=json")).json()
    assert [t["topic_name"] for t in full["topics"]] == ["a", "b", "c"]
    assert full["producers"] is None  # nsqd's nil slice: nobody published over TCP

    only_b = (await h.get("/stats?format=json&topic=b")).json()
    assert [t["topic_name"] for t in only_b["topics"]] == ["b"]

    unknown = (await h.get("/stats?format=json&topic=nope")).json()
    assert unknown["topics"] is None

    channel_y = (await h.get("/stats?format=json&channel=y")).json()
    assert [
        (t["topic_name"], [c["channel_name"] for c in t["channels"]]) for t in channel_y["topics"]
    ] == [("a", ["y"]), ("b", ["y"])]

    lean = (await h.get("/stats?format=json&include_clients=false&include_mem=0")).json()
    assert "memory" not in lean
    assert lean["producers"] is None
    assert all(c["clients"] is None for t in lean["topics"] for c in t["channels"])

    assert (await h.get("/stats?format=json&include_clients=junk")).json()["topics"][0]["channels"][
        0
    ]["clients"] == []


async def test_stats_text_format_is_the_human_dump(h: Harness) -> None:
    await h.post("/topic/create?topic=t")
    await h.post("/channel/create?topic=t&channel=c")
    await h.post("/pub?topic=t", b"x")
    await h.post("/channel/pause?topic=t&channel=c")
    reply = await h.get("/stats")
    assert reply.status == 200
    assert reply.headers["content-type"] == TEXT_TYPE
    text = reply.body.decode()
    assert text.startswith("shoal v0.1.0\nstart_time 2023-11-14T22:12:20Z\nuptime 1m0s\n")
    assert "\nHealth: OK\n" in text
    assert "\nMemory:\n   heap_objects" in text
    assert (
        "\nTopics:\n   [t              ] depth: 0     be-depth: 0     msgs: 1        e2e%: \n"
        in text
    )
    assert "   *P [c                        ] depth: 1     be-depth: 0     inflt: 0    " in text
    assert text.endswith("\nProducers: None\n")


async def test_stats_health_reports_nok(h: Harness) -> None:
    h.unhealthy = "disk"
    assert (await h.get("/stats?format=json")).json()["health"] == "NOK - disk"


async def test_channel_delete_hook_can_find_the_tcp_subscribers(h: Harness) -> None:
    await h.attach_tcp()
    tcp = h.tcp
    assert tcp is not None
    subscribers: list[int] = []

    def find_subscribers(channel: Channel) -> None:
        # What the TCP server does with the hook: close each of these.
        subscribers.extend(
            client_id
            for client_id, conn in tcp.connections.items()
            if conn.client.channel is channel
        )

    h.also_on_deleted = find_subscribers
    with trio.fail_after(10):
        consumer = await h.nsq()
        await consumer.send(Sub("t", "c"), Rdy(1))
        await consumer.expect_ok()
        bystander = await h.nsq()
        await bystander.send(Sub("t", "other"))
        await bystander.expect_ok()
        assert_ok_empty(await h.post("/channel/delete?topic=t&channel=c"))
    assert len(subscribers) == 1
    assert tcp.connections[subscribers[0]].client.channel is h.deleted[0]


async def test_channel_empty_resets_the_subscribers_in_flight_count(h: Harness) -> None:
    await h.attach_tcp()
    with trio.fail_after(10):
        consumer = await h.nsq()
        await consumer.send(Sub("t", "c"), Rdy(2))
        await consumer.expect_ok()
        await h.post("/mpub?topic=t", b"a\nb\nc")
        await consumer.read_message()
        await consumer.read_message()
        (client,) = (await h.get("/stats?format=json")).json()["topics"][0]["channels"][0][
            "clients"
        ]
        assert client["in_flight_count"] == 2
        assert_ok_empty(await h.post("/channel/empty?topic=t&channel=c"))
        after = (await h.get("/stats?format=json")).json()["topics"][0]["channels"][0]
    assert (after["depth"], after["in_flight_count"]) == (0, 0)
    assert after["clients"][0]["in_flight_count"] == 0
