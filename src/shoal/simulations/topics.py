"""The topic registry of every simulated node, gossiped by the real policy.

A real node keeps a `shoal.registry.Registry` and spreads it with
`shoal.registry.RegistryGossip`, driven by the trio shell in
`shoal.cluster.routing`. Every simulated node holds the same two objects and
this module drives the same policy in virtual time, so topic propagation is
measured on the real code:

* *Fast path.* Broadcasts, their names and payloads, merging and gap repair
  are the gossip core's own (`RegistryGossip.send`, `notify_message`); the
  engine carries them.
* *Slow path* (`RegistrySync`). The core says when (`next_interval`,
  ``wake``) and with whom (`take_targets`: joiners, owners with gaps, else
  one random live member) a node exchanges, and what each leg of the
  exchange carries (`open_exchange`, `answer_exchange`, `apply_exchange`,
  `delta_for`); after each round the node collects old tombstones. This
  module only times the legs on the modelled network. Exchanges of one node
  run one after another, each bounded by the membership ``stream_timeout``.

One shortcut, which changes no outcome: when both sides hold equal digests
and no gap (`RegistryGossip.has_gaps` false on both), both deltas are empty,
so the simulator counts the bytes of the two digests and two empty deltas
without decoding them. This keeps the exchange affordable at a thousand
nodes.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import TYPE_CHECKING

from shoal.errors import RemoteProtocolError
from shoal.registry import NodeInfo, Registry, RegistryGossip, encode_delta

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Iterable

    from shoal.membership import Address, Event, Membership
    from shoal.registry import StateImage
    from shoal.simulations.network import Host, Network
    from shoal.simulations.scheduler import Scheduler

__all__ = ["RegistrySync", "SimulatedRegistry"]

#: Bytes of an encoded empty delta (what an exchange between equals carries).
_EMPTY_DELTA = len(encode_delta([]))


class SimulatedRegistry(RegistryGossip):
    """One simulated node's registry and gossip: the real core, built the simulator's way.

    Args:
        name: the member name (the registry's own owner key).
        generation: increases across restarts of the same name.
        host: the producer address announced in the ``info`` entry.
        clock: returns the current virtual time (the delegate hooks get none).
        now: the virtual time of creation.
    """

    def __init__(
        self,
        name: str,
        *,
        generation: int,
        host: str,
        clock: Callable[[], float],
        now: float,
    ) -> None:
        info = NodeInfo(
            broadcast_address=host, hostname=name, tcp_port=4150, http_port=4151, version="sim"
        )
        super().__init__(Registry(name, generation=generation, info=info, now=now), clock=clock)

    def attach_engine(self, engine: Membership) -> None:
        """Broadcast through ``engine`` and take liveness from its view."""
        clock = self.clock

        def broadcast(key: str, data: bytes) -> None:
            engine.broadcast_app(key, data, clock())

        self.attach(broadcast=broadcast, member=engine.member)

    def set_topic(self, topic: str, channels: Iterable[str], now: float) -> None:
        """Record that this node's broker holds ``topic`` and broadcast the entry."""
        self.send(self.registry.set_topic(topic, channels, wall=now, now=now))

    def preload(self, images: Iterable[StateImage]) -> None:
        """Hold every other owner's whole state (the preformed start of a warm cluster).

        The states are shared with every other node's registry until one of
        them changes (`Registry.install`): what merging each owner's whole
        state would leave, without a copy per (node, owner) pair.
        """
        self.registry.install(images)


class _Loop:
    """One node's sync loop: who to sync with next, and whether it is busy."""

    __slots__ = ("busy", "holder", "life", "rng", "token")

    def __init__(self, holder: SimulatedRegistry, rng: random.Random, life: int) -> None:
        self.holder = holder
        self.rng = rng
        self.life = life
        self.busy = False
        self.token = 0


class _Exchange:
    __slots__ = ("address", "done", "initiator", "life", "loop", "sent_digest")

    def __init__(
        self,
        initiator: Host,
        loop: _Loop,
        address: Address,
        sent_digest: dict[str, tuple[int, int]],
    ) -> None:
        self.initiator = initiator
        self.loop = loop
        self.life = initiator.life
        self.address = address
        self.sent_digest = sent_digest
        self.done = False


class RegistrySync:
    """The registry anti-entropy loops of every node (see the module docstring).

    Args:
        scheduler: the virtual clock.
        network: hosts, cuts and the TCP model the exchanges travel on.
        pick_peer: picks, with the given generator, one member the host sees
            alive or suspect, uniformly (None if there is none).

    Attributes:
        exchanges: exchanges started.
        exchanges_failed: exchanges that timed out or were refused.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        network: Network,
        pick_peer: Callable[[Host, random.Random], Address | None],
    ) -> None:
        self.scheduler = scheduler
        self.network = network
        self._pick_peer = pick_peer
        self._loops: dict[int, _Loop] = {}
        self.exchanges = 0
        self.exchanges_failed = 0

    def start(self, host: Host, holder: SimulatedRegistry, rng: random.Random) -> None:
        """Run ``host``'s loop from now on (a boot or a restart)."""
        loop = _Loop(holder, rng, host.life)
        self._loops[host.index] = loop
        holder.wake = partial(self._wake, host, loop)
        self._arm(host, loop)

    def on_events(self, host: Host, events: list[Event]) -> None:
        """Hand an engine's events to the host's gossip policy (it queues joiners)."""
        loop = self._loops.get(host.index)
        if loop is None or loop.life != host.life:
            return
        loop.holder.on_member_events(events)

    def _wake(self, host: Host, loop: _Loop) -> None:
        """The policy wants an exchange now: run the loop at once unless it is busy."""
        if loop.life != host.life or loop.busy:
            return  # a busy loop looks at `pending` when its round ends
        loop.token += 1
        self.scheduler.call_later(0.0, self._tick, host, loop, loop.token)

    # ------------------------------------------------------------------ the loop

    def _arm(self, host: Host, loop: _Loop) -> None:
        loop.token += 1
        delay = loop.holder.next_interval(loop.rng)
        self.scheduler.call_later(delay, self._tick, host, loop, loop.token)

    def _tick(self, host: Host, loop: _Loop, token: int) -> None:
        if loop.token != token or loop.busy or not self._alive(host, loop):
            return
        if host.paused_until is not None:
            self.scheduler.call_at(host.paused_until, self._tick, host, loop, token)
            return
        targets = loop.holder.take_targets(loop.rng, partial(self._pick_peer, host))
        loop.busy = True
        self._next(host, loop, targets)

    def _next(self, host: Host, loop: _Loop, targets: list[Address]) -> None:
        if not self._alive(host, loop):
            return
        if not targets:
            loop.busy = False
            loop.holder.collect(self.scheduler.now)
            if loop.holder.pending:
                loop.token += 1
                self.scheduler.call_later(0.0, self._tick, host, loop, loop.token)
            else:
                self._arm(host, loop)
            return
        address = targets.pop(0)
        self._begin(host, loop, address, targets)

    def _alive(self, host: Host, loop: _Loop) -> bool:
        return host.life == loop.life and host.engine is not None

    # ------------------------------------------------------------------ one exchange

    def _begin(self, host: Host, loop: _Loop, address: Address, rest: list[Address]) -> None:
        self.exchanges += 1
        digest, encoded = loop.holder.digest()
        exchange = _Exchange(host, loop, address, digest)
        engine = host.engine
        assert engine is not None
        scheduler = self.scheduler
        scheduler.call_later(engine.config.stream_timeout, self._give_up, exchange, rest)
        network = self.network
        target = network.host_at(address)
        if target is None or network.blocked(host.address, address):
            return  # the connection attempt times out
        if network.blocked(address, host.address):
            return
        delay, refused = network.handshake(host, target, len(encoded))
        if delay is None:
            return  # the connection attempt times out
        if refused:
            scheduler.call_later(delay, self._give_up, exchange, rest)
            return
        host.stats.stream_bytes_sent += len(encoded)
        scheduler.call_later(delay, self._answer, exchange, target, encoded, rest)

    def _give_up(self, exchange: _Exchange, rest: list[Address]) -> None:
        if exchange.done:
            return
        exchange.done = True
        self.exchanges_failed += 1
        self._next(exchange.initiator, exchange.loop, rest)

    def _answer(
        self, exchange: _Exchange, target: Host, encoded: bytes, rest: list[Address]
    ) -> None:
        """The responder: the initiator's digest in; its delta and digest out."""
        if exchange.done:
            return
        if target.engine is None:
            return  # crashed meanwhile: the initiator times out
        if target.paused_until is not None:
            self.scheduler.call_at(
                target.paused_until, self._answer, exchange, target, encoded, rest
            )
            return
        holder = self._holder(target)
        if holder is None:
            return
        target.stats.stream_bytes_received += len(encoded)
        digest, own = holder.digest()
        initiator = exchange.initiator
        equal = (
            digest == exchange.sent_digest
            and not holder.has_gaps()
            and not exchange.loop.holder.has_gaps()
        )
        if equal:
            reply = b""
            size = _EMPTY_DELTA + len(own)
        else:
            try:
                reply, own = holder.answer_exchange(encoded)
            except RemoteProtocolError:
                return
            size = len(reply) + len(own)
        target.stats.stream_bytes_sent += size
        network = self.network
        if network.blocked(target.address, initiator.address):
            return
        leg = network.tcp_leg(target, initiator, size)
        if leg is None:
            return
        self.scheduler.call_later(
            leg + initiator.slow_delay,
            self._finish,
            exchange,
            target,
            (reply, own, size, equal),
            rest,
        )

    def _finish(
        self,
        exchange: _Exchange,
        target: Host,
        answer: tuple[bytes, bytes, int, bool],
        rest: list[Address],
    ) -> None:
        """The initiator: apply the responder's delta, send back what it lacks."""
        if exchange.done:
            return
        initiator = exchange.initiator
        loop = exchange.loop
        if not self._alive(initiator, loop):
            exchange.done = True
            return
        if initiator.paused_until is not None:
            self.scheduler.call_at(
                initiator.paused_until, self._finish, exchange, target, answer, rest
            )
            return
        exchange.done = True
        reply, responder_digest, size, equal = answer
        initiator.stats.stream_bytes_received += size
        scheduler = self.scheduler
        if equal:
            initiator.stats.stream_bytes_sent += _EMPTY_DELTA
            target.stats.stream_bytes_received += _EMPTY_DELTA
            scheduler.call_later(0.0, self._next, initiator, loop, rest)
            return
        gossip = loop.holder
        try:
            gossip.apply_exchange(reply, scheduler.now)
            last = gossip.delta_for(responder_digest)
        except RemoteProtocolError:
            scheduler.call_later(0.0, self._next, initiator, loop, rest)
            return
        initiator.stats.stream_bytes_sent += len(last)
        network = self.network
        if not network.blocked(initiator.address, target.address):
            leg = network.tcp_leg(initiator, target, len(last))
            if leg is not None:
                scheduler.call_later(
                    leg + target.slow_delay, self._apply, target, last, target.life
                )
        scheduler.call_later(0.0, self._next, initiator, loop, rest)

    def _apply(self, target: Host, answer: bytes, life: int) -> None:
        """The responder: apply what the initiator sent last."""
        if target.life != life or target.engine is None:
            return
        if target.paused_until is not None:
            self.scheduler.call_at(target.paused_until, self._apply, target, answer, life)
            return
        holder = self._holder(target)
        if holder is None:
            return
        target.stats.stream_bytes_received += len(answer)
        with contextlib.suppress(RemoteProtocolError):
            holder.apply_exchange(answer, self.scheduler.now)

    def _holder(self, host: Host) -> SimulatedRegistry | None:
        loop = self._loops.get(host.index)
        if loop is None or loop.life != host.life:
            return None
        return loop.holder
