"""A small async HTTP/1.1 client: h11 for the protocol, trio for the socket.

It speaks only what the node's HTTP APIs need: one request per connection
(``Connection: close``, so there is no pool to keep healthy), a bounded
response body, and NSQ's error convention (``{"message": CODE}`` with the
status) turned into `HTTPStatusError`.

Error handling:
    Failing to connect, a reset, or a reply cut short raise
    `NodeUnavailable`; a malformed reply raises `NodeUnavailable` too (the
    peer is not a usable node). Timeouts belong to the caller: wrap a call in
    ``trio.fail_after`` or ``trio.move_on_after``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import urllib.parse
from typing import TYPE_CHECKING, Any

import h11
import trio

from shoal import __version__
from shoal.client.errors import HTTPStatusError, NodeUnavailable

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "MAX_RESPONSE_SIZE",
    "HTTPResponse",
    "describe_os_error",
    "error_message",
    "format_address",
    "get_json",
    "parse_address",
    "request",
]

#: Largest response body read before the reply is refused.
MAX_RESPONSE_SIZE = 64 * 1024 * 1024
#: Bytes asked of the socket per read.
RECEIVE_SIZE = 64 * 1024
_USER_AGENT = f"shoal/{__version__}"
# nsqlookupd and nsqd ignore it since 1.0, but every NSQ client sends it.
_ACCEPT = "application/vnd.nsq; version=1.0"


def parse_address(text: str, default_port: int | None = None) -> tuple[str, int]:
    """Split ``host:port`` (or ``[v6]:port``) into its parts.

    Args:
        text: the address as a user typed it.
        default_port: the port to use when ``text`` names a host only.

    Raises:
        ValueError: the text has no usable host or port.
    """
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid address {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"invalid address {text!r}: no host")
    if not port_text:
        if default_port is None:
            raise ValueError(f"invalid address {text!r}: no port")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid address {text!r}: bad port")
    return host, int(port_text)


def describe_os_error(exc: BaseException) -> str:
    """A short reason for a failed connect: ``Connection refused``, not trio's summary."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    for error in (cause, exc):
        if isinstance(error, socket.gaierror) and error.strerror:
            return error.strerror
        if isinstance(error, OSError) and error.errno and error.errno > 0:
            return os.strerror(error.errno)
    return str(exc) or type(exc).__name__


def format_address(host: str, port: int) -> str:
    """Join a host and a port, bracketing IPv6 literals."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HTTPResponse:
    """One complete HTTP reply.

    Attributes:
        status: the status code.
        headers: header names lowercased, values decoded as Latin-1.
        body: the whole body.
    """

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """Decode the body as JSON.

        Raises:
            ValueError: the body is not JSON.
        """
        return json.loads(self.body)


async def request(
    address: str,
    method: str,
    path: str,
    *,
    params: Mapping[str, str | int | float] | None = None,
    body: bytes = b"",
    max_size: int = MAX_RESPONSE_SIZE,
) -> HTTPResponse:
    """Send one request to ``address`` and return the whole reply.

    Args:
        address: ``host:port`` of the server.
        method: ``GET``, ``POST``, ...
        path: the path, without a query string.
        params: query arguments, URL-encoded in order.
        body: the request body (``Content-Length`` is always sent).
        max_size: the most body bytes accepted.

    Returns:
        The reply, whatever its status.

    Raises:
        NodeUnavailable: the connection failed, the reply was malformed,
            cut short, or larger than ``max_size``.

    Resource handling:
        The connection is closed before this returns or raises, also on
        cancellation.
    """
    try:
        host, port = parse_address(address)
    except ValueError as exc:
        raise NodeUnavailable(address, str(exc)) from None
    target = path
    if params:
        target += "?" + urllib.parse.urlencode({k: str(v) for k, v in params.items()})
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise NodeUnavailable(address, describe_os_error(exc)) from None
    try:
        return await _exchange(stream, address, method, target, body, max_size)
    except (OSError, trio.BrokenResourceError) as exc:
        raise NodeUnavailable(address, str(exc) or type(exc).__name__) from None
    except h11.ProtocolError as exc:
        raise NodeUnavailable(address, f"malformed HTTP reply: {exc}") from None
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def _exchange(
    stream: trio.SocketStream, address: str, method: str, target: str, body: bytes, max_size: int
) -> HTTPResponse:
    conn = h11.Connection(h11.CLIENT)
    head = h11.Request(
        method=method,
        target=target,
        headers=[
            ("Host", address),
            ("User-Agent", _USER_AGENT),
            ("Accept", _ACCEPT),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ],
    )
    data = conn.send(head) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    await stream.send_all(data)
    status = 0
    headers: dict[str, str] = {}
    chunks: list[bytes] = []
    size = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(RECEIVE_SIZE))
        elif isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > max_size:
                raise NodeUnavailable(address, f"reply larger than {max_size} bytes")
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return HTTPResponse(status=status, headers=headers, body=b"".join(chunks))
        elif isinstance(event, h11.ConnectionClosed):
            raise NodeUnavailable(address, "connection closed before the reply ended")
        # InformationalResponse (100 Continue) needs nothing from us.


def error_message(response: HTTPResponse) -> str:
    """NSQ's ``message`` from an error reply, or its text."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return response.body.decode("utf-8", "replace").strip()[:200]


async def get_json(
    address: str, path: str, params: Mapping[str, str | int | float] | None = None
) -> Any:
    """GET ``path`` and decode the JSON reply.

    Raises:
        NodeUnavailable: as `request`, or the 2xx body is not JSON.
        HTTPStatusError: the status is not 2xx; ``message`` is NSQ's error code.
    """
    response = await request(address, "GET", path, params=params)
    if not 200 <= response.status < 300:
        raise HTTPStatusError(address, response.status, error_message(response))
    try:
        return response.json()
    except ValueError:
        raise NodeUnavailable(address, f"{path} did not answer with JSON") from None
