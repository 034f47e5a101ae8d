"""`Node`: one shoal process, owner of the root nursery and of every service.

The node restores its topics from the data path, binds every listener
before it reports itself ready (so a harness that reads the ready file or
the log lines can connect at once), then runs the servers and the
housekeeping loops until it is asked to stop.

Housekeeping is deliberately coarse, as nsqd's queue scan is: in-flight
timeouts and deferred messages are processed at most every `SCAN_INTERVAL`,
or earlier when the next deadline is nearer; disk queues with unsynced
activity are fsynced every ``sync_timeout``.

Shutdown order (SIGTERM, SIGINT): stop accepting and close every connection
(the servers are cancelled), then write every memory, in-flight and
deferred message to disk, save the metadata and release the data path.
In-flight messages thus become ready again on the next start, as in nsqd.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import socket
import tempfile
import time
from typing import TYPE_CHECKING, Any

import trio

from shoal import __version__
from shoal.cluster import registry as reg
from shoal.cluster.auth import AuthClient
from shoal.cluster.disk_queue import DiskBackendFactory, disk_backend_factory
from shoal.cluster.http_api import NodeHTTPAPI, NodeInfo, new_router
from shoal.cluster.http_guard import publish_auth, tls_required
from shoal.cluster.http_server import Request, Response, serve_http
from shoal.cluster.lookup_api import LookupAPI
from shoal.cluster.membership_driver import MembershipDriver, StreamError
from shoal.cluster.membership_log import MembershipLog
from shoal.cluster.metadata import (
    ChannelMeta,
    DataPathLock,
    TopicMeta,
    load_node_name,
    lock_data_path,
    read_node_name,
    restore_metadata,
    save_metadata,
)
from shoal.cluster.operations import serve_operations
from shoal.cluster.operator_api import OperatorAPI
from shoal.cluster.replica_store import ReplicaStore
from shoal.cluster.replication import Replication
from shoal.cluster.routing import SYNC_INTERVAL, TopicRouting
from shoal.cluster.tcp_server import TCPServer
from shoal.cluster.tls import server_context
from shoal.config import TAG_PREFIX, parse_address
from shoal.errors import RemoteProtocolError
from shoal.membership.events import MemberJoined
from shoal.membership.keyring import Keyring
from shoal.membership.state import MemberState
from shoal.queue.backend import memory_backend_factory
from shoal.queue.broker import Broker, BrokerEvent

if TYPE_CHECKING:
    from shoal.cluster.membership_driver import MessageStream
    from shoal.config import NodeConfig
    from shoal.membership.events import Event
    from shoal.queue.protocol import ClientV2

__all__ = ["SCAN_INTERVAL", "Node", "format_address"]

log = logging.getLogger("shoal.node")

#: Longest sleep of the timeout and deferred scan (nsqd scans every 100 ms).
SCAN_INTERVAL = 0.1
#: Backlog messages moved from a topic to its channels per step, between yields.
BACKLOG_STEP = 1000
#: Stream tag of the topic registry's digest exchange on the gossip port.
REGISTRY_TAG = 0x52
#: Longest wait for a graceful leave to spread before the process exits.
LEAVE_TIMEOUT = 5.0
_LIVE = (MemberState.ALIVE, MemberState.SUSPECT)


def format_address(sockname: Any) -> str:
    """``host:port`` for a socket name, with IPv6 hosts in brackets."""
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def open_listeners(address: str, label: str) -> list[trio.SocketListener]:
    """Bind TCP listeners for ``host:port`` (port 0 picks a free port).

    Raises:
        OSError: the address cannot be bound; the message names it and
            ``label`` (the flag that set it), since the kernel's text names neither.
    """
    host, port = parse_address(address)
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OSError(exc.errno, f"cannot listen on {address} ({label}): {reason}") from None


def _port(address: str | None) -> int:
    return parse_address(address)[1] if address else 0


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _numeric(address: str | None) -> str | None:
    """Resolve the host of ``host:port`` to an IP (peers dial what we advertise)."""
    if address is None:
        return None
    host, port = parse_address(address)
    try:
        host = socket.gethostbyname(host)
    except OSError:
        return address
    return f"{host}:{port}"


def _plain(value: Any) -> Any:
    """A statistics snapshot as JSON-ready data (dataclasses, mappings, enums)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


class _RoutingDelegate:
    """The engine's application hooks, forwarded to the routing once it exists."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def local_state(self) -> bytes:
        routing = self._node.routing
        return routing.local_state() if routing is not None else b""

    def merge_remote_state(self, data: bytes, from_name: str) -> None:
        routing = self._node.routing
        if routing is not None:
            routing.merge_remote_state(data, from_name)

    def notify_message(self, data: bytes) -> bool:
        routing = self._node.routing
        if routing is None:
            return False
        news = routing.notify_message(data)
        if news:
            self._node.repair_gaps()
        return news


class Node:
    """One node: the broker core and the servers around it.

    Args:
        config: what to listen on, where to keep data, the limits to apply.

    Resource handling:
        `run` owns every socket, task and file; when it returns (after
        `shutdown`, or cancellation from outside) every listener and
        connection is closed and every queue flushed to disk.
    """

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        queue_config = config.queue
        disk_config = config.disk
        if config.durable:
            # Durable mode: no message waits in memory before its OK; publishes
            # share group-committed fsyncs off the loop (`DiskBackendFactory`);
            # channels keep every message on disk until FIN (a crash may
            # redeliver what was in flight, never lose).
            queue_config = dataclasses.replace(queue_config, mem_queue_size=0, sync_on_publish=True)
            disk_config = dataclasses.replace(disk_config, sync_every=1 << 30)
        # What IDENTIFY offers and AUTH needs follows from the TLS and auth settings.
        queue_config = dataclasses.replace(
            queue_config,
            tls_v1=config.tls.enabled,
            tls_required=config.tls.tcp_required,
            auth_required=bool(config.auth_http_addresses),
        )
        self.ssl_context = server_context(config.tls) if config.tls.enabled else None
        auth = AuthClient(config.auth_http_addresses) if config.auth_http_addresses else None
        self.queue_config = queue_config
        self.disk_config = disk_config
        self.disk: DiskBackendFactory | None = None
        self._lock: DataPathLock | None = None
        self.broker = Broker(queue_config)  # replaced in `run` once the data path is open
        self.tcp = TCPServer(
            self.broker,
            queue_config,
            on_subscribe=self._on_subscribe,
            ssl_context=self.ssl_context,
            auth=auth,
        )
        self.addresses: dict[str, str | None] = {
            "tcp": None,
            "http": None,
            "https": None,
            "gossip": None,
            "lookup_http": None,
        }
        self.start_time = time.time()
        self._backlog = trio.Event()
        self._stop = trio.Event()
        self._health: str | None = None
        self.driver: MembershipDriver | None = None
        self._sync_wake = trio.Event()
        self._sync_now: list[tuple[str, int]] = []
        self.routing: TopicRouting | None = None
        self.lookup: LookupAPI | None = None
        self.replication: Replication | None = None

    # -- lifecycle --------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[dict[str, str | None]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until `shutdown` is called or the caller cancels.

        ``task_status.started`` receives the bound addresses once every
        listener is bound and the ready file, if any, is written.

        Raises:
            OSError: a listener could not be bound.
            ConfigError: the data path is locked by another node or unreadable.
        """
        self._open_data_path()
        try:
            async with trio.open_nursery() as nursery:
                await self._start_services(nursery)
                if self.config.ready_file:
                    write_ready_file(self.config.ready_file, self.addresses)
                task_status.started(dict(self.addresses))
                await self._stop.wait()
                await self._leave()
                nursery.cancel_scope.cancel()
        finally:
            self._close_data_path()
        log.info("exiting")

    def shutdown(self) -> None:
        """Leave the cluster and stop serving; `run` returns once all is flushed."""
        self._stop.set()

    async def _leave(self) -> None:
        if self.driver is None:
            return
        log.info("leaving the cluster")
        with trio.move_on_after(LEAVE_TIMEOUT + 1):
            if not await self.driver.leave(LEAVE_TIMEOUT):
                log.warning("leave was not fully disseminated before the timeout")

    async def _start_services(self, nursery: trio.Nursery) -> None:
        config = self.config
        broker = config.broker
        tcp_listeners = await open_listeners(config.tcp_address, "--tcp-address") if broker else []
        http_listeners = (
            await open_listeners(config.http_address, "--http-address") if broker else []
        )
        https_listeners = []
        if broker and config.https_address is not None:
            https_listeners = await open_listeners(config.https_address, "--https-address")
        lookup_listeners = await open_listeners(config.lookup_http_address, "--lookup-http-address")
        # Only NSQ's own listeners get nsqd's "<PROTOCOL>: listening on" line,
        # which harnesses parse for ports (a member without a broker is
        # nsqlookupd, whose HTTP port is the lookup API).
        lookup_label = "lookup API: serving on %s" if broker else "HTTP: listening on %s"
        for kind, line, listeners in (
            ("tcp", "TCP: listening on %s", tcp_listeners),
            ("http", "HTTP: listening on %s", http_listeners),
            ("https", "HTTPS: listening on %s", https_listeners),
            ("lookup_http", lookup_label, lookup_listeners),
        ):
            for listener in listeners:
                address = format_address(listener.socket.getsockname())
                log.info(line, address)
                self.addresses[kind] = self.addresses[kind] or address
        self.http_api = NodeHTTPAPI(
            self.broker,
            config,
            node_info=self.node_info,
            tcp_server=self.tcp,
            health=self.health,
            kick_backlog=self.kick_backlog,
            on_channel_deleted=self.tcp.close_clients_of,
            extra_stats=self._extra_stats,
        )
        self.http_api.commit = self.tcp.commit
        await self._start_gossip(nursery)
        assert self.lookup is not None
        if broker:
            await self._start_replication(nursery)
        self.lookup.add_read_routes(self.http_api.router)
        self.http_api.router.add("GET", "/members", self._members)
        self.http_api.router.add("POST", "/leave", self._leave_request)
        assert self.driver is not None
        OperatorAPI(self.driver).add_routes(self.http_api.router)
        serve_operations(self, self.http_api.router, nursery)
        lookup_router = new_router()
        self.lookup.add_routes(lookup_router)
        plain_router = secure_router = self.http_api.router
        if self.tcp.auth is not None:
            plain_router = publish_auth(plain_router, self.tcp.auth, tls=False)
            secure_router = publish_auth(secure_router, self.tcp.auth, tls=True)
        if config.tls.http_required and https_listeners:
            plain_router = tls_required(plain_router, _port(self.addresses["https"]))
        if broker:
            await nursery.start(self.tcp.serve, tcp_listeners)
            await nursery.start(serve_http, http_listeners, plain_router)
        if https_listeners:
            assert self.ssl_context is not None
            secure = [
                trio.SSLListener(listener, self.ssl_context, https_compatible=True)
                for listener in https_listeners
            ]
            await nursery.start(serve_http, secure, secure_router)
        await nursery.start(serve_http, lookup_listeners, lookup_router)
        nursery.start_soon(self._scan_loop)
        nursery.start_soon(self._backlog_loop)
        if self.disk is not None:
            nursery.start_soon(self._sync_loop, self.disk)
        if any(topic.has_backlog for topic in self.broker.topics.values()):
            self.kick_backlog()

    # -- gossip -----------------------------------------------------------------

    async def _start_gossip(self, nursery: trio.Nursery) -> None:
        config = self.config
        tcp_port = _port(self.addresses["tcp"])
        http_port = _port(self.addresses["http"])
        lookup_port = _port(self.addresses["lookup_http"])
        gossip_host, gossip_port = parse_address(config.gossip_address)
        # A member without a broker has no TCP port to be named after.
        unique = tcp_port if config.broker else gossip_port or f"lookupd-{os.getpid()}"
        name = config.node_name or self._stored_name(f"{config.broadcast_address}:{unique}")
        advertise = None
        if gossip_host in ("0.0.0.0", "::", ""):
            advertise = f"{config.broadcast_address}:{gossip_port}" if gossip_port else None
        keyring = Keyring(config.gossip_keys) if config.gossip_keys else None
        # The registry generation rides in the member's metadata: it ties this
        # life of the name to its address, so no other node's registry state
        # is ever taken for ours (see `_registry_identity`).
        generation = time.time_ns()
        self.driver = driver = MembershipDriver(
            config.membership,
            name=name,
            bind=config.gossip_address,
            advertise=_numeric(advertise),
            meta={
                "b": config.broadcast_address,
                "t": str(tcp_port),
                "h": str(http_port),
                "l": str(lookup_port),
                "g": str(generation),
                **{TAG_PREFIX + key: value for key, value in config.tags},
            },
            keyring=keyring,
            delegate=_RoutingDelegate(self),
        )
        membership_log = MembershipLog(name, clock=time.monotonic)
        driver.add_listener(membership_log.on_event)
        driver.add_notice_listener(membership_log.on_notice)
        bound = await nursery.start(driver.serve)
        membership_log.set_address(driver.advertise_address)
        self.addresses["gossip"] = format_address(bound)
        if not config.broker:
            # nsqlookupd's TCP port is where nsqd instances reach it: here, gossip.
            log.info("TCP: listening on %s", self.addresses["gossip"])
        info = reg.NodeInfo(
            broadcast_address=config.broadcast_address,
            hostname=socket.gethostname(),
            tcp_port=tcp_port,
            http_port=http_port,
            version=__version__,
        )
        registry = reg.Registry(name, generation=generation, info=info, now=time.monotonic())
        self.routing = TopicRouting(
            registry,
            self.broker,
            broadcast=driver.broadcast_app,
            alive=self._member_alive,
            identity=self._registry_identity,
            wall=time.time,
            monotonic=time.monotonic,
        )
        self.lookup = LookupAPI(
            self.routing,
            tombstone_lifetime=config.tombstone_lifetime,
            remote_address=self._remote_address,
        )
        driver.add_stream_handler(REGISTRY_TAG, self._answer_sync)
        driver.add_listener(self._on_member_event)
        nursery.start_soon(self._sync_loop_registry)
        if config.seeds:
            nursery.start_soon(self._join, list(config.seeds))

    async def _start_replication(self, nursery: trio.Nursery) -> None:
        """Replicated topics (``docs/replication.md``); inert while every factor is 1."""
        assert self.driver is not None
        store = None
        if self.config.data_path is not None:
            store = ReplicaStore(
                os.path.join(self.config.data_path, "replicas"), durable=self.config.durable
            )
        self.replication = replication = Replication(
            self.driver.name,
            self.broker,
            self.driver,
            self.config,
            store=store,
            factors_path=None
            if self.config.data_path is None
            else os.path.join(self.config.data_path, "replication.json"),
            kick_backlog=self.kick_backlog,
        )
        await nursery.start(replication.serve)
        self.tcp.replicator = replication
        self.http_api.replicator = replication
        self.http_api.set_replication_factor = replication.set_factor

    def _stored_name(self, default: str) -> str:
        """The member name kept with the data, so a restarted node is the same member."""
        if self.config.data_path is None:
            return default
        return load_node_name(self.config.data_path, default)

    async def _join(self, seeds: list[str]) -> None:
        assert self.driver is not None
        try:
            joined = await self.driver.join(seeds)
        except OSError as exc:
            log.warning("seeds could not be resolved yet (%s); retrying in the background", exc)
            return
        log.info("joining through %d seed address(es)", len(joined))

    def repair_gaps(self) -> None:
        """A broadcast arrived ahead of one we missed: sync with its owner now.

        The periodic exchange runs only every `SYNC_INTERVAL`; a gap in an
        owner's versions is repaired at once instead of waiting for it.
        """
        if self.routing is None or self.driver is None:
            return
        for owner in self.routing.registry.behind():
            member = self.driver.member(owner)
            if member is not None and member.state in _LIVE:
                self._sync_now.append(member.address)
                self._sync_wake.set()

    def _known_channels(self, topic: str) -> list[str]:
        """Channels to pre-create with a new topic: those the cluster knows (nsq.md §0.10)."""
        return self.routing.known_channels(topic) if self.routing is not None else []

    def _member_alive(self, owner: str) -> bool:
        driver = self.driver
        member = driver.member(owner) if driver is not None else None
        return member is not None and member.state in _LIVE

    def _registry_identity(self, owner: str) -> int | None:
        """The registry generation the member ``owner`` announced, None if unknown.

        Registry state of ``owner`` under any other generation is another
        node's (a second node started with the same name) or an older life's,
        and is not applied.
        """
        member = self.driver.member(owner) if self.driver is not None else None
        if member is None:
            return None
        text = member.meta.get("g")
        return int(text) if text is not None and text.isdigit() else None

    def _remote_address(self, producer: reg.Producer) -> str:
        member = self.driver.member(producer.node) if self.driver is not None else None
        if member is None:
            return ""
        return format_address(member.address)

    def _on_member_event(self, event: Event) -> None:
        if self.lookup is not None:
            self.lookup.notify_change()
        # Only a member that joined or came back from dead can hold registry
        # news we missed; one that was merely suspected kept receiving it.
        if isinstance(event, MemberJoined):
            self._sync_now.append(event.member.address)
            self._sync_wake.set()

    async def _answer_sync(self, stream: MessageStream, peer: Any) -> None:
        assert self.routing is not None
        await self.routing.answer_exchange(stream)

    async def _sync_loop_registry(self) -> None:
        """Anti-entropy for the registry: a digest exchange now and then, and with newcomers."""
        rng = random.Random()
        while True:
            with trio.move_on_after(SYNC_INTERVAL * rng.uniform(0.8, 1.2)):
                await self._sync_wake.wait()
            self._sync_wake = trio.Event()
            targets, self._sync_now = self._sync_now, []
            driver = self.driver
            if not targets and driver is not None:
                peers = [
                    m.address
                    for m in driver.members()
                    if m.state in _LIVE and m.name != driver.name
                ]
                if peers:
                    targets = [rng.choice(peers)]
            for address in dict.fromkeys(targets):
                await self._sync_with(address)
            if self.routing is not None:
                self.routing.collect()

    async def _sync_with(self, address: tuple[str, int]) -> None:
        assert self.driver is not None
        assert self.routing is not None
        try:
            with trio.move_on_after(self.config.membership.stream_timeout):
                async with self.driver.open_stream(address, REGISTRY_TAG) as stream:
                    await self.routing.sync_exchange(stream)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                trio.EndOfChannel, StreamError, RemoteProtocolError) as exc:  # fmt: skip
            log.debug("registry sync with %s failed: %r", address, exc)

    # -- HTTP extras --------------------------------------------------------------

    def _members(self, request: Request) -> Response:
        """GET /members: the membership view, with each member's topics."""
        assert self.driver is not None
        assert self.routing is not None
        status = request.arg("status")
        registry = self.routing.registry
        topics_by_owner: dict[str, list[str]] = {}
        for producer, topics, _flags in registry.nodes(lambda _owner: True, wall=time.time()):
            topics_by_owner[producer.node] = topics
        members = []
        wall, now = time.time(), trio.current_time()
        for member in sorted(self.driver.members(), key=lambda m: m.name):
            if status and member.state.value != status:
                continue
            meta = member.meta
            members.append(
                {
                    "name": member.name,
                    "address": format_address(member.address),
                    "status": member.state.value,
                    "incarnation": member.incarnation,
                    "broadcast_address": meta.get("b", ""),
                    "tcp_port": _int(meta.get("t")),
                    "http_port": _int(meta.get("h")),
                    "lookup_http_port": _int(meta.get("l")),
                    "topics": topics_by_owner.get(member.name, []),
                    "tags": {
                        k.removeprefix(TAG_PREFIX): v
                        for k, v in sorted(meta.items())
                        if k.startswith(TAG_PREFIX)
                    },
                    # Wall time of the last status change, for the cluster page.
                    "since": round(wall - (now - member.state_changed_at), 3),
                }
            )
        return Response.json({"members": members, "statistics": self._membership_stats()})

    def _leave_request(self, request: Request) -> Response:
        """POST /leave: leave the cluster gracefully, then exit."""
        log.info("leave requested over HTTP by %s", request.remote)
        self.shutdown()
        return Response.text("OK")

    def _membership_stats(self) -> dict[str, Any]:
        if self.driver is None:
            return {}
        out: dict[str, Any] = _plain(self.driver.statistics())
        if self.routing is not None:
            out["registry_messages_applied"] = self.routing.messages_applied
        return out

    def _extra_stats(self) -> dict[str, Any]:
        disk = {
            "corrupt_records": sum(q.corrupt_records for q in self.disk.open_queues())
            if self.disk
            else 0,
            # Unacknowledged at the last stop, so handed out again: the only duplicates.
            "redelivered_after_restart": self.disk.recovered_outstanding if self.disk else 0,
            "damage": self.damage(),
        }
        extra = {"membership": self._membership_stats(), "disk": disk}
        if self.replication is not None:
            extra["replication"] = self.replication.statistics()
        return extra

    # -- data path --------------------------------------------------------------

    def _open_data_path(self) -> None:
        data_path = self.config.data_path
        if data_path is None:
            self.broker = Broker(
                self.queue_config, memory_backend_factory, known_channels=self._known_channels
            )
        else:
            os.makedirs(data_path, exist_ok=True)
            self._lock = lock_data_path(data_path)
            read_node_name(data_path)  # bad content stops the start here, in one line
            self.disk = disk_backend_factory(
                data_path, config=self.disk_config, durable=self.config.durable
            )
            if self.config.durable:
                self.tcp.commit = self.disk.commit
            self.broker = Broker(self.queue_config, self.disk, known_channels=self._known_channels)
            if self.config.durable:
                log.info("durable mode: every message is fsynced to disk before OK")
        self.tcp.broker = self.broker
        self._restore()
        self.broker.add_listener(self._on_broker_event)

    def _restore(self) -> None:
        if self.config.data_path is None:
            return
        meta, rebuilt = restore_metadata(self.config.data_path)
        if rebuilt is not None:
            log.warning("%s", rebuilt)
        if meta is None:
            return
        now = time.time()
        for topic_meta in meta.topics:
            topic, _ = self.broker.get_or_create_topic(topic_meta.name, now)
            for channel_meta in topic_meta.channels:
                channel, _ = topic.get_or_create_channel(channel_meta.name, now)
                if channel_meta.paused:
                    channel.pause()
            if topic_meta.paused:
                topic.pause()
        depth = sum(
            t.depth + sum(c.depth for c in t.channels.values()) for t in self.broker.topics.values()
        )
        log.info(
            "restored %d topics with %d messages from %s",
            len(meta.topics),
            depth,
            self.config.data_path,
        )
        for report in self.damage():
            log.warning("DISKQUEUE: %s", report)

    def _close_data_path(self) -> None:
        now = time.time()
        try:
            self.broker.flush(now)
            self.broker.close()
            self._save_metadata()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _on_broker_event(self, event: BrokerEvent) -> None:
        del event
        self._save_metadata()

    def _save_metadata(self) -> None:
        if self.config.data_path is None:
            return
        topics = [
            TopicMeta(
                name=topic.name,
                paused=topic.paused,
                channels=tuple(
                    ChannelMeta(name=c.name, paused=c.paused) for c in topic.channels.values()
                ),
            )
            for topic in self.broker.topics.values()
        ]
        try:
            save_metadata(self.config.data_path, topics, __version__)
        except OSError as exc:
            self._health = f"failed to persist metadata - {exc}"
            log.error("failed to persist metadata: %s", exc)  # noqa: TRY400 - one line, no traceback

    def damage(self) -> list[str]:
        """What disk recovery set aside, one line per damaged region."""
        if self.disk is None:
            return []
        return [line for queue in self.disk.open_queues() for line in queue.damage]

    # -- hooks ------------------------------------------------------------------

    def health(self) -> str | None:
        """None while healthy, else why (a failed disk write, a failed metadata save)."""
        if self._health is not None:
            return self._health
        return self.disk.health_error if self.disk is not None else None

    def node_info(self) -> NodeInfo:
        """What /info reports: the bound ports and the advertised address."""
        return NodeInfo(
            version=__version__,
            broadcast_address=self.config.broadcast_address,
            hostname=socket.gethostname(),
            tcp_port=_port(self.addresses["tcp"]),
            http_port=_port(self.addresses["http"]),
            start_time=self.start_time,
        )

    def kick_backlog(self) -> None:
        """A topic backlog may flow to channels again: drain it in the background."""
        self._backlog.set()

    def _on_subscribe(self, client: ClientV2) -> None:
        if client.channel is not None:
            topic = self.broker.get_topic(client.channel.topic_name)
            if topic is not None and topic.has_backlog:
                self.kick_backlog()

    # -- loops ------------------------------------------------------------------

    async def _backlog_loop(self) -> None:
        """Move topic backlogs into channels created after the messages arrived."""
        while True:
            await self._backlog.wait()
            self._backlog = trio.Event()
            for topic in list(self.broker.topics.values()):
                while topic.has_backlog and not topic.deleted:
                    moved = topic.pump(time.time(), BACKLOG_STEP)
                    if topic.replicated is not None and self.replication is not None:
                        self.replication.pumped(topic, moved)
                    await trio.lowlevel.checkpoint()

    async def _scan_loop(self) -> None:
        """Requeue timed-out messages and release due deferred ones.

        With nothing in flight or deferred the loop sleeps until the broker
        announces a deadline, instead of polling every `SCAN_INTERVAL`: an
        idle node then has no timer of its own but the gossip probe.
        """
        broker = self.broker
        while True:
            now = time.time()
            for _channel, client_ids in broker.process(now):
                self.tcp.timed_out(client_ids)
            deadline = broker.next_deadline()
            if deadline is None:
                woken = trio.Event()
                broker.on_deadline = woken.set
                try:
                    await woken.wait()
                finally:
                    broker.on_deadline = None
                continue
            await trio.sleep(min(max(deadline - now, 0), SCAN_INTERVAL))

    async def _sync_loop(self, disk: DiskBackendFactory) -> None:
        """Checkpoint queues with unsynced activity every ``sync_timeout`` or ``sync_every``."""
        while True:
            await disk.checkpoint()  # at once first: the positions recovered on start
            with trio.move_on_after(self.config.disk.sync_timeout):
                await disk.wait_sync_due()


def write_ready_file(path: str, addresses: dict[str, str | None]) -> None:
    """Write ``addresses`` as JSON to ``path`` atomically (readers never see half a file)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ready-", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(addresses, fh)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
