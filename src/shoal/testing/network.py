"""An in-memory network in virtual time, and a cluster of membership engines on it.

`MemoryNetwork` carries datagrams and streams between sans-IO endpoints (any
object with `Membership`'s driving methods, see `Endpoint`) on one virtual
clock, with a heap of timed deliveries and wake-ups. Nothing sleeps and
nothing touches a socket: a run is a pure function of its seed.

Faults:

* datagrams are lost with probability ``loss``, duplicated with probability
  ``duplicate`` and delayed by a uniform draw from ``latency`` (so reordering
  happens whenever two delays cross);
* streams are reliable but delayed; a stream to an unreachable or absent
  address fails (the opener's ``stream_failed`` is called);
* `MemoryNetwork.partition` cuts the network into groups that cannot reach
  each other, `MemoryNetwork.heal` joins it again;
* a ``route_hook`` can take over the fate of any transmission: it returns the
  delays of the copies to deliver (empty: drop), or None for the default.

All randomness comes from the ``random.Random`` given to the network, so a
seed reproduces a run exactly. `Cluster` builds N `Membership` engines on a
network for tests and simulations (``crash``, ``restart``, ``partition``...).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Literal, Protocol

from shoal.membership import (
    Address,
    Event,
    Membership,
    MembershipConfig,
    MembershipDelegate,
    MemberState,
)
from shoal.membership.codec import encode_push_pull, encode_table
from shoal.membership.messages import PushPullEntry

__all__ = [
    "Cluster",
    "Endpoint",
    "MemoryNetwork",
    "NetworkStatistics",
    "RouteHook",
    "Transmission",
]


class Endpoint(Protocol):
    """What `MemoryNetwork` drives: `Membership`'s sans-IO surface."""

    def receive_packet(self, data: bytes, src: Address, now: float) -> None:
        """Take a datagram."""
        ...

    def receive_stream(self, data: bytes, src: Address, now: float) -> bytes | None:
        """Answer a stream request."""
        ...

    def receive_stream_reply(self, data: bytes, src: Address, now: float) -> None:
        """Take the reply to a stream request this endpoint made."""
        ...

    def stream_failed(self, dst: Address, now: float) -> None:
        """Learn that a stream request this endpoint made failed."""
        ...

    def tick(self, now: float) -> None:
        """Fire due timers."""
        ...

    def next_deadline(self) -> float:
        """Say when to tick next."""
        ...

    def packets_to_send(self) -> list[tuple[Address, bytes]]:
        """Hand over outgoing datagrams."""
        ...

    def streams_to_open(self) -> list[tuple[Address, bytes]]:
        """Hand over outgoing stream requests."""
        ...

    def events(self) -> Sequence[object]:
        """Hand over events."""
        ...


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Transmission:
    """One thing put on the wire, as a route hook sees it.

    Attributes:
        kind: ``"packet"`` (a datagram), ``"stream"`` (a stream request) or
            ``"reply"`` (the answer to a stream request).
        source: sender address.
        destination: receiver address.
        data: the bytes.
        sent_at: virtual time of sending.
    """

    kind: Literal["packet", "stream", "reply"]
    source: Address
    destination: Address
    data: bytes
    sent_at: float


#: Decides a transmission's fate: delays of the copies to deliver (empty to
#: drop; only the first counts for streams), or None for the default route.
RouteHook = Callable[[Transmission, random.Random], Sequence[float] | None]


@dataclasses.dataclass(slots=True)
class NetworkStatistics:
    """Counters of a `MemoryNetwork`."""

    packets_sent: int = 0
    packets_delivered: int = 0
    packets_dropped: int = 0
    packets_duplicated: int = 0
    streams_opened: int = 0
    streams_answered: int = 0
    streams_failed: int = 0


class MemoryNetwork:
    """Delivers datagrams and streams between endpoints in virtual time.

    Args:
        rng: the only source of randomness (loss, delay, duplication).
        latency: (min, max) one-way delay in seconds, drawn uniformly.
        loss: probability that a datagram is lost.
        duplicate: probability that a datagram is delivered twice.
        stream_timeout: how long after sending a stream request an opener
            learns that it went nowhere (unreachable destination).
        route_hook: optional override of the route of any transmission.
        now: the virtual time to start at.
        record_events: keep every endpoint event in `event_log`.
        max_steps: bound on the deliveries and wake-ups of one `run_until`
            call; exceeding it raises RuntimeError (a livelocked endpoint).

    The attributes ``latency``, ``loss``, ``duplicate`` and ``route_hook`` may
    be changed between runs.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        latency: tuple[float, float] = (0.001, 0.005),
        loss: float = 0.0,
        duplicate: float = 0.0,
        stream_timeout: float = 1.0,
        route_hook: RouteHook | None = None,
        now: float = 0.0,
        record_events: bool = True,
        max_steps: int = 50_000_000,
    ) -> None:
        self.rng = rng
        self.latency = latency
        self.loss = loss
        self.duplicate = duplicate
        self.stream_timeout = stream_timeout
        self.route_hook = route_hook
        self.now = now
        self.record_events = record_events
        self.max_steps = max_steps
        self.event_log: list[tuple[float, Address, object]] = []
        self.stats = NetworkStatistics()
        self._endpoints: dict[Address, Endpoint] = {}
        self._wake: dict[Address, float] = {}
        self._groups: dict[Address, int] | None = None
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0

    # ------------------------------------------------------------------ topology

    def attach(self, address: Address, endpoint: Endpoint) -> None:
        """Connect ``endpoint`` at ``address`` (replacing whatever was there)."""
        self._endpoints[address] = endpoint
        self._wake.pop(address, None)
        self.flush(address)

    def detach(self, address: Address) -> Endpoint | None:
        """Disconnect the endpoint at ``address``, as a crash would; return it."""
        self._wake.pop(address, None)
        return self._endpoints.pop(address, None)

    def endpoint(self, address: Address) -> Endpoint | None:
        """Return the endpoint attached at ``address``, if any."""
        return self._endpoints.get(address)

    def partition(self, groups: Iterable[Iterable[Address]]) -> None:
        """Split the network: addresses in different groups cannot reach each other.

        Addresses named in no group form one more group together.
        """
        mapping: dict[Address, int] = {}
        for index, group in enumerate(groups, start=1):
            for address in group:
                mapping[address] = index
        self._groups = mapping

    def heal(self) -> None:
        """Undo `partition`: everyone reaches everyone again."""
        self._groups = None

    def can_reach(self, source: Address, destination: Address) -> bool:
        """Say whether the partition (if any) lets ``source`` reach ``destination``."""
        groups = self._groups
        if groups is None:
            return True
        return groups.get(source, 0) == groups.get(destination, 0)

    # ------------------------------------------------------------------ running

    def flush(self, address: Address) -> None:
        """Collect the endpoint's outputs and reschedule its wake-up.

        The network does this after every call it makes; call it yourself after
        calling an endpoint directly (``join``, ``leave``, ``broadcast_app``).
        """
        endpoint = self._endpoints.get(address)
        if endpoint is None:
            return
        now = self.now
        for destination, data in endpoint.packets_to_send():
            self._send_packet(address, destination, data)
        for destination, data in endpoint.streams_to_open():
            self._open_stream(address, endpoint, destination, data)
        events = endpoint.events()
        if self.record_events:
            self.event_log.extend((now, address, event) for event in events)
        deadline = max(endpoint.next_deadline(), now)
        if self._wake.get(address) != deadline:
            self._wake[address] = deadline
            self._push(deadline, partial(self._wake_up, address, endpoint, deadline))

    def run_until(self, deadline: float) -> None:
        """Process everything due up to ``deadline``, then set the clock to it."""
        heap = self._heap
        for _ in range(self.max_steps):
            if not heap or heap[0][0] > deadline:
                break
            at, _, action = heapq.heappop(heap)
            self.now = max(self.now, at)
            action()
        else:
            raise RuntimeError(f"more than {self.max_steps} steps before t={deadline}")
        self.now = max(self.now, deadline)

    def run_for(self, duration: float) -> None:
        """Run for ``duration`` virtual seconds."""
        self.run_until(self.now + duration)

    def run_until_true(
        self, predicate: Callable[[], bool], *, timeout: float, poll: float = 0.05
    ) -> float | None:
        """Run until ``predicate()`` holds, checking every ``poll`` seconds.

        Returns:
            The virtual time at which it first held, or None after ``timeout``.
        """
        if poll <= 0:
            raise ValueError("poll must be positive")
        end = self.now + timeout
        for _ in range(math.ceil(timeout / poll) + 2):
            if predicate():
                return self.now
            if self.now >= end:
                return None
            self.run_until(min(end, self.now + poll))
        return self.now if predicate() else None

    # ------------------------------------------------------------------ internals

    def _push(self, at: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, action))

    def _delays(self, transmission: Transmission) -> Sequence[float]:
        if not self.can_reach(transmission.source, transmission.destination):
            return ()
        if self.route_hook is not None:
            routed = self.route_hook(transmission, self.rng)
            if routed is not None:
                return routed
        rng = self.rng
        low, high = self.latency
        if transmission.kind != "packet":
            return (rng.uniform(low, high),)
        if self.loss and rng.random() < self.loss:
            return ()
        if self.duplicate and rng.random() < self.duplicate:
            return (rng.uniform(low, high), rng.uniform(low, high))
        return (rng.uniform(low, high),)

    def _send_packet(self, source: Address, destination: Address, data: bytes) -> None:
        self.stats.packets_sent += 1
        delays = self._delays(Transmission(
            kind="packet", source=source, destination=destination, data=data, sent_at=self.now
        ))  # fmt: skip
        if not delays:
            self.stats.packets_dropped += 1
        self.stats.packets_duplicated += max(0, len(delays) - 1)
        for delay in delays:
            self._push(self.now + delay, partial(self._deliver_packet, source, destination, data))

    def _open_stream(
        self, source: Address, opener: Endpoint, destination: Address, data: bytes
    ) -> None:
        self.stats.streams_opened += 1
        delays = self._delays(Transmission(
            kind="stream", source=source, destination=destination, data=data, sent_at=self.now
        ))  # fmt: skip
        if not delays:
            fail = partial(self._fail_stream, source, opener, destination)
            self._push(self.now + self.stream_timeout, fail)
            return
        serve = partial(self._serve_stream, source, opener, destination, data)
        self._push(self.now + delays[0], serve)

    def _wake_up(self, address: Address, endpoint: Endpoint, deadline: float) -> None:
        if self._endpoints.get(address) is not endpoint or self._wake.get(address) != deadline:
            return  # superseded by a later flush, or the endpoint is gone
        del self._wake[address]
        endpoint.tick(self.now)
        self.flush(address)

    def _deliver_packet(self, source: Address, destination: Address, data: bytes) -> None:
        target = self._endpoints.get(destination)
        if target is None:
            self.stats.packets_dropped += 1
            return
        self.stats.packets_delivered += 1
        target.receive_packet(data, source, self.now)
        self.flush(destination)

    def _deliver_reply(
        self, source: Address, opener: Endpoint, replier: Address, data: bytes
    ) -> None:
        if self._endpoints.get(source) is opener:
            opener.receive_stream_reply(data, replier, self.now)
            self.flush(source)

    def _fail_stream(self, source: Address, opener: Endpoint, destination: Address) -> None:
        self.stats.streams_failed += 1
        if self._endpoints.get(source) is opener:
            opener.stream_failed(destination, self.now)
            self.flush(source)

    def _serve_stream(
        self, source: Address, opener: Endpoint, destination: Address, data: bytes
    ) -> None:
        target = self._endpoints.get(destination)
        if target is None:
            # Connection refused: the opener learns at once.
            self._push(self.now, partial(self._fail_stream, source, opener, destination))
            return
        reply = target.receive_stream(data, source, self.now)
        self.flush(destination)
        self.stats.streams_answered += 1
        if not reply:
            return
        delays = self._delays(Transmission(
            kind="reply", source=destination, destination=source, data=reply, sent_at=self.now
        ))  # fmt: skip
        if not delays:
            fail = partial(self._fail_stream, source, opener, destination)
            self._push(self.now + self.stream_timeout, fail)
            return
        deliver = partial(self._deliver_reply, source, opener, destination, reply)
        self._push(self.now + delays[0], deliver)


class Cluster:
    """N membership engines on a `MemoryNetwork`, for tests and simulations.

    Members are named ``node-0`` .. ``node-{n-1}`` and live at
    ``("10.0.<i // 256>.<i % 256>", 4160)``. By default every member but
    ``node-0`` joins through ``node-0`` at the start, and every restarted member
    joins through it again.

    Args:
        n: number of members.
        config: membership configuration of every engine.
        seed: seeds every random draw (network and engines).
        latency: one-way datagram and stream delay range.
        loss: datagram loss probability.
        duplicate: datagram duplication probability.
        delegate_factory: builds each member's application delegate from its
            name (called again on restart).
        bootstrap: how the cluster forms. ``"join"``: everyone but ``node-0``
            joins through ``node-0`` at time 0, as real nodes would.
            ``"preformed"``: every engine starts out knowing every member alive
            (it is handed the full table as a push-pull reply), which skips the
            O(n² log n) gossip of a mass join in large simulations; no seeds
            are configured then. ``"none"``: everyone starts alone.
        record_events: keep every event (see `events`).
    """

    def __init__(
        self,
        n: int,
        config: MembershipConfig,
        seed: int,
        *,
        latency: tuple[float, float] = (0.001, 0.005),
        loss: float = 0.0,
        duplicate: float = 0.0,
        delegate_factory: Callable[[str], MembershipDelegate] | None = None,
        bootstrap: Literal["join", "preformed", "none"] = "join",
        record_events: bool = True,
    ) -> None:
        self.config = config
        self.seed = seed
        self.rng = random.Random(seed)
        self.network = MemoryNetwork(
            random.Random(self.rng.getrandbits(64)),
            latency=latency,
            loss=loss,
            duplicate=duplicate,
            stream_timeout=config.stream_timeout,
            record_events=record_events,
        )
        self.names = [f"node-{i}" for i in range(n)]
        self._addresses = {
            name: (f"10.0.{i // 256}.{i % 256}", 4160) for i, name in enumerate(self.names)
        }
        self._delegate_factory = delegate_factory
        self.engines: dict[str, Membership] = {}
        self.delegates: dict[str, MembershipDelegate] = {}
        self.seeds: list[Address] = [self._addresses[self.names[0]]] if n else []
        for name in self.names:
            self._start(name, incarnation=1)
        if bootstrap == "join":
            for name in self.names[1:]:
                self.join(name)
        elif bootstrap == "preformed":
            self._preform()

    # ------------------------------------------------------------------ access

    @property
    def now(self) -> float:
        """The virtual time."""
        return self.network.now

    @property
    def running(self) -> list[str]:
        """Names of the members currently attached (not crashed)."""
        return [name for name in self.names if name in self.engines]

    def address_of(self, name: str) -> Address:
        """Return the address of member ``name``."""
        return self._addresses[name]

    def engine(self, name: str) -> Membership:
        """Return the running engine of member ``name`` (KeyError if crashed)."""
        return self.engines[name]

    def view(self, name: str) -> dict[str, MemberState]:
        """Return how member ``name`` sees everyone: name -> state."""
        return {m.name: m.state for m in self.engines[name].members()}

    def state_of(self, target: str) -> dict[str, MemberState | None]:
        """Return how every running member sees ``target`` (None: unknown)."""
        out: dict[str, MemberState | None] = {}
        for name, engine in self.engines.items():
            if name != target:
                member = engine.member(target)
                out[name] = None if member is None else member.state
        return out

    def converged(self, names: Iterable[str] | None = None) -> bool:
        """Say whether every member in ``names`` sees exactly ``names`` as alive.

        ``names`` defaults to the running members.
        """
        expected = set(self.running if names is None else names)
        for name in expected:
            engine = self.engines.get(name)
            if engine is None:
                return False
            alive = {m.name for m in engine.members() if m.state is MemberState.ALIVE}
            if alive != expected:
                return False
        return True

    def events(self, name: str) -> list[tuple[float, Event]]:
        """Return the events recorded at member ``name``'s address, with their times."""
        address = self._addresses[name]
        return [
            (at, event)
            for at, where, event in self.network.event_log
            if where == address and isinstance(event, Event)
        ]

    # ------------------------------------------------------------------ running

    def run_until(self, deadline: float) -> None:
        """Run the network until virtual time ``deadline``."""
        self.network.run_until(deadline)

    def run_for(self, duration: float) -> None:
        """Run the network for ``duration`` virtual seconds."""
        self.network.run_for(duration)

    def run_until_true(
        self, predicate: Callable[[], bool], *, timeout: float, poll: float = 0.05
    ) -> float | None:
        """Run until ``predicate()`` holds; see `MemoryNetwork.run_until_true`."""
        return self.network.run_until_true(predicate, timeout=timeout, poll=poll)

    # ------------------------------------------------------------------ faults

    def partition(self, groups: Sequence[Sequence[str]]) -> None:
        """Split the cluster into groups of members that cannot reach each other."""
        self.network.partition([[self._addresses[n] for n in group] for group in groups])

    def heal(self) -> None:
        """End a partition."""
        self.network.heal()

    def crash(self, name: str) -> None:
        """Stop member ``name`` without leaving: it vanishes from the network."""
        self.network.detach(self._addresses[name])
        self.engines.pop(name, None)
        self.delegates.pop(name, None)

    def restart(self, name: str, *, incarnation: int = 1, join: bool = True) -> Membership:
        """Start member ``name`` afresh (all state lost) at the same address.

        Args:
            name: the member.
            incarnation: the incarnation the new engine starts from.
            join: join through the seeds again.

        Returns:
            The new engine.
        """
        self.crash(name)
        engine = self._start(name, incarnation=incarnation)
        if join:
            self.join(name)
        return engine

    def join(self, name: str, seeds: Sequence[Address] | None = None) -> None:
        """Make member ``name`` join through ``seeds`` (default: ``node-0``)."""
        engine = self.engines[name]
        engine.join(self.seeds if seeds is None else seeds, self.network.now)
        self.network.flush(self._addresses[name])

    def leave(self, name: str) -> None:
        """Make member ``name`` leave gracefully (it keeps running)."""
        self.engines[name].leave(self.network.now)
        self.network.flush(self._addresses[name])

    def broadcast_app(self, name: str, key: str, data: bytes) -> None:
        """Queue an application broadcast at member ``name``."""
        self.engines[name].broadcast_app(key, data, self.network.now)
        self.network.flush(self._addresses[name])

    def _preform(self) -> None:
        table = encode_table(
            PushPullEntry(name, self._addresses[name], 1, MemberState.ALIVE, _meta_for(name))
            for name in self.names
        )
        for name, engine in self.engines.items():
            # Attributed to the engine itself, so nothing is re-gossiped.
            reply = encode_push_pull(name, False, True, table, b"")
            address = self._addresses[name]
            engine.receive_stream_reply(reply, address, self.network.now)
            self.network.flush(address)

    def _start(self, name: str, *, incarnation: int) -> Membership:
        delegate = None if self._delegate_factory is None else self._delegate_factory(name)
        engine = Membership(
            self.config,
            name=name,
            address=self._addresses[name],
            meta=_meta_for(name),
            rng=random.Random(self.rng.getrandbits(64)),
            now=self.network.now,
            incarnation=incarnation,
            delegate=delegate,
        )
        self.engines[name] = engine
        if delegate is not None:
            self.delegates[name] = delegate
        self.network.attach(self._addresses[name], engine)
        return engine


def _meta_for(name: str) -> Mapping[str, str]:
    return {"role": "test", "name": name}
