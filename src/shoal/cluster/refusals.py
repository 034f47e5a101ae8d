"""Refused probes: the kernel's word that a member's host is up and its process is not.

A datagram to a port nobody listens on draws an ICMP port unreachable from
the destination's host, and a connection to it is refused. Either means the
member's process is gone (a crash, an OOM kill, a deploy) while its host runs,
which `shoal.membership.Membership.probe_refused` weighs as strong evidence.
This module owns the socket side of that signal, so the gossip driver only
calls it:

* `RefusalWatch` turns on Linux's ``IP_RECVERR`` (``IPV6_RECVERR``) on the
  unconnected UDP gossip socket. Without it Linux reports no ICMP errors on
  unconnected sockets at all; with it each one is queued on the socket's
  error queue together with the destination of the datagram that drew it,
  and the socket reports readable (the next ``recvfrom`` fails once with
  ``ECONNREFUSED``). `RefusalWatch.read` drains that queue without blocking
  and returns the refused destinations. The error queue is read through a
  duplicate of the socket's descriptor, because trio's socket wrapper waits
  for readability before retrying a call and the queue must be drained
  without waiting.
* `is_refused` tells a refused TCP connection from other connect failures,
  looking through the exception chain trio's ``open_tcp_stream`` builds.

On other platforms (or if the option is refused) `RefusalWatch.open` returns
None and members are detected by silence alone, as memberlist does.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    import trio

    from shoal.membership import Address

__all__ = ["RefusalWatch", "is_refused"]

#: Linux's option numbers; the socket module spells them only from 3.12 on.
_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)

#: Most queued errors one `RefusalWatch.read` takes (the queue is bounded by
#: the socket's receive buffer; this bounds one call's work regardless).
_MAX_READ = 256

#: ``struct sock_extended_err`` starts with ``__u32 ee_errno``.
_EE_ERRNO = struct.Struct("=I")


class RefusalWatch:
    """Reads the refusals queued on one UDP socket with ``IP_RECVERR`` on.

    Use `open` to create one; `close` it with the socket.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: socket.socket) -> None:
        self._raw = raw

    @classmethod
    def open(cls, udp: trio.socket.SocketType) -> RefusalWatch | None:
        """Turn on error reporting on ``udp``; None where the platform has none."""
        if not sys.platform.startswith("linux"):
            return None
        if udp.family == socket.AF_INET6:
            level, option = socket.IPPROTO_IPV6, _IPV6_RECVERR
        else:
            level, option = socket.IPPROTO_IP, _IP_RECVERR
        try:
            udp.setsockopt(level, option, 1)
            raw = socket.socket(udp.family, udp.type, fileno=os.dup(udp.fileno()))
        except OSError:
            return None
        raw.setblocking(False)
        return cls(raw)

    def read(self) -> list[Address]:
        """Drain the error queue; return the destinations that refused (oldest first).

        Other queued errors (host or network unreachable, a too-large
        datagram) are taken off the queue and ignored: they say nothing about
        the member's process.
        """
        refused: list[Address] = []
        for _ in range(_MAX_READ):
            try:
                _, ancillary, _, address = self._raw.recvmsg(
                    1, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT
                )
            except OSError:
                break  # empty (EAGAIN), or nothing more to learn from it
            if address and any(_refusal(data) for _, _, data in ancillary):
                refused.append((address[0], address[1]))
        return refused

    def close(self) -> None:
        """Close the duplicate descriptor (the gossip socket stays open)."""
        self._raw.close()


def _refusal(data: bytes) -> bool:
    return len(data) >= _EE_ERRNO.size and _EE_ERRNO.unpack_from(data)[0] == errno.ECONNREFUSED


def is_refused(exc: BaseException) -> bool:
    """Say whether a connect failure was a refusal (nothing listens at the address)."""
    return any(
        isinstance(e, ConnectionRefusedError)
        or (isinstance(e, OSError) and e.errno == errno.ECONNREFUSED)
        for e in _chain(exc)
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """Walk ``exc``, its causes and contexts, and the members of exception groups."""
    seen: set[int] = set()
    stack = [exc]
    while stack and len(seen) < 64:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        stack.extend(linked for linked in (e.__cause__, e.__context__) if linked is not None)
