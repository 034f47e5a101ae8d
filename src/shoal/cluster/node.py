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
import socket
import tempfile
import time
from typing import TYPE_CHECKING, Any

import trio

from shoal import __version__
from shoal.cluster.disk_queue import DiskBackendFactory, disk_backend_factory
from shoal.cluster.http_api import NodeHTTPAPI, NodeInfo
from shoal.cluster.http_server import serve_http
from shoal.cluster.metadata import (
    ChannelMeta,
    DataPathLock,
    TopicMeta,
    load_metadata,
    lock_data_path,
    save_metadata,
)
from shoal.cluster.tcp_server import TCPServer
from shoal.config import parse_address
from shoal.queue.backend import memory_backend_factory
from shoal.queue.broker import Broker, BrokerEvent

if TYPE_CHECKING:
    from shoal.config import NodeConfig
    from shoal.queue.protocol import ClientV2

__all__ = ["SCAN_INTERVAL", "Node", "format_address"]

log = logging.getLogger("shoal.node")

#: Longest sleep of the timeout and deferred scan (nsqd scans every 100 ms).
SCAN_INTERVAL = 0.1
#: Backlog messages moved from a topic to its channels per step, between yields.
BACKLOG_STEP = 1000


def format_address(sockname: Any) -> str:
    """``host:port`` for a socket name, with IPv6 hosts in brackets."""
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def open_listeners(address: str) -> list[trio.SocketListener]:
    """Bind TCP listeners for ``host:port`` (port 0 picks a free port)."""
    host, port = parse_address(address)
    return await trio.open_tcp_listeners(port, host=host)


def _port(address: str | None) -> int:
    return parse_address(address)[1] if address else 0


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
        if config.durable and queue_config.mem_queue_size:
            # Durable mode: no message may wait in memory before its OK.
            queue_config = dataclasses.replace(queue_config, mem_queue_size=0)
        self.queue_config = queue_config
        self.disk: DiskBackendFactory | None = None
        self._lock: DataPathLock | None = None
        self.broker = Broker(queue_config)  # replaced in `run` once the data path is open
        self.tcp = TCPServer(self.broker, queue_config, on_subscribe=self._on_subscribe)
        self.addresses: dict[str, str | None] = {
            "tcp": None,
            "http": None,
            "gossip": None,
            "lookup_http": None,
        }
        self.start_time = time.time()
        self._backlog = trio.Event()
        self._cancel_scope: trio.CancelScope | None = None
        self._health: str | None = None
        self._restoring = False

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
            with trio.CancelScope() as scope:
                self._cancel_scope = scope
                async with trio.open_nursery() as nursery:
                    await self._start_services(nursery)
                    if self.config.ready_file:
                        write_ready_file(self.config.ready_file, self.addresses)
                    task_status.started(dict(self.addresses))
        finally:
            self._close_data_path()
        log.info("exiting")

    def shutdown(self) -> None:
        """Stop serving; `run` returns once everything is closed and flushed."""
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    async def _start_services(self, nursery: trio.Nursery) -> None:
        tcp_listeners = await open_listeners(self.config.tcp_address)
        http_listeners = await open_listeners(self.config.http_address)
        for listener in tcp_listeners:
            address = format_address(listener.socket.getsockname())
            log.info("TCP: listening on %s", address)
            self.addresses["tcp"] = self.addresses["tcp"] or address
        for listener in http_listeners:
            address = format_address(listener.socket.getsockname())
            log.info("HTTP: listening on %s", address)
            self.addresses["http"] = self.addresses["http"] or address
        self.http_api = NodeHTTPAPI(
            self.broker,
            self.config,
            node_info=self.node_info,
            tcp_server=self.tcp,
            health=self.health,
            kick_backlog=self.kick_backlog,
            on_channel_deleted=self.tcp.close_clients_of,
        )
        await nursery.start(self.tcp.serve, tcp_listeners)
        await nursery.start(serve_http, http_listeners, self.http_api.router)
        nursery.start_soon(self._scan_loop)
        nursery.start_soon(self._backlog_loop)
        if self.disk is not None:
            nursery.start_soon(self._sync_loop, self.disk)
        if any(topic.has_backlog for topic in self.broker.topics.values()):
            self.kick_backlog()

    # -- data path --------------------------------------------------------------

    def _open_data_path(self) -> None:
        data_path = self.config.data_path
        if data_path is None:
            self.broker = Broker(self.queue_config, memory_backend_factory)
        else:
            os.makedirs(data_path, exist_ok=True)
            self._lock = lock_data_path(data_path)
            self.disk = disk_backend_factory(data_path, config=self.config.disk)
            self.broker = Broker(self.queue_config, self.disk)
            if self.config.durable:
                log.info("durable mode: every message is fsynced to disk before OK")
        self.tcp.broker = self.broker
        self._restore()
        self.broker.add_listener(self._on_broker_event)

    def _restore(self) -> None:
        if self.config.data_path is None:
            return
        meta = load_metadata(self.config.data_path)
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
                    topic.pump(time.time(), BACKLOG_STEP)
                    await trio.lowlevel.checkpoint()

    async def _scan_loop(self) -> None:
        """Requeue timed-out messages and release due deferred ones."""
        while True:
            now = time.time()
            for _channel, client_ids in self.broker.process(now):
                self.tcp.timed_out(client_ids)
            deadline = self.broker.next_deadline()
            delay = (
                SCAN_INTERVAL if deadline is None else min(max(deadline - now, 0), SCAN_INTERVAL)
            )
            await trio.sleep(delay)

    async def _sync_loop(self, disk: DiskBackendFactory) -> None:
        """Fsync queues with unsynced activity every ``sync_timeout``."""
        while True:
            await trio.sleep(self.config.disk.sync_timeout)
            disk.maybe_sync(time.time())


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
