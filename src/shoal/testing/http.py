"""An in-memory HTTP client for the node's HTTP servers, and a request builder for handlers.

Tests of `shoal.cluster.http_server` and of the two HTTP APIs talk to a
real `HTTPServer` over a `trio.testing.memory_stream_pair` with an h11
client (`connect`, `HTTPClient`), so every byte of the exchange is the
server's own and no socket is opened; handler-level tests build the
`Request` a router would pass (`make_request`) and call the handler.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import TYPE_CHECKING, Any

import h11
import trio
import trio.testing

from shoal.cluster.http_server import Request

if TYPE_CHECKING:
    from shoal.cluster.http_server import HTTPServer

__all__ = ["JSON_TYPE", "HTTPClient", "Reply", "connect", "make_request"]

#: What both HTTP APIs send with JSON (clients such as gnsq check it).
JSON_TYPE = "application/json; charset=utf-8"


class Reply:
    """One HTTP reply: status, headers (lower-case names) and body."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = {k.decode().lower(): v.decode() for k, v in headers}
        self.body = body

    def json(self) -> Any:
        """The body as JSON; the reply must say it is JSON, as NSQ clients require."""
        assert self.headers.get("content-type") == JSON_TYPE, self.headers
        return json.loads(self.body)


class HTTPClient:
    """An h11 client over any trio stream; reuses the connection (keep-alive)."""

    def __init__(self, stream: trio.abc.Stream, host: str = "test") -> None:
        self.stream = stream
        self.host = host
        self.conn = h11.Connection(h11.CLIENT)

    async def send_request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Send one request (starting the next cycle of a kept-alive connection)."""
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        hdrs = [("Host", self.host), ("Content-Length", str(len(body))), *headers]
        data = self.conn.send(h11.Request(method=method, target=target, headers=hdrs)) or b""
        if body:
            data += self.conn.send(h11.Data(data=body)) or b""
        data += self.conn.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(data)

    async def read_reply(self) -> Reply:
        """Read one whole reply (informational responses are skipped)."""
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        for _ in range(1000):
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(bytes(await self.stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return Reply(status, headers, b"".join(chunks))
            elif isinstance(event, h11.InformationalResponse):
                continue
            else:
                raise AssertionError(f"unexpected {event!r}")
        raise AssertionError("no complete reply")

    async def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Reply:
        """Send one request and read its reply."""
        await self.send_request(method, target, body, headers)
        return await self.read_reply()

    async def aclose(self) -> None:
        """Close the connection."""
        await self.stream.aclose()


def connect(server: HTTPServer, nursery: trio.Nursery, host: str = "test") -> HTTPClient:
    """A client connected to ``server``, which serves the connection in ``nursery``."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle, server_stream)
    return HTTPClient(client_stream, host)


def make_request(method: str, target: str, body: bytes = b"") -> Request:
    """The `Request` a router would hand a handler for ``method target``."""
    parts = urllib.parse.urlsplit(target)
    return Request(
        method=method,
        target=target,
        path=parts.path,
        query=urllib.parse.parse_qs(parts.query, keep_blank_values=True),
        headers=[],
        body=body,
    )
