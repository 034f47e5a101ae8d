"""The cluster page's routes: the shipped HTML, and the fan-out's failure rows."""

from __future__ import annotations

import json
import re
import socket

import trio

from shoal.cluster.http_server import Request, Response, Router
from shoal.cluster.page import PageMember, add_page_routes


def request(path: str) -> Request:
    return Request(method="GET", target=path, path=path, query={}, headers=[])


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def call(router: Router, path: str) -> Response:
    (route,) = [r for r in router.routes() if r.path == path]
    reply = route.handler(request(path))
    return reply if isinstance(reply, Response) else await reply


async def test_page_is_one_self_contained_html_file() -> None:
    router = Router()
    add_page_routes(router, list)
    reply = await call(router, "/")
    assert reply.content_type == "text/html; charset=utf-8"
    html = reply.body.decode()
    assert html.startswith("<!doctype html>")
    # Nothing is loaded from anywhere else: no external script, style or font.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html
    assert 'fetch("/members")' in html
    assert 'fetch("/cluster/stats")' in html


async def test_fan_out_reports_an_unreachable_member_and_skips_dead_ones() -> None:
    members = [
        PageMember(name="gone", live=True, http=f"127.0.0.1:{free_port()}"),
        PageMember(name="dead", live=False, http="127.0.0.1:1"),
    ]
    router = Router()
    add_page_routes(router, lambda: members)
    with trio.fail_after(10):
        reply = await call(router, "/cluster/stats")
    nodes = json.loads(reply.body)["nodes"]
    assert list(nodes) == ["gone"]
    assert "error" in nodes["gone"]
