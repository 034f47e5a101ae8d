"""The gossip port's transport seam, and the one table of what travels on it.

`Transport` is what `shoal.cluster.membership_driver.MembershipDriver` needs
from the network: best-effort datagrams and reliable byte streams on one
gossip address (memberlist's ``Transport``: packets apart from streams).
`shoal.cluster.net_transport.NetTransport` implements it with a UDP socket
and a TCP listener; `shoal.testing.transport.MemoryTransport` implements it
in memory, so the driver runs under trio's virtual clock without sockets.
Framing and sealing (`MessageStream`) work over any trio stream, so both
transports carry exactly the same bytes.

The gossip port (default 4160), UDP and TCP on the same number:

=========  ===============================================================
UDP        One datagram is one engine packet: the codec's version byte
           (``PROTOCOL_VERSION``, 1) and CBOR, compound messages packed up
           to ``max_packet_size`` (`shoal.membership.codec`). Keyed: the
           whole datagram sealed (below), ``SEAL_OVERHEAD`` (29) bytes
           more.
TCP        A stream is a sequence of *messages*, each a 4-byte big-endian
           length (`FRAME_HEADER`) then that many bytes; keyed, the bytes
           are the message sealed, and the length counts the sealed form.
           A message longer than ``max_stream_size`` (plus the seal) is
           refused from its length, before it is read; an inbound one
           must first reserve its length from the budget all inbound
           streams share (``max_inbound_buffer``,
           `shoal.cluster.gossip_guard`), since nothing is authenticated
           before it is read whole.
first      The first message of a stream says what it carries:
message    * starting with the version byte 1 and longer than one byte:
             an engine request (push-pull, join, fallback ping); exactly
             one reply message follows, empty for "no reply" (so "no
             reply" is authenticated like any other message);
           * exactly one byte, a registered *tag*: that protocol's
             exchange follows (`MembershipDriver.add_stream_handler`,
             `MembershipDriver.open_stream`);
           * anything else goes to the engine, which refuses it.
tags       ``0x01`` is reserved (the codec's version byte).
           ``0x52`` (`shoal.registry.REGISTRY_TAG`): the registry's digest
           exchange, three legs after the tag: the initiator's digest; the
           responder's delta, then its digest; the initiator's delta
           (`shoal.registry.gossip`, CBOR from `shoal.registry.store`).
           ``0x57`` (`shoal.cluster.neighbour_watch.WATCH_TAG`): a
           neighbour watch; the watched side answers ``HELLO`` then stays
           silent until ``GOODBYE`` on a graceful leave, the watcher sends
           nothing more; the stream outlives ``stream_timeout``.
           ``0x72`` (`shoal.cluster.replication.REPLICATION_TAG`): an
           owner's replication stream to one replica; batches one way,
           acknowledgements back (`shoal.replication.codec`); it lasts as
           long as the link (``long_lived``).
           Tags are on the wire: append only, never reuse one.
sealing    With a keyring, AES-GCM under the primary key: a version byte,
           a random 12-byte nonce, ciphertext, 16-byte tag; the cluster
           ``label`` is associated data (`shoal.membership.keyring`). A
           message that does not open is dropped, counted as ``"decrypt"``.
=========  ===============================================================

Adding a stream protocol is one line here (its tag) plus a handler:
``driver.add_stream_handler(TAG, handler)`` on the answering side and
``async with driver.open_stream(address, TAG) as stream`` on the dialing
side; both get a `MessageStream`.
"""

from __future__ import annotations

import contextlib
import struct
from typing import TYPE_CHECKING, Final, Protocol

import msgspec
import trio

from shoal.errors import LocalProtocolError, RemoteProtocolError
from shoal.membership.keyring import SEAL_OVERHEAD

if TYPE_CHECKING:
    from shoal.cluster.gossip_guard import InboundBudget
    from shoal.membership import Address
    from shoal.membership.keyring import Keyring

__all__ = [
    "FRAME_HEADER",
    "MessageStream",
    "StreamError",
    "Transport",
    "TransportCounters",
]

#: Length prefix of every stream message: unsigned 32-bit, big-endian.
FRAME_HEADER: Final = struct.Struct(">I")
#: Bytes asked of a stream per read.
_RECEIVE_CHUNK: Final = 64 * 1024


class Transport(Protocol):
    """Datagrams and streams on one gossip address (see the module docstring).

    A transport is bound once, used by one driver, and closed by it.
    Errors are `OSError`, as sockets raise them; the driver counts them.
    """

    async def bind(self, address: Address) -> Address:
        """Listen for datagrams and streams on ``address`` (port 0: pick one).

        Returns:
            The bound address.

        Raises:
            OSError: the address cannot be bound or does not resolve.
        """
        ...

    async def resolve(self, host: str, port: int) -> list[Address]:
        """Addresses ``host:port`` names, of the bound address's family.

        Raises:
            OSError: the name does not resolve.
        """
        ...

    async def receive_packet(self, max_size: int) -> tuple[bytes, Address]:
        """The next datagram and its sender; at most ``max_size`` bytes of it.

        Raises:
            OSError: receiving failed (rare; the caller pauses and goes on).
        """
        ...

    async def send_packet(self, data: bytes, address: Address) -> None:
        """Send one datagram; it may be lost.

        Raises:
            OSError: sending failed.
        """
        ...

    async def accept_stream(self) -> tuple[trio.abc.Stream, Address | None]:
        """The next inbound stream and its peer (None if it left before we looked).

        Raises:
            OSError: accepting failed (out of descriptors, say).
        """
        ...

    async def connect_stream(self, address: Address) -> trio.abc.Stream:
        """Open a stream to ``address``; the caller bounds the time.

        Raises:
            OSError: refused or unreachable.
        """
        ...

    def refusals(self) -> list[Address]:
        """Destinations whose datagrams were refused since the last call.

        A refusal (ICMP port unreachable) is evidence that the process at
        that address is gone while its host is up; `receive_packet` and
        `send_packet` raise `ConnectionRefusedError` when one is waiting.
        """
        ...

    def close(self) -> None:
        """Stop listening; datagrams and streams to the address go nowhere."""
        ...


class TransportCounters(msgspec.Struct, eq=False):
    """What crossed the gossip port (see `MembershipDriverStatistics`)."""

    packets_received: int = 0
    packets_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    streams_accepted: int = 0
    streams_opened: int = 0
    streams_failed: int = 0
    stream_bytes_received: int = 0
    stream_bytes_sent: int = 0


class StreamError(RemoteProtocolError):
    """A peer's stream message was refused.

    Attributes:
        reason: the drop counter it is counted under: ``"oversize"`` (the
            length prefix is above the limit), ``"truncated"`` (the stream ended
            inside a message) or ``"decrypt"`` (the message does not
            authenticate under the keyring and label).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class MessageStream:
    """A TCP stream framed into length-prefixed messages, sealed when keyed.

    Handlers registered with `MembershipDriver.add_stream_handler` and
    callers of `MembershipDriver.open_stream` talk through this; it works over
    any `trio.abc.Stream`, so a `Transport`'s streams, real or in memory, are
    framed and sealed by this one class.

    Args:
        stream: the underlying byte stream.
        keyring: seals and opens every message, or None for plaintext.
        label: the cluster label, the associated data of every sealed message.
        max_message_size: largest plaintext message sent or accepted.
        budget: shared bound on the bytes of messages not yet read whole
            (inbound streams); a message must reserve its length before its
            first byte is read (`shoal.cluster.gossip_guard`).
    """

    __slots__ = (
        "_budget",
        "_buffer",
        "_counters",
        "_keyring",
        "_label",
        "_max_frame",
        "_max_message_size",
        "_stream",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        keyring: Keyring | None,
        label: bytes,
        max_message_size: int,
        counters: TransportCounters | None = None,
        budget: InboundBudget | None = None,
    ) -> None:
        self._stream = stream
        self._counters = counters
        self._keyring = keyring
        self._label = label
        self._max_message_size = max_message_size
        self._max_frame = max_message_size + (0 if keyring is None else SEAL_OVERHEAD)
        self._buffer = bytearray()
        self._budget = budget

    @property
    def max_message_size(self) -> int:
        """Largest plaintext message this stream sends or accepts."""
        return self._max_message_size

    async def send_message(self, data: bytes) -> None:
        """Send one message (sealed when keyed).

        Raises:
            LocalProtocolError: ``data`` is larger than ``max_message_size``.
            trio.BrokenResourceError: the connection broke.
            trio.ClosedResourceError: the stream was closed.
        """
        if len(data) > self._max_message_size:
            raise LocalProtocolError(
                f"stream message of {len(data)} bytes exceeds {self._max_message_size}"
            )
        if self._keyring is not None:
            data = self._keyring.seal(data, label=self._label)
        await self._stream.send_all(FRAME_HEADER.pack(len(data)) + data)
        if self._counters is not None:
            self._counters.stream_bytes_sent += FRAME_HEADER.size + len(data)

    async def receive_message(self) -> bytes:
        """Receive one whole message (opened when keyed).

        Raises:
            trio.EndOfChannel: the peer closed the stream between messages.
            StreamError: the message is oversized, torn or does not
                authenticate; the stream is then unusable.
            trio.BrokenResourceError: the connection broke.
        """
        header = await self._receive_exactly(FRAME_HEADER.size, boundary=True)
        (length,) = FRAME_HEADER.unpack(header)
        if length > self._max_frame:
            raise StreamError("oversize", f"stream message of {length} bytes announced")
        budget = self._budget
        if budget is None:
            payload = await self._receive_exactly(length, boundary=False)
        elif length > budget.total:
            raise StreamError("oversize", f"stream message of {length} bytes announced")
        else:
            async with budget.reserve(length):
                payload = await self._receive_exactly(length, boundary=False)
        if self._counters is not None:
            self._counters.stream_bytes_received += FRAME_HEADER.size + length
        if self._keyring is None:
            return payload
        try:
            return self._keyring.open(payload, label=self._label)
        except RemoteProtocolError as exc:
            raise StreamError("decrypt", str(exc)) from None

    async def wait_silence_ends(self) -> None:
        """Return once the peer closes the stream or sends anything at all.

        For a stream on which the peer must stay silent (a neighbour watch's
        watcher): at most one chunk is read and dropped, nothing is buffered
        and no budget is reserved, so a peer that sends cannot hold memory
        however long the stream lives.
        """
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._stream.receive_some(_RECEIVE_CHUNK)

    async def aclose(self) -> None:
        """Close the underlying stream."""
        await self._stream.aclose()

    async def _receive_exactly(self, size: int, *, boundary: bool) -> bytes:
        buffer = self._buffer
        while len(buffer) < size:
            chunk = await self._stream.receive_some(_RECEIVE_CHUNK)
            if not chunk:
                if boundary and not buffer:
                    raise trio.EndOfChannel
                raise StreamError("truncated", "stream ended inside a message")
            buffer += chunk
        data = bytes(buffer[:size])
        del buffer[:size]
        return data
