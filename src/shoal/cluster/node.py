"""`Node`: one shoal process, owner of the root nursery and of every service.

The node builds the broker core, binds every listener before it reports
itself ready (so a harness that reads the ready file or the log lines can
connect at once), then runs the servers and the housekeeping loops until it
is asked to stop. Housekeeping is deliberately coarse, as nsqd's queue scan
is: in-flight timeouts and deferred messages are processed at most every
`SCAN_INTERVAL`, or earlier when the next deadline is nearer.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import TYPE_CHECKING, Any

import trio

from shoal.cluster.tcp_server import TCPServer
from shoal.config import parse_address
from shoal.queue.broker import Broker

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


class Node:
    """One node: the broker core and the servers around it.

    Args:
        config: what to listen on and the limits to apply.

    Resource handling:
        `run` owns every socket and task; when it returns (after `shutdown`,
        or cancellation from outside) every listener and connection is closed.
    """

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.broker = Broker(config.queue)
        self.tcp = TCPServer(self.broker, config.queue, on_subscribe=self._on_subscribe)
        self.addresses: dict[str, str | None] = {
            "tcp": None,
            "http": None,
            "gossip": None,
            "lookup_http": None,
        }
        self.start_time = time.time()
        self._backlog = trio.Event()
        self._cancel_scope: trio.CancelScope | None = None

    async def run(self, *, task_status: trio.TaskStatus[dict[str, str | None]] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until `shutdown` is called or the caller cancels.

        ``task_status.started`` receives the bound addresses once every
        listener is bound and the ready file, if any, is written.
        """
        with trio.CancelScope() as scope:
            self._cancel_scope = scope
            async with trio.open_nursery() as nursery:
                tcp_listeners = await open_listeners(self.config.tcp_address)
                for listener in tcp_listeners:
                    address = format_address(listener.socket.getsockname())
                    log.info("TCP: listening on %s", address)
                    self.addresses["tcp"] = self.addresses["tcp"] or address
                await nursery.start(self.tcp.serve, tcp_listeners)
                nursery.start_soon(self._scan_loop)
                nursery.start_soon(self._backlog_loop)
                if self.config.ready_file:
                    write_ready_file(self.config.ready_file, self.addresses)
                task_status.started(dict(self.addresses))
        log.info("exiting")

    def shutdown(self) -> None:
        """Stop serving; `run` returns once everything is closed."""
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    def _on_subscribe(self, client: ClientV2) -> None:
        if client.channel is not None:
            topic = self.broker.get_topic(client.channel.topic_name)
            if topic is not None and topic.has_backlog:
                self._backlog.set()

    async def _backlog_loop(self) -> None:
        """Move topic backlogs into channels created after the messages arrived."""
        while True:
            await self._backlog.wait()
            self._backlog = trio.Event()
            for topic in list(self.broker.topics.values()):
                while topic.has_backlog and not topic.deleted:
                    topic.pump(time.time(), BACKLOG_STEP)
                    await trio.sleep(0)

    async def _scan_loop(self) -> None:
        """Requeue timed-out messages and release due deferred ones."""
        while True:
            now = time.time()
            for _channel, client_ids in self.broker.process(now):
                self.tcp.timed_out(client_ids)
            deadline = self.broker.next_deadline()
            delay = SCAN_INTERVAL if deadline is None else min(max(deadline - now, 0), SCAN_INTERVAL)
            await trio.sleep(delay)


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
