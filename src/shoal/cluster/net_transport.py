"""`NetTransport`: the gossip port on real sockets, a UDP socket and a TCP listener.

Rule: **one gossip address, two sockets.** A UDP socket and a TCP listener
are bound on the same ``host:port``. With port 0 the UDP socket picks a free
port and the TCP listener takes the same number, retried on a fresh port a
few times if TCP finds it taken. What travels on them is described once, in
`shoal.cluster.transport`.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Final

import trio

from shoal.cluster.refusals import RefusalWatch

if TYPE_CHECKING:
    from shoal.membership import Address

__all__ = ["NetTransport"]

#: Attempts at finding a port free for both UDP and TCP when binding port 0.
_BIND_ATTEMPTS: Final = 16
#: Pending connections the TCP listener's kernel queue holds.
_LISTEN_BACKLOG: Final = 128


def host_port(sockname: object) -> Address:
    """(host, port) of a socket address; IPv6 flow info and scope are dropped."""
    assert isinstance(sockname, tuple)
    host, port = sockname[0], sockname[1]
    assert isinstance(host, str)
    assert isinstance(port, int)
    return (host, port)


class NetTransport:
    """UDP datagrams and TCP streams on one address (a `Transport`).

    Resource handling: `bind` opens both sockets; `close` closes them.
    Streams it returns belong to the caller.
    """

    def __init__(self) -> None:
        self._udp: trio.socket.SocketType | None = None
        self._listener: trio.SocketListener | None = None
        self._family = trio.socket.AF_INET
        self._buffer = bytearray()
        self._refusal_watch: RefusalWatch | None = None

    async def bind(self, address: Address) -> Address:
        """Bind UDP and TCP on ``address`` (see the module's rule).

        Raises:
            OSError: the address cannot be bound or does not resolve.
        """
        host, port = address
        infos = await trio.socket.getaddrinfo(
            host, port, type=trio.socket.SOCK_DGRAM, flags=trio.socket.AI_PASSIVE
        )
        if not infos:
            raise OSError(f"gossip address {host}:{port} resolves to nothing")
        family, _, _, _, sockaddr = infos[0]
        self._family = family
        attempts = _BIND_ATTEMPTS if port == 0 else 1
        for attempt in range(1, attempts + 1):
            udp = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
            try:
                await udp.bind(sockaddr)
                udp_port = host_port(udp.getsockname())[1]
                tcp = trio.socket.socket(family, trio.socket.SOCK_STREAM)
                try:
                    # A restarted node binds its old port while connections
                    # of its previous life sit in TIME_WAIT.
                    tcp.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
                    await tcp.bind((sockaddr[0], udp_port, *sockaddr[2:]))
                    tcp.listen(_LISTEN_BACKLOG)
                except BaseException:
                    tcp.close()
                    raise
            except OSError as exc:
                udp.close()
                if exc.errno == errno.EADDRINUSE and attempt < attempts:
                    continue  # TCP port taken: try another free UDP port
                # The kernel's text names neither the address nor the flag.
                reason = f"cannot bind gossip address {host}:{port}: {exc.strerror or exc}"
                raise OSError(exc.errno, reason) from None
            except BaseException:
                udp.close()
                raise
            self._udp = udp
            self._listener = trio.SocketListener(tcp)
            # IP_RECVERR: refusals are queued on the socket (refusals.py).
            self._refusal_watch = RefusalWatch.open(udp)
            return host_port(udp.getsockname())
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def resolve(self, host: str, port: int) -> list[Address]:
        """Addresses of ``host:port`` in the bound family, in resolver order.

        Raises:
            OSError: the name does not resolve.
        """
        infos = await trio.socket.getaddrinfo(
            host, port, family=self._family, type=trio.socket.SOCK_STREAM
        )
        out: list[Address] = []
        for info in infos:
            address = host_port(info[4])
            if address not in out:
                out.append(address)
        return out

    async def receive_packet(self, max_size: int) -> tuple[bytes, Address]:
        """The next datagram (cut to ``max_size``) and its sender.

        Raises:
            OSError: the socket failed.
        """
        assert self._udp is not None
        if len(self._buffer) != max_size:
            self._buffer = bytearray(max_size)
        size, src = await self._udp.recvfrom_into(self._buffer)
        return bytes(self._buffer[:size]), host_port(src)

    async def send_packet(self, data: bytes, address: Address) -> None:
        """Send one datagram.

        Raises:
            OSError: the socket refused it.
        """
        assert self._udp is not None
        try:
            await self._udp.sendto(data, address)
        except ValueError as exc:  # a host no socket takes (a NUL in it)
            raise OSError(errno.EINVAL, str(exc)) from None

    async def accept_stream(self) -> tuple[trio.abc.Stream, Address | None]:
        """The next inbound TCP connection and its peer.

        Raises:
            OSError: accept failed.
        """
        assert self._listener is not None
        tcp = await self._listener.accept()
        try:
            peer: Address | None = host_port(tcp.socket.getpeername())
        except OSError:
            peer = None  # gone before we looked
        return tcp, peer

    async def connect_stream(self, address: Address) -> trio.abc.Stream:
        """Open a TCP connection to ``address``.

        Raises:
            OSError: refused or unreachable.
        """
        try:
            return await trio.open_tcp_stream(address[0], address[1])
        except ValueError as exc:  # a host no socket takes (a NUL in it)
            raise OSError(errno.EINVAL, str(exc)) from None

    def refusals(self) -> list[Address]:
        """Destinations whose datagrams drew an ICMP port unreachable (queued errors)."""
        watch = self._refusal_watch
        return list(watch.read()) if watch is not None else []

    def close(self) -> None:
        """Close both sockets."""
        if self._refusal_watch is not None:
            self._refusal_watch.close()
        if self._udp is not None:
            self._udp.close()
        if self._listener is not None:
            self._listener.socket.close()
