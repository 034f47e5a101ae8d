"""The node's listening sockets: bound before the node reports itself ready.

Every listener is bound before anything is served, so a harness that reads
the ready file or the log lines can connect at once. Port 0 picks a free
port; the bound addresses are logged in nsqd's ``<PROTOCOL>: listening on``
form, which harnesses parse, and written to the ready file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import TYPE_CHECKING

import msgspec
import trio

from shoal.cluster.lookup_api import format_address
from shoal.config import parse_address

if TYPE_CHECKING:
    from shoal.config import NodeConfig

__all__ = ["NodeListeners", "bind_listeners", "open_listeners", "port_of", "write_ready_file"]

log = logging.getLogger("shoal.node")


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


def port_of(address: str | None) -> int:
    """The port of ``host:port``, or 0 for none."""
    return parse_address(address)[1] if address else 0


class NodeListeners(msgspec.Struct, eq=False):
    """The node's bound listeners, by service (empty when not served)."""

    tcp: list[trio.SocketListener]
    http: list[trio.SocketListener]
    https: list[trio.SocketListener]
    lookup_http: list[trio.SocketListener]


async def bind_listeners(config: NodeConfig, addresses: dict[str, str | None]) -> NodeListeners:
    """Bind every listener ``config`` asks for; record and log the bound addresses.

    A member without a broker (``shoal nsqlookupd``) binds only the lookup
    API. Only NSQ's own listeners get nsqd's ``<PROTOCOL>: listening on``
    line (a member without a broker is nsqlookupd, whose HTTP port is the
    lookup API).

    Raises:
        OSError: an address could not be bound.
    """
    broker = config.broker
    bound = NodeListeners(
        tcp=await open_listeners(config.tcp_address, "--tcp-address") if broker else [],
        http=await open_listeners(config.http_address, "--http-address") if broker else [],
        https=await open_listeners(config.https_address, "--https-address")
        if broker and config.https_address is not None
        else [],
        lookup_http=await open_listeners(config.lookup_http_address, "--lookup-http-address"),
    )
    lookup_line = "lookup API: serving on %s" if broker else "HTTP: listening on %s"
    for kind, line, listeners in (
        ("tcp", "TCP: listening on %s", bound.tcp),
        ("http", "HTTP: listening on %s", bound.http),
        ("https", "HTTPS: listening on %s", bound.https),
        ("lookup_http", lookup_line, bound.lookup_http),
    ):
        for listener in listeners:
            address = format_address(listener.socket.getsockname())
            log.info(line, address)
            addresses[kind] = addresses.get(kind) or address
    return bound


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
