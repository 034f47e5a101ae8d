"""A consumer that finds every producer of a topic and keeps up with them.

Given any node (or several), a `Consumer` asks ``/lookup`` which nodes hold
the topic, connects to each of them, subscribes to the channel and spreads
``max_in_flight`` over the connections with ``RDY``. Each message goes to an
async handler: returning sends ``FIN``, raising sends ``REQ`` with a delay
that doubles per attempt, and a message delivered more than ``max_attempts``
times is finished without the handler (logged as given up), as pynsq and
go-nsq do. The async-iterator form (`open_consumer`) yields the messages
instead: the loop body is the handler, and a message the body has not
answered is finished when the loop asks for the next one.

Theory of operation:
    Discovery is a loop of long polls: ``/lookup?topic=T&wait=W&version=V``
    returns as soon as the producer set differs from the one named ``V`` (a
    new node created the topic, one died or left), or after ``W`` seconds
    (`ConsumerConfig.lookup_interval`), so a new producer is connected to
    within about a second of gossip reaching the node asked, where
    nsqlookupd clients poll every 60 s. A dropped connection cancels the
    poll in flight and looks up at once. Against a server without the
    extension (no ``version`` in the reply) the loop degrades to polling
    every interval. Nodes learned as producers join the addresses asked, so
    the consumer outlives the node it was first given.

    Producers that stop being listed keep their connection while it lasts
    (go-nsq does the same): in-flight messages can still be answered.
    Connecting to a listed producer that refuses backs off per node,
    doubling up to `ConsumerConfig.max_reconnect_backoff`.

    Each connection's reader hands messages straight to a queue (no
    channel, no task per message): a `HandlerPool` for a handler, a deque
    for the iterator. Handlers that return and loop bodies that leave a
    message unanswered queue its ``FIN`` without a checkpoint, so the FINs
    of one read leave in one write. ``RDY`` is a standing credit in NSQ
    (the node sends while fewer than RDY messages are in flight), so it is sent
    again only when the split below changes, never per message.

    ``RDY`` per connection is ``max_in_flight`` split evenly (the remainder
    to the first connections by address). With fewer slots than connections
    a window of RDY 1 rotates over the connections every
    `ConsumerConfig.rdy_rotate_interval`, so every producer is drained.

Error handling:
    The handler's exceptions are logged and requeue the message; they never
    stop the consumer. A message still unanswered when the consumer stops is
    requeued at once (``REQ 0``) rather than left to time out on the node.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import trio

from shoal.client._nursery import open_service_nursery
from shoal.client.connection import Connection, ConnectionConfig, Message, open_connection
from shoal.client.discovery import NOT_FOUND_VERSION, Endpoint, LookupResult, fetch_lookup
from shoal.client.dispatch import HandlerPool
from shoal.client.errors import (
    ConnectionClosed,
    HTTPStatusError,
    NodeUnavailable,
    NoNodesAvailable,
    NSQError,
)
from shoal.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from shoal.queue.names import is_valid_channel_name, is_valid_topic_name

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

__all__ = [
    "STOP_TIMEOUT",
    "Consumer",
    "ConsumerConfig",
    "ConsumerStatistics",
    "Handler",
    "open_consumer",
]

log = logging.getLogger("shoal.client")

#: An async callable given each message; its return value is ignored.
Handler: TypeAlias = Callable[[Message], Awaitable[Any]]

#: Longest a stopping consumer waits for ``CLOSE_WAIT`` from its nodes.
STOP_TIMEOUT = 2.0
# Longest a stopping consumer spends handing back unanswered messages.
_REQUEUE_ON_STOP_TIMEOUT = 1.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerConfig:
    """How a consumer discovers producers and treats messages.

    Attributes:
        max_in_flight: messages handled at once over all connections; the
            handler runs this many times concurrently at most.
        max_attempts: deliveries after which a message is finished without
            the handler (logged); 0 means never give up.
        lookup_interval: seconds between lookups (the long poll's wait).
        long_poll: use ``wait``/``version`` long polls; False polls plainly.
        requeue_delay: delay of the first ``REQ`` after a handler failure;
            doubles with each attempt.
        max_requeue_delay: the cap of that doubling.
        reconnect_backoff: delay before reconnecting to a producer that
            refused; doubles per failure.
        max_reconnect_backoff: the cap of that doubling.
        rdy_rotate_interval: seconds between moves of the RDY window when
            ``max_in_flight`` is below the number of connections.
        request_timeout: seconds one lookup may take beyond its wait.
        connection: the TCP connections' identity and limits.
    """

    max_in_flight: int = 1
    max_attempts: int = 5
    lookup_interval: float = 5.0
    long_poll: bool = True
    requeue_delay: float = 1.0
    max_requeue_delay: float = 60.0
    reconnect_backoff: float = 1.0
    max_reconnect_backoff: float = 30.0
    rdy_rotate_interval: float = 1.0
    request_timeout: float = 5.0
    connection: ConnectionConfig = dataclasses.field(default_factory=ConnectionConfig)

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ConfigError("max_in_flight must be at least 1")
        if self.max_attempts < 0:
            raise ConfigError("max_attempts must be 0 (unlimited) or more")
        for name in (
            "lookup_interval",
            "reconnect_backoff",
            "rdy_rotate_interval",
            "request_timeout",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive")
        if self.requeue_delay < 0 or self.max_requeue_delay < self.requeue_delay:
            raise ConfigError("need 0 <= requeue_delay <= max_requeue_delay")
        if self.max_reconnect_backoff < self.reconnect_backoff:
            raise ConfigError("max_reconnect_backoff must be at least reconnect_backoff")

    def requeue_delay_for(self, attempts: int) -> float:
        """The ``REQ`` delay after a failure on delivery number ``attempts``."""
        doublings = max(0, min(attempts - 1, 30))
        return min(self.requeue_delay * float(2**doublings), self.max_requeue_delay)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerStatistics:
    """A snapshot of a consumer's counters.

    Attributes:
        producers: nodes the last lookup listed.
        connections: subscribed connections open now.
        received: messages delivered to this consumer.
        finished: messages finished after the handler returned (or that the
            iterator moved past), excluding those the handler answered itself.
        requeued: messages requeued after a handler failure.
        given_up: messages finished unhandled after ``max_attempts``.
        lookups: lookups answered.
    """

    producers: int
    connections: int
    received: int
    finished: int
    requeued: int
    given_up: int
    lookups: int


class Consumer:
    """Consumes ``channel`` of ``topic`` from every producer in the cluster.

    Args:
        topic: the topic.
        channel: the channel (``#ephemeral`` suffix allowed).
        handler: called with each message; None builds a consumer for the
            iterator form (use `open_consumer`).
        nodes: HTTP address (``host:port``) of one node, or several; they
            answer ``/lookup``.
        config: discovery, flow control and retries.

    Raises:
        ValueError: a bad topic or channel name.
        ConfigError: no node given.
    """

    def __init__(
        self,
        topic: str,
        channel: str,
        handler: Handler | None = None,
        *,
        nodes: str | Sequence[str],
        config: ConsumerConfig | None = None,
    ) -> None:
        if not is_valid_topic_name(topic):
            raise ValueError(f"invalid topic name {topic!r}")
        if not is_valid_channel_name(channel):
            raise ValueError(f"invalid channel name {channel!r}")
        seeds = [nodes] if isinstance(nodes, str) else list(nodes)
        if not seeds:
            raise ConfigError("a consumer needs at least one node address")
        self.topic = topic
        self.channel = channel
        self.config = config or ConsumerConfig()
        self._iterating = handler is None
        self._handler: Handler = handler if handler is not None else _no_handler
        self._lookup_addresses = list(dict.fromkeys(seeds))
        self._lookup_index = 0
        self._version: str | None = None
        self._producers: dict[str, Endpoint] = {}
        self._connections: dict[str, Connection] = {}
        self._connecting: set[str] = set()
        self._retry_at: dict[str, float] = {}
        self._backoff: dict[str, float] = {}
        self._nursery: trio.Nursery | None = None
        self._lookup_now = trio.Event()
        self._poll_scope: trio.CancelScope | None = None
        self._started = False
        self._stop_requested = trio.Event()
        self._rdy_changed = trio.Event()
        self._stopping = False
        # The iterator form: messages every connection's reader hands over,
        # and the one the loop body has now.
        self._ready: collections.deque[Message] = collections.deque()
        self._ready_changed = trio.Event()
        self._ended = False
        self._current: Message | None = None
        self._connected = trio.Event()
        self._counts = dict.fromkeys(("received", "finished", "requeued", "given_up", "lookups"), 0)

    # -- public state ----------------------------------------------------------------

    def statistics(self) -> ConsumerStatistics:
        """Return a snapshot of the counters."""
        return ConsumerStatistics(
            producers=len(self._producers),
            connections=sum(not c.closed for c in self._connections.values()),
            **self._counts,
        )

    @property
    def connections(self) -> list[Connection]:
        """The open subscribed connections, by address."""
        return [self._connections[k] for k in sorted(self._connections)]

    async def wait_connected(self) -> None:
        """Return once at least one connection is subscribed."""
        await self._connected.wait()

    def stop(self) -> None:
        """Make `run` return, gracefully.

        Every connection is sent ``CLS`` and read until the node answers
        ``CLOSE_WAIT`` (so every message it sent has arrived), then messages
        not yet answered are requeued and the connections closed; at most
        `STOP_TIMEOUT` seconds.
        """
        self._stop_requested.set()

    # -- running ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Consume until `stop` is called or the caller cancels.

        The first lookup happens before ``task_status.started()``, so
        ``await nursery.start(consumer.run)`` fails fast when no node
        answers.

        Raises:
            NoNodesAvailable: no node answered the first lookup.
            LocalProtocolError: `run` was called twice.

        Resource handling:
            Cancelled instead of stopped, it still requeues the messages it
            holds (``RDY 0``, then ``REQ``), but messages the node had sent
            and that had not arrived yet stay in flight until their timeout.
        """
        if self._started:
            raise LocalProtocolError("a consumer runs once")
        self._started = True
        try:
            await self._run(task_status)
        finally:
            self._ended = True
            self._ready_changed.set()

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        first = await self._lookup(None)
        async with open_service_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._rdy_loop)
            self._apply(first)
            nursery.start_soon(self._lookup_loop)
            task_status.started()
            await self._stop_requested.wait()
            self._stopping = True
            with trio.move_on_after(STOP_TIMEOUT):
                async with trio.open_nursery() as closing:
                    for conn in self.connections:
                        closing.start_soon(_close_wait, conn)
            nursery.cancel_scope.cancel()

    # -- lookups --------------------------------------------------------------------------

    async def _lookup(self, wait: float | None) -> LookupResult | None:
        """One lookup, asking each known node in turn until one answers."""
        errors: list[str] = []
        count = len(self._lookup_addresses)
        for step in range(count):
            index = (self._lookup_index + step) % count
            address = self._lookup_addresses[index]
            try:
                with trio.fail_after((wait or 0.0) + self.config.request_timeout):
                    result = await fetch_lookup(
                        address, self.topic, wait=wait, version=self._version
                    )
            except (NodeUnavailable, HTTPStatusError) as exc:
                errors.append(str(exc))
                continue
            except trio.TooSlowError:
                errors.append(f"{address} did not answer the lookup in time")
                continue
            self._lookup_index = index
            self._counts["lookups"] += 1
            return result
        raise NoNodesAvailable("; ".join(errors))

    def _request_lookup(self) -> None:
        self._lookup_now.set()
        if self._poll_scope is not None:
            self._poll_scope.cancel()

    async def _lookup_loop(self) -> None:
        interval = self.config.lookup_interval
        while True:
            immediate = self._lookup_now.is_set()
            self._lookup_now = trio.Event()
            wait = interval if self.config.long_poll and not immediate else None
            if self._version is None:
                wait = None
            started = trio.current_time()
            result: LookupResult | None = None
            failed = False
            with trio.CancelScope() as scope:
                self._poll_scope = scope
                try:
                    result = await self._lookup(wait)
                except NoNodesAvailable as exc:
                    log.warning("lookup of %s failed: %s", self.topic, exc)
                    failed = True
            self._poll_scope = None
            if scope.cancelled_caught:
                continue  # a connection dropped: look up again at once
            changed = False if failed else self._apply(result)
            elapsed = trio.current_time() - started
            # Pace plain polling, failures, and long polls that came back
            # early with nothing new (a server ignoring ``wait``); go straight
            # back to a long poll otherwise.
            pace = failed or self._version is None or not self.config.long_poll
            pace = pace or (wait is not None and not changed and elapsed < interval / 2)
            if pace:
                with trio.move_on_after(max(0.0, interval - elapsed)):
                    await self._lookup_now.wait()

    def _apply(self, result: LookupResult | None) -> bool:
        """Take a lookup's answer; return True if the producer set changed."""
        producers = {p.tcp_address: p for p in result.producers} if result else {}
        if not self.config.long_poll:
            version = None
        elif result is None:
            version = NOT_FOUND_VERSION
        else:
            version = result.version
        changed = producers.keys() != self._producers.keys() or version != self._version
        self._producers = producers
        self._version = version
        for endpoint in producers.values():
            if endpoint.http_address not in self._lookup_addresses:
                self._lookup_addresses.append(endpoint.http_address)
        self._connect_missing()
        return changed

    def _connect_missing(self) -> None:
        if self._nursery is None or self._stopping:
            return
        now = trio.current_time()
        for key, endpoint in self._producers.items():
            if key in self._connections or key in self._connecting:
                continue
            if self._retry_at.get(key, 0.0) > now:
                continue
            self._connecting.add(key)
            self._nursery.start_soon(self._consume, endpoint)

    # -- connections ------------------------------------------------------------------------

    async def _consume(self, endpoint: Endpoint) -> None:
        key = endpoint.tcp_address
        conn: Connection | None = None
        try:
            async with open_connection(key, self.config.connection) as conn:
                await conn.sub(self.topic, self.channel)
                self._connections[key] = conn
                self._connecting.discard(key)
                self._backoff.pop(key, None)
                self._retry_at.pop(key, None)
                self._rdy_changed.set()
                self._connected.set()
                log.info("consuming %s/%s from %s", self.topic, self.channel, key)
                pool: HandlerPool[Message] | None = None
                try:
                    if self._iterating:
                        self._dispatch(conn, self._ready_sink)
                        await conn.wait_closed()
                    else:
                        async with trio.open_nursery() as handlers:
                            pool = HandlerPool(handlers, self._handle, self.config.max_in_flight)
                            self._dispatch(conn, pool.put)
                            await conn.wait_closed()
                            await pool.join()
                            handlers.cancel_scope.cancel()
                finally:
                    conn.deliver_to(None)
                    if not conn.closed:
                        queued = pool.take_all() if pool else self._take_ready(conn)
                        with trio.CancelScope(shield=True):
                            with trio.move_on_after(_REQUEUE_ON_STOP_TIMEOUT):
                                await _hand_back(conn, queued)
                log.info("connection to %s ended: %s", key, conn.close_reason)
        except (NodeUnavailable, NSQError) as exc:
            previous = self._backoff.get(key)
            backoff = self.config.reconnect_backoff if previous is None else previous * 2
            backoff = min(backoff, self.config.max_reconnect_backoff)
            self._backoff[key] = backoff
            self._retry_at[key] = trio.current_time() + backoff
            log.warning("cannot consume from %s (%s); retrying in %gs", key, exc, backoff)
        finally:
            self._connecting.discard(key)
            if conn is not None and self._connections.get(key) is conn:
                del self._connections[key]
                self._rdy_changed.set()
            if not self._stopping:
                self._request_lookup()

    def rdy_counts(self, keys: Sequence[str], rotation: int) -> dict[str, int]:
        """RDY per connection (sorted keys) for this rotation step."""
        n = len(keys)
        m = self.config.max_in_flight
        if n == 0:
            return {}
        if m >= n:
            base, extra = divmod(m, n)
            return {key: base + (i < extra) for i, key in enumerate(keys)}
        start = rotation % n
        window = {keys[(start + i) % n] for i in range(m)}
        return {key: int(key in window) for key in keys}

    async def _rdy_loop(self) -> None:
        rotation = 0
        while True:
            self._rdy_changed = trio.Event()
            keys = sorted(k for k, c in self._connections.items() if not c.closed)
            wanted = [
                (self._connections[key], min(count, self._connections[key].max_rdy_count))
                for key, count in self.rdy_counts(keys, rotation).items()
            ]
            # Lower before raising, so the RDY given out never sums to more
            # than max_in_flight, not even while the window moves.
            for conn, count in sorted(wanted, key=lambda pair: pair[1] - pair[0].rdy_count):
                if conn.rdy_count != count:
                    with contextlib.suppress(ConnectionClosed):
                        await conn.rdy(count)
            if len(keys) > self.config.max_in_flight:
                with trio.move_on_after(self.config.rdy_rotate_interval) as scope:
                    await self._rdy_changed.wait()
                if scope.cancelled_caught:
                    rotation += 1
            else:
                await self._rdy_changed.wait()

    # -- messages ---------------------------------------------------------------------------

    def _dispatch(self, conn: Connection, put: Callable[[Message], None]) -> None:
        """Have ``conn``'s reader hand every message straight to ``put``.

        The reader calls it for each message of a read without a checkpoint
        or a channel in between; RDY bounds what is queued.
        """
        counts = self._counts

        def sink(msg: Message) -> None:
            counts["received"] += 1
            put(msg)

        conn.deliver_to(sink)
        while True:  # any that arrived before the sink was set
            try:
                sink(conn.messages.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    def _ready_sink(self, msg: Message) -> None:
        self._ready.append(msg)
        self._ready_changed.set()

    def _take_ready(self, conn: Connection) -> list[Message]:
        """Remove what ``conn`` delivered that the loop has not finished.

        That is the messages queued and the one the loop holds if it is
        unanswered: they go back to the node.
        """
        mine = [m for m in self._ready if m.connection is conn]
        if mine:
            self._ready = collections.deque(m for m in self._ready if m.connection is not conn)
        current = self._current
        if current is not None and current.connection is conn and not current.responded:
            self._current = None
            mine.insert(0, current)
        return mine

    def _gives_up(self, msg: Message) -> bool:
        """Whether ``msg`` is past ``max_attempts``; if so, say so and count it.

        The caller finishes it, as nsqd's clients do, so it is not redelivered.
        """
        attempts = self.config.max_attempts
        if not attempts or msg.attempts <= attempts:
            return False
        log.warning(
            "giving up on message %s of %s after %d attempts",
            msg.id.decode(), self.topic, msg.attempts,
        )  # fmt: skip
        self._counts["given_up"] += 1
        return True

    async def _handle(self, msg: Message) -> None:
        try:
            if self._gives_up(msg):
                await _answer(msg.fin())
                return
            try:
                await self._handler(msg)
            except Exception:
                if msg.responded:
                    log.exception("handler failed on message %s", msg.id.decode())
                    return
                delay = self.config.requeue_delay_for(msg.attempts)
                log.exception(
                    "handler failed on message %s (attempt %d); requeued in %gs",
                    msg.id.decode(), msg.attempts, delay,
                )  # fmt: skip
                self._counts["requeued"] += 1
                await _answer(msg.req(delay))
                return
            if not msg.responded:
                self._counts["finished"] += 1
                # Queued without a checkpoint: a run of quick handlers sends
                # its FINs in one write. (try, not contextlib.suppress: three
                # calls fewer per message.)
                try:  # noqa: SIM105
                    msg.fin_nowait()
                except (ConnectionClosed, LocalProtocolError):
                    pass  # gone: the node redelivers after msg_timeout
        finally:
            if not msg.responded and not msg.connection.closed:
                # Stopping: hand it back now rather than after msg_timeout,
                # with RDY 0 first so the node does not send it straight back.
                with trio.CancelScope(shield=True), trio.move_on_after(_REQUEUE_ON_STOP_TIMEOUT):
                    if msg.connection.rdy_count:
                        with contextlib.suppress(ConnectionClosed):
                            await msg.connection.rdy(0)
                    await _answer(msg.req(0.0))

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Message:
        """The next message; finishes the previous one if it was not answered.

        Messages a read brought are taken without a schedule point each
        (a cancellation point only), so the previous messages' FINs queue up
        and leave in one write when the loop next waits for the node;
        RDY bounds such a run to ``max_in_flight`` messages.

        Raises:
            StopAsyncIteration: the consumer has stopped.
        """
        if not self._iterating:
            raise TypeError("a consumer built with a handler is not iterable")
        current, self._current = self._current, None
        if current is not None and not current.responded:
            self._counts["finished"] += 1
            try:
                current.fin_nowait()
            except ConnectionClosed as exc:
                log.debug("could not answer a message: %s", exc)
        while True:
            if self._ready:
                await trio.lowlevel.checkpoint_if_cancelled()
                msg = self._ready.popleft()
                if self._gives_up(msg):
                    with contextlib.suppress(ConnectionClosed):
                        msg.fin_nowait()
                    continue
                self._current = msg
                return msg
            if self._ended:
                raise StopAsyncIteration
            self._ready_changed = trio.Event()
            await self._ready_changed.wait()


async def _no_handler(msg: Message) -> None:
    """The handler of an iterating consumer, which never calls it."""
    raise LocalProtocolError("an iterating consumer has no handler")  # pragma: no cover


async def _close_wait(conn: Connection) -> None:
    """``CLS``; once answered, every message the node sent has been read."""
    try:
        await conn.cls()
    except (ConnectionClosed, NSQError, RemoteProtocolError) as exc:
        log.debug("CLS on %s: %s", conn.address, exc)


async def _hand_back(conn: Connection, queued: list[Message]) -> None:
    """Stop deliveries on ``conn`` and requeue what arrived but was never handled.

    ``queued`` are messages taken from ``conn`` that no handler started.
    """
    with contextlib.suppress(ConnectionClosed):
        await conn.rdy(0)
    for msg in queued:
        await _answer(msg.req(0.0))
    while True:
        try:
            msg = conn.messages.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return
        await _answer(msg.req(0.0))


async def _answer(command: Awaitable[None]) -> None:
    """Send FIN or REQ; a gone connection means the node will redeliver anyway."""
    try:
        await command
    except (ConnectionClosed, LocalProtocolError) as exc:
        log.debug("could not answer a message: %s", exc)


@contextlib.asynccontextmanager
async def open_consumer(
    topic: str,
    channel: str,
    *,
    nodes: str | Sequence[str],
    config: ConsumerConfig | None = None,
) -> AsyncIterator[Consumer]:
    """Start a consumer and iterate over its messages.

    ``async for msg in consumer`` yields each message; answer it with
    ``await msg.fin()`` or ``await msg.req(delay)``, or leave it and it is
    finished when the loop asks for the next one. A message still unanswered
    when the block exits is requeued.

    Args:
        topic: the topic.
        channel: the channel.
        nodes: HTTP address of one node, or several.
        config: discovery, flow control and retries; ``max_in_flight``
            messages are prefetched.

    Raises:
        NoNodesAvailable: no node answered the first lookup.
        ValueError: a bad topic or channel name.
    """
    consumer = Consumer(topic, channel, None, nodes=nodes, config=config)
    async with open_service_nursery() as nursery:
        await nursery.start(consumer.run)
        try:
            yield consumer
        finally:
            consumer.stop()
