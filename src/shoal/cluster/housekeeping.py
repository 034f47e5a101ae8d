"""The node's housekeeping loops: in-flight timeouts, deferred messages, disk checkpoints.

Housekeeping is deliberately coarse, as nsqd's queue scan is: timed-out and
due deferred messages are processed at most every `SCAN_INTERVAL`, or at the
next deadline when it is nearer, and an idle broker sleeps until one
exists; disk queues with unsynced activity are checkpointed (data fsynced,
then positions and acknowledgements saved) every ``sync_timeout``, or
sooner when ``sync_every`` writes are due, and once at start for the
positions recovered.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from shoal.cluster.disk_queue import DiskBackendFactory
    from shoal.cluster.tcp_server import TCPServer
    from shoal.queue.broker import Broker

__all__ = ["SCAN_INTERVAL", "scan_loop", "sync_loop"]

#: Longest sleep of the timeout and deferred scan (nsqd scans every 100 ms).
SCAN_INTERVAL = 0.1


async def scan_loop(broker: Broker, tcp: TCPServer) -> None:
    """Requeue timed-out messages and release due deferred ones; runs until cancelled.

    With nothing in flight or deferred the loop sleeps until the broker
    announces a deadline: an idle node has no timer but the gossip probe.
    """
    while True:
        now = time.time()
        for _channel, client_ids in broker.process(now):
            tcp.timed_out(client_ids)
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


async def sync_loop(disk: DiskBackendFactory, sync_timeout: float) -> None:
    """Checkpoint queues with unsynced activity every ``sync_timeout`` or ``sync_every``.

    Runs until cancelled.
    """
    while True:
        await disk.checkpoint()  # at once first: the positions recovered on start
        with trio.move_on_after(sync_timeout):
            await disk.wait_sync_due()
