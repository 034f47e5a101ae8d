"""What the gossip port concedes to peers it cannot yet trust.

Two concerns live here, both about strangers reaching the gossip port:

* `InboundBudget` bounds the bytes held for inbound stream messages that are
  not yet read whole. Such a message cannot be authenticated before its last
  byte arrives (AES-GCM checks the tag over the whole message), so without a
  shared bound 128 connections each announcing a 16 MB frame made a keyed
  node buffer 1.25 GB for peers that never knew the key. A message must
  reserve its announced length before its first byte is read; reservations
  are granted whole, in full or not at all, so partial reservations can never
  deadlock one another, and a message announcing more than the whole budget
  is refused from its length prefix. A reader that finds the budget taken
  waits for a release within its stream's own deadline.
* `unkeyed_exposure_warning` says, once at start, that a node gossiping in
  plaintext on an address others can reach accepts membership from anyone.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

from contextlib import asynccontextmanager

__all__ = ["DEFAULT_INBOUND_BUDGET", "InboundBudget", "unkeyed_exposure_warning"]

#: Bytes all inbound gossip streams may hold at once for messages not yet
#: read whole (and so not yet authenticated).
DEFAULT_INBOUND_BUDGET: Final = 8 * 1024 * 1024


class InboundBudget:
    """A pool of bytes shared by every inbound stream's incomplete message.

    Args:
        total: bytes the pool holds; also the largest single message accepted.
    """

    __slots__ = ("_changed", "_free", "_total")

    def __init__(self, total: int = DEFAULT_INBOUND_BUDGET) -> None:
        if total <= 0:
            raise ValueError("an inbound budget must be positive")
        self._total = total
        self._free = total
        self._changed = trio.Event()

    @property
    def total(self) -> int:
        """Bytes the pool holds, and the largest message it can admit."""
        return self._total

    @property
    def free(self) -> int:
        """Bytes not reserved right now."""
        return self._free

    @asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        """Hold ``size`` bytes of the pool for the duration of the block.

        Waits until that many bytes are free; the caller bounds the wait
        (every inbound stream runs under its ``stream_timeout``).

        Raises:
            ValueError: ``size`` exceeds `total` (the caller refuses the
                message from its header instead).
        """
        if size > self._total:
            raise ValueError(f"{size} bytes exceed the inbound budget of {self._total}")
        while self._free < size:
            await self._changed.wait()
        self._free -= size
        try:
            yield
        finally:
            self._free += size
            self._changed.set()
            self._changed = trio.Event()


def unkeyed_exposure_warning(host: str, keyed: bool) -> str | None:
    """Return the start-up warning for plaintext gossip on a reachable address.

    Without a key, whoever can send a datagram to the gossip port can join,
    announce members and accuse them; that is harmless on loopback only.
    A host name (not an IP literal) is taken as reachable.
    """
    if keyed:
        return None
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return None
    except ValueError:
        if host == "localhost":
            return None
    return (
        f"gossip on {host} is not encrypted (no --gossip-key): anyone who can reach "
        "this port can join the cluster and forge membership; set a key"
    )
