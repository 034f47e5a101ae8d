"""`MembershipDriver`: the trio shell that runs the SWIM engine over a gossip transport.

The engine (`shoal.membership.Membership`) is pure: it is fed bytes and
``now`` and hands back datagrams, stream requests, events and its next
deadline. This module owns what it leaves out: the clock, the tasks,
encryption, stream dispatch and the bounds on peers. The network itself is a
`shoal.cluster.transport.Transport` (UDP and TCP by default,
`shoal.cluster.net_transport.NetTransport`; in memory in tests), and what
travels on the gossip port (framing, tags, sealing) is described once, in
`shoal.cluster.transport`.

Rules:

1. **One gossip address.** The transport receives datagrams and streams on
   the same ``host:port``.
2. **Every engine call is followed by a drain** (`MembershipDriver._drain`):
   datagrams go to the sender task, stream requests each get a task, events go
   to listeners and subscribers, and the timer task is woken if the engine's
   next deadline moved earlier. Engine calls are synchronous, so they never
   interleave.
3. **Peer input never raises.** Anything undecryptable, oversized or torn is
   dropped and counted in ``statistics().dropped`` by reason; the engine counts
   its own decode failures in ``statistics().engine.dropped``.
4. **Bounded everything.** Datagrams above ``max_packet_size`` (plus the
   encryption overhead) are dropped unread; stream messages above
   ``max_stream_size`` are refused from their length prefix, and inbound ones
   must first reserve their length from a budget all inbound streams share
   (``max_inbound_buffer``, `shoal.cluster.gossip_guard`), since nothing is
   authenticated before it is read whole; at most
   ``max_inbound_streams`` inbound streams are served at once (memberlist
   caps concurrent push-pulls at 128 after one cluster spent 7 GB on them),
   at most ``max_outbound_streams`` are open at once; every engine stream,
   both ways, must finish within ``config.stream_timeout``, waiting for a slot
   included.

Tasks (all in the nursery of `MembershipDriver.serve`):

* the *receiver* reads datagrams, decrypts them and feeds ``receive_packet``;
* the *sender* writes the datagrams the engine produced, in order, from a
  bounded queue (a full queue drops, as a full socket buffer would);
* the *timer* sleeps until the engine's next deadline, or until woken early
  because an input moved it, and calls ``tick``;
* the *acceptor* serves inbound streams, one task each;
* one task per outbound stream request, and one that re-resolves seed names
  every ``reconnect_interval`` once `MembershipDriver.join` was called.

Streams. An engine stream carries exactly two messages, the request and
the reply; any other protocol registered with
`MembershipDriver.add_stream_handler` opens with its one-byte tag
(`MembershipDriver.open_stream` is the dialing side). With a keyring every
datagram and stream message is sealed; a datagram grows by
``SEAL_OVERHEAD`` (29) bytes beyond the engine's ``packet_budget``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final, TypeAlias

import msgspec
import trio

from shoal.cluster.gossip_guard import (
    DEFAULT_INBOUND_BUDGET,
    InboundBudget,
    unkeyed_exposure_warning,
)
from shoal.cluster.neighbour_watch import WATCH_TAG, NeighbourWatch, WatchStatistics
from shoal.cluster.net_transport import NetTransport
from shoal.cluster.refusals import is_refused
from shoal.cluster.transport import MessageStream, StreamError, Transport, TransportCounters
from shoal.config import parse_address
from shoal.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from shoal.membership import Address, Event, Membership
from shoal.membership.codec import PROTOCOL_VERSION
from shoal.membership.engine import MembershipStatistics
from shoal.membership.keyring import SEAL_OVERHEAD
from shoal.membership.state import MemberState

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Sequence

    from shoal.membership import Member, MembershipConfig, MembershipDelegate
    from shoal.membership.keyring import Keyring

__all__ = [
    "MembershipDriver",
    "MembershipDriverStatistics",
    "MessageStream",
    "StreamError",
    "StreamHandler",
]

log = logging.getLogger("shoal.gossip")

#: Pause after a failed accept (out of file descriptors, say), as trio's
#: ``serve_listeners`` does, so the loop does not spin.
_ACCEPT_ERROR_PAUSE: Final = 0.1
_LIVE: Final = (MemberState.ALIVE, MemberState.SUSPECT)


#: What serves a tagged inbound stream: ``await handler(stream, peer)``.
StreamHandler: TypeAlias = Callable[[MessageStream, Address], Awaitable[None]]
#: Told of what the operator should hear about a peer: ``fn(kind, peer, detail)``,
#: with kind ``"decrypt"`` (its gossip fails authentication) or ``"seed"`` (a
#: join through it failed; ``detail`` says how). See `MembershipDriver.add_notice_listener`.
NoticeListener: TypeAlias = Callable[[str, Address, str], None]


class MembershipDriverStatistics(msgspec.Struct, frozen=True, kw_only=True, eq=False):
    """A snapshot of the driver's socket-level counters and the engine's.

    Attributes:
        engine: the engine's own statistics (its decode drops included).
        watch: the neighbour watch streams' counters (`neighbour_watch`).
        packets_received: datagrams read from the UDP socket.
        packets_sent: datagrams written to it.
        bytes_received: their size on the wire (sealed form when keyed).
        bytes_sent: their size on the wire.
        streams_accepted: inbound TCP connections served.
        streams_opened: outbound engine streams attempted.
        streams_failed: outbound engine streams reported to the engine as
            failed (refused, timed out, broken, or an unreadable reply).
        stream_bytes_received: bytes of every stream message read, membership
            and tagged streams alike, framing included.
        stream_bytes_sent: likewise, written.
        dropped: inputs dropped by the driver, by reason: ``"decrypt"``,
            ``"oversize"``, ``"truncated"``, ``"timeout"`` (an inbound stream
            not done within ``stream_timeout``), ``"busy"`` (too many inbound
            streams), ``"stream_error"`` (a connection broke mid-exchange),
            ``"handler"`` (a stream handler refused the peer's input),
            ``"send_queue_full"``, ``"send_error"``, ``"receive_error"``,
            ``"accept_error"``, ``"subscriber_overflow"`` (a subscriber fell
            too far behind and was cut off).
    """

    engine: MembershipStatistics
    watch: WatchStatistics
    packets_received: int
    packets_sent: int
    bytes_received: int
    bytes_sent: int
    streams_accepted: int
    streams_opened: int
    streams_failed: int
    stream_bytes_received: int
    stream_bytes_sent: int
    dropped: Mapping[str, int]


class MembershipDriver:
    """Runs one `Membership` engine over real sockets, with optional encryption.

    Use: ``address = await nursery.start(driver.serve)``, then
    ``await driver.join(["host:port", ...])``; before stopping,
    ``await driver.leave(timeout)``, then cancel ``serve``.

    Args:
        config: the engine's tuning; ``stream_timeout`` and
            ``max_stream_size`` also bound the driver's streams.
        name: this member's unique name.
        bind: ``host:port`` to bind UDP and TCP on; port 0 picks a free port.
        advertise: ``host:port`` other members should dial. Defaults to the
            bound address, with ``0.0.0.0`` replaced by ``127.0.0.1`` and ``::``
            by ``::1``; a port of 0 means the bound port.
        meta: string tags announced with our ``alive``.
        keyring: encrypts and authenticates all gossip; None sends plaintext.
        label: the cluster label, authenticated with every sealed message so
            clusters sharing a key cannot cross-talk.
        rng: the engine's randomness; a fresh ``random.Random()`` by default.
        clock: a monotonic clock in seconds; `trio.current_time` by default,
            so tests on a `trio.testing.MockClock` run in virtual time.
        delegate: the engine's application channel, or None.
        max_inbound_streams: inbound streams served at once; more are closed
            at once and counted as ``"busy"`` drops.
        max_outbound_streams: outbound engine streams open at once; more wait
            for a slot within their ``stream_timeout``.
        max_inbound_buffer: bytes all inbound streams together may hold for
            messages not yet read whole (so not yet authenticated); also the
            largest message an inbound stream accepts.
        send_queue_size: datagrams queued for the sender task; beyond it they
            are dropped (``"send_queue_full"``).
        transport: the network (`NetTransport`, UDP and TCP, by default);
            the driver binds it in `serve` and closes it when `serve` ends.

    Raises:
        ConfigError: ``bind`` or ``advertise`` is not ``host:port``.
    """

    def __init__(
        self,
        config: MembershipConfig,
        *,
        name: str,
        bind: str,
        advertise: str | None = None,
        meta: Mapping[str, str] | None = None,
        keyring: Keyring | None = None,
        label: bytes = b"shoal",
        rng: random.Random | None = None,
        clock: Callable[[], float] = trio.current_time,
        delegate: MembershipDelegate | None = None,
        max_inbound_streams: int = 128,
        max_outbound_streams: int = 32,
        send_queue_size: int = 1024,
        max_inbound_buffer: int = DEFAULT_INBOUND_BUDGET,
        transport: Transport | None = None,
    ) -> None:
        self._config = config
        self._name = name
        self._bind = parse_address(bind, what="gossip address")
        self._advertise = (
            None if advertise is None else parse_address(advertise, what="advertise address")
        )
        self._meta = dict(meta or {})
        self._keyring = keyring
        self._label = label
        self._rng = random.Random() if rng is None else rng
        self._clock = clock
        self._delegate = delegate
        self._max_inbound = max_inbound_streams
        self._max_outbound = max_outbound_streams
        self._send_queue_size = send_queue_size
        self._inbound_budget = InboundBudget(max_inbound_buffer)
        self._transport: Transport = NetTransport() if transport is None else transport

        self._engine: Membership | None = None
        self._nursery: trio.Nursery | None = None
        self._bound: Address | None = None
        self._served = False
        self._packet_sender: trio.MemorySendChannel[tuple[Address, bytes]] | None = None
        self._outbound_limiter: trio.CapacityLimiter | None = None
        self._counters = TransportCounters()
        self._drops: dict[str, int] = {}
        self._inbound = 0
        self._handlers: dict[int, StreamHandler] = {}
        self._listeners: list[Callable[[Event], None]] = []
        self._notice_listeners: list[NoticeListener] = []
        self._subscribers: list[trio.MemorySendChannel[Event]] = []
        self._wake = trio.Event()
        self._sleeping_until = math.inf
        self._leaving = False
        self._leave_done = trio.Event()
        self._neighbour_watch = NeighbourWatch(
            dial=self.open_stream,
            closed=self._watch_closed,
            refused=lambda address: self._refused([address]),
            setup_timeout=config.stream_timeout,
            retry_interval=config.reconnect_interval,
        )
        self._handlers[WATCH_TAG] = self._neighbour_watch.serve
        #: Tags whose inbound streams outlive ``stream_timeout`` once opened.
        self._lasting = {WATCH_TAG}
        self._seed_specs: list[Address] = []
        self._seed_addresses: set[Address] = set()
        self._last_failure: dict[Address, str] = {}
        self._resolver_started = False

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        """This member's name."""
        return self._name

    @property
    def address(self) -> Address:
        """The bound gossip address (UDP and TCP).

        Raises:
            RuntimeError: `serve` has not bound yet.
        """
        if self._bound is None:
            raise RuntimeError("the membership driver is not serving")
        return self._bound

    @property
    def advertise_address(self) -> Address:
        """The address other members dial (the engine's own address).

        Raises:
            RuntimeError: `serve` has not bound yet.
        """
        return self.engine.address

    @property
    def engine(self) -> Membership:
        """The engine (read-only use: members, statistics, incarnation).

        Raises:
            RuntimeError: `serve` has not started it yet.
        """
        if self._engine is None:
            raise RuntimeError("the membership driver is not serving")
        return self._engine

    @property
    def stream_timeout(self) -> float:
        """Seconds any stream on the gossip port may take (``config.stream_timeout``)."""
        return self._config.stream_timeout

    @property
    def keyring(self) -> Keyring | None:
        """The keyring in use, or None for plaintext."""
        return self._keyring

    # ------------------------------------------------------------------ queries

    def members(self) -> list[Member]:
        """Every member the engine holds, ourselves, dead and left ones included."""
        return self.engine.members()

    def member(self, name: str) -> Member | None:
        """The member called ``name``, or None."""
        return self.engine.member(name)

    def statistics(self) -> MembershipDriverStatistics:
        """Return a snapshot of the driver's and the engine's counters."""
        return MembershipDriverStatistics(
            engine=self.engine.statistics(),
            watch=self._neighbour_watch.statistics(),
            **msgspec.structs.asdict(self._counters),
            dropped=dict(self._drops),
        )

    # ------------------------------------------------------------------ events

    def add_listener(self, fn: Callable[[Event], None]) -> None:
        """Call ``fn(event)`` for every engine event, in order.

        ``fn`` runs inside the driver's engine drain: it must be fast, must not
        block and must not call back into the driver's inputs (post to a
        channel for anything slow). An exception from it is a bug and crashes
        `serve`.
        """
        self._listeners.append(fn)

    def add_notice_listener(self, fn: NoticeListener) -> None:
        """Call ``fn(kind, peer, detail)`` when a peer's input fails in a way worth telling.

        The drop counters say how many; this says who, so the operator's log
        can name the node with the wrong gossip key or the seed that refuses.
        Same contract as `add_listener`: fast, never blocking.
        """
        self._notice_listeners.append(fn)

    def _notice(self, kind: str, peer: Address, detail: str) -> None:
        for fn in tuple(self._notice_listeners):
            fn(kind, peer, detail)

    def remove_listener(self, fn: Callable[[Event], None]) -> None:
        """Stop calling ``fn``; unknown callbacks are ignored."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(fn)

    def subscribe(self, max_buffer_size: int = 256) -> trio.MemoryReceiveChannel[Event]:
        """Return a channel that receives every engine event from now on.

        A subscriber that falls more than ``max_buffer_size`` events behind is
        cut off rather than silently missing events: its channel ends (after
        the buffered events) and a ``"subscriber_overflow"`` drop is counted.
        Close the receiving end to unsubscribe. Every channel ends when
        `serve` returns.
        """
        send, receive = trio.open_memory_channel[Event](max_buffer_size)
        self._subscribers.append(send)
        return receive

    # ------------------------------------------------------------------ streams

    def add_stream_handler(
        self, tag: int, handler: StreamHandler, *, long_lived: bool = False
    ) -> None:
        """Serve inbound streams that open with the one-byte message ``tag``.

        With ``long_lived`` the exchange has no deadline (a replication
        stream lasts as long as its link); the handler then bounds every
        wait itself or relies on the peer closing.

        ``await handler(stream, peer)`` runs in its own task with the opening
        message already consumed; the stream is closed when it returns. The
        whole exchange must finish within ``config.stream_timeout`` (then it is
        cancelled and counted as a ``"timeout"`` drop). A handler that raises
        `RemoteProtocolError` (for instance a `StreamError` from
        ``receive_message``) has it counted as a drop; a stream the peer broke
        or ended early counts as ``"stream_error"`` or ``"truncated"``; any
        other exception is a bug and crashes `serve`.

        Raises:
            ValueError: ``tag`` is not in 0..255, is the membership protocol's
                version byte, or already has a handler.
        """
        if not 0 <= tag <= 255 or tag == PROTOCOL_VERSION:
            raise ValueError(f"stream tag must be in 0..255 and not {PROTOCOL_VERSION}")
        if tag in self._handlers:
            raise ValueError(f"stream tag {tag} already has a handler")
        self._handlers[tag] = handler
        if long_lived:
            self._lasting.add(tag)

    @contextlib.asynccontextmanager
    async def open_stream(self, address: Address, tag: int) -> AsyncIterator[MessageStream]:
        """Open a message stream to the member at ``address`` for protocol ``tag``.

        Connecting is bounded by ``config.stream_timeout``; the exchange
        itself is bounded by the caller. The stream is closed on exit.

        Raises:
            OSError: the connection was refused or could not be made.
            trio.TooSlowError: connecting took longer than ``stream_timeout``.
            ValueError: ``tag`` is not a valid stream tag.
        """
        if not 0 <= tag <= 255 or tag == PROTOCOL_VERSION:
            raise ValueError(f"stream tag must be in 0..255 and not {PROTOCOL_VERSION}")
        with trio.fail_after(self._config.stream_timeout):
            tcp = await self._transport.connect_stream(address)
        try:
            stream = self._message_stream(tcp)
            await stream.send_message(bytes((tag,)))
            yield stream
        finally:
            await trio.aclose_forcefully(tcp)

    # ------------------------------------------------------------------ membership

    async def join(self, seeds: Sequence[str]) -> list[Address]:
        """Join the cluster through the ``host:port`` seeds.

        Each seed is resolved (a name with several addresses gives several
        seeds, of our socket's address family) and handed to the engine, which
        push-pulls with each at once and keeps retrying any that is not a live
        member every ``reconnect_interval``, forever. Seed names are also
        re-resolved every ``reconnect_interval``, so a name that does not
        resolve yet, or gains addresses later, is joined when it does.

        Returns:
            The addresses the seeds resolved to now (ours included if listed).

        Raises:
            ConfigError: a seed is not ``host:port``.
            RuntimeError: the driver is not serving, or has left.
        """
        engine = self.engine
        if self._leaving:
            raise RuntimeError("cannot join after leaving")
        specs = [parse_address(seed, what="seed") for seed in seeds]
        for spec in specs:
            if spec not in self._seed_specs:
                self._seed_specs.append(spec)
        addresses = await self._resolve(specs)
        self._join_addresses(engine, addresses)
        if not self._resolver_started and self._nursery is not None:
            self._resolver_started = True
            self._nursery.start_soon(self._resolve_seeds_forever)
        return addresses

    async def leave(self, timeout: float) -> bool:  # noqa: ASYNC109 - part of the contract
        """Leave gracefully and wait until the leave has been disseminated.

        The engine broadcasts our departure; this waits until it was sent as
        often as any broadcast is (`Membership.leave_complete`) or ``timeout``
        seconds pass, whichever is first. The driver keeps answering until
        `serve` is cancelled, which the caller does next. The timeout is an
        argument, against trio's habit, because running out of it is not an
        error: the caller stops either way (memberlist's ``Leave(timeout)``).

        Returns:
            True if the leave was fully disseminated in time.

        Raises:
            RuntimeError: the driver is not serving.
        """
        engine = self.engine
        if not self._leaving:
            self._leaving = True
            engine.leave(self._clock())
            self._neighbour_watch.leave()
            log.info("gossip: %s leaving the cluster", self._name)
            self._drain()
        with trio.move_on_after(timeout):
            await self._leave_done.wait()
        return engine.leave_complete()

    def update_meta(self, meta: Mapping[str, str]) -> None:
        """Announce new metadata (`Membership.update_meta`).

        Raises:
            LocalProtocolError: the metadata is malformed or we left.
            RuntimeError: the driver is not serving.
        """
        engine = self.engine
        engine.update_meta(meta, self._clock())
        self._drain()

    def forget(self, name: str) -> bool:
        """Reap a failed or left member now (`Membership.forget`, Serf ``force-leave``).

        Raises:
            LocalProtocolError: the member is alive or suspect, or is us.
            RuntimeError: the driver is not serving.
        """
        forgotten = self.engine.forget(name, self._clock())
        self._drain()
        return forgotten

    def set_keyring(self, keyring: Keyring) -> None:
        """Seal with ``keyring`` from now on (runtime rotation, Serf ``keys``).

        Packets and streams are sealed and opened with whatever keyring is
        current when they pass, so a rotation takes effect at once and
        without a restart.

        Raises:
            ConfigError: the node runs without encryption; turning it on at
                run time would cut this node off from its plaintext peers.
        """
        if self._keyring is None:
            raise ConfigError("gossip encryption is off on this node (start it with --gossip-key)")
        self._keyring = keyring

    def broadcast_app(self, key: str, data: bytes) -> None:
        """Queue an application broadcast (`Membership.broadcast_app`).

        Raises:
            LocalProtocolError: the key or data is out of bounds.
            RuntimeError: the driver is not serving.
        """
        engine = self.engine
        engine.broadcast_app(key, data, self._clock())
        self._drain()

    # ------------------------------------------------------------------ serving

    async def serve(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind the gossip sockets and run the engine until cancelled.

        Reports the bound address through ``task_status``, so
        ``await nursery.start(driver.serve)`` returns it once both sockets
        listen.

        Resource handling: both sockets are closed, and every subscriber's
        channel ended, when this returns or raises.

        Error handling: binding errors (`OSError`) propagate before
        ``task_status.started``; peer errors are counted, never raised; an
        exception from a listener or a stream handler other than the documented
        ones propagates and stops the driver.

        Raises:
            RuntimeError: the driver was already served once.
            OSError: the address could not be bound.
            LocalProtocolError: ``name`` or ``meta`` is malformed.
        """
        if self._served:
            raise RuntimeError("a MembershipDriver serves only once")
        self._served = True
        transport = self._transport
        try:
            bound = await transport.bind(self._bind)
            self._bound = bound
            advertise = self._advertised(bound)
            self._engine = Membership(
                self._config,
                name=self._name,
                address=advertise,
                meta=self._meta,
                rng=self._rng,
                now=self._clock(),
                delegate=self._delegate,
            )
            send, receive = trio.open_memory_channel[tuple[Address, bytes]](self._send_queue_size)
            self._packet_sender = send
            self._outbound_limiter = trio.CapacityLimiter(self._max_outbound)
            log.info(
                "gossip: %s bound to %s:%d (udp+tcp), advertising %s:%d%s",
                self._name,
                bound[0],
                bound[1],
                advertise[0],
                advertise[1],
                ", encrypted" if self._keyring is not None else "",
            )
            warning = unkeyed_exposure_warning(bound[0], self._keyring is not None)
            if warning is not None:
                log.warning("gossip: %s", warning)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._receive_packets)
                nursery.start_soon(self._send_packets, receive)
                nursery.start_soon(self._accept_streams)
                nursery.start_soon(self._run_timers)
                nursery.start_soon(self._neighbour_watch.run)
                self._drain()
                task_status.started(bound)
        finally:
            self._nursery = None
            transport.close()
            for channel in self._subscribers:
                channel.close()
            self._subscribers.clear()

    def _advertised(self, bound: Address) -> Address:
        if self._advertise is None:
            host, port = bound
        else:
            host, port = self._advertise
            if port == 0:
                port = bound[1]
        if host == "0.0.0.0":
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return (host, port)

    # ------------------------------------------------------------------ the drain

    def _drop(self, reason: str) -> None:
        self._drops[reason] = self._drops.get(reason, 0) + 1

    def _drain(self) -> None:
        """Take the engine's outputs after an input; see the module's rule 2."""
        engine = self._engine
        assert engine is not None
        packets = engine.packets_to_send()
        if packets:
            sender = self._packet_sender
            assert sender is not None
            keyring = self._keyring
            for address, data in packets:
                if keyring is not None:
                    data = keyring.seal(data, label=self._label)
                try:
                    sender.send_nowait((address, data))
                except trio.WouldBlock:
                    self._drop("send_queue_full")
        streams = engine.streams_to_open()
        if streams:
            nursery = self._nursery
            assert nursery is not None
            for address, request in streams:
                nursery.start_soon(self._engine_stream, address, request)
        events = engine.events()
        if events:
            self._neighbour_watch.update(engine.watch_targets())
            self._publish(events)
        if self._leaving and engine.leave_complete():
            self._leave_done.set()
        if engine.next_deadline() < self._sleeping_until:
            self._wake.set()

    def _publish(self, events: Iterable[Event]) -> None:
        for event in events:
            for fn in tuple(self._listeners):
                fn(event)
            for channel in tuple(self._subscribers):
                try:
                    channel.send_nowait(event)
                except trio.WouldBlock:
                    self._drop("subscriber_overflow")
                    log.warning("gossip: an event subscriber fell behind and was cut off")
                    channel.close()
                    self._subscribers.remove(channel)
                except trio.BrokenResourceError:
                    self._subscribers.remove(channel)

    # ------------------------------------------------------------------ tasks

    async def _run_timers(self) -> None:
        engine = self._engine
        assert engine is not None
        while True:
            deadline = engine.next_deadline()
            delay = deadline - self._clock()
            if delay > 0:
                self._wake = trio.Event()
                self._sleeping_until = deadline
                with trio.move_on_after(delay):
                    await self._wake.wait()
                continue
            self._sleeping_until = -math.inf
            engine.tick(self._clock())
            self._drain()
            await trio.lowlevel.checkpoint()

    async def _receive_packets(self) -> None:
        engine = self._engine
        assert engine is not None
        limit = self._config.max_packet_size + (0 if self._keyring is None else SEAL_OVERHEAD)
        counters = self._counters
        transport = self._transport
        while True:
            keyring = self._keyring  # per packet: `set_keyring` may rotate it
            try:
                data, src = await transport.receive_packet(limit + 1)
            except ConnectionRefusedError:
                # A refusal (ICMP port unreachable) is queued: read them all.
                self._read_refusals()
                continue
            except OSError as exc:
                # Whatever else was queued is drained too, or the socket
                # would keep reporting it.
                self._read_refusals()
                # Unconnected UDP sockets rarely fail; do not spin if they do.
                self._drop("receive_error")
                log.debug("gossip: receive failed: %s", exc)
                await trio.sleep(_ACCEPT_ERROR_PAUSE)
                continue
            counters.packets_received += 1
            counters.bytes_received += len(data)
            if len(data) > limit:
                self._drop("oversize")
                continue
            if keyring is not None:
                try:
                    data = keyring.open(data, label=self._label)
                except RemoteProtocolError:
                    self._drop("decrypt")
                    self._notice("decrypt", src, "datagram")
                    continue
            engine.receive_packet(data, src, self._clock())
            self._drain()

    async def _send_packets(self, queue: trio.MemoryReceiveChannel[tuple[Address, bytes]]) -> None:
        counters = self._counters
        transport = self._transport
        async for address, data in queue:
            try:
                await transport.send_packet(data, address)
            except ConnectionRefusedError:
                # A refusal drawn by an earlier datagram, reported here: this
                # one was not sent. Read the refusals and send it again once.
                self._read_refusals()
                try:
                    await transport.send_packet(data, address)
                except OSError:
                    self._drop("send_error")
                    continue
            except OSError as exc:
                self._drop("send_error")
                log.debug("gossip: send to %s:%d failed: %s", address[0], address[1], exc)
                continue
            counters.packets_sent += 1
            counters.bytes_sent += len(data)

    async def _accept_streams(self) -> None:
        nursery = self._nursery
        assert nursery is not None
        transport = self._transport
        while True:
            try:
                tcp, peer = await transport.accept_stream()
            except OSError as exc:
                self._drop("accept_error")
                log.warning("gossip: accept failed: %s", exc)
                await trio.sleep(_ACCEPT_ERROR_PAUSE)
                continue
            if self._inbound >= self._max_inbound:
                self._drop("busy")
                await trio.aclose_forcefully(tcp)
                continue
            self._inbound += 1
            self._counters.streams_accepted += 1
            nursery.start_soon(self._serve_stream, tcp, peer)

    async def _serve_stream(self, tcp: trio.abc.Stream, peer: Address | None) -> None:
        try:
            if peer is None:
                self._drop("stream_error")  # gone before we looked
                return
            stream = self._message_stream(tcp, budget=self._inbound_budget)
            with trio.move_on_after(self._config.stream_timeout) as scope:
                try:
                    await self._dispatch_stream(stream, peer, scope)
                except StreamError as exc:
                    self._drop(exc.reason)
                    if exc.reason == "decrypt":
                        self._notice("decrypt", peer, "stream")
                except RemoteProtocolError:
                    self._drop("handler")
                except trio.EndOfChannel:
                    self._drop("truncated")
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._drop("stream_error")
            if scope.cancelled_caught:
                self._drop("timeout")
        finally:
            self._inbound -= 1
            await trio.aclose_forcefully(tcp)

    async def _dispatch_stream(
        self, stream: MessageStream, peer: Address, scope: trio.CancelScope
    ) -> None:
        first = await stream.receive_message()
        handler = self._handlers.get(first[0]) if len(first) == 1 else None
        if handler is not None:
            if first[0] in self._lasting:
                # A watch stream lives as long as the watch; a replication
                # stream as long as its link (``long_lived`` handlers).
                scope.deadline = math.inf
            await handler(stream, peer)
            return
        engine = self._engine
        assert engine is not None
        reply = engine.receive_stream(first, peer, self._clock())
        self._drain()
        if reply is not None and len(reply) > stream.max_message_size:
            self._drop("oversize_reply")  # the peer would refuse it anyway
            reply = None
        # An empty message means "no reply", authenticated like any other.
        await stream.send_message(reply or b"")

    async def _engine_stream(self, address: Address, request: bytes) -> None:
        """Make one stream request of the engine's and feed back the outcome."""
        limiter = self._outbound_limiter
        assert limiter is not None
        self._counters.streams_opened += 1
        reply: bytes | None = None
        with trio.move_on_after(self._config.stream_timeout):
            async with limiter:
                reply = await self._exchange(address, request)
        engine = self._engine
        assert engine is not None
        now = self._clock()
        failure = self._last_failure.pop(address, "timed out")
        if reply is None:
            self._counters.streams_failed += 1
            engine.stream_failed(address, now)
            if address in self._seed_addresses and not any(
                m.address == address and m.state in _LIVE for m in engine.members()
            ):
                self._notice("seed", address, failure)
        elif reply:
            engine.receive_stream_reply(reply, address, now)
        self._drain()

    async def _exchange(self, address: Address, request: bytes) -> bytes | None:
        """Send one request and read its reply; None on any failure."""
        try:
            tcp = await self._transport.connect_stream(address)
        except OSError as exc:
            log.debug("gossip: stream to %s:%d failed: %s", address[0], address[1], exc)
            self._last_failure[address] = getattr(exc, "strerror", None) or str(exc)
            if is_refused(exc):
                self._refused([address])
            return None
        try:
            stream = self._message_stream(tcp)
            await stream.send_message(request)
            return await stream.receive_message()
        except StreamError as exc:
            self._drop(exc.reason)
            self._last_failure[address] = f"unreadable reply ({exc.reason})"
        except LocalProtocolError:
            self._drop("oversize_request")
        except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError):
            # Refused by the peer (wrong key, overload) or broken.
            self._last_failure[address] = "closed without a reply (a different gossip key?)"
        finally:
            await trio.aclose_forcefully(tcp)
        return None

    def _read_refusals(self) -> None:
        self._refused(self._transport.refusals())

    def _refused(self, addresses: Iterable[Address]) -> None:
        """Feed refused datagrams and connections to the engine (see `refusals`)."""
        engine = self._engine
        if engine is None:
            return
        for address in addresses:
            engine.probe_refused(address, self._clock())
        self._drain()

    def _watch_closed(self, name: str, address: Address) -> None:
        """Feed a watch stream that closed without a goodbye to the engine."""
        engine = self._engine
        if engine is None:
            return
        engine.watch_closed(name, address, self._clock())
        self._drain()

    def _message_stream(
        self, stream: trio.abc.Stream, *, budget: InboundBudget | None = None
    ) -> MessageStream:
        return MessageStream(
            stream,
            keyring=self._keyring,
            label=self._label,
            max_message_size=self._config.max_stream_size,
            counters=self._counters,
            budget=budget,
        )

    # ------------------------------------------------------------------ seeds

    async def _resolve(self, specs: Iterable[Address]) -> list[Address]:
        addresses: list[Address] = []
        for host, port in specs:
            try:
                resolved = await self._transport.resolve(host, port)
            except OSError as exc:
                log.warning("gossip: seed %s:%d does not resolve: %s", host, port, exc)
                continue
            for address in resolved:
                if address not in addresses:
                    addresses.append(address)
        return addresses

    def _join_addresses(self, engine: Membership, addresses: Iterable[Address]) -> None:
        new = [a for a in addresses if a not in self._seed_addresses]
        if not new or self._leaving:
            return
        self._seed_addresses.update(new)
        log.info("gossip: %s joining through %s", self._name, new)
        engine.join(new, self._clock())
        self._drain()

    async def _resolve_seeds_forever(self) -> None:
        engine = self._engine
        assert engine is not None
        while not self._leaving:
            await trio.sleep(self._config.reconnect_interval)
            addresses = await self._resolve(self._seed_specs)
            self._join_addresses(engine, addresses)
