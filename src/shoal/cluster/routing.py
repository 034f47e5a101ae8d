"""Topic placement from gossip: the glue between broker, registry and membership.

`TopicRouting` keeps this node's entry in the gossiped `Registry` in step
with its broker, spreads every change at once as a named application
broadcast through the membership engine, and repairs what broadcasts miss
with a digest exchange (`sync_exchange`) run over the gossip port. It also
answers the questions the lookup API asks, with liveness taken from
membership: producers on alive or suspect members only.

Fast path: a broker event becomes a registry entry, broadcast under the key
``reg:<owner>:<key>`` so a newer change to the same key replaces an older
one still queued. Receivers apply it and, when it was news, the engine
re-gossips it (epidemic spread, repeats die out).

Slow path (anti-entropy, Scuttlebutt): every `SYNC_INTERVAL`, with a random
live member, at once with a member that has just joined or come back, and at
once with an owner whose broadcasts arrived with a gap (one was missed):
the initiator sends its digest; the responder answers with the entries the
initiator lacks, then its own digest; the initiator answers with what the
responder lacks. Three messages, and only the differences travel.

The delegate hooks are sync and never block, as the engine requires.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from shoal.cluster.registry import (
    Entry,
    OwnerDelta,
    Registry,
    decode_delta,
    decode_digest,
    encode_delta,
    encode_digest,
)
from shoal.queue.broker import (
    ChannelCreated,
    ChannelDeleted,
    TopicCreated,
    TopicDeleted,
)
from shoal.queue.names import is_ephemeral

if TYPE_CHECKING:
    from collections.abc import Callable

    from shoal.queue.broker import Broker, BrokerEvent

__all__ = ["SYNC_INTERVAL", "MessageStream", "TopicRouting"]

log = logging.getLogger("shoal.routing")

#: Seconds between two anti-entropy exchanges started by this node. Changes
#: travel by broadcast and gaps are repaired at once, so this only bounds how
#: long a silently missed last change can go unrepaired; idle cost is one
#: digest exchange per node per interval (membership.md §7.2 G10).
SYNC_INTERVAL = 30.0
#: Longest broadcast key the engine accepts comfortably; longer keys are cut.
MAX_KEY = 200


class MessageStream(Protocol):
    """A message-framed, possibly encrypted stream (the gossip port's streams)."""

    async def send_message(self, data: bytes) -> None:
        """Send one message."""
        ...

    async def receive_message(self) -> bytes:
        """Receive one whole message."""
        ...


class TopicRouting:
    """This node's view of who holds which topics.

    Args:
        registry: the gossiped state, with this node's own entry.
        broker: this node's topics and channels; its events feed the registry.
        broadcast: queue a named application broadcast (the engine's
            ``broadcast_app``).
        alive: whether a member is alive or suspect (this node always is).
        identity: the registry generation a member announced in its gossip
            metadata, or None when unknown. State of an owner under another
            generation is dropped (counted in ``messages_dropped``): it is a
            second node using that owner's name, or a stale life of it, and
            must never replace the state of the member the cluster admitted.
        wall: wall-clock seconds (registry stamps, tombstone expiry).
        monotonic: local monotonic seconds (tombstone collection).
    """

    def __init__(
        self,
        registry: Registry,
        broker: Broker,
        *,
        broadcast: Callable[[str, bytes], None],
        alive: Callable[[str], bool],
        identity: Callable[[str], int | None] | None = None,
        wall: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self.registry = registry
        self.broker = broker
        self._broadcast = broadcast
        self._alive = alive
        self._identity = identity
        self._wall = wall
        self._monotonic = monotonic
        self.messages_applied = 0
        self.messages_dropped = 0
        info = registry.own_entry("info")
        if info is not None:
            self._send(info)
        for topic in broker.topics.values():
            self._publish_topic(topic.name)
        broker.add_listener(self.on_broker_event)

    def wall(self) -> float:
        """Wall-clock seconds, as the registry's stamps use them."""
        return self._wall()

    # -- liveness ---------------------------------------------------------------

    def alive(self, owner: str) -> bool:
        """Producers of ``owner`` are listed (always true of this node)."""
        return owner == self.registry.name or self._alive(owner)

    # -- broker to registry -----------------------------------------------------

    def on_broker_event(self, event: BrokerEvent) -> None:
        """Mirror topic and channel changes into this node's registry entry."""
        if isinstance(event, TopicCreated | ChannelCreated | ChannelDeleted):
            self._publish_topic(event.topic)
        elif isinstance(event, TopicDeleted):
            entry = self.registry.remove_topic(event.topic, self._monotonic())
            if entry is not None:
                self._send(entry)

    def _publish_topic(self, name: str) -> None:
        topic = self.broker.get_topic(name)
        if topic is None or topic.deleted:
            return
        entry = self.registry.set_topic(
            name, topic.channels.keys(), wall=self._wall(), now=self._monotonic()
        )
        self._send(entry)

    def known_channels(self, topic: str) -> list[str]:
        """Non-ephemeral channels the cluster knows for ``topic`` (pre-created locally)."""
        return [c for c in self.registry.channels(topic, self.alive) if not is_ephemeral(c)]

    # -- lookup-API writes, gossiped cluster-wide --------------------------------

    def register(self, topic: str, channel: str | None) -> None:
        """``/topic/create`` or ``/channel/create`` through the lookup API."""
        self._send(self.registry.register(topic, channel, wall=self._wall(), now=self._monotonic()))

    def order_delete(self, topic: str, channel: str | None) -> None:
        """``/topic/delete`` or ``/channel/delete`` through the lookup API."""
        self._send(
            self.registry.order_delete(topic, channel, wall=self._wall(), now=self._monotonic())
        )

    def tombstone(self, topic: str, http_id: str, lifetime: float) -> None:
        """``/topic/tombstone``: hide producer ``http_id`` of ``topic`` for ``lifetime`` s."""
        until = self._wall() + lifetime
        self._send(self.registry.tombstone(topic, http_id, until=until, now=self._monotonic()))

    def _send(self, entry: Entry) -> None:
        registry = self.registry
        # Watermark 0: a lone entry says nothing about the entries before it.
        delta = OwnerDelta(registry.name, registry.generation, 0, False, [entry])
        key = f"reg:{registry.name}:{entry.key}"
        self._broadcast(key[:MAX_KEY], encode_delta([delta]))

    # -- membership delegate (sync, fast) ---------------------------------------

    def local_state(self) -> bytes:
        """Nothing rides in membership push-pulls: `sync_exchange` does the repair."""
        return b""

    def merge_remote_state(self, data: bytes, from_name: str) -> None:
        """Ignore push-pull state (see `local_state`)."""
        del data, from_name

    def notify_message(self, data: bytes) -> bool:
        """Apply a broadcast registry entry; True when it was news (re-gossip it).

        Raises:
            RemoteProtocolError: the message is malformed (the engine counts it).
        """
        changed = False
        for delta in decode_delta(data):
            if self._admitted(delta):
                changed |= self.registry.apply_delta(delta, self._monotonic())
        self.messages_applied += 1
        return changed

    # -- anti-entropy -----------------------------------------------------------

    async def sync_exchange(self, stream: MessageStream) -> None:
        """Initiate a digest exchange over ``stream`` (three messages).

        Raises:
            RemoteProtocolError: the peer sent malformed data; what arrived
                before it was applied.
        """
        registry = self.registry
        await stream.send_message(encode_digest(registry.digest()))
        self._apply(await stream.receive_message())
        peer_digest = decode_digest(await stream.receive_message())
        await stream.send_message(encode_delta(registry.delta(peer_digest)))

    async def answer_exchange(self, stream: MessageStream) -> None:
        """Answer a digest exchange another node started.

        Raises:
            RemoteProtocolError: the peer sent malformed data.
        """
        registry = self.registry
        peer_digest = decode_digest(await stream.receive_message())
        await stream.send_message(encode_delta(registry.delta(peer_digest)))
        await stream.send_message(encode_digest(registry.digest()))
        self._apply(await stream.receive_message())

    def _apply(self, data: bytes) -> None:
        now = self._monotonic()
        for delta in decode_delta(data):
            if self._admitted(delta):
                self.registry.apply_delta(delta, now)

    def _admitted(self, delta: OwnerDelta) -> bool:
        """Whether ``delta`` belongs to the life of its owner that membership admitted."""
        if self._identity is None:
            return True
        known = self._identity(delta.owner)
        if known is None or known == delta.generation:
            return True
        self.messages_dropped += 1
        return False

    def collect(self) -> None:
        """Forget old tombstones (called now and then by the node)."""
        self.registry.collect(self._monotonic())
