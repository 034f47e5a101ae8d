"""Replicated topics in the simulator: the real cores, over the modelled network.

A real node runs `shoal.replication` (placement, quorum, owner, replica,
codec, failover) from the trio shell in `shoal.cluster.replication`. Every
simulated node runs the same cores from this module, in virtual time, so
the promise of docs/replication.md ("no acknowledged message is lost") is
checked at a hundred nodes and more, under crashes, splits and churn:

* *Owner.* A publisher per topic publishes to the topic's owner; the owner
  appends a real `Publish` record to its `OwnerTopic` and acknowledges the
  publish only once `OwnerTopic.committed` reaches it (the quorum core),
  or fails it at `OwnerTopic.expire`. Committed messages go to the owner's
  consumers; their FINs are batched into `Finish` records, flushed when a
  link next sends (or every `FIN_BATCH` FINs), as the shell does.
* *Placement.* After every membership event a node recomputes the replicas
  of each topic it owns from its own engine's view
  (`shoal.replication.placement.replicas`), opens links to new replicas
  and closes the others.
* *Links.* One stream per owner → replica member, with the real frames
  (`shoal.replication.codec`) in both directions, in order. A new
  connection starts every topic with a snapshot (`OwnerTopic.resync`); a
  broken one rewinds (`OwnerTopic.rewind`) and is dialled again after
  `RETRY_INTERVAL`. The replica applies batches with
  `shoal.replication.replica.receive` and acknowledges.
* *Failover.* After every membership event each holder asks
  `shoal.replication.failover.holder_action` what to do with every copy it
  holds, from its own view: adopt (serve the unfinished messages to its
  consumers), keep or drop.

What is modelled more simply than the shell: consumers are always
connected to the broker that delivers (client connections do not cross the
modelled partitions), take every message at once and FIN it after an
exponential time; a stream is taken as broken the moment a frame cannot
cross (a cut, a lost connection, a restarted peer) rather than when TCP
gives up; a replica keeps what it holds in memory only (a restarted node
has lost its data path, the case of the issue's acceptance); adopted
messages are not replicated again (as in the shell).

The ledger follows every message. At the end of the run each acknowledged
message not finished on every channel is *pending* (a running broker
still delivers it), *parked* (on the disk of a member that left
gracefully, served when it returns) or *lost*; lost ones still held by a
live member that does not serve them are also counted as *stranded*.
``lost > 0`` breaks the run's invariant.
"""

from __future__ import annotations

import collections
import dataclasses
import random
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from shoal.errors import ConfigError, RemoteProtocolError
from shoal.membership.events import MemberFailed
from shoal.membership.state import MemberState
from shoal.replication import OwnerTopic, ReplicaTopic, receive, replicas
from shoal.replication.codec import Ack, Factor, Resync, decode_frame, encode_frame
from shoal.replication.failover import HolderAction, holder_action
from shoal.replication.records import Batch, ChannelCreated, Finish, Publish

if TYPE_CHECKING:
    from collections.abc import Iterable

    from shoal.membership import Event, MembershipConfig
    from shoal.simulations.network import Host
    from shoal.simulations.runner import RunSettings, Simulation

__all__ = [
    "BATCH_RECORDS",
    "FIN_BATCH",
    "RETRY_INTERVAL",
    "Ledger",
    "ReplicatedChurn",
    "ReplicatedCrash",
    "ReplicatedSplit",
    "ReplicationModel",
    "Workload",
]

#: Records per batch, FINs per forced flush and the pause before a broken
#: link is dialled again: the shell's values (`shoal.cluster.replication`),
#: restated so the simulator does not import the trio shell.
BATCH_RECORDS = 64
FIN_BATCH = 512
RETRY_INTERVAL = 0.2

_LIVE = (MemberState.ALIVE, MemberState.SUSPECT)

#: What a node's decisions depend on: live members, dead members, topics
#: owned, copies held.
_Seen: TypeAlias = (
    "tuple[frozenset[str], frozenset[str], frozenset[str], frozenset[tuple[str, str]]]"
)


class Ledger:
    """Every message's fate, as its publisher and its consumers saw it.

    Attributes:
        acknowledged: messages whose publish was answered OK.
        failed: messages whose publish was answered with an error.
        refused: messages offered while the owner was down or leaving.
        finished: acknowledged messages finished on every channel.
        duplicated: messages delivered more than once on some channel.
        redeliveries: deliveries beyond the first, over all channels.
        delivered_unacknowledged: deliveries of messages whose publish was
            never answered OK (in flight at a failure, or failed).
    """

    def __init__(self) -> None:
        self.acknowledged = 0
        self.failed = 0
        self.refused = 0
        self.finished = 0
        self.redeliveries = 0
        self.delivered_unacknowledged = 0
        # Acknowledged messages still owed to some channel: id -> channels.
        self.unfinished: dict[bytes, set[str]] = {}
        self._known: set[bytes] = set()
        self._seen: dict[str, set[bytes]] = collections.defaultdict(set)
        self._duplicated: set[bytes] = set()

    @property
    def duplicated(self) -> int:
        """Messages delivered more than once on some channel."""
        return len(self._duplicated)

    def acknowledge(self, ids: Iterable[bytes], channels: Iterable[str]) -> None:
        """The publish of ``ids`` was answered OK; they are owed to ``channels``."""
        owed = set(channels)
        for msg_id in ids:
            self.acknowledged += 1
            self._known.add(msg_id)
            self.unfinished[msg_id] = set(owed)

    def deliver(self, msg_id: bytes, channel: str) -> None:
        """A consumer of ``channel`` received ``msg_id``."""
        seen = self._seen[channel]
        if msg_id in seen:
            self.redeliveries += 1
            self._duplicated.add(msg_id)
        else:
            seen.add(msg_id)
        if msg_id not in self._known:
            self.delivered_unacknowledged += 1

    def finish(self, msg_id: bytes, channel: str) -> None:
        """A consumer of ``channel`` finished ``msg_id`` and the broker took the FIN."""
        owed = self.unfinished.get(msg_id)
        if owed is None:
            return
        owed.discard(channel)
        if not owed:
            del self.unfinished[msg_id]
            self.finished += 1


class _Owned:
    """One topic on its owner: the real core, publishes awaiting it, FINs to record."""

    __slots__ = ("channels", "core", "expire_at", "fins", "pending")

    def __init__(self, core: OwnerTopic, channels: tuple[str, ...]) -> None:
        self.core = core
        self.channels = channels
        self.pending: collections.OrderedDict[int, tuple[bytes, ...]] = collections.OrderedDict()
        self.fins: dict[str, list[bytes]] = {}
        self.expire_at: float | None = None

    def flush_fins(self, now: float) -> None:
        fins, self.fins = self.fins, {}
        for channel, ids in fins.items():
            self.core.append(Finish(channel=channel, ids=tuple(ids)), now)


class _Link:
    """The stream from an owner to one replica member."""

    __slots__ = (
        "acks_at",
        "announced",
        "arrive_at",
        "conn",
        "connected",
        "member",
        "sending",
        "target_life",
    )

    def __init__(self, member: str) -> None:
        self.member = member
        self.conn = 0
        self.connected = False
        self.sending = False
        self.target_life = -1
        self.announced: set[str] = set()
        # The stream is ordered: nothing arrives before what was sent earlier.
        self.arrive_at = 0.0
        self.acks_at = 0.0


class _Node:
    """The replication state of one life of one member (lost when it crashes)."""

    __slots__ = (
        "adopted",
        "factors",
        "held",
        "host",
        "left",
        "life",
        "links",
        "owned",
        "seen",
        "serving",
    )

    def __init__(self, host: Host) -> None:
        self.host = host
        self.life = host.life
        self.left = False
        self.owned: dict[str, _Owned] = {}
        self.held: dict[tuple[str, str], ReplicaTopic] = {}
        self.factors: dict[tuple[str, str], int] = {}
        self.links: dict[str, _Link] = {}
        # Messages its broker delivered and no consumer finished yet.
        self.serving: dict[bytes, set[str]] = {}
        self.adopted: list[tuple[str, str, int]] = []
        # What `ReplicationModel.on_events` last decided from.
        self.seen: _Seen | None = None

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def running(self) -> bool:
        return self.host.life == self.life and self.host.engine is not None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """What the publishers and consumers of the replicated topics do.

    Attributes:
        topics: replicated topics, each owned by a random member (other
            than the seed); with more topics than members some own several.
        factors: the topics' factors, assigned in turn (2 and 3 by default).
        channels: channels per topic, each with its own consumer.
        publish_every: mean seconds between two publishes to a topic
            (exponential), from ``start`` until ``quiet`` before the end.
        batch: messages per publish (an MPUB).
        body_size: bytes per message body.
        consume_time: mean seconds a consumer holds a message before its FIN.
        replication_timeout: how long a publish waits for its replicas.
        start: when publishing begins.
        quiet: publishing stops this long before the end of the run, so
            what was acknowledged can be delivered and finished.
        skip_quorum: acknowledge every publish at once, before any replica
            holds it (the quorum's ``required`` 0): a broken variant that
            must lose messages when owners crash. For tests only.
        adopt_on_failure_event: adopt only in reaction to the owner's own
            failure event, as the shell does today; a holder
            that hears of a better-ranked replica's death after the owner's
            then never adopts. For tests only, to show why the decision is
            level-triggered.
    """

    topics: int = 40
    factors: tuple[int, ...] = (2, 3)
    channels: int = 1
    publish_every: float = 1.0
    batch: int = 4
    body_size: int = 64
    consume_time: float = 0.5
    replication_timeout: float = 5.0
    start: float = 5.0
    quiet: float = 30.0
    skip_quorum: bool = False
    adopt_on_failure_event: bool = False

    def __post_init__(self) -> None:
        if self.topics < 1 or self.channels < 1 or self.batch < 1 or self.body_size < 0:
            raise ConfigError("topics, channels and batch must be at least 1")
        if not self.factors or min(self.factors) < 2 or max(self.factors) > 16:
            raise ConfigError("factors must be between 2 and 16")
        for name in ("publish_every", "consume_time", "replication_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive")
        if not (self.start >= 0 and self.quiet >= 0):
            raise ConfigError("start and quiet must not be negative")


class ReplicationModel:
    """Every node's replicated topics, driven in virtual time (see the module docstring).

    Args:
        sim: the simulation to ride on; the model hooks its engine events
            and reports at the end of the run.
        workload: the publishers and consumers.
    """

    section = "replication"

    def __init__(self, sim: Simulation, workload: Workload) -> None:
        self.sim = sim
        self.workload = workload
        self.scheduler = sim.scheduler
        self.network = sim.network
        self.rng = random.Random(sim.rng.getrandbits(64))
        self.ledger = Ledger()
        self.nodes: dict[str, _Node] = {}
        self._hosts: dict[str, Host] = {}
        self._retired: list[_Node] = []
        self._next_id = 0
        self.adoptions = 0
        self.adopted_messages = 0
        self.dropped_copies = 0
        self.frames = 0
        self.frame_bytes = 0
        self.snapshots = 0
        self.link_breaks = 0
        candidates = [name for name in sim.names if name != sim.seed_name] or list(sim.names)
        count = workload.topics
        if count <= len(candidates):
            owners = self.rng.sample(candidates, count)
        else:
            owners = [self.rng.choice(candidates) for _ in range(count)]
        self.topics = [
            (f"replicated-{i}", owner, workload.factors[i % len(workload.factors)])
            for i, owner in enumerate(owners)
        ]
        self.factor_of = {topic: factor for topic, _, factor in self.topics}
        self.channels = tuple(f"channel-{i}" for i in range(workload.channels))
        inner = sim.network.observer
        model = self

        class _Observer:
            def on_events(self, host: Host, events: list[Event], now: float) -> None:
                if inner is not None:
                    inner.on_events(host, events, now)
                model.on_events(host, events)

        sim.network.observer = _Observer()
        sim.models.append(self)
        end = sim.duration - workload.quiet
        for index in range(len(self.topics)):
            first = workload.start + self.rng.expovariate(1.0 / workload.publish_every)
            if first < end:
                sim.at(first, self._publish_tick, index, end)

    # ------------------------------------------------------------------ nodes

    def node(self, name: str) -> _Node | None:
        """The replication state of ``name``'s current life, or None while it is down."""
        node = self.nodes.get(name)
        if node is not None:
            if node.running:
                return node
            # Crashed, or stopped after its leave: what it held stays for the end.
            self._retired.append(node)
            del self.nodes[name]
        host = self._host(name)
        if host.engine is None:
            return None
        node = _Node(host)
        self.nodes[name] = node
        return node

    def leave(self, name: str) -> None:
        """``name`` leaves gracefully: its broker flushes what it serves to its disk."""
        node = self.node(name)
        if node is not None:
            node.left = True
        self.sim.leave(name)

    def _states(self, node: _Node) -> dict[str, MemberState]:
        engine = node.host.engine
        assert engine is not None
        return {member.name: member.state for member in engine.members()}

    def on_events(self, host: Host, events: list[Event]) -> None:
        """A node's engine raised events: place its topics, then decide for its copies.

        Like the shell, it reacts to every event; which event it was does
        not matter, only the view afterwards (`holder_action` is
        level-triggered).
        """
        failed = (
            {event.member.name for event in events if isinstance(event, MemberFailed)}
            if self.workload.adopt_on_failure_event
            else None
        )
        node = self.node(host.name)
        if node is None or node.left or not (node.owned or node.held):
            return
        states = self._states(node)
        # Both decisions depend only on who is live, who is dead, which
        # topics it owns and which copies it holds: most events (a
        # suspicion, a refutation) change none of them.
        seen = (
            frozenset(name for name, state in states.items() if state in _LIVE),
            frozenset(name for name, state in states.items() if state is MemberState.DEAD),
            frozenset(node.owned),
            frozenset(node.held),
        )
        if seen == node.seen and failed is None:
            return
        node.seen = seen
        if node.owned:
            self._place(node, states)
        for key in list(node.held):
            owner, topic = key
            factor = node.factors.get(key) or self.factor_of.get(topic, 2)
            action = holder_action(node.name, owner, topic, states, factor)
            if action is HolderAction.ADOPT and (failed is None or owner in failed):
                self._adopt(node, key)
            elif action is HolderAction.DROP:
                del node.held[key]
                self.dropped_copies += 1

    # ------------------------------------------------------------------ owner side

    def _publish_tick(self, index: int, end: float) -> None:
        workload = self.workload
        now = self.scheduler.now
        following = now + self.rng.expovariate(1.0 / workload.publish_every)
        if following < end:
            self.scheduler.call_at(following, self._publish_tick, index, end)
        topic, owner, factor = self.topics[index]
        node = self.node(owner)
        if node is None or node.left:
            self.ledger.refused += workload.batch
            return
        owned = node.owned.get(topic)
        if owned is None:
            required = 0 if workload.skip_quorum else factor - 1
            core = OwnerTopic(topic, required=required, timeout=workload.replication_timeout)
            owned = _Owned(core, self.channels)
            node.owned[topic] = owned
            for channel in self.channels:
                core.append(ChannelCreated(channel=channel), now)
            self._place(node, self._states(node))
        ids = tuple(self._new_id() for _ in range(workload.batch))
        body = b"x" * workload.body_size
        record = Publish(
            ids=ids, bodies=(body,) * len(ids), timestamp=int(now * 1e9), channels=owned.channels
        )
        seq = owned.core.append(record, now)
        owned.pending[seq] = ids
        self._settle(node, owned)
        if seq in owned.pending:
            self._wake(node)
            self._arm_expire(node, topic, owned)

    def _new_id(self) -> bytes:
        self._next_id += 1
        return b"%016x" % self._next_id

    def _settle(self, node: _Node, owned: _Owned) -> None:
        """Answer OK to every committed publish, in order, and hand it to the consumers."""
        committed = owned.core.committed
        pending = owned.pending
        while pending:
            seq, ids = next(iter(pending.items()))
            if seq > committed:
                return
            del pending[seq]
            self.ledger.acknowledge(ids, owned.channels)
            self._serve(node, ids, owned.channels, owned)

    def _arm_expire(self, node: _Node, topic: str, owned: _Owned) -> None:
        deadline = owned.core.next_deadline()
        if deadline is None or (owned.expire_at is not None and owned.expire_at <= deadline):
            return
        owned.expire_at = deadline
        self.scheduler.call_at(deadline, self._expire, node, topic, owned, deadline)

    def _expire(self, node: _Node, topic: str, owned: _Owned, deadline: float) -> None:
        if owned.expire_at != deadline or not node.running or node.owned.get(topic) is not owned:
            return
        owned.expire_at = None
        for seq in owned.core.expire(self.scheduler.now):
            ids = owned.pending.pop(seq, ())
            self.ledger.failed += len(ids)
        self._wake(node)
        self._arm_expire(node, topic, owned)

    def _place(self, node: _Node, states: dict[str, MemberState]) -> None:
        alive = [name for name, state in states.items() if state in _LIVE]
        wanted: set[str] = set()
        for topic, owned in node.owned.items():
            chosen = replicas(node.name, topic, alive, self.factor_of[topic])
            owned.core.set_replicas(chosen)
            wanted.update(chosen)
            self._settle(node, owned)
        for member in list(node.links):
            if member not in wanted:
                node.links.pop(member).conn += 1
        for member in sorted(wanted - node.links.keys()):
            link = node.links[member] = _Link(member)
            self._dial(node, link, link.conn)
        self._wake(node)

    # ------------------------------------------------------------------ links

    def _host(self, name: str) -> Host:
        host = self._hosts.get(name)
        if host is None:  # a member added since
            self._hosts = {host.name: host for host in self.network.hosts}
            host = self._hosts[name]
        return host

    @staticmethod
    def _current(node: _Node, link: _Link, conn: int) -> bool:
        return (
            node.running
            and not node.left
            and node.links.get(link.member) is link
            and link.conn == conn
        )

    def _dial(self, node: _Node, link: _Link, conn: int) -> None:
        """Open the stream to the replica, as the shell's link task does, retrying."""
        if not self._current(node, link, conn):
            return
        network = self.network
        scheduler = self.scheduler
        engine = node.host.engine
        assert engine is not None
        member = engine.member(link.member)
        if member is None or member.state not in _LIVE:
            scheduler.call_later(RETRY_INTERVAL, self._dial, node, link, conn)
            return
        target = self._host(link.member)
        source = node.host
        timeout = engine.config.stream_timeout
        if network.blocked(source.address, target.address) or network.blocked(
            target.address, source.address
        ):
            scheduler.call_later(timeout + RETRY_INTERVAL, self._dial, node, link, conn)
            return
        delay, refused = network.handshake(source, target, len(node.name))
        if delay is None:
            scheduler.call_later(timeout + RETRY_INTERVAL, self._dial, node, link, conn)
        elif refused:
            scheduler.call_later(delay + RETRY_INTERVAL, self._dial, node, link, conn)
        else:
            scheduler.call_later(delay, self._connected, node, link, conn, target.life)

    def _connected(self, node: _Node, link: _Link, conn: int, target_life: int) -> None:
        if not self._current(node, link, conn):
            return
        target = self._host(link.member)
        if target.life != target_life:
            self._break(node, link)
            return
        link.connected = True
        link.target_life = target_life
        link.arrive_at = link.acks_at = self.scheduler.now
        link.announced.clear()
        for owned in node.owned.values():
            owned.core.resync(link.member)
        self._send(node, link, conn)

    def _wake(self, node: _Node) -> None:
        for link in node.links.values():
            if link.connected and not link.sending:
                link.sending = True
                self.scheduler.call_later(0.0, self._send, node, link, link.conn)

    def _send(self, node: _Node, link: _Link, conn: int) -> None:
        """Send the replica everything it lacks, as the shell's send loop does."""
        link.sending = False
        if not self._current(node, link, conn) or not link.connected:
            return
        now = self.scheduler.now
        member = link.member
        for topic, owned in node.owned.items():
            if member not in owned.core.quorum.replicas:
                continue
            if topic not in link.announced:
                factor = Factor(topic=topic, factor=self.factor_of[topic])
                if not self._transmit(node, link, encode_frame(factor)):
                    return
                link.announced.add(topic)
            if owned.fins:
                owned.flush_fins(now)
            # Bounded: each batch advances what was sent to the member.
            while (batch := owned.core.outgoing(member, BATCH_RECORDS)) is not None:
                if batch.snapshot is not None:
                    self.snapshots += 1
                if not self._transmit(node, link, encode_frame(batch)):
                    return

    def _transmit(self, node: _Node, link: _Link, data: bytes) -> bool:
        """Put one frame on the stream; False (and the link broken) if it cannot cross."""
        network = self.network
        target = self._host(link.member)
        source = node.host
        if target.life != link.target_life or network.blocked(source.address, target.address):
            self._break(node, link)
            return False
        leg = network.tcp_leg(source, target, len(data))
        if leg is None:
            self._break(node, link)
            return False
        self.frames += 1
        self.frame_bytes += len(data)
        at = max(self.scheduler.now + leg, link.arrive_at)
        link.arrive_at = at
        self.scheduler.call_at(at, self._arrive, node, link, link.conn, data)
        return True

    def _break(self, node: _Node, link: _Link) -> None:
        """The stream broke: send again what was not acknowledged, on a new one."""
        self.link_breaks += 1
        link.connected = False
        link.conn += 1
        for owned in node.owned.values():
            owned.core.rewind(link.member)
        self.scheduler.call_later(RETRY_INTERVAL, self._dial, node, link, link.conn)

    # ------------------------------------------------------------------ replica side

    def _arrive(self, owner: _Node, link: _Link, conn: int, data: bytes) -> None:
        """A frame reaches the replica: apply it, keep it, acknowledge."""
        target = self._host(link.member)
        if target.life != link.target_life or target.engine is None:
            return  # reset: the owner's next frame finds the link broken
        replica = self.node(link.member)
        if replica is None or replica.left:
            return
        frame = decode_frame(data)
        if isinstance(frame, Factor):
            replica.factors[owner.name, frame.topic] = frame.factor
            return
        assert isinstance(frame, Batch)
        key = (owner.name, frame.topic)
        try:
            held = receive(replica.held.get(key), frame)
        except RemoteProtocolError:
            reply = encode_frame(Resync(topic=frame.topic))
        else:
            replica.held[key] = held
            reply = encode_frame(Ack(topic=frame.topic, seq=held.applied))
        network = self.network
        if network.blocked(target.address, owner.host.address):
            return
        leg = network.tcp_leg(target, owner.host, len(reply))
        if leg is None:
            return
        self.frames += 1
        self.frame_bytes += len(reply)
        at = max(self.scheduler.now + leg, link.acks_at)
        link.acks_at = at
        self.scheduler.call_at(at, self._acked, owner, link, conn, reply)

    def _acked(self, node: _Node, link: _Link, conn: int, data: bytes) -> None:
        if not self._current(node, link, conn):
            return
        frame = decode_frame(data)
        if isinstance(frame, Ack):
            owned = node.owned.get(frame.topic)
            if owned is not None:
                owned.core.ack(link.member, frame.seq)
                self._settle(node, owned)
        elif isinstance(frame, Resync):
            owned = node.owned.get(frame.topic)
            if owned is not None:
                owned.core.resync(link.member)
                self._wake(node)

    # ------------------------------------------------------------------ consumers

    def _serve(
        self,
        node: _Node,
        ids: tuple[bytes, ...],
        channels: Iterable[str],
        owned: _Owned | None,
    ) -> None:
        """Deliver ``ids`` to the consumers of ``channels``; they FIN a while later."""
        serving = node.serving
        for channel in channels:
            for msg_id in ids:
                self.ledger.deliver(msg_id, channel)
                serving.setdefault(msg_id, set()).add(channel)
            delay = self.rng.expovariate(1.0 / self.workload.consume_time)
            self.scheduler.call_later(delay, self._fin, node, channel, ids, owned)

    def _fin(self, node: _Node, channel: str, ids: tuple[bytes, ...], owned: _Owned | None) -> None:
        if not node.running or node.left:
            return  # the FIN never reached a broker that remembers the message
        ledger = self.ledger
        serving = node.serving
        for msg_id in ids:
            ledger.finish(msg_id, channel)
            left = serving.get(msg_id)
            if left is not None:
                left.discard(channel)
                if not left:
                    del serving[msg_id]
        if owned is None or owned not in node.owned.values():
            return
        fins = owned.fins.setdefault(channel, [])
        fins.extend(ids)
        if len(fins) >= FIN_BATCH:
            owned.flush_fins(self.scheduler.now)
            self._wake(node)

    def _adopt(self, node: _Node, key: tuple[str, str]) -> None:
        """Serve a dead owner's unfinished messages of a topic from this node's broker."""
        held = node.held.pop(key)
        owed: dict[frozenset[str], list[bytes]] = {}
        count = 0
        for message in held.owed():
            channels = message.channels
            if channels is None:  # the owner's backlog: the topic's channels take it
                channels = frozenset(held.channels)
            owed.setdefault(channels, []).append(message.id)
            count += 1
        for channels, ids in owed.items():
            self._serve(node, tuple(ids), sorted(channels), None)
        node.adopted.append((key[0], key[1], count))
        self.adoptions += 1
        self.adopted_messages += count

    # ------------------------------------------------------------------ the end

    def finish(self, now: float) -> tuple[dict[str, Any], list[str]]:
        """Classify every unfinished acknowledged message; report and check the promise."""
        del now
        nodes = list(self.nodes.values()) + self._retired
        serving_live: set[bytes] = set()
        parked: set[bytes] = set()
        held_live: set[bytes] = set()
        for node in nodes:
            if node.left:
                parked.update(node.serving)
            elif node.running:
                serving_live.update(node.serving)
                for held in node.held.values():
                    held_live.update(message.id for message in held.owed())
        pending = lost = stranded = parked_count = 0
        for msg_id in self.ledger.unfinished:
            if msg_id in serving_live:
                pending += 1
            elif msg_id in parked:
                parked_count += 1
            else:
                lost += 1
                if msg_id in held_live:
                    stranded += 1
        ledger = self.ledger
        figures: dict[str, Any] = {
            "topics": len(self.topics),
            "acknowledged": ledger.acknowledged,
            "failed": ledger.failed,
            "refused": ledger.refused,
            "finished": ledger.finished,
            "pending": pending,
            "parked": parked_count,
            "lost": lost,
            "stranded": stranded,
            "duplicated": ledger.duplicated,
            "redeliveries": ledger.redeliveries,
            "delivered_unacknowledged": ledger.delivered_unacknowledged,
            "adoptions": self.adoptions,
            "adopted_messages": self.adopted_messages,
            "dropped_copies": self.dropped_copies,
            "snapshots": self.snapshots,
            "link_breaks": self.link_breaks,
            "frames": self.frames,
            "frame_bytes": self.frame_bytes,
        }
        problems = []
        if lost:
            problems.append(
                f"{lost} acknowledged message(s) lost ({stranded} stranded in copies nobody serves)"
            )
        return figures, problems


# ---------------------------------------------------------------------- scenarios


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Replicated:
    """The workload fields and what every replicated scenario shares."""

    name: ClassVar[str] = ""
    faults: ClassVar[bool] = True
    topics: int = 40
    factors: tuple[int, ...] = (2, 3)
    channels: int = 1
    publish_every: float = 1.0
    batch: int = 4
    consume_time: float = 0.5
    replication_timeout: float = 5.0
    quiet: float = 30.0
    skip_quorum: bool = False

    def workload(self) -> Workload:
        """The publishers and consumers this scenario runs."""
        return Workload(
            topics=self.topics,
            factors=self.factors,
            channels=self.channels,
            publish_every=self.publish_every,
            batch=self.batch,
            consume_time=self.consume_time,
            replication_timeout=self.replication_timeout,
            quiet=self.quiet,
            skip_quorum=self.skip_quorum,
        )

    def variants(self, settings: RunSettings) -> list[tuple[str, RunSettings]]:
        """Return a single run."""
        return [(self.name, settings)]

    def parameters(self) -> dict[str, Any]:
        """Return the dataclass fields."""
        return {
            field.name: list(value) if isinstance(value, tuple) else value
            for field in dataclasses.fields(self)
            for value in (getattr(self, field.name),)
        }

    def _model(self, sim: Simulation) -> ReplicationModel:
        return ReplicationModel(sim, self.workload())


def _victim(sim: Simulation, model: ReplicationModel) -> str | None:
    """A running, non-seed node, preferring one that owns, holds or serves replicated data."""
    live = [name for name in sim.live_names() if name != sim.seed_name]
    if not live:
        return None
    involved = [
        name
        for name in live
        if (node := model.nodes.get(name)) is not None
        and node.running
        and (node.owned or node.held or node.serving)
    ]
    return sim.rng.choice(involved or live)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReplicatedCrash(_Replicated):
    """Replicated topics while ``kill`` members crash, ``interval`` apart.

    Victims are drawn among the members that own, hold or serve replicated
    messages. The default interval leaves time to detect each crash and
    catch up a new replica before the next: the promise covers fewer than
    ``factor`` simultaneous failures, not more.

    Attributes:
        kill: how many members crash.
        at: when the first crashes.
        interval: time between crashes.
        restart_after: restart each crashed member this long after its
            crash, with its data lost (None: never).
    """

    name: ClassVar[str] = "replication-crash"
    kill: int = 5
    at: float = 20.0
    interval: float = 15.0
    restart_after: float | None = 30.0

    def __post_init__(self) -> None:
        self.workload()  # raises ConfigError on a bad workload
        if self.kill < 1:
            raise ConfigError("kill must be at least 1")
        if not (self.at >= 0 and self.interval >= 0):
            raise ConfigError("at and interval must not be negative")

    def default_duration(self, config: MembershipConfig, nodes: int) -> float:
        """Until the last crash, its detection and the quiet period."""
        from shoal.simulations.scenarios import detection_allowance  # scenarios imports this module

        last = self.at + (self.kill - 1) * self.interval
        return last + detection_allowance(config, nodes) + self.quiet

    def install(self, sim: Simulation) -> None:
        """Start the workload and schedule the crashes."""
        if self.kill >= sim.settings.nodes:
            raise ConfigError("kill must leave at least one node running")
        model = self._model(sim)
        for i in range(self.kill):
            sim.at(self.at + i * self.interval, self._crash_one, sim, model)

    def _crash_one(self, sim: Simulation, model: ReplicationModel) -> None:
        victim = _victim(sim, model)
        if victim is None:
            return
        sim.crash(victim)
        if self.restart_after is not None:
            sim.at(sim.now + self.restart_after, sim.restart, victim)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReplicatedSplit(_Replicated):
    """Replicated topics while the cluster splits in two (or more) groups, then heals.

    Attributes:
        sizes: group sizes, summing to the node count (default: two halves).
        at: when the split starts.
        duration: how long it lasts.
    """

    name: ClassVar[str] = "replication-split"
    sizes: tuple[int, ...] | None = None
    at: float = 20.0
    duration: float = 60.0

    def __post_init__(self) -> None:
        self.workload()  # raises ConfigError on a bad workload
        if not (self.at >= 0 and self.duration >= 0):
            raise ConfigError("at and duration must not be negative")
        if self.sizes is not None and (len(self.sizes) < 2 or min(self.sizes) < 1):
            raise ConfigError("sizes needs at least two groups of at least one node")

    def default_duration(self, config: MembershipConfig, nodes: int) -> float:
        """Until the heal, the heal allowance and the quiet period."""
        from shoal.simulations.scenarios import heal_allowance  # scenarios imports this module

        return self.at + self.duration + heal_allowance(config, nodes) + self.quiet

    def install(self, sim: Simulation) -> None:
        """Start the workload, assign the groups, schedule the split and the heal."""
        nodes = sim.settings.nodes
        sizes = self.sizes or (nodes // 2, nodes - nodes // 2)
        if sum(sizes) != nodes:
            raise ConfigError(f"split sizes {list(sizes)} do not add up to {nodes} nodes")
        self._model(sim)
        names = list(sim.names)
        sim.rng.shuffle(names)
        groups: list[list[str]] = []
        start = 0
        for size in sizes:
            groups.append(sorted(names[start : start + size], key=sim.names.index))
            start += size
        sim.set_groups({chr(ord("A") + i): group for i, group in enumerate(groups[:26])})
        sim.at(self.at, sim.partition, groups, "split")
        sim.at(self.at + self.duration, sim.heal, "split")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReplicatedChurn(_Replicated):
    """Replicated topics while members join, leave and crash as Poisson processes.

    Attributes:
        join_rate: new members per minute.
        leave_rate: graceful leaves per minute (the leaver's broker keeps
            what it serves on its disk: parked, not lost).
        crash_rate: crashes per minute.
        restart_after: restart each crashed member this long after its
            crash, with its data lost (None: never).
        start: when churn begins.
        length: how long churn lasts.
    """

    name: ClassVar[str] = "replication-churn"
    join_rate: float = 2.0
    leave_rate: float = 1.0
    crash_rate: float = 2.0
    restart_after: float | None = 30.0
    start: float = 10.0
    length: float = 240.0

    def __post_init__(self) -> None:
        self.workload()  # raises ConfigError on a bad workload
        for name in ("join_rate", "leave_rate", "crash_rate", "start", "length"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must not be negative")

    def default_duration(self, config: MembershipConfig, nodes: int) -> float:
        """Churn, then the detection allowance and the quiet period."""
        from shoal.simulations.scenarios import detection_allowance  # scenarios imports this module

        return self.start + self.length + detection_allowance(config, nodes) + self.quiet

    def install(self, sim: Simulation) -> None:
        """Start the workload and draw the arrival times of joins, leaves and crashes."""
        model = self._model(sim)
        end = self.start + self.length
        rng = sim.rng
        for rate, action in (
            (self.join_rate, self._join),
            (self.leave_rate, self._leave),
            (self.crash_rate, self._crash),
        ):
            if rate <= 0:
                continue
            t = self.start
            for _ in range(1_000_000):
                t += rng.expovariate(rate / 60.0)
                if t >= end:
                    break
                sim.at(t, action, sim, model)

    @staticmethod
    def _join(sim: Simulation, model: ReplicationModel) -> None:
        del model
        sim.add_node()

    @staticmethod
    def _leave(sim: Simulation, model: ReplicationModel) -> None:
        victim = _victim(sim, model)
        if victim is not None and len(sim.live_names()) > 2:
            model.leave(victim)

    def _crash(self, sim: Simulation, model: ReplicationModel) -> None:
        victim = _victim(sim, model)
        if victim is None or len(sim.live_names()) <= 2:
            return
        sim.crash(victim)
        if self.restart_after is not None and sim.now + self.restart_after < sim.duration - 1:
            sim.at(sim.now + self.restart_after, sim.restart, victim)
