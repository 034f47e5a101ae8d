"""The nsqd HTTP API (docs/nsq.md §2) over a node's broker, as one route table.

Replies follow nsqd's "V1" conventions (docs/nsq.md §2.1): string results (``OK``)
are written raw as text, objects as compact JSON with ``Content-Type:
application/json; charset=utf-8``, errors as ``{"message": CODE}`` with the
status, and every reply, errors included, carries ``X-NSQ-Content-Type: nsq;
version=1.0`` (docs/nsq.md §0 trap 1). Methods, parameter checks, their order and
the error codes are nsqd v1.3.0's, endpoint by endpoint, so a client sees
the same answer for the same mistake.

Wiring: the node builds one `NodeHTTPAPI` and serves its ``router`` with
`shoal.cluster.http_server.serve_http`. Later endpoints on the same port
(``/lookup``, ``/topics``, ``/channels``, ``/nodes``, ``/members``) are added
to that same ``router`` with `Router.add`. The hooks let the API act on the
rest of the node without knowing it:

- ``kick_backlog()``: a topic's backlog can flow again (a channel was
  created, the topic was unpaused); the node drains it in bounded steps.
- ``on_channel_deleted(channel)``: a channel is gone (deleted itself or with
  its topic); its TCP subscribers must be closed (docs/nsq.md §4.8).
- ``health()``: None while healthy, else the reason (``/ping`` then answers
  500 ``NOK - <reason>``).

Publishing goes through `Topic.publish`, the same call the TCP protocol
makes, so HTTP and TCP messages are indistinguishable downstream. The HTTP
publisher is not a TCP client, so it never appears in ``producers``.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import re
import resource
import struct
import sys
import time
from typing import TYPE_CHECKING, Any

import msgspec
import trio
import trio.lowlevel

from shoal import strict_json
from shoal.cluster.http_server import Request, Response, Router
from shoal.cluster.slices import LineTooLongError, slice_bounds, split_lines
from shoal.config import MAX_REPLICATION_FACTOR
from shoal.queue import stats
from shoal.queue.backend import BackendError
from shoal.queue.names import is_valid_channel_name, is_valid_topic_name

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from shoal.cluster.replication import Replicator
    from shoal.cluster.tcp_server import TCPServer
    from shoal.config import NodeConfig
    from shoal.queue.broker import Broker
    from shoal.queue.channel import Channel
    from shoal.queue.protocol import ClientV2
    from shoal.queue.topic import Topic

__all__ = [
    "NSQ_HEADERS",
    "NodeHTTPAPI",
    "NodeInfo",
    "new_router",
    "parse_mpub_binary",
    "process_memory",
]

log = logging.getLogger("shoal.http")

#: Sent with every reply of an NSQ API; go-nsq relies on it (docs/nsq.md §0 trap 1).
NSQ_HEADERS = (("X-NSQ-Content-Type", "nsq; version=1.0"),)

#: nsqd's ``boolParams``: the spellings of true and false it accepts.
_BOOL_PARAMS = {"true": True, "1": True, "false": False, "0": False}

#: nsqd's log levels as /config reports them (Go's ``lg.LogLevel`` integers).
_LOG_LEVELS = {"debug": 1, "info": 2, "warn": 3, "error": 4, "fatal": 5}
_PYTHON_LEVELS = {
    1: logging.DEBUG,
    2: logging.INFO,
    3: logging.WARNING,
    4: logging.ERROR,
    5: logging.CRITICAL,
}

#: Go's ``strconv.ParseInt(s, 10, 64)`` syntax: optional sign, ASCII digits.
_GO_INT = re.compile(r"[+-]?[0-9]+")
_INT64_MAX = 2**63 - 1

#: Config fields whose float seconds nsqd reports as Go nanosecond durations.
_DURATION_SUFFIXES = ("_timeout", "_interval", "_time", "_lifetime")
#: Our field names that nsqd's /config spells differently.
_CFG_NAMES = {"node_id": "id"}

_MPUB_INT = struct.Struct(">i")


def new_router() -> Router:
    """A router whose every reply carries the NSQ headers (also for the lookup API)."""
    return Router(headers=NSQ_HEADERS)


class NodeInfo(msgspec.Struct, frozen=True, kw_only=True, eq=False):
    """What ``/info`` reports about the node, known once its listeners are bound.

    Attributes:
        version: the node's version string.
        broadcast_address: the host name clients should dial.
        hostname: this machine's host name.
        tcp_port: the NSQ TCP port actually listened on.
        http_port: the HTTP port actually listened on.
        start_time: when the node started, unix seconds.
    """

    version: str
    broadcast_address: str
    hostname: str
    tcp_port: int
    http_port: int
    start_time: float


class _APIError(Exception):
    """A refusal in nsqd's words: the status and the ``message`` code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


def _v1(
    handler: Callable[[Request], Response | Awaitable[Response]],
) -> Callable[[Request], Response | Awaitable[Response]]:
    """Turn `_APIError` into nsqd's error reply (nsqd's ``http_api.V1``)."""

    def reply(request: Request) -> Response | Awaitable[Response]:
        try:
            return handler(request)
        except _APIError as err:
            return Response.error(err.status, err.message)

    reply.__name__ = handler.__name__
    reply.__doc__ = handler.__doc__
    return reply


def _v1_async(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """`_v1` for a handler that awaits."""

    async def reply(request: Request) -> Response:
        try:
            return await handler(request)
        except _APIError as err:
            return Response.error(err.status, err.message)

    reply.__name__ = handler.__name__
    reply.__doc__ = handler.__doc__
    return reply


def _ns(seconds: float) -> int:
    """Float seconds as a Go ``time.Duration`` (integer nanoseconds)."""
    return round(seconds * 1_000_000_000)


def _read_rss() -> int:
    """Resident set size in bytes: /proc when available, else the peak from rusage."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError) as exc:
        log.debug("HTTP: no RSS from /proc: %s", exc)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def process_memory() -> dict[str, Any]:
    """The ``memory`` object of /stats, with this Python process's figures.

    nsqd reports Go runtime numbers; nsqadmin decodes those keys, so all of
    them are present with the nearest Python equivalent, or 0 where Python
    has none: ``heap_objects`` is the number of allocated memory blocks,
    ``heap_in_use_bytes`` the resident set size, ``gc_total_runs`` the
    collections of every generation. GC pauses and the next-GC threshold are
    not measured (0). Python's own figures follow: ``rss_bytes``,
    ``gc_counts`` (objects tracked per generation) and ``gc_collections``.
    """
    rss = _read_rss()
    generations = gc.get_stats()
    collections = [int(g["collections"]) for g in generations]
    return {
        "heap_objects": sys.getallocatedblocks(),
        "heap_idle_bytes": 0,
        "heap_in_use_bytes": rss,
        "heap_released_bytes": 0,
        "gc_pause_usec_100": 0,
        "gc_pause_usec_99": 0,
        "gc_pause_usec_95": 0,
        "next_gc_bytes": 0,
        "gc_total_runs": sum(collections),
        "rss_bytes": rss,
        "gc_counts": list(gc.get_count()),
        "gc_collections": collections,
    }


def parse_mpub_binary(body: bytes, *, max_msg_size: int, max_body_size: int) -> list[bytes]:
    """Split a binary /mpub body: ``[4B count]`` then count x ``[4B size][bytes]``.

    Checks follow nsqd's ``readMPUB``; trailing bytes after the last message
    are ignored, as there.

    Raises:
        _APIError: 413 with the TCP code minus ``E_``: ``BAD_BODY`` for a
            missing or out-of-range count, ``BAD_MESSAGE`` for a missing,
            non-positive or oversize message size or a short body.
    """
    bodies: list[bytes] = []
    for part in _mpub_binary_slices(body, max_msg_size=max_msg_size, max_body_size=max_body_size):
        bodies += part
    return bodies


def _mpub_binary_slices(
    body: bytes, *, max_msg_size: int, max_body_size: int
) -> Iterator[list[bytes]]:
    """`parse_mpub_binary` one `PUBLISH_SLICE` of messages at a time."""
    if len(body) < 4:
        raise _APIError(413, "BAD_BODY")
    (count,) = _MPUB_INT.unpack_from(body, 0)
    if count <= 0 or count > (max_body_size - 4) // 5:
        raise _APIError(413, "BAD_BODY")
    end = len(body)
    pos = 4
    for first, stop in slice_bounds(count):
        bodies: list[bytes] = []
        for _ in range(stop - first):
            if pos + 4 > end:
                raise _APIError(413, "BAD_MESSAGE")
            (size,) = _MPUB_INT.unpack_from(body, pos)
            if size <= 0 or size > max_msg_size:
                raise _APIError(413, "BAD_MESSAGE")
            start = pos + 4
            pos = start + size
            if pos > end:
                raise _APIError(413, "BAD_MESSAGE")
            bodies.append(body[start:pos])
        yield bodies


def _noop() -> None:
    """Default `NodeHTTPAPI` ``kick_backlog``: nobody drains backlogs."""


def _always_healthy() -> str | None:
    """Default `NodeHTTPAPI` ``health``: never unhealthy."""
    return None


class NodeHTTPAPI:
    """The nsqd HTTP API of one node.

    Args:
        broker: the node's topics and channels.
        config: the node's configuration (limits, addresses, /config values).
        node_info: called for each ``/info``; the ports are the bound ones.
        tcp_server: the NSQ TCP server, for client objects in /stats and for
            resetting in-flight counts after a channel is emptied; None when
            the node has no TCP clients (tests).
        health: None while healthy, else the reason; see the module notes.
        kick_backlog: called when a topic backlog may flow again.
        on_channel_deleted: called with each deleted channel, after the
            broker deleted it, so the TCP server can close its subscribers.
        clock: wall-clock seconds (message timestamps, uptime).
        memory: the process figures for /stats ``memory``.
        router: an existing router to add the routes to; a new one with the
            NSQ headers by default.
        extra_stats: more top-level keys for /stats (membership and disk
            figures); clients that do not know them ignore them.

    Attributes:
        router: the route table; serve it, or add more routes to it.
        nsqlookupd_tcp_addresses: the value last PUT to
            ``/config/nsqlookupd_tcp_addresses`` (kept and reported; a gossip
            node has no lookupd to connect to).
    """

    def __init__(
        self,
        broker: Broker,
        config: NodeConfig,
        *,
        node_info: Callable[[], NodeInfo],
        tcp_server: TCPServer | None = None,
        health: Callable[[], str | None] = _always_healthy,
        kick_backlog: Callable[[], None] = _noop,
        on_channel_deleted: Callable[[Channel], None] | None = None,
        clock: Callable[[], float] = time.time,
        memory: Callable[[], dict[str, Any]] = process_memory,
        router: Router | None = None,
        extra_stats: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.broker = broker
        self.config = config
        self.router = router if router is not None else new_router()
        self.nsqlookupd_tcp_addresses: list[str] | None = []
        self._node_info = node_info
        self._tcp = tcp_server
        self._health = health
        self._kick_backlog = kick_backlog
        self._on_channel_deleted = on_channel_deleted
        self._clock = clock
        self._memory = memory
        self._extra_stats = extra_stats
        #: Publishes replicated topics (set by the node); see `_publish_replicated`.
        self.replicator: Replicator | None = None
        #: Called with (topic, factor) for ``/topic/create?replication_factor=N``.
        self.set_replication_factor: Callable[[str, int], None] | None = None
        #: Durable mode: awaited before a publish is answered (see `TCPServer.commit`).
        self.commit: Callable[[], Awaitable[None]] | None = None
        self._add_routes()

    def _add_routes(self) -> None:
        queue = self.config.queue
        add = self.router.add
        add("GET", "/ping", self.ping)
        add("GET", "/info", _v1(self.info))
        # nsqd does not log /pub and /mpub: they are the hot path.
        add(
            "POST",
            "/pub",
            _v1(self.pub),
            max_body_size=queue.max_msg_size,
            too_big="MSG_TOO_BIG",
            log=False,
        )
        add(
            "POST",
            "/mpub",
            _v1_async(self.mpub),
            max_body_size=queue.max_body_size,
            too_big="BODY_TOO_BIG",
            log=False,
        )
        add("GET", "/stats", _v1(self.stats))
        add("POST", "/topic/create", _v1(self.topic_create))
        add("POST", "/topic/delete", _v1(self.topic_delete))
        add("POST", "/topic/empty", _v1(self.topic_empty))
        add("POST", "/topic/pause", _v1(self.topic_pause))
        add("POST", "/topic/unpause", _v1(self.topic_unpause))
        add("POST", "/channel/create", _v1(self.channel_create))
        add("POST", "/channel/delete", _v1(self.channel_delete))
        add("POST", "/channel/empty", _v1(self.channel_empty))
        add("POST", "/channel/pause", _v1(self.channel_pause))
        add("POST", "/channel/unpause", _v1(self.channel_unpause))
        add("GET", "/config/:opt", _v1(self.config_get))
        add(
            "PUT",
            "/config/:opt",
            _v1(self.config_put),
            max_body_size=queue.max_msg_size,
            too_big="INVALID_VALUE",
        )

    # -- helpers -----------------------------------------------------------------

    def health_text(self) -> str:
        """``OK`` or ``NOK - <reason>``, as /ping and /stats report it."""
        reason = self._health()
        return "OK" if reason is None else f"NOK - {reason}"

    def clients(self) -> dict[int, ClientV2]:
        """The TCP clients by ID (empty without a TCP server)."""
        if self._tcp is None:
            return {}
        return {client_id: conn.client for client_id, conn in self._tcp.connections.items()}

    def _new_topic_name(self, request: Request) -> str:
        """Read the topic as nsqd's ``getTopicFromQuery``: present and valid."""
        name = request.arg("topic")
        if name is None:
            raise _APIError(400, "MISSING_ARG_TOPIC")
        if not is_valid_topic_name(name):
            raise _APIError(400, "INVALID_TOPIC")
        return name

    def _existing_topic(self, request: Request) -> Topic:
        """The named topic, which must exist (its name is not validated, as in nsqd)."""
        name = request.arg("topic")
        if name is None:
            raise _APIError(400, "MISSING_ARG_TOPIC")
        topic = self.broker.get_topic(name)
        if topic is None:
            raise _APIError(404, "TOPIC_NOT_FOUND")
        return topic

    def _topic_channel(self, request: Request) -> tuple[Topic, str]:
        """Read both names as nsqd's ``getExistingTopicFromQuery``; the topic must exist."""
        topic_name = request.arg("topic")
        if topic_name is None:
            raise _APIError(400, "MISSING_ARG_TOPIC")
        if not is_valid_topic_name(topic_name):
            raise _APIError(400, "INVALID_ARG_TOPIC")
        channel_name = request.arg("channel")
        if channel_name is None:
            raise _APIError(400, "MISSING_ARG_CHANNEL")
        if not is_valid_channel_name(channel_name):
            raise _APIError(400, "INVALID_ARG_CHANNEL")
        topic = self.broker.get_topic(topic_name)
        if topic is None:
            raise _APIError(404, "TOPIC_NOT_FOUND")
        return topic, channel_name

    def _existing_channel(self, request: Request) -> Channel:
        topic, name = self._topic_channel(request)
        channel = topic.channels.get(name)
        if channel is None:
            raise _APIError(404, "CHANNEL_NOT_FOUND")
        return channel

    def _topic_for_publish(self, request: Request) -> Topic:
        """The validated topic, created as nsqd's ``GetTopic`` does (before the body is parsed)."""
        topic, _ = self.broker.get_or_create_topic(self._new_topic_name(request), self._clock())
        if topic.deleted:
            raise _APIError(503, "EXITING")
        return topic

    def _publish(
        self, topic: Topic, bodies: list[bytes], defer: float = 0.0
    ) -> Response | Awaitable[Response]:
        if topic.replicated is not None:
            return self._publish_replicated(topic, tuple(bodies), defer)
        try:
            topic.publish(bodies, self._clock(), defer)
        except BackendError as exc:
            failure = exc
        else:
            if self.commit is not None:
                return self._committed(topic, self.commit)
            return Response.text("OK")
        # nsqd answers every failed put with 503 EXITING.
        log.error("HTTP: publishing to %s failed: %s", topic.name, failure)
        raise _APIError(503, "EXITING")

    async def _publish_replicated(
        self, topic: Topic, bodies: tuple[bytes, ...], defer: float
    ) -> Response:
        """A replicated topic's publish: ``OK`` once its replicas hold it.

        nsqd has no such failure; 503 with a body naming it, like its other
        publish failures.
        """
        replicator = self.replicator
        if replicator is None or not await replicator.publish(topic, bodies, self._clock(), defer):
            return Response.error(503, "NOT_ENOUGH_REPLICAS")
        if self.commit is not None:
            return await self._committed(topic, self.commit)  # durable mode: our own copy
        return Response.text("OK")

    async def _committed(self, topic: Topic, commit: Callable[[], Awaitable[None]]) -> Response:
        """Durable mode: answer OK only once the publish is fsynced."""
        try:
            await commit()
        except BackendError as exc:
            log.error("HTTP: publishing to %s failed: %s", topic.name, exc)  # noqa: TRY400 - one line, no traceback
            return Response.error(503, "EXITING")
        return Response.text("OK")

    def _channel_deleted(self, channel: Channel) -> None:
        if self._on_channel_deleted is not None:
            self._on_channel_deleted(channel)

    # -- endpoints ---------------------------------------------------------------

    def ping(self, request: Request) -> Response:
        """GET /ping: ``OK``, or 500 ``NOK - <reason>`` (plain text either way)."""
        reason = self._health()
        if reason is None:
            return Response.text("OK")
        return Response.text(f"NOK - {reason}", status=500)

    def info(self, request: Request) -> Response:
        """GET /info: versions, ports and client-facing limits (docs/nsq.md §2.4)."""
        node = self._node_info()
        queue = self.config.queue
        return Response.json(
            {
                "version": node.version,
                "broadcast_address": node.broadcast_address,
                "hostname": node.hostname,
                "http_port": node.http_port,
                "tcp_port": node.tcp_port,
                "start_time": int(node.start_time),
                "max_heartbeat_interval": _ns(queue.max_heartbeat_interval),
                "max_output_buffer_size": queue.max_output_buffer_size,
                "max_output_buffer_timeout": _ns(queue.max_output_buffer_timeout),
                "max_deflate_level": queue.max_deflate_level,
                "topology_zone": "",
                "topology_region": "",
            }
        )

    def pub(self, request: Request) -> Response | Awaitable[Response]:
        """POST /pub?topic=T[&defer=ms]: publish the body as one message."""
        if not request.body:
            raise _APIError(400, "MSG_EMPTY")
        topic = self._topic_for_publish(request)
        defer = 0.0
        raw = request.arg("defer")
        if raw is not None:
            if _GO_INT.fullmatch(raw) is None or abs(int(raw)) > _INT64_MAX:
                raise _APIError(400, "INVALID_DEFER")
            defer_ms = int(raw)
            if defer_ms < 0 or defer_ms > self.config.queue.max_req_timeout * 1000:
                raise _APIError(400, "INVALID_DEFER")
            defer = defer_ms / 1000
        return self._publish(topic, [request.body], defer)

    async def mpub(self, request: Request) -> Response:
        """POST /mpub?topic=T[&binary=true]: publish many messages at once.

        Text mode (default) takes one message per line and skips empty lines;
        binary mode takes nsqd's framed batch (`parse_mpub_binary`).
        """
        topic = self._topic_for_publish(request)
        queue = self.config.queue
        binary = False
        raw = request.arg("binary")
        if raw is not None:
            binary = _BOOL_PARAMS.get(raw, True)
            if raw not in _BOOL_PARAMS:
                log.warning("HTTP: deprecated value %r used for /mpub binary param", raw)
        # In slices with checkpoints between them (`shoal.cluster.slices`):
        # a 5 MB body of one-byte lines is 2.6 M messages.
        bodies: list[bytes] = []
        if binary:
            parts = _mpub_binary_slices(
                request.body, max_msg_size=queue.max_msg_size, max_body_size=queue.max_body_size
            )
            for index, part in enumerate(parts):
                if index:
                    await trio.lowlevel.checkpoint()
                bodies += part
        else:
            try:
                bodies = await split_lines(request.body, queue.max_msg_size)
            except LineTooLongError:
                raise _APIError(413, "MSG_TOO_BIG") from None
        if topic.replicated is not None:
            # One record, one commit: an error then means none was accepted.
            return await self._publish_replicated(topic, tuple(bodies), 0.0)
        for index, (start, stop) in enumerate(slice_bounds(len(bodies))):
            if index:
                await trio.lowlevel.checkpoint()
                if topic.deleted:
                    log.error("HTTP: publishing to %s failed: topic deleted", topic.name)
                    raise _APIError(503, "EXITING")
            response = self._publish(topic, bodies[start:stop])
            if not isinstance(response, Response):
                response = await response  # durable mode: this slice's fsync
            if response.status != 200:
                return response
        return Response.text("OK")

    def stats(self, request: Request) -> Response:
        """GET /stats: the node's topics, channels and clients (docs/nsq.md §2.3)."""
        include_clients = _BOOL_PARAMS.get(request.arg("include_clients") or "", True)
        include_mem = _BOOL_PARAMS.get(request.arg("include_mem") or "", True)
        node = self._node_info()
        document = stats.stats_document(
            self.broker,
            self.clients(),
            version=node.version,
            health=self.health_text(),
            start_time=node.start_time,
            topic=request.arg("topic") or "",
            channel=request.arg("channel") or "",
            include_clients=include_clients,
            memory=self._memory() if include_mem else None,
            now=self._clock(),
        )
        if self._extra_stats is not None:
            document.update(self._extra_stats())
        if request.arg("format") == "json":
            return Response.json(document)
        text = stats.render_text(document, now=self._clock(), start_time=node.start_time)
        return Response.text(text)

    def topic_create(self, request: Request) -> Response:
        """POST /topic/create?topic=T."""
        name = self._new_topic_name(request)
        raw = request.arg("replication_factor")
        if raw is not None:
            if not raw.isdigit() or not 1 <= int(raw) <= MAX_REPLICATION_FACTOR:
                raise _APIError(400, "INVALID_REPLICATION_FACTOR")
            if self.set_replication_factor is None:
                raise _APIError(400, "REPLICATION_UNAVAILABLE")
            # Before the topic exists, so it is created replicated.
            self.set_replication_factor(name, int(raw))
        self.broker.get_or_create_topic(name, self._clock())
        return Response.text(b"")

    def topic_delete(self, request: Request) -> Response:
        """POST /topic/delete?topic=T: the topic, its channels and their subscribers go."""
        topic = self._existing_topic(request)
        channels = list(topic.channels.values())
        self.broker.delete_topic(topic.name)
        for channel in channels:
            self._channel_deleted(channel)
        return Response.text(b"")

    def topic_empty(self, request: Request) -> Response:
        """POST /topic/empty?topic=T: drop the topic's own backlog (channels untouched)."""
        name = self._new_topic_name(request)
        topic = self.broker.get_topic(name)
        if topic is None:
            raise _APIError(404, "TOPIC_NOT_FOUND")
        topic.empty()
        if self.replicator is not None:
            self.replicator.emptied(topic, None)
        return Response.text(b"")

    def topic_pause(self, request: Request) -> Response:
        """POST /topic/pause?topic=T: hold new messages in the topic."""
        topic = self._existing_topic(request)
        self.broker.pause_topic(topic.name, True)
        return Response.text(b"")

    def topic_unpause(self, request: Request) -> Response:
        """POST /topic/unpause?topic=T: resume fan-out and drain what was held."""
        topic = self._existing_topic(request)
        self.broker.pause_topic(topic.name, False)
        if topic.has_backlog:
            self._kick_backlog()
        return Response.text(b"")

    def channel_create(self, request: Request) -> Response:
        """POST /channel/create?topic=T&channel=C: the topic must exist."""
        topic, name = self._topic_channel(request)
        self.broker.get_or_create_channel(topic.name, name, self._clock())
        if topic.has_backlog:
            self._kick_backlog()
        return Response.text(b"")

    def channel_delete(self, request: Request) -> Response:
        """POST /channel/delete?topic=T&channel=C: its subscribers are closed."""
        channel = self._existing_channel(request)
        self.broker.delete_channel(channel.topic_name, channel.name)
        self._channel_deleted(channel)
        return Response.text(b"")

    def channel_empty(self, request: Request) -> Response:
        """POST /channel/empty?topic=T&channel=C: drop everything, in flight included."""
        channel = self._existing_channel(request)
        owners = channel.empty()
        if self.replicator is not None:
            topic = self.broker.get_topic(channel.topic_name)
            if topic is not None:
                self.replicator.emptied(topic, channel.name)
        if owners and self._tcp is not None:
            # The dropped deliveries no longer count against their clients'
            # RDY, exactly as if they had timed out (nsqd resets the counts).
            self._tcp.timed_out(owners)
        return Response.text(b"")

    def channel_pause(self, request: Request) -> Response:
        """POST /channel/pause?topic=T&channel=C: stop handing out messages."""
        channel = self._existing_channel(request)
        self.broker.pause_channel(channel.topic_name, channel.name, True)
        return Response.text(b"")

    def channel_unpause(self, request: Request) -> Response:
        """POST /channel/unpause?topic=T&channel=C: resume handing out messages."""
        channel = self._existing_channel(request)
        self.broker.pause_channel(channel.topic_name, channel.name, False)
        return Response.text(b"")

    # -- /config -----------------------------------------------------------------

    def options(self) -> dict[str, Any]:
        """Every option /config answers, by nsqd's cfg name, in nsqd's JSON types.

        Config fields keep their names (nsqd's flags with ``-`` as ``_``);
        durations become Go nanosecond integers and unset paths ``""``.
        """
        out: dict[str, Any] = {}
        for holder in (self.config, self.config.queue):
            for field in dataclasses.fields(holder):
                value = getattr(holder, field.name)
                if dataclasses.is_dataclass(value):
                    continue
                name = _CFG_NAMES.get(field.name, field.name)
                if isinstance(value, float) and field.name.endswith(_DURATION_SUFFIXES):
                    value = _ns(value)
                elif value is None:
                    value = ""
                elif isinstance(value, tuple):
                    value = list(value)
                elif not isinstance(value, str | int | float | bool | list):
                    value = str(value)  # paths, enums: what the flag was given as
                out[name] = value
        out["nsqlookupd_tcp_addresses"] = self.nsqlookupd_tcp_addresses
        out["log_level"] = _nsq_log_level(logging.getLogger("shoal").getEffectiveLevel())
        tls = self.config.tls
        out.update(
            tls_cert=tls.cert or "",
            tls_key=tls.key or "",
            tls_root_ca_file=tls.root_ca_file or "",
            tls_client_auth_policy=tls.client_auth_policy,
            # nsqd's TLSNotRequired, TLSRequiredExceptHTTP, TLSRequired.
            tls_required=2 if tls.http_required else 1 if tls.tcp_required else 0,
        )
        out.setdefault("e2e_processing_latency_percentiles", None)
        return out

    def config_get(self, request: Request) -> Response:
        """GET /config/:opt: one option's value as JSON; 400 INVALID_OPTION."""
        options = self.options()
        opt = request.params["opt"]
        if opt not in options:
            raise _APIError(400, "INVALID_OPTION")
        return Response.json(options[opt])

    def config_put(self, request: Request) -> Response:
        """PUT /config/:opt: only ``nsqlookupd_tcp_addresses`` and ``log_level``.

        The reply is the option's new value, as GET would give it.
        """
        if not request.body:
            raise _APIError(413, "INVALID_VALUE")
        opt = request.params["opt"]
        if opt == "nsqlookupd_tcp_addresses":
            self.nsqlookupd_tcp_addresses = _string_list(request.body)
        elif opt == "log_level":
            level = _LOG_LEVELS.get(request.body.decode("utf-8", "replace").lower())
            if level is None:
                raise _APIError(400, "INVALID_VALUE")
            logging.getLogger("shoal").setLevel(_PYTHON_LEVELS[level])
        else:
            raise _APIError(400, "INVALID_OPTION")
        return self.config_get(request)


def _nsq_log_level(level: int) -> int:
    """A Python logging level as nsqd's integer (the nearest at or below)."""
    best = 1
    for nsq, python in _PYTHON_LEVELS.items():
        if python <= level:
            best = max(best, nsq)
    return best


def _string_list(body: bytes) -> list[str] | None:
    """Decode a JSON array of strings (or null) as Go's ``json.Unmarshal`` into ``[]string``."""
    try:
        value = strict_json.loads(body)
    except strict_json.JSONBodyError:
        raise _APIError(400, "INVALID_VALUE") from None
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _APIError(400, "INVALID_VALUE")
    return value
