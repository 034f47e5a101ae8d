"""`Node`: one shoal process, owner of the root nursery and of every service.

The node only wires the services and runs their lifecycle: it opens the
data path (`shoal.cluster.metadata.DataPath`), binds every listener before
it reports itself ready (`shoal.cluster.listeners`), starts the membership
driver with the registry as its delegate and the routing around it
(`shoal.cluster.routing`), serves the HTTP APIs (lookup endpoints and
``/members`` from `shoal.cluster.lookup_api`, the operator routes for join,
force-leave and keys from `shoal.cluster.operator_api`), then runs the
servers and the housekeeping loops until it is asked to stop.

Housekeeping (timeouts, deferred messages, checkpoints of the disk queues) is in
`shoal.cluster.housekeeping`.

Shutdown order (SIGTERM, SIGINT): stop accepting and close every connection
(the servers are cancelled), then write every memory, in-flight and
deferred message to disk, save the metadata and release the data path.
In-flight messages thus become ready again on the next start, as in nsqd.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import trio

from shoal import __version__
from shoal.cluster.housekeeping import scan_loop, sync_loop
from shoal.cluster.http_api import NodeHTTPAPI, NodeInfo, new_router
from shoal.cluster.http_guard import publish_auth, tls_required
from shoal.cluster.http_server import serve_http
from shoal.cluster.listeners import bind_listeners, port_of, write_ready_file
from shoal.cluster.lookup_api import LookupAPI, MembersAPI, format_address
from shoal.cluster.membership_log import MembershipLog
from shoal.cluster.metadata import DataPath
from shoal.cluster.operations import serve_operations
from shoal.cluster.operator_api import OperatorAPI
from shoal.cluster.routing import TopicRouting, node_gossip
from shoal.cluster.tcp_server import TCPServer
from shoal.cluster.tls import server_context
from shoal.config import FACTORS_FILE, REPLICAS_DIRECTORY, REPLICATION_TAG, parse_address

if TYPE_CHECKING:
    from shoal.cluster.auth import AuthClient
    from shoal.cluster.membership_driver import MembershipDriver, MessageStream
    from shoal.cluster.replication import Replication
    from shoal.config import NodeConfig
    from shoal.queue.protocol import ClientV2
    from shoal.registry import Producer

__all__ = ["Node"]

log = logging.getLogger("shoal.node")

#: Backlog messages moved from a topic to its channels per step, between yields.
BACKLOG_STEP = 1000
#: Longest wait for a graceful leave to spread before the process exits.
LEAVE_TIMEOUT = 5.0


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
        auth: AuthClient | None = None
        if config.auth_http_addresses:
            # Only a node with auth servers imports their client (start-up cost).
            from shoal.cluster.auth import AuthClient

            auth = AuthClient(config.auth_http_addresses)
        self.data = DataPath(
            config,
            queue_config=queue_config,
            disk_config=disk_config,
            known_channels=self._known_channels,
            version=__version__,
        )
        self.broker = self.data.broker  # replaced in `run` once the data path is open
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
        self.driver: MembershipDriver | None = None
        self.routing: TopicRouting | None = None
        self.members: MembersAPI | None = None
        self.replication: Replication | None = None
        self._nursery: trio.Nursery | None = None

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
        self.broker = self.tcp.broker = self.data.open()
        if self.config.durable and self.data.disk is not None:
            self.tcp.commit = self.data.disk.commit
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
            self.data.close()
        log.info("exiting")

    def shutdown(self) -> None:
        """Leave the cluster and stop serving; `run` returns once all is flushed."""
        self._stop.set()

    async def _leave(self) -> None:
        if self.driver is None:
            return
        log.info("leaving the cluster")
        if self.replication is not None:
            # Before the leave spreads: the replicas adopt once they hear of it.
            await self.replication.hand_over(LEAVE_TIMEOUT)
        with trio.move_on_after(LEAVE_TIMEOUT + 1):
            if not await self.driver.leave(LEAVE_TIMEOUT):
                log.warning("leave was not fully disseminated before the timeout")

    async def _start_services(self, nursery: trio.Nursery) -> None:
        config = self.config
        bound = await bind_listeners(config, self.addresses)
        https_listeners = bound.https
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
        self._nursery = nursery
        lookup = await self._start_gossip(nursery)
        if config.broker:
            await self._start_replication(nursery)
        lookup.add_read_routes(self.http_api.router)
        assert self.members is not None
        self.members.add_routes(self.http_api.router)
        assert self.driver is not None
        OperatorAPI(self.driver).add_routes(self.http_api.router)
        serve_operations(self, self.http_api.router, nursery)
        lookup_router = new_router()
        lookup.add_routes(lookup_router)
        plain_router = secure_router = self.http_api.router
        if self.tcp.auth is not None:
            plain_router = publish_auth(plain_router, self.tcp.auth, tls=False)
            secure_router = publish_auth(secure_router, self.tcp.auth, tls=True)
        if config.tls.http_required and https_listeners:
            plain_router = tls_required(plain_router, port_of(self.addresses["https"]))
        if config.broker:
            await nursery.start(self.tcp.serve, bound.tcp)
            await nursery.start(serve_http, bound.http, plain_router)
        if https_listeners:
            assert self.ssl_context is not None
            secure = [
                trio.SSLListener(listener, self.ssl_context, https_compatible=True)
                for listener in https_listeners
            ]
            await nursery.start(serve_http, secure, secure_router)
        await nursery.start(serve_http, bound.lookup_http, lookup_router)
        nursery.start_soon(scan_loop, self.broker, self.tcp)
        nursery.start_soon(self._backlog_loop)
        nursery.start_soon(self.data.save_loop)
        if self.data.disk is not None:
            nursery.start_soon(sync_loop, self.data.disk, config.disk.sync_timeout)
        if any(topic.has_backlog for topic in self.broker.topics.values()):
            self.kick_backlog()

    # -- gossip -----------------------------------------------------------------

    async def _start_gossip(self, nursery: trio.Nursery) -> LookupAPI:
        config = self.config
        tcp_port = port_of(self.addresses["tcp"])
        http_port = port_of(self.addresses["http"])
        lookup_port = port_of(self.addresses["lookup_http"])
        # A member without a broker has no TCP port to be named after.
        gossip_port = parse_address(config.gossip_address)[1]
        unique = tcp_port if config.broker else gossip_port or f"lookupd-{os.getpid()}"
        name = config.node_name or self.data.node_name(f"{config.broadcast_address}:{unique}")
        driver, gossip = node_gossip(
            config, name=name, tcp_port=tcp_port, http_port=http_port, lookup_port=lookup_port
        )
        self.driver = driver
        membership_log = MembershipLog(name, clock=time.monotonic)
        driver.add_listener(membership_log.on_event)
        driver.add_notice_listener(membership_log.on_notice)
        bound = await nursery.start(driver.serve)
        membership_log.set_address(driver.advertise_address)
        self.addresses["gossip"] = format_address(bound)
        if not config.broker:
            # nsqlookupd's TCP port is where nsqd instances reach it: here, gossip.
            log.info("TCP: listening on %s", self.addresses["gossip"])
        self.routing = routing = TopicRouting.start(
            nursery, driver, gossip, self.broker, wall=time.time, monotonic=time.monotonic
        )
        lookup = LookupAPI(
            routing,
            tombstone_lifetime=config.tombstone_lifetime,
            remote_address=self._remote_address,
        )
        driver.add_listener(lambda _event: lookup.notify_change())
        self.members = MembersAPI(driver, routing, leave=self.shutdown)
        if config.seeds:
            nursery.start_soon(self._join, list(config.seeds))
        return lookup

    # -- replication ------------------------------------------------------------

    async def _start_replication(self, nursery: trio.Nursery) -> None:
        """Start replication now if a topic here may be replicated, else on its first need.

        A node whose topics all have factor 1 and that holds no copies never
        runs the service; importing it is about 15% of shoal's own import work.
        """
        if self._replicates_at_start():
            from shoal.cluster.replication import start_replication

            self.replication = await start_replication(self, nursery)
            return
        assert self.driver is not None
        self.driver.add_stream_handler(
            REPLICATION_TAG, self._serve_replication_stream, long_lived=True
        )
        self.http_api.set_replication_factor = self._set_replication_factor

    def _replicates_at_start(self) -> bool:
        """A factor above 1, or the data path keeps topics' factors or held copies."""
        if self.config.replication_factor > 1:
            return True
        path = self.config.data_path
        if path is None:
            return False
        if os.path.exists(os.path.join(path, FACTORS_FILE)):
            return True
        try:
            return bool(os.listdir(os.path.join(path, REPLICAS_DIRECTORY)))
        except FileNotFoundError:
            return False

    def replication_service(self) -> Replication:
        """The replication service, loaded and started on the first call if it was not."""
        if self.replication is None:
            from shoal.cluster.replication import attach_replication

            assert self._nursery is not None
            log.info("starting replication on its first need")
            self.replication = attach_replication(self, self._nursery)
        return self.replication

    async def _serve_replication_stream(self, stream: MessageStream, peer: Any) -> None:
        """An owner opened a replication stream to this node: load the service for it."""
        await self.replication_service().serve_stream(stream, peer)

    def _set_replication_factor(self, topic: str, factor: int) -> None:
        """``/topic/create?replication_factor=N``: loads the service, which keeps the factor."""
        self.replication_service().set_factor(topic, factor)

    async def _join(self, seeds: list[str]) -> None:
        assert self.driver is not None
        try:
            joined = await self.driver.join(seeds)
        except OSError as exc:
            log.warning("seeds could not be resolved yet (%s); retrying in the background", exc)
            return
        log.info("joining through %d seed address(es)", len(joined))

    def _known_channels(self, topic: str) -> list[str]:
        """Channels to pre-create with a new topic: those the cluster knows (docs/nsq.md §0.10)."""
        return self.routing.known_channels(topic) if self.routing is not None else []

    def _remote_address(self, producer: Producer) -> str:
        member = self.driver.member(producer.node) if self.driver is not None else None
        if member is None:
            return ""
        return format_address(member.address)

    def _extra_stats(self) -> dict[str, Any]:
        disk = self.data.disk
        extra: dict[str, Any] = {
            "membership": self.members.statistics() if self.members is not None else {},
            "disk": {
                "corrupt_records": sum(q.corrupt_records for q in disk.open_queues())
                if disk
                else 0,
                # Unacknowledged at the last stop, so handed out again: the only duplicates.
                "redelivered_after_restart": disk.recovered_outstanding if disk else 0,
                "damage": self.data.damage(),
            },
        }
        if self.config.broker and self._nursery is not None:
            extra["replication"] = self.replication_service().statistics()
        return extra

    # -- hooks ------------------------------------------------------------------

    def health(self) -> str | None:
        """None while healthy, else why (a failed disk write, a failed metadata save)."""
        if self.data.health is not None:
            return self.data.health
        return self.data.disk.health_error if self.data.disk is not None else None

    def node_info(self) -> NodeInfo:
        """What /info reports: the bound ports and the advertised address."""
        return NodeInfo(
            version=__version__,
            broadcast_address=self.config.broadcast_address,
            hostname=socket.gethostname(),
            tcp_port=port_of(self.addresses["tcp"]),
            http_port=port_of(self.addresses["http"]),
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
