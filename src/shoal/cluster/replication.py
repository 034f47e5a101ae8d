"""The replication shell: drives the pure cores of `shoal.replication` over the gossip port.

Rules:
1. A topic is replicated on its owner when its factor (the node's
   ``--replication-factor``, or the topic's own from ``/topic/create``) is
   above 1 and it is not ephemeral. Its `Topic.replicated` then holds an
   `_Owned`; every other topic keeps NSQ's path untouched.
2. A replicated publish gets its IDs at once, becomes a `Publish` record,
   and is placed in the owner's channels only when the record commits, in
   sequence order (from `_Owned.settle`), so an error reply means the
   owner never delivers it.
3. One stream per owner → replica member, whatever the number of topics:
   opened by the owner under `REPLICATION_TAG`, it carries the owner's name,
   then batches one way and acknowledgements back, pipelined. Every new
   connection starts each topic with a snapshot (`OwnerTopic.resync`), so a
   replica that kept state from an older life of the owner is replaced, not
   merged.
4. Placement follows membership: on every member event the replicas of
   each owned topic are recomputed (`placement.replicas`) and links opened
   or closed, and every held copy is adopted, kept or dropped as
   `shoal.replication.failover.holder_action` says from the view after the
   event (`_decide_copies`): a holder whose owner was declared dead, or
   left, adopts when it ranks first among the alive members in the
   topic's order, and records what it adopted for its own replicas: it is
   their owner now. A member that leaves a live owner's replica set keeps
   its copy until the owner sends it a `Release` (the new set acknowledged
   everything it could hold): the link to it stays open until then.
5. A graceful leave hands the owned topics over before it spreads
   (`Replication.hand_over`): a final flush to the replicas, then the
   owner empties what they all hold, and the first of them adopts.

Theory of operation:
    The TCP and HTTP publish paths call `Replicator.publish`, which appends
    the record, wakes the links and waits for the record's fate. One task
    (`Replication._expire_publishes`) calls `OwnerTopic.expire` at the
    oldest deadline, which fails every publish past its deadline and
    appends their `Abort`s.
    FINs arrive through `Channel.on_finish` and are batched per channel
    into one `Finish` record when a link next sends (or every
    `FIN_BATCH` FINs). Channel creation and deletion come from the
    broker's events.

    On a replica, `_serve_owner` applies batches with
    `shoal.replication.replica.receive`, writes them through the
    `ReplicaStore` (fsynced off the event loop in durable mode) and then
    acknowledges. A gap is answered with `Resync` and the owner sends a
    snapshot.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import time
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import trio

from shoal.cluster.adoptions import Adoptions, id_ranges
from shoal.cluster.replica_store import ReplicaStore
from shoal.config import FACTORS_FILE, MAX_REPLICATION_FACTOR, REPLICAS_DIRECTORY, REPLICATION_TAG
from shoal.errors import LocalProtocolError, RemoteProtocolError
from shoal.membership.state import MemberState
from shoal.queue.broker import ChannelCreated as ChannelCreatedEvent
from shoal.queue.broker import ChannelDeleted, TopicCreated, TopicDeleted
from shoal.queue.names import is_valid_topic_name
from shoal.replication import OwnerTopic, ReplicaTopic, receive, replicas
from shoal.replication.codec import Ack, Factor, Release, Resync, decode_frame, encode_frame
from shoal.replication.failover import HolderAction, holder_action
from shoal.replication.records import (
    Batch,
    ChannelCreated,
    ChannelDropped,
    Finish,
    Publish,
    Pump,
    TopicDropped,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from shoal.cluster.membership_driver import MembershipDriver, MessageStream
    from shoal.cluster.node import Node
    from shoal.config import NodeConfig
    from shoal.membership.events import Event
    from shoal.queue.broker import Broker, BrokerEvent
    from shoal.queue.topic import Topic

__all__ = [
    "REPLICATION_TAG",
    "Replication",
    "Replicator",
    "StreamCounters",
    "attach_replication",
    "start_replication",
]

log = logging.getLogger("shoal.replication")

#: Records per batch: small enough that a batch of MPUBs stays far below
#: the stream's message limit, big enough to amortise a frame.
BATCH_RECORDS = 64
#: FINs of one channel gathered before they are recorded without waiting for a link.
FIN_BATCH = 512
#: Pause before a broken link is dialled again.
RETRY_INTERVAL = 0.2
_LIVE = (MemberState.ALIVE, MemberState.SUSPECT)


class Replicator(Protocol):
    """What the publish paths need: publish to a replicated topic and await its replicas."""

    async def publish(
        self, topic: Topic, bodies: tuple[bytes, ...], now: float, defer: float
    ) -> bool:
        """Publish ``bodies``; True once committed, False once failed."""
        ...  # pragma: no cover

    def emptied(self, topic: Topic, channel: str | None) -> None:
        """``/channel/empty`` (``channel``) or ``/topic/empty`` (None) just ran on ``topic``."""
        ...  # pragma: no cover


class _Pending(msgspec.Struct):
    """A publish waiting for its record to commit."""

    ids: tuple[bytes, ...]
    bodies: tuple[bytes, ...]
    timestamp: int
    defer: float
    channels: tuple[str, ...] | None
    done: trio.Event = msgspec.field(default_factory=trio.Event)
    ok: bool = False


class StreamCounters(msgspec.Struct):
    """Frames on this node's replication streams, for ``/stats`` (``replication.frames``).

    A publish's round trip is one batch out and one acknowledgement back
    per replica when nothing else is under way; under load several
    publishes share a batch and an acknowledgement. These count them, so
    frames per publish can be checked rather than timed.

    Attributes:
        batches_sent: batch frames sent to replicas (snapshots included).
        records_sent: records in them (a snapshot counts as one).
        commits_sent: batches among them that carry no record, only the
            committed watermark (sent when something else woke the link).
        acks_received: acknowledgements read from replicas.
        batches_received: batch frames applied from owners.
        acks_sent: acknowledgements sent to owners.
    """

    batches_sent: int = 0
    records_sent: int = 0
    commits_sent: int = 0
    acks_received: int = 0
    batches_received: int = 0
    acks_sent: int = 0


class _Owned:
    """One replicated topic on its owner: the core, its waiting publishes, its FINs."""

    def __init__(self, topic: Topic, core: OwnerTopic, wake: Callable[[], None]) -> None:
        self.topic = topic
        self.core = core
        self.pending: collections.OrderedDict[int, _Pending] = collections.OrderedDict()
        self.fins: dict[str, list[bytes]] = {}
        self.wake = wake

    def finished(self, channel: str, msg_id: bytes) -> None:
        """`Channel.on_finish`: remember the FIN; record a full batch at once."""
        ids = self.fins.setdefault(channel, [])
        ids.append(msg_id)
        if len(ids) >= FIN_BATCH:
            self.flush_fins()
            self.wake()

    def flush_fins(self) -> None:
        """Record the FINs gathered so far, one `Finish` per channel."""
        if not self.fins:
            return
        fins, self.fins = self.fins, {}
        now = trio.current_time()
        for channel, ids in fins.items():
            self.core.append(Finish(channel=channel, ids=tuple(ids)), now)

    def emptied(self, channel: str | None) -> None:
        """Record an empty; the publishes still waiting for their replicas were before it.

        Their records precede the drop, so the replicas drop them too: the
        owner must not place them where the empty reached once they commit.
        """
        self.flush_fins()
        now = trio.current_time()
        if channel is None:
            self.core.append(TopicDropped(deleted=False), now)
        elif not channel.endswith("#ephemeral"):  # never replicated
            self.core.append(ChannelDropped(channel=channel, deleted=False), now)
        for waiting in self.pending.values():
            if channel is None:
                if waiting.channels is None:
                    waiting.channels = ()
            elif waiting.channels is not None and channel in waiting.channels:
                waiting.channels = tuple(name for name in waiting.channels if name != channel)
        self.wake()

    def settle(self) -> None:
        """Place every committed publish in the channels, in sequence order, and answer it."""
        committed = self.core.committed
        pending = self.pending
        now = time.time()
        while pending:
            seq, waiting = next(iter(pending.items()))
            if seq > committed:
                return
            del pending[seq]
            if not self.topic.deleted:
                self.topic.put_published(
                    waiting.ids,
                    waiting.bodies,
                    waiting.timestamp,
                    now,
                    waiting.defer,
                    waiting.channels,
                )
            waiting.ok = True
            waiting.done.set()

    def expire(self) -> None:
        """Fail the publishes past their deadline (their `Abort` follows)."""
        for seq in self.core.expire(trio.current_time()):
            waiting = self.pending.pop(seq, None)
            if waiting is not None:
                waiting.done.set()
        self.wake()


class _Link:
    """The stream to one replica member, with the event that wakes its sender."""

    def __init__(self, member: str) -> None:
        self.member = member
        self.wake = trio.Event()
        self.scope = trio.CancelScope()
        self.connected = False
        # The topic whose batches the sender is sending right now: it sends
        # that topic's records until none is left, so a publish to it needs
        # no wake-up (which would cost a pass and a watermark-only batch).
        self.draining: str | None = None


class Replication:
    """Replicated topics of one node: owner side, replica side, failover.

    Args:
        name: this node's member name.
        broker: the node's broker.
        driver: the gossip driver (streams, members, events).
        config: the node's settings (factor, quorum, timeout, durability).
        store: where this node, as a replica, keeps what it holds (None
            keeps it in memory only).
        factors_path: the file that keeps the topics' own factors
            (``/topic/create?replication_factor=N``) across restarts, or None.
        kick_backlog: called after an adoption put messages in a topic backlog.
    """

    def __init__(
        self,
        name: str,
        broker: Broker,
        driver: MembershipDriver,
        config: NodeConfig,
        *,
        store: ReplicaStore | None = None,
        factors_path: str | None = None,
        kick_backlog: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.broker = broker
        self.driver = driver
        self.config = config
        self.store = store
        self._kick_backlog = kick_backlog
        self.factors_path = factors_path
        self.factors: dict[str, int] = _load_factors(factors_path)
        # The factor each owner announced for the copies we hold (`Factor`).
        self.owner_factors: dict[tuple[str, str], int] = {}
        self.owned: dict[str, _Owned] = {}
        self.held: dict[tuple[str, str], ReplicaTopic] = {}
        # Copies whose owner released them (`Release`): dropped once outside its set.
        self.released: set[tuple[str, str]] = set()
        self.links: dict[str, _Link] = {}
        self.adopted: dict[tuple[str, str], int] = {}
        self.adopted_messages = 0
        self.failed_publishes = 0
        self.counters = StreamCounters()
        # Set by `hand_over`: publishes are refused and no link is opened again.
        self.leaving = False
        self.handed_over: list[str] = []
        self._acked = trio.Event()
        # What `_expire_publishes` sleeps until, and what wakes it sooner.
        self._expiry_at = math.inf
        self._expiry_wake = trio.Event()
        # The view `_decide_copies` last decided from.
        self._seen: tuple[frozenset[object], ...] | None = None
        #: Announces adoptions in the registry and drops what others adopted.
        self.adoptions: Adoptions | None = None
        self._nursery: trio.Nursery | None = None
        if store is not None:
            self.held.update(store.restore())

    # -- settings ---------------------------------------------------------------

    def factor_of(self, topic: str) -> int:
        """Copies kept of ``topic``'s messages: its own factor, else the node's."""
        if topic.endswith("#ephemeral"):
            return 1
        return self.factors.get(topic, self.config.replication_factor)

    def set_factor(self, topic: str, factor: int) -> None:
        """``/topic/create?replication_factor=N``: takes effect if the topic is new here."""
        if self.factors.get(topic) == factor:
            return
        self.factors[topic] = factor
        if self.factors_path is not None:
            _save_factors(self.factors_path, self.factors)

    def _held_factor(self, owner: str, topic: str) -> int:
        """The factor of a copy we hold: as its owner announced, else ours (at least 2)."""
        return self.owner_factors.get((owner, topic)) or max(self.factor_of(topic), 2)

    # -- service ----------------------------------------------------------------

    def start(self, nursery: trio.Nursery) -> None:
        """Replicate the topics that exist already, then follow events; links run in ``nursery``.

        Synchronous, so that a request that first needs replication (a
        replicated topic's creation, ``/stats``) finds it running before its
        own next step. Streams on `REPLICATION_TAG` go to `serve_stream`,
        routed by the caller (`start_replication` or the node's lazy start).
        """
        self._nursery = nursery
        self.driver.add_listener(self._on_member_event)
        self.broker.add_listener(self._on_broker_event)
        for topic in list(self.broker.topics.values()):
            self._attach(topic)
        self._place()
        nursery.start_soon(self._expire_publishes)

    async def serve_stream(self, stream: MessageStream, peer: Any) -> None:
        """The handler of `REPLICATION_TAG` streams: an owner sending to this replica."""
        await self._serve_owner(stream, peer)

    async def _expire_publishes(self) -> None:
        """Fail the publishes of every owned topic at their deadline.

        One task for all, rather than a deadline on each waiting publish: a
        publish's round trip then enters no cancel scope. It sleeps until
        the oldest deadline it knows of; a publish wakes it only when its
        topic's oldest deadline comes sooner (the task had nothing to wait
        for). A deadline passed by publishes that committed meanwhile costs
        one wake-up, which finds nothing to fail.
        """
        while True:
            self._expiry_at = min(
                (
                    deadline
                    for owned in self.owned.values()
                    if (deadline := owned.core.next_deadline()) is not None
                ),
                default=math.inf,
            )
            self._expiry_wake = trio.Event()
            with trio.move_on_at(self._expiry_at):
                await self._expiry_wake.wait()
            now = trio.current_time()
            for owned in list(self.owned.values()):
                deadline = owned.core.next_deadline()
                if deadline is not None and deadline <= now:
                    owned.expire()

    # -- owner side -------------------------------------------------------------

    def _on_broker_event(self, event: BrokerEvent) -> None:
        match event:
            case TopicCreated(topic=name):
                topic = self.broker.topics.get(name)
                if topic is not None:
                    self._attach(topic)
                    self._place()
            case TopicDeleted(topic=name):
                # Kept, so the links still send the drop; a topic created
                # again under the name continues the same records.
                owned = self.owned.get(name)
                if owned is not None:
                    owned.core.append(TopicDropped(deleted=True), trio.current_time())
                    for waiting in owned.pending.values():
                        waiting.done.set()
                    owned.pending.clear()
                    self._wake_links()
            case ChannelCreatedEvent(topic=name, channel=channel):
                owned = self.owned.get(name)
                if owned is not None and not channel.endswith("#ephemeral"):
                    self._hook_channel(owned, channel)
                    owned.core.append(ChannelCreated(channel=channel), trio.current_time())
                    self._wake_links()
            case ChannelDeleted(topic=name, channel=channel):
                owned = self.owned.get(name)
                if (
                    owned is not None
                    and not owned.topic.deleted
                    and not channel.endswith("#ephemeral")
                ):
                    owned.flush_fins()
                    owned.core.append(
                        ChannelDropped(channel=channel, deleted=True), trio.current_time()
                    )
                    self._wake_links()
            case _:
                pass

    def _attach(self, topic: Topic) -> None:
        factor = self.factor_of(topic.name)
        if factor <= 1:
            return
        owned = self.owned.get(topic.name)
        if owned is not None:
            if owned.topic is not topic:  # deleted, and created again
                owned.topic = topic
                topic.replicated = owned
                self._announce_channels(owned)
            return
        core = OwnerTopic(
            topic.name,
            required=self.config.replicas_required(factor),
            timeout=self.config.replication_timeout,
        )
        owned = _Owned(topic, core, self._wake_links)
        self.owned[topic.name] = owned
        topic.replicated = owned
        self._announce_channels(owned)

    def _announce_channels(self, owned: _Owned) -> None:
        now = trio.current_time()
        for channel in owned.topic.channels:
            if not channel.endswith("#ephemeral"):
                self._hook_channel(owned, channel)
                owned.core.append(ChannelCreated(channel=channel), now)

    def _hook_channel(self, owned: _Owned, channel: str) -> None:
        found = owned.topic.channels.get(channel)
        if found is not None and not found.ephemeral:

            def finished(msg_id: bytes, owned: _Owned = owned, channel: str = channel) -> None:
                owned.finished(channel, msg_id)

            found.on_finish = finished

    async def publish(
        self, topic: Topic, bodies: tuple[bytes, ...], now: float, defer: float
    ) -> bool:
        """Publish to a replicated topic; True once committed, False on timeout."""
        owned = self.owned.get(topic.name)
        if owned is None or owned.topic is not topic or self.leaving:
            return False
        ts = int(now * 1e9)
        ids = topic.new_ids(ts, len(bodies))
        channels = topic.fanout_names()
        record = Publish(
            ids=ids,
            bodies=bodies,
            timestamp=ts,
            due=now + defer if defer > 0 else 0.0,
            # Ephemeral channels are never replicated (NSQ discards them).
            channels=None
            if channels is None
            else tuple(name for name in channels if not name.endswith("#ephemeral")),
        )
        waiting = _Pending(ids, bodies, ts, defer, channels)
        seq = owned.core.append(record, trio.current_time())
        owned.pending[seq] = waiting
        owned.settle()
        if not waiting.done.is_set():
            for link in self.links.values():
                if link.draining != topic.name:
                    link.wake.set()
            deadline = owned.core.next_deadline()
            if deadline is not None and deadline < self._expiry_at:
                self._expiry_wake.set()
            # Bounded: `_expire_publishes` fails it at its deadline.
            await waiting.done.wait()
        if not waiting.ok:
            self.failed_publishes += 1
        return waiting.ok

    def emptied(self, topic: Topic, channel: str | None) -> None:
        """``/topic/empty`` or ``/channel/empty``: the replicas drop the same messages.

        Without it an adoption would deliver the emptied messages again.
        """
        owned = self.owned.get(topic.name)
        if owned is not None and owned.topic is topic:
            owned.emptied(channel)

    def pumped(self, topic: Topic, count: int) -> None:
        """The node moved ``count`` backlog messages of ``topic`` into its channels."""
        owned = self.owned.get(topic.name)
        if owned is None or count <= 0:
            return
        channels = tuple(topic.channels)
        owned.core.append(Pump(count=count, channels=channels), trio.current_time())
        self._wake_links()

    def _wake_links(self) -> None:
        for link in self.links.values():
            link.wake.set()

    # -- placement --------------------------------------------------------------

    def _alive(self) -> list[str]:
        """Members that can hold copies: alive or suspect, with a broker."""
        return [
            member.name
            for member in self.driver.members()
            if member.state in _LIVE and member.meta.get("t", "0") != "0"
        ]

    def _place(self) -> None:
        if self.leaving:
            return
        alive = self._alive()
        known = {member.name for member in self.driver.members()}
        live = set(alive)
        wanted: set[str] = set()
        for name, owned in self.owned.items():
            chosen = replicas(self.name, name, alive, self.factor_of(name))
            owned.core.set_replicas(chosen)
            wanted.update(chosen)
            for former in owned.core.formers:
                if former not in known:
                    owned.core.released(former)  # reaped: nothing left to release
                elif former in live:
                    wanted.add(former)  # stays linked until it is released
            owned.settle()
        for member in list(self.links):
            if member not in wanted:
                self.links.pop(member).scope.cancel()
        if self._nursery is not None:
            for member in wanted - self.links.keys():
                link = _Link(member)
                self.links[member] = link
                self._nursery.start_soon(self._run_link, link)
        self._wake_links()

    def _on_member_event(self, event: Event) -> None:
        # Level-triggered: which event it was does not matter, only the view
        # afterwards (`shoal.replication.failover`).
        del event
        self._place()
        self._decide_copies()

    # -- links (owner → replica) -----------------------------------------------

    async def _run_link(self, link: _Link) -> None:
        with link.scope:
            while True:
                member = self.driver.member(link.member)
                if member is None or member.state not in _LIVE:
                    await trio.sleep(RETRY_INTERVAL)
                    continue
                try:
                    async with self.driver.open_stream(member.address, REPLICATION_TAG) as stream:
                        await stream.send_message(self.name.encode("utf-8"))
                        for owned in self.owned.values():
                            owned.core.resync(link.member)
                        link.connected = True
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._read_acks, stream, link.member)
                            await self._send_loop(stream, link)
                except* (
                    OSError,
                    trio.TooSlowError,
                    trio.BrokenResourceError,
                    trio.ClosedResourceError,
                    trio.EndOfChannel,
                    RemoteProtocolError,
                    LocalProtocolError,
                ) as group:
                    log.info("replication link to %s broke: %s", link.member, group.exceptions[0])
                link.connected = False
                for owned in self.owned.values():
                    owned.core.rewind(link.member)
                await trio.sleep(RETRY_INTERVAL)

    async def _send_loop(self, stream: MessageStream, link: _Link) -> None:
        try:
            await self._send_passes(stream, link)
        finally:
            link.draining = None  # a broken stream sends nothing more

    async def _send_passes(self, stream: MessageStream, link: _Link) -> None:
        member = link.member
        announced: set[str] = set()
        while True:
            link.wake = trio.Event()
            for name, owned in list(self.owned.items()):
                if member in owned.core.releasable():
                    await stream.send_message(encode_frame(Release(topic=name)))
                    owned.core.released(member)
                if not owned.core.is_replica(member):
                    continue
                if name not in announced:
                    factor = self.factor_of(name)
                    await stream.send_message(encode_frame(Factor(topic=name, factor=factor)))
                    announced.add(name)
                owned.flush_fins()
                link.draining = name
                alone = True
                # Bounded: each batch advances what was sent to the member.
                while (
                    batch := owned.core.outgoing(member, BATCH_RECORDS, watermark_alone=alone)
                ) is not None:
                    alone = False
                    await stream.send_message(encode_frame(batch))
                    counters = self.counters
                    counters.batches_sent += 1
                    if batch.snapshot is not None:
                        counters.records_sent += 1
                    elif batch.records:
                        counters.records_sent += len(batch.records)
                    else:
                        counters.commits_sent += 1
                link.draining = None
            if not any(
                owned.core.is_replica(member) or owned.core.is_former(member)
                for owned in self.owned.values()
            ):
                # Released from every topic: nothing more to send it.
                if self.links.get(member) is link:
                    del self.links[member]
                link.scope.cancel()
                return
            await link.wake.wait()

    async def _read_acks(self, stream: MessageStream, member: str) -> None:
        while True:
            frame = decode_frame(await stream.receive_message())
            match frame:
                case Ack(topic=topic, seq=seq):
                    self.counters.acks_received += 1
                    owned = self.owned.get(topic)
                    if owned is not None:
                        owned.core.ack(member, seq)
                        owned.settle()
                        if owned.core.has_formers:
                            self._wake_links()  # a former replica may be released
                    self._acked.set()
                case Resync(topic=topic):
                    owned = self.owned.get(topic)
                    if owned is not None:
                        owned.core.resync(member)
                        self._wake_links()
                case Batch() | Factor() | Release():
                    raise RemoteProtocolError("a replica sent what only an owner sends")

    # -- replica side -----------------------------------------------------------

    async def _serve_owner(self, stream: MessageStream, peer: Any) -> None:
        """An owner's stream: apply its batches, keep them, acknowledge."""
        del peer
        owner = (await stream.receive_message()).decode("utf-8", "replace")
        while True:
            try:
                data = await stream.receive_message()
            except trio.EndOfChannel:
                return
            frame = decode_frame(data)
            if isinstance(frame, Factor):
                self.owner_factors[owner, frame.topic] = frame.factor
                continue
            if isinstance(frame, Release):
                if (owner, frame.topic) in self.held:
                    self.released.add((owner, frame.topic))
                    self._decide_copies()
                continue
            if not isinstance(frame, Batch):
                raise RemoteProtocolError("an owner sent something other than a batch")
            # `decode_frame` refuses a frame whose topic is not a valid name.
            key = (owner, frame.topic)
            self.counters.batches_received += 1
            self.released.discard(key)  # in its set again: the release is void
            try:
                held = receive(self.held.get(key), frame)
            except RemoteProtocolError:
                await stream.send_message(encode_frame(Resync(topic=frame.topic)))
                continue
            self.held[key] = held
            if self.store is not None:
                try:
                    await self.store.append(key, data, held)
                except OSError as exc:
                    # Not acknowledged, and forgotten: the owner's next link
                    # starts this topic with a snapshot, logged afresh.
                    del self.held[key]
                    log.error(  # noqa: TRY400 - one line, no traceback, for operators
                        "replica log of %s/%s cannot be written: %s", owner, key[1], exc
                    )
                    return
            await stream.send_message(encode_frame(Ack(topic=frame.topic, seq=held.applied)))
            self.counters.acks_sent += 1

    # -- failover ---------------------------------------------------------------

    def _decide_copies(self) -> None:
        """Adopt, keep or drop every copy we hold, from the membership view now.

        `holder_action` decides; a graceful leave counts as a death because
        a leaving owner hands its topics over (`hand_over`). Asked after
        every member event, so a holder that heard of the owner's death
        while a better-ranked replica still looked alive adopts once it
        hears that one died too. The decision depends only on who is live,
        dead or gone and on the copies held and their factors: other events
        (a suspicion, a refutation) skip it.
        """
        if self.leaving or not self.held:
            return
        states = {
            member.name: member.state
            for member in self.driver.members()
            if member.meta.get("t", "0") != "0"
        }
        states[self.name] = MemberState.ALIVE
        seen = (
            # Alive and suspect are alike to the decision.
            frozenset((name, state in _LIVE or state) for name, state in states.items()),
            frozenset(self.held),
            frozenset(self.owner_factors.items()),
            frozenset(self.released),
        )
        if seen == self._seen:
            return
        self._seen = seen
        for owner, topic in list(self.held):
            if owner == self.name or (owner, topic) not in self.held:
                continue
            factor = self._held_factor(owner, topic)
            action = holder_action(
                self.name,
                owner,
                topic,
                states,
                factor,
                leave_hands_over=True,
                released=(owner, topic) in self.released,
            )
            if action is HolderAction.ADOPT:
                self._adopt(owner, topic)
            elif action is HolderAction.DROP:
                del self.held[owner, topic]
                self.released.discard((owner, topic))
                if self.store is not None:
                    self.store.drop((owner, topic))

    def _adopt(self, owner: str, name: str) -> None:
        """Serve the dead owner's unfinished messages of ``name`` from our own broker.

        The adopter is their owner now: the topic becomes replicated here (at
        the factor its first owner kept, at least) and every adopted message
        is recorded for our own replicas, so a second failure before they are
        consumed loses nothing. They are delivered at once, not after our
        replicas acknowledge: waiting would strand them when no other member
        is left to hold a copy.
        """
        held = self.held.pop((owner, name))
        self.released.discard((owner, name))
        if self.store is not None:
            self.store.drop((owner, name))
        factor = self._held_factor(owner, name)
        if name not in self.owned and self.factor_of(name) < factor:
            self.set_factor(name, factor)
        now = time.time()
        topic, _ = self.broker.get_or_create_topic(name, now)
        self._attach(topic)  # an unreplicated topic of that name becomes replicated
        owned = self.owned.get(name)
        for channel in held.channels:
            self.broker.get_or_create_channel(name, channel, now)
        clock = trio.current_time()
        count = 0
        adopted_ids: list[bytes] = []
        for record in held.snapshot().records:
            if not isinstance(record, Publish):
                continue
            for channel in record.channels or ():
                self.broker.get_or_create_channel(name, channel, now)
            defer = max(record.due - now, 0.0) if record.due else 0.0
            topic.put_published(
                tuple(record.ids),
                tuple(record.bodies),
                record.timestamp,
                now,
                defer,
                record.channels,
            )
            if owned is not None:
                owned.core.append(record, clock, awaited=False)
            count += len(record.ids)
            adopted_ids += record.ids
        self.adopted[owner, name] = count
        if count and self.adoptions is not None:
            self.adoptions.announce(owner, name, id_ranges(adopted_ids))
        self.adopted_messages += count
        last = max(adopted_ids, default=b"")
        log.warning(
            "adopted topic %s of member %s: %d unfinished message(s), last ID %s",
            name,
            owner,
            count,
            last.decode("ascii", "replace"),
        )
        self._place()
        if self._kick_backlog is not None:
            self._kick_backlog()

    # -- graceful leave -----------------------------------------------------------

    async def hand_over(self, limit: float) -> list[str]:
        """Graceful leave: hand every replicated topic to its replicas, then drop it here.

        An owner that leaves for good (decommissioned) would otherwise strand
        what it holds on its own disk. It stops accepting replicated
        publishes, records the FINs it gathered and waits, at most ``limit``
        seconds, until every replica acknowledged every record. It then
        empties each topic handed over, so it delivers none of it again,
        neither during the rest of its leave nor after a restart; its first
        replica adopts the topic on hearing of the leave, as on a death. A
        topic that has no replica, or whose replicas did not all acknowledge
        in time, stays here, flushed to disk like any other topic, and is
        served again if the node returns (its replicas adopt what they hold
        too: duplicates, never a loss).

        Returns:
            The topics handed over.
        """
        self.leaving = True
        with trio.move_on_after(limit):
            # Bounded by the deadline; each pass waits for an acknowledgement.
            while True:
                # FINs keep coming from consumers until the servers close.
                for owned in self.owned.values():
                    owned.flush_fins()
                self._wake_links()
                if not any(_handing(owned) for owned in self.owned.values()):
                    break
                self._acked = trio.Event()
                await self._acked.wait()
        for link in self.links.values():
            link.scope.cancel()
        self.links.clear()
        handed = []
        for name, owned in sorted(self.owned.items()):
            stats = owned.core.statistics()
            if owned.pending or not stats.watermarks:
                continue
            if min(stats.watermarks.values()) < stats.appended:
                continue
            owned.topic.empty()
            for channel in owned.topic.channels.values():
                channel.empty()
            handed.append(name)
        kept = sorted(self.owned.keys() - set(handed))
        log.info("handed over %d replicated topic(s); kept %s", len(handed), kept or "none")
        self.handed_over = handed
        return handed

    # -- visibility -------------------------------------------------------------

    def lags(self) -> list[tuple[str, str, int]]:
        """``(topic, replica, records it has not acknowledged)`` for ``/metrics``."""
        out = []
        for name, owned in sorted(self.owned.items()):
            stats = owned.core.statistics()
            out += [(name, replica, stats.lag(replica)) for replica in sorted(stats.watermarks)]
        return out

    def statistics(self) -> dict[str, Any]:
        """The ``replication`` object of ``/stats``."""
        topics = {}
        for name, owned in self.owned.items():
            stats = owned.core.statistics()
            topics[name] = {
                "factor": self.factor_of(name),
                "replicas": sorted(stats.watermarks),
                "appended": stats.appended,
                "committed": stats.committed,
                "failed": stats.failed,
                "lag": {replica: stats.lag(replica) for replica in sorted(stats.watermarks)},
                "waiting_publishes": len(owned.pending),
            }
        return {
            "factor": self.config.replication_factor,
            "min_replicas": self.config.required_replicas,
            "owned": topics,
            "held": [
                {"owner": owner, "topic": topic, "messages": len(held), "applied": held.applied}
                for (owner, topic), held in sorted(self.held.items())
            ],
            "adopted": [
                {"owner": owner, "topic": topic, "messages": count}
                for (owner, topic), count in sorted(self.adopted.items())
            ],
            "adopted_messages": self.adopted_messages,
            "failed_publishes": self.failed_publishes,
            "frames": msgspec.structs.asdict(self.counters),
            **({"adoptions": self.adoptions.statistics()} if self.adoptions is not None else {}),
        }

    def lag_of(self, topic: str) -> dict[str, int] | None:
        """Records each replica of our ``topic`` has not acknowledged; None when not ours."""
        owned = self.owned.get(topic)
        if owned is None:
            return None
        stats = owned.core.statistics()
        return {replica: stats.lag(replica) for replica in sorted(stats.watermarks)}


def _handing(owned: _Owned) -> bool:
    """Whether ``owned`` still waits for its replicas (it has some, and they lag)."""
    stats = owned.core.statistics()
    if not stats.watermarks:
        return False
    return bool(owned.pending) or min(stats.watermarks.values()) < stats.appended


def _load_factors(path: str | None) -> dict[str, int]:
    """The topics' own factors kept at ``path`` (nothing if absent or unreadable)."""
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("replication factors in %s are unreadable (%s); using the default", path, exc)
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        str(topic): int(factor)
        for topic, factor in data.items()
        if is_valid_topic_name(str(topic))
        and isinstance(factor, int)
        and 1 <= factor <= MAX_REPLICATION_FACTOR
    }


def _save_factors(path: str, factors: dict[str, int]) -> None:
    """Replace the factors file atomically (a few bytes per topic, written rarely)."""
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as fh:
        json.dump(factors, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temporary, path)


async def start_replication(node: Node, nursery: trio.Nursery) -> Replication:
    """Start a node's replication service as the node starts, and route its streams.

    For a node that has replicated topics or holds copies when it starts; a
    restarted owner learns the adoptions of its topics before it serves.
    """
    assert node.driver is not None
    replication = attach_replication(node, nursery)
    node.driver.add_stream_handler(REPLICATION_TAG, replication.serve_stream, long_lived=True)
    if replication.adoptions is not None:
        restored = any(replication.factor_of(name) > 1 for name in node.broker.topics)
        await replication.adoptions.wait_for_view(needed=restored and bool(node.config.seeds))
    return replication


def attach_replication(node: Node, nursery: trio.Nursery) -> Replication:
    """Build a node's replication service, start it in ``nursery`` and wire it in.

    Synchronous (see `Replication.start`); streams on `REPLICATION_TAG` are
    the caller's to route to `Replication.serve_stream`. Inert while every
    topic's factor is 1 (``docs/replication.md``).
    """
    assert node.driver is not None
    config = node.config
    data_path = config.data_path
    store = None
    if data_path is not None:
        store = ReplicaStore(os.path.join(data_path, REPLICAS_DIRECTORY), durable=config.durable)
    replication = Replication(
        node.driver.name,
        node.broker,
        node.driver,
        config,
        store=store,
        factors_path=None if data_path is None else os.path.join(data_path, FACTORS_FILE),
        kick_backlog=node.kick_backlog,
    )
    replication.start(nursery)
    routing = node.routing
    if routing is not None:
        routing.factor_of = replication.factor_of
        routing.lag_of = replication.lag_of
        routing.republish_replicated()
        adoptions = Adoptions(
            node.driver.name,
            node.broker,
            routing,
            wall=time.time,
            monotonic=time.monotonic,
            node_id=config.queue.node_id,
        )
        replication.adoptions = adoptions
        nursery.start_soon(adoptions.run)
    node.tcp.replicator = replication
    node.http_api.replicator = replication
    node.http_api.set_replication_factor = replication.set_factor
    return replication
