"""The topic registry of every simulated node, gossiped as the real node does it.

The real node (`shoal.cluster.routing.TopicRouting` and the registry sync loop
of `shoal.cluster.node.Node`) keeps a `shoal.cluster.registry.Registry` and
moves it two ways. The simulator does exactly the same with the same registry
calls, so topic propagation is measured on the real code:

* *Fast path.* A local change is written to the registry and queued as an
  application broadcast named ``reg:<owner>:<key>``, carrying that one entry
  with watermark 0 (`encode_delta` of a single-entry `OwnerDelta`).
  Receivers merge it with `Registry.apply_delta` and, when it was news, the
  engine re-gossips it. Nothing rides in membership push-pulls.
* *Slow path* (`RegistrySync`). Every `SYNC_INTERVAL` (jittered 0.8-1.2) a
  node runs a digest exchange with one random live (alive or suspect)
  member, and at once with every member an event shows alive (joined,
  recovered or updated). The exchange is three messages on a stream: the
  initiator's digest; the responder's delta for it plus its own digest; the
  initiator's delta for that. Exchanges of one node run one after another,
  each bounded by the membership ``stream_timeout``.

One shortcut, which changes no outcome: when both sides hold equal digests
and no gap (`Registry.behind` empty), both deltas are empty, so the
simulator counts the bytes of the two digests and two empty deltas without
decoding them. This keeps the exchange affordable at a thousand nodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.cluster.registry import (
    NodeInfo,
    OwnerDelta,
    Registry,
    decode_delta,
    decode_digest,
    encode_delta,
    encode_digest,
)
from shoal.cluster.routing import MAX_KEY, SYNC_INTERVAL
from shoal.errors import RemoteProtocolError
from shoal.membership import MemberJoined

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Iterable

    from shoal.cluster.registry import Entry
    from shoal.membership import Address, Event, Membership
    from shoal.simulations.network import Host, Network
    from shoal.simulations.scheduler import Scheduler

__all__ = ["SYNC_INTERVAL", "RegistrySync", "SimulatedRegistry"]

#: Bytes of an encoded empty delta (what an exchange between equals carries).
_EMPTY_DELTA = len(encode_delta([]))


class SimulatedRegistry:
    """One node's registry and its `MembershipDelegate` hooks (`TopicRouting`'s).

    Args:
        name: the member name (the registry's own owner key).
        generation: increases across restarts of the same name.
        host: the producer address announced in the ``info`` entry.
        clock: returns the current virtual time (the delegate hooks get none).
        now: the virtual time of creation.

    Attributes:
        registry: the real registry.
        engine: the engine to broadcast through; set once it exists.
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
        self.registry = Registry(name, generation=generation, info=info, now=now)
        self.engine: Membership | None = None
        self._clock = clock
        self._digest: tuple[int, dict[str, tuple[int, int]], bytes] | None = None
        self._behind: tuple[int, bool] | None = None

    # ------------------------------------------------------------------ local changes

    def set_topic(self, topic: str, channels: Iterable[str], now: float) -> None:
        """Record that this node's broker holds ``topic`` and broadcast the entry."""
        self._send(self.registry.set_topic(topic, channels, wall=now, now=now), now)

    def announce(self, now: float) -> None:
        """Broadcast our ``info`` entry, as a starting node does."""
        entry = self.registry.own_entry("info")
        if entry is not None:
            self._send(entry, now)

    def _send(self, entry: Entry, now: float) -> None:
        if self.engine is None:
            return
        registry = self.registry
        # Watermark 0: a lone entry says nothing about the entries before it.
        delta = OwnerDelta(registry.name, registry.generation, 0, False, [entry])
        key = f"reg:{registry.name}:{entry.key}"
        self.engine.broadcast_app(key[:MAX_KEY], encode_delta([delta]), now)

    def preload(self, deltas: Iterable[OwnerDelta], now: float) -> None:
        """Merge whole owner states directly (the preformed start of a warm cluster).

        Each delta is the whole state of an owner this registry does not
        know yet, so a plain `Registry.apply` of its entries leaves exactly
        what `Registry.apply_delta` would, and costs a third less.
        """
        apply = self.registry.apply
        for delta in deltas:
            apply(delta.owner, delta.generation, False, delta.entries, now)

    def digest(self) -> tuple[dict[str, tuple[int, int]], bytes]:
        """Return the digest and its encoding, recomputed only after a change."""
        count = self.registry.change_count
        cached = self._digest
        if cached is None or cached[0] != count:
            digest = self.registry.digest()
            cached = self._digest = (count, digest, encode_digest(digest))
        return cached[1], cached[2]

    def has_gaps(self) -> bool:
        """Say whether some owner's entries are known to be missing (`Registry.behind`)."""
        count = self.registry.change_count
        cached = self._behind
        if cached is None or cached[0] != count:
            cached = self._behind = (count, bool(self.registry.behind()))
        return cached[1]

    # ------------------------------------------------------------------ delegate hooks

    def local_state(self) -> bytes:
        """Nothing rides in membership push-pulls: `RegistrySync` does the repair."""
        return b""

    def merge_remote_state(self, data: bytes, from_name: str) -> None:
        """Ignore push-pull state (see `local_state`)."""
        del data, from_name

    def notify_message(self, data: bytes) -> bool:
        """Apply a broadcast entry; say whether it was news (to re-gossip it).

        Raises:
            RemoteProtocolError: the bytes are not a registry delta.
        """
        now = self._clock()
        changed = False
        for delta in decode_delta(data):
            changed |= self.registry.apply_delta(delta, now)
        return changed


class _Loop:
    """One node's sync loop: who to sync with next, and whether it is busy."""

    __slots__ = ("busy", "holder", "life", "pending", "rng", "token")

    def __init__(self, holder: SimulatedRegistry, rng: random.Random, life: int) -> None:
        self.holder = holder
        self.rng = rng
        self.life = life
        self.pending: list[Address] = []
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
        self._arm(host, loop)

    def on_events(self, host: Host, events: list[Event]) -> None:
        """Queue an exchange with every member that joined or came back, and wake the loop.

        A member that was only suspected kept its registry entries and kept
        receiving broadcasts, so its recovery needs no exchange: under heavy
        loss, exchanging on every refuted suspicion cost kilobytes a second.
        """
        loop = self._loops.get(host.index)
        if loop is None or loop.life != host.life:
            return
        woken = False
        for event in events:
            if isinstance(event, MemberJoined):
                loop.pending.append(event.member.address)
                woken = True
        if woken and not loop.busy:
            loop.token += 1
            self.scheduler.call_later(0.0, self._tick, host, loop, loop.token)

    # ------------------------------------------------------------------ the loop

    def _arm(self, host: Host, loop: _Loop) -> None:
        loop.token += 1
        delay = SYNC_INTERVAL * loop.rng.uniform(0.8, 1.2)
        self.scheduler.call_later(delay, self._tick, host, loop, loop.token)

    def _tick(self, host: Host, loop: _Loop, token: int) -> None:
        if loop.token != token or loop.busy or not self._alive(host, loop):
            return
        if host.paused_until is not None:
            self.scheduler.call_at(host.paused_until, self._tick, host, loop, token)
            return
        targets, loop.pending = loop.pending, []
        if not targets:
            peer = self._pick_peer(host, loop.rng)
            if peer is not None:
                targets = [peer]
        loop.busy = True
        self._next(host, loop, list(dict.fromkeys(targets)))

    def _next(self, host: Host, loop: _Loop, targets: list[Address]) -> None:
        if not self._alive(host, loop):
            return
        if not targets:
            loop.busy = False
            if loop.pending:
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
                peer = decode_digest(encoded)
            except RemoteProtocolError:
                return
            reply = encode_delta(holder.registry.delta(peer))
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
        registry = loop.holder.registry
        try:
            for delta in decode_delta(reply):
                registry.apply_delta(delta, scheduler.now)
            peer = decode_digest(responder_digest)
        except RemoteProtocolError:
            scheduler.call_later(0.0, self._next, initiator, loop, rest)
            return
        last = encode_delta(registry.delta(peer))
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
        now = self.scheduler.now
        try:
            for delta in decode_delta(answer):
                holder.registry.apply_delta(delta, now)
        except RemoteProtocolError:
            return

    def _holder(self, host: Host) -> SimulatedRegistry | None:
        loop = self._loops.get(host.index)
        if loop is None or loop.life != host.life:
            return None
        return loop.holder
