"""The cluster page at ``GET /`` on the HTTP port, and the data it polls.

The page is one HTML file shipped in the package (``static/index.html``):
no build step, no script or style from anywhere else, so it works on a host
without Internet access. It polls, every two seconds, the node's JSON
endpoints: ``/members`` (the membership view, with each member's topics from
the gossiped registry) and ``/cluster/stats``.

``GET /cluster/stats`` is the fan-out the page cannot do itself (a browser
may not read another node's ``/stats`` across origins): this node asks every
alive or suspect member's ``/stats`` at once and returns them by member name,
each answer bounded by `FETCH_TIMEOUT` so one slow node only blanks its own
row. A dead member is not asked.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Final

import msgspec
import trio

from shoal.cluster.http_server import Response

if TYPE_CHECKING:
    from collections.abc import Callable

    from shoal.cluster.http_server import Request, Router

__all__ = ["FETCH_TIMEOUT", "MAX_PARALLEL", "PageMember", "add_page_routes"]

#: Seconds one member's ``/stats`` may take before its row shows an error.
FETCH_TIMEOUT: Final = 2.0
#: Members asked at once.
MAX_PARALLEL: Final = 16
HTML_CONTENT_TYPE: Final = "text/html; charset=utf-8"


class PageMember(msgspec.Struct, frozen=True, kw_only=True):
    """A member as the fan-out needs it.

    Attributes:
        name: its member name.
        live: alive or suspect (worth asking).
        http: ``host:port`` of its HTTP API.
    """

    name: str
    live: bool
    http: str


@functools.cache
def _page() -> bytes:
    """The page's bytes, read on its first request (not at start-up)."""
    import importlib.resources

    return (importlib.resources.files("shoal.cluster") / "static" / "index.html").read_bytes()


def add_page_routes(router: Router, members: Callable[[], list[PageMember]]) -> None:
    """Serve the page at ``/`` and its fan-out at ``/cluster/stats`` on ``router``."""

    def index(request: Request) -> Response:
        del request
        return Response(status=200, body=_page(), content_type=HTML_CONTENT_TYPE)

    async def cluster_stats(request: Request) -> Response:
        # The HTTP client is imported on first use: a node that never serves
        # the page never loads shoal.client (start-up cost).
        from shoal.client.errors import HTTPStatusError, NodeUnavailable
        from shoal.client.httpclient import get_json

        del request
        out: dict[str, Any] = {}
        limiter = trio.CapacityLimiter(MAX_PARALLEL)

        async def ask(member: PageMember) -> None:
            async with limiter:
                with trio.move_on_after(FETCH_TIMEOUT):
                    try:
                        stats = await get_json(
                            member.http, "/stats", {"format": "json", "include_clients": "false"}
                        )
                    except (NodeUnavailable, HTTPStatusError) as exc:
                        out[member.name] = {"error": str(exc)}
                    else:
                        out[member.name] = {"http": member.http, "stats": stats}
                    return
                out[member.name] = {"error": f"no answer within {FETCH_TIMEOUT:g}s"}

        async with trio.open_nursery() as nursery:
            for member in members():
                if member.live:
                    nursery.start_soon(ask, member)
        return Response.json({"nodes": out})

    router.add("GET", "/", index)
    router.add("GET", "/cluster/stats", cluster_stats)
