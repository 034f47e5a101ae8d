"""What the node offers its operators over HTTP and UDP: /metrics, the cluster page, statsd.

`serve_operations` is the one hook the node calls: it adds ``GET /metrics``
(`shoal.cluster.metrics`), the cluster page at ``GET /`` with its
``GET /cluster/stats`` fan-out (`shoal.cluster.page`), and, with
``--statsd-address``, the statsd pusher (`shoal.cluster.statsd`) to the
node's HTTP router and nursery. It reads the node only through its public
attributes, at scrape time, so nothing here costs anything per message.

The metrics module (its collector and record classes) is imported on the
first scrape, or at start only when statsd pushes: a node answers ``/ping``
sooner for every module it does not import before.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

from shoal.cluster.page import PageMember, add_page_routes
from shoal.config import parse_address
from shoal.membership.state import MemberState
from shoal.queue import stats

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import trio

    from shoal.cluster.http_server import Request, Response, Router
    from shoal.cluster.metrics import MetricsSources, NodeCollector
    from shoal.cluster.node import Node

__all__ = ["serve_operations"]

_LIVE = (MemberState.ALIVE, MemberState.SUSPECT)


def serve_operations(node: Node, router: Router, nursery: trio.Nursery) -> None:
    """Add the operator routes to ``router`` and start the statsd pusher if configured."""
    router.add("GET", "/metrics", _first_scrape_imports(node), log=False)
    add_page_routes(router, functools.partial(_page_members, node))
    config = node.config
    if config.statsd_address:
        # Only a node that pushes to statsd imports the pusher.
        from shoal.cluster.statsd import run_statsd, statsd_prefix

        collector = _collector(node)
        http = node.addresses["http"]
        prefix = statsd_prefix(
            config.statsd_prefix, config.broadcast_address, parse_address(http)[1] if http else 0
        )
        nursery.start_soon(
            functools.partial(
                run_statsd,
                config.statsd_address,
                collector,
                prefix=prefix,
                interval=config.statsd_interval,
                packet_size=config.statsd_udp_packet_size,
            )
        )


def _first_scrape_imports(node: Node) -> Callable[[Request], Awaitable[Response]]:
    """A ``GET /metrics`` handler that builds the real one on its first request."""
    handler: Callable[[Request], Awaitable[Response]] | None = None

    async def metrics(request: Request) -> Response:
        nonlocal handler
        if handler is None:  # no await before the assignment: built once
            from shoal.cluster.metrics import metrics_handler

            handler = metrics_handler(_collector(node))
        return await handler(request)

    return metrics


def _collector(node: Node) -> NodeCollector:
    from shoal.cluster.metrics import NodeCollector

    return NodeCollector(_metrics_sources(node))


def _metrics_sources(node: Node) -> MetricsSources:
    from shoal.cluster.metrics import MetricsSources

    def registry_owners() -> int:
        return len(node.routing.registry.owners()) if node.routing is not None else 0

    def corrupt_records() -> int:
        return sum(q.corrupt_records for q in node.data.disk.open_queues()) if node.data.disk else 0

    return MetricsSources(
        topics=lambda: stats.topics_stats(node.broker, None, now=time.time()),
        membership=lambda: node.driver.statistics() if node.driver is not None else None,
        registry_owners=registry_owners,
        registry_applied=lambda: node.routing.messages_applied if node.routing else 0,
        registry_dropped=lambda: node.routing.messages_dropped if node.routing else 0,
        disk_corrupt_records=corrupt_records,
        disk_damaged_regions=lambda: len(node.data.damage()),
        replication_lag=lambda: node.replication.lags() if node.replication else [],
    )


def _page_members(node: Node) -> list[PageMember]:
    """Members with their HTTP address: broadcast address and HTTP port, as nsqadmin dials."""
    if node.driver is None:
        return []
    out = []
    for m in node.driver.members():
        host = m.meta.get("b") or m.address[0]
        port = m.meta.get("h", "")
        http = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        out.append(PageMember(name=m.name, live=m.state in _LIVE, http=http))
    return out
