"""A producer that knows the cluster: publish anywhere, fail over on death.

`open_producer` is given one or more nodes' HTTP addresses. With
``discover=True`` (the default) it reads ``/members`` from any of them and
publishes over every live member, in the order a `Strategy` gives; with
``discover=False`` it publishes to exactly the nodes it was given.

Theory of operation:
    Each publish asks the strategy to order the live endpoints, preferred
    first. Endpoints that failed recently (a refused connection, a dropped
    connection, ``E_PUB_FAILED``) are moved to the end of that order for a
    back-off that doubles per failure (`ProducerConfig.failure_backoff` up to
    `ProducerConfig.max_failure_backoff`) and resets on success, so a dead
    node costs one failed attempt, not one per message. The publish then
    tries each endpoint in turn until one answers ``OK``: a node killed with
    a publish in flight makes that publish go to the next node, so delivery
    is at least once (the dead node may have stored it too). Only when every
    endpoint failed, and a fresh ``/members`` found none better, does the
    caller see `NoNodesAvailable`.

    Connections are opened on first use, one per node, and shared by every
    publish to that node (commands are pipelined, see `Connection`).
    Membership is re-read every `ProducerConfig.refresh_interval` and at
    once after a failure; connections to nodes that left the live set are
    closed.

    A node without membership (``/members`` answers 404) counts as a
    cluster of one: the producer publishes to it, using ``/info`` for its
    TCP port.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING

import trio

from shoal.client._nursery import open_service_nursery
from shoal.client.connection import Connection, ConnectionConfig, check_topic, open_connection
from shoal.client.discovery import Endpoint, fetch_endpoint, fetch_members
from shoal.client.errors import HTTPStatusError, NodeUnavailable, NoNodesAvailable, NSQError
from shoal.client.strategies import Strategy, make_strategy
from shoal.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

__all__ = ["Producer", "ProducerConfig", "ProducerStatistics", "open_producer"]

log = logging.getLogger("shoal.client")

#: Error codes that say "this node cannot take it now", not "this is wrong".
_NODE_FAILURES = frozenset({"E_PUB_FAILED", "E_MPUB_FAILED", "E_DPUB_FAILED"})


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProducerConfig:
    """How a producer finds nodes and treats failures.

    Attributes:
        discover: publish over every live member (True) or only the given
            nodes (False).
        refresh_interval: seconds between ``/members`` reads; a failure
            triggers one at once. Shorter notices joins sooner at the cost
            of one HTTP request per interval.
        request_timeout: seconds one HTTP request may take.
        failure_backoff: seconds a node that failed is tried last; doubles on
            each further failure.
        max_failure_backoff: the cap of that doubling.
        connection: the TCP connections' identity and limits.
    """

    discover: bool = True
    refresh_interval: float = 5.0
    request_timeout: float = 5.0
    failure_backoff: float = 1.0
    max_failure_backoff: float = 30.0
    connection: ConnectionConfig = dataclasses.field(default_factory=ConnectionConfig)

    def __post_init__(self) -> None:
        for name in ("refresh_interval", "request_timeout", "failure_backoff"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive")
        if self.max_failure_backoff < self.failure_backoff:
            raise ConfigError("max_failure_backoff must be at least failure_backoff")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProducerStatistics:
    """A snapshot of a producer's counters.

    Attributes:
        nodes: live endpoints known.
        connections: open connections.
        published: messages acknowledged (an MPUB counts each message).
        failovers: attempts that failed and moved to another node.
        refreshes: successful reads of the member list.
    """

    nodes: int
    connections: int
    published: int
    failovers: int
    refreshes: int


class Producer:
    """Publishes over the cluster; build it with `open_producer`.

    Args:
        nodes: HTTP addresses (``host:port``) of one or more nodes.
        strategy: how to order nodes for each publish.
        config: discovery and failure handling.
    """

    def __init__(self, nodes: Sequence[str], strategy: Strategy, config: ProducerConfig) -> None:
        if not nodes:
            raise ConfigError("a producer needs at least one node address")
        self.seeds = list(dict.fromkeys(nodes))
        self.strategy = strategy
        self.config = config
        self._nursery: trio.Nursery | None = None
        self._endpoints: list[Endpoint] = []
        self._pinned: dict[str, Endpoint] = {}  # seed -> endpoint, discover=False
        self._connections: dict[str, Connection] = {}
        self._locks: dict[str, trio.Lock] = {}
        self._down_until: dict[str, float] = {}
        self._backoff: dict[str, float] = {}
        self._refresh_now = trio.Event()
        self._published = 0
        self._failovers = 0
        self._refreshes = 0

    @property
    def endpoints(self) -> list[Endpoint]:
        """The live endpoints, sorted by name."""
        return list(self._endpoints)

    def statistics(self) -> ProducerStatistics:
        """Return a snapshot of the counters."""
        return ProducerStatistics(
            nodes=len(self._endpoints),
            connections=sum(not c.closed for c in self._connections.values()),
            published=self._published,
            failovers=self._failovers,
            refreshes=self._refreshes,
        )

    # -- discovery ---------------------------------------------------------------

    async def refresh(self) -> None:
        """Re-read the live nodes now.

        Raises:
            NoNodesAvailable: no node answered; the known endpoints are kept.
        """
        if self.config.discover:
            endpoints = await self._discover()
        else:
            endpoints = await self._resolve_seeds()
        endpoints.sort(key=lambda e: e.name)
        gone = {e.tcp_address for e in self._endpoints} - {e.tcp_address for e in endpoints}
        self._endpoints = endpoints
        self._refreshes += 1
        for address in gone:
            conn = self._connections.get(address)
            if conn is not None:
                log.info("%s left the live set; closing its connection", address)
                await conn.aclose()

    async def _discover(self) -> list[Endpoint]:
        sources = [e.http_address for e in self._endpoints] + self.seeds
        errors: list[str] = []
        for address in dict.fromkeys(sources):
            try:
                with trio.fail_after(self.config.request_timeout):
                    try:
                        members = await fetch_members(address)
                    except HTTPStatusError as exc:
                        if exc.status != 404:
                            raise
                        # A node without membership: a cluster of one.
                        return [await fetch_endpoint(address)]
            except (NodeUnavailable, HTTPStatusError) as exc:
                errors.append(str(exc))
                continue
            except trio.TooSlowError:
                errors.append(f"{address} did not answer in {self.config.request_timeout:g}s")
                continue
            alive = [m.endpoint for m in members if m.status == "alive"]
            if not alive:
                alive = [m.endpoint for m in members if m.status == "suspect"]
            if alive:
                return alive
            errors.append(f"{address} lists no live member")
        raise NoNodesAvailable("; ".join(errors) or "no node to ask")

    async def _resolve_seeds(self) -> list[Endpoint]:
        errors: list[str] = []
        for address in self.seeds:
            if address in self._pinned:
                continue
            try:
                with trio.fail_after(self.config.request_timeout):
                    self._pinned[address] = await fetch_endpoint(address)
            except (NodeUnavailable, HTTPStatusError) as exc:
                errors.append(str(exc))
            except trio.TooSlowError:
                errors.append(f"{address} did not answer in {self.config.request_timeout:g}s")
        if not self._pinned:
            raise NoNodesAvailable("; ".join(errors))
        return list(self._pinned.values())

    async def _refresh_loop(self) -> None:
        while True:
            with trio.move_on_after(self.config.refresh_interval):
                await self._refresh_now.wait()
            self._refresh_now = trio.Event()
            try:
                await self.refresh()
            except NoNodesAvailable as exc:
                log.warning("cannot refresh the member list: %s", exc)

    # -- failure bookkeeping --------------------------------------------------------

    def _failed(self, endpoint: Endpoint, error: Exception) -> None:
        key = endpoint.tcp_address
        previous = self._backoff.get(key)
        backoff = self.config.failure_backoff if previous is None else previous * 2
        backoff = min(backoff, self.config.max_failure_backoff)
        self._backoff[key] = backoff
        self._down_until[key] = trio.current_time() + backoff
        self._failovers += 1
        self._refresh_now.set()
        log.warning("publish to %s failed (%s); trying another node", key, error)

    def _succeeded(self, endpoint: Endpoint) -> None:
        key = endpoint.tcp_address
        if key in self._backoff:
            del self._backoff[key]
            self._down_until.pop(key, None)

    def candidates(self, key: bytes) -> list[Endpoint]:
        """Every live endpoint in the order a publish keyed by ``key`` tries them."""
        ordered = self.strategy.order(self._endpoints, key)
        if not self._down_until:
            return ordered  # the usual case: every node is up
        now = trio.current_time()
        up = [e for e in ordered if self._down_until.get(e.tcp_address, 0.0) <= now]
        down = [e for e in ordered if self._down_until.get(e.tcp_address, 0.0) > now]
        return up + down

    # -- connections ------------------------------------------------------------------

    async def _connection(self, endpoint: Endpoint) -> Connection:
        key = endpoint.tcp_address
        conn = self._connections.get(key)
        if conn is not None and not conn.closed:
            return conn
        lock = self._locks.setdefault(key, trio.Lock())
        async with lock:
            conn = self._connections.get(key)
            if conn is not None and not conn.closed:
                return conn
            if self._nursery is None:
                raise RuntimeError("use the producer inside `async with open_producer(...)`")
            result: Connection = await self._nursery.start(self._hold_connection, endpoint)
            return result

    async def _hold_connection(
        self, endpoint: Endpoint, *, task_status: trio.TaskStatus[Connection]
    ) -> None:
        key = endpoint.tcp_address
        async with open_connection(key, self.config.connection) as conn:
            self._connections[key] = conn
            task_status.started(conn)
            try:
                await conn.wait_closed()
            finally:
                if self._connections.get(key) is conn:
                    del self._connections[key]

    # -- publishing ---------------------------------------------------------------------

    async def publish(
        self, topic: str, body: bytes, *, key: bytes | str | None = None, defer: float = 0.0
    ) -> Endpoint:
        """Publish one message (``PUB``, or ``DPUB`` when ``defer`` > 0).

        Args:
            topic: the topic.
            body: the message body (not empty).
            key: what hashing strategies key on; defaults to the topic, so a
                topic stays on one node under ``consistent-hash``.
            defer: seconds before the message becomes deliverable.

        Returns:
            The node that acknowledged it.

        Raises:
            ValueError: ``topic`` is not a valid topic name.
            NSQError: a node refused the message itself (``E_BAD_MESSAGE``
                for an empty or oversize body); no other node is tried.
            NoNodesAvailable: every node failed.
        """
        if defer > 0:
            return await self._send(topic, key, 1, lambda c: c.dpub(topic, body, defer))
        if self._down_until:
            return await self._send(topic, key, 1, lambda c: c.pub(topic, body))
        # The usual case written out (every node up, the first choice's
        # connection open): a publish is one call deep, not three.
        hash_key = topic if key is None else key
        hash_bytes = hash_key if isinstance(hash_key, bytes) else hash_key.encode()
        ordered = self.strategy.order(self._endpoints, hash_bytes)
        if ordered:
            endpoint = ordered[0]
            conn = self._connections.get(endpoint.tcp_address)
            if conn is not None and not conn.closed:
                try:
                    await conn.pub(topic, body)
                except NSQError as exc:
                    if exc.code not in _NODE_FAILURES:
                        raise
                    error: Exception = exc
                except NodeUnavailable as exc:
                    error = exc
                else:
                    self._published += 1
                    return endpoint
                self._failed(endpoint, error)
                tried = {endpoint.tcp_address}
                errors = [f"{endpoint.tcp_address}: {error}"]
                return await self._send(
                    topic, key, 1, lambda c: c.pub(topic, body), tried=tried, errors=errors
                )
        return await self._send(topic, key, 1, lambda c: c.pub(topic, body), ordered=ordered)

    async def mpublish(
        self, topic: str, bodies: Sequence[bytes], *, key: bytes | str | None = None
    ) -> Endpoint:
        """Publish a batch atomically to one node (``MPUB``); raises as `publish`."""
        batch = list(bodies)
        if not batch:
            raise ValueError("MPUB needs at least one message")
        return await self._send(topic, key, len(batch), lambda c: c.mpub(topic, batch))

    async def _send(
        self,
        topic: str,
        key: bytes | str | None,
        count: int,
        op: Callable[[Connection], Awaitable[None]],
        *,
        tried: set[str] | None = None,
        errors: list[str] | None = None,
        ordered: list[Endpoint] | None = None,
    ) -> Endpoint:
        """Try ``op`` on each candidate in turn until one succeeds.

        ``tried`` endpoints (with their ``errors``) are skipped; ``ordered``
        is the strategy's order for the first round when the caller already
        asked for it (a round-robin must not turn twice for one publish).
        """
        check_topic(topic)
        hash_key = topic if key is None else key
        hash_bytes = hash_key.encode() if isinstance(hash_key, str) else hash_key
        errors = [] if errors is None else errors
        tried = set() if tried is None else tried
        # Two rounds: the endpoints known now, then those a fresh member list
        # adds (a node that replaced the dead ones).
        for round_ in range(2):
            if round_ == 1:
                with contextlib.suppress(NoNodesAvailable):
                    await self.refresh()
            if round_ == 0 and ordered is not None and not self._down_until:
                candidates = ordered
            else:
                candidates = self.candidates(hash_bytes)
            for endpoint in candidates:
                address = endpoint.tcp_address
                if address in tried:
                    continue
                tried.add(address)
                try:
                    conn = self._connections.get(address)  # held open: the usual case
                    if conn is None or conn.closed:
                        conn = await self._connection(endpoint)
                    await op(conn)
                except NodeUnavailable as exc:
                    self._failed(endpoint, exc)
                    errors.append(str(exc))
                    continue
                except NSQError as exc:
                    if exc.code not in _NODE_FAILURES:
                        raise
                    self._failed(endpoint, exc)
                    errors.append(f"{address}: {exc}")
                    continue
                self._succeeded(endpoint)
                self._published += count
                return endpoint
        raise NoNodesAvailable("; ".join(errors) or "no live node known")


@contextlib.asynccontextmanager
async def open_producer(
    nodes: str | Sequence[str],
    *,
    strategy: str | Strategy = "round-robin",
    weights: Mapping[str, float] | None = None,
    config: ProducerConfig | None = None,
) -> AsyncIterator[Producer]:
    """Start a producer over the cluster the given nodes belong to.

    Args:
        nodes: HTTP address (``host:port``) of one node, or several.
        strategy: a name from `STRATEGY_NAMES` or a `Strategy`.
        weights: per-node weights for the ``weighted`` strategy, keyed by
            node name or TCP address.
        config: discovery and failure handling.

    Yields:
        The producer, its member list read.

    Raises:
        NoNodesAvailable: no given node answered.
        ConfigError: a bad strategy name or weights.

    Resource handling:
        Every connection is closed when the block exits.
    """
    seeds = [nodes] if isinstance(nodes, str) else list(nodes)
    if isinstance(strategy, str):
        strategy = make_strategy(strategy, weights=weights)
    producer = Producer(seeds, strategy, config or ProducerConfig())
    await producer.refresh()
    async with open_service_nursery() as nursery:
        producer._nursery = nursery
        nursery.start_soon(producer._refresh_loop)
        try:
            yield producer
        finally:
            producer._nursery = None
            nursery.cancel_scope.cancel()
