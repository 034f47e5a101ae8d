"""An in-memory gossip transport: the membership driver without sockets.

`MemoryNet` is a switchboard of `MemoryTransport` endpoints, each a
`shoal.cluster.transport.Transport`. Datagrams go through bounded memory
channels (a full one drops, as a full socket buffer does); streams are
`trio.testing.memory_stream_pair` halves handed to the listener. Nothing
reads a clock, so a driver on it runs under trio's ``autojump_clock`` and a
test of a crash detection takes milliseconds of real time (memberlist's
``MockNetwork``, trio's ``FakeNet``).

Faults: ``route`` sees every datagram and stream connection as
``(source, destination)`` and returns False to lose it (a lost connection
is refused). Names resolve through ``names`` (host to addresses); an IP
literal resolves to itself.
"""

from __future__ import annotations

import errno
import ipaddress
from typing import TYPE_CHECKING

import trio
import trio.testing

from shoal.membership import Address

if TYPE_CHECKING:
    from collections.abc import Callable


__all__ = ["MemoryNet", "MemoryTransport"]

#: First port handed out for port 0 (as an ephemeral range starts).
_FIRST_PORT = 40000


class MemoryNet:
    """Endpoints that reach each other by address, in memory.

    Args:
        packet_buffer: datagrams an endpoint holds unread before it drops.
        stream_backlog: connections an endpoint holds unaccepted before it
            refuses.

    Attributes:
        names: host name to addresses, for `MemoryTransport.resolve`.
        route: ``route(source, destination)`` returns False to lose a
            datagram or refuse a connection; None delivers everything.
        packets_lost: datagrams lost (no listener, full buffer, or ``route``).
    """

    def __init__(self, *, packet_buffer: int = 1024, stream_backlog: int = 128) -> None:
        self.names: dict[str, list[str]] = {}
        self.route: Callable[[Address, Address], bool] | None = None
        self.packets_lost = 0
        self._packet_buffer = packet_buffer
        self._stream_backlog = stream_backlog
        self._endpoints: dict[Address, MemoryTransport] = {}
        self._next_port = _FIRST_PORT

    def transport(self) -> MemoryTransport:
        """A new, unbound endpoint."""
        return MemoryTransport(self)

    def _free_port(self) -> int:
        self._next_port += 1
        return self._next_port

    def _delivers(self, source: Address, destination: Address) -> bool:
        return self.route is None or self.route(source, destination)


class MemoryTransport:
    """One endpoint of a `MemoryNet` (a `shoal.cluster.transport.Transport`)."""

    def __init__(self, net: MemoryNet) -> None:
        self._net = net
        self.address: Address | None = None
        self._packets_in, self._packets = trio.open_memory_channel[tuple[bytes, Address]](
            net._packet_buffer
        )
        self._streams_in, self._streams = trio.open_memory_channel[tuple[trio.abc.Stream, Address]](
            net._stream_backlog
        )

    async def bind(self, address: Address) -> Address:
        """Take ``address`` on the net (port 0: a fresh port).

        Raises:
            OSError: the address is taken (``EADDRINUSE``).
        """
        await trio.lowlevel.checkpoint()
        host, port = address
        bound = (host, port or self._net._free_port())
        if bound in self._net._endpoints:
            raise OSError(errno.EADDRINUSE, f"{host}:{bound[1]} is in use")
        self._net._endpoints[bound] = self
        self.address = bound
        return bound

    async def resolve(self, host: str, port: int) -> list[Address]:
        """Addresses of ``host``: an IP literal itself, else the net's ``names``.

        Raises:
            OSError: the name is unknown.
        """
        await trio.lowlevel.checkpoint()
        try:
            ipaddress.ip_address(host)
        except ValueError:
            hosts = self._net.names.get(host)
            if not hosts:
                raise OSError(f"{host} does not resolve") from None
            return [(h, port) for h in hosts]
        return [(host, port)]

    async def receive_packet(self, max_size: int) -> tuple[bytes, Address]:
        """The next datagram (cut to ``max_size``) and its sender."""
        data, source = await self._packets.receive()
        return data[:max_size], source

    async def send_packet(self, data: bytes, address: Address) -> None:
        """Deliver a datagram, or lose it (no listener, full buffer, ``route``)."""
        await trio.lowlevel.checkpoint()
        net = self._net
        target = net._endpoints.get(address)
        assert self.address is not None
        if target is None or not net._delivers(self.address, address):
            net.packets_lost += 1
            return
        try:
            target._packets_in.send_nowait((bytes(data), self.address))
        except trio.WouldBlock:
            net.packets_lost += 1

    async def accept_stream(self) -> tuple[trio.abc.Stream, Address | None]:
        """The next inbound stream and its peer."""
        return await self._streams.receive()

    async def connect_stream(self, address: Address) -> trio.abc.Stream:
        """Connect to the endpoint at ``address``.

        Raises:
            ConnectionRefusedError: nobody listens there, its backlog is full,
                or ``route`` refused it.
        """
        await trio.lowlevel.checkpoint()
        net = self._net
        target = net._endpoints.get(address)
        source = self.address or ("0.0.0.0", 0)
        peer = (source[0], net._free_port())
        if target is None or not net._delivers(source, address):
            raise ConnectionRefusedError(errno.ECONNREFUSED, "connection refused")
        ours, theirs = trio.testing.memory_stream_pair()
        try:
            target._streams_in.send_nowait((theirs, peer))
        except trio.WouldBlock:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "backlog full") from None
        return ours

    def refusals(self) -> list[Address]:
        """Refusals of datagrams: none in memory (a lost datagram is silent)."""
        return []

    def close(self) -> None:
        """Leave the net: later datagrams are lost and connections refused."""
        if self.address is not None and self._net._endpoints.get(self.address) is self:
            del self._net._endpoints[self.address]
        self._packets_in.close()
        self._streams_in.close()
        # Connections never accepted end at once, as a closed listener resets them.
        while True:
            try:
                stream, _peer = self._streams.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            assert isinstance(stream, trio.StapledStream)
            stream.send_stream.close()
            stream.receive_stream.close()
