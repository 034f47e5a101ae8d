"""The broker: every topic and channel of one node, and their deadlines.

Rules:
1. Every create, delete and pause of a topic or channel goes through the
   broker, which tells its listeners with one event per change, after the
   change is made (so a listener may read the broker, and may even create
   more topics or channels from inside the call).
2. The broker never reads a clock; `Broker.process` is called with ``now``
   and `Broker.next_deadline` says when to call it again.

Theory of operation:
    Listeners are the gossiped topic registry (which announces "this node
    has topic T / channel C") and the metadata file (which persists topics,
    channels and pause states). Both want the same facts, so they get the
    same frozen events.

    Deadline index: a heap of ``(deadline, seq, channel)``. A channel calls
    its ``on_deadline`` hook whenever it gains a deadline earlier than the
    one it last announced (`Channel.announced_deadline`); the broker pushes
    an entry. An entry is live only while its deadline still equals the
    channel's announced deadline and the channel is not deleted; others are
    stale and dropped when they reach the top. `process` pops the due entries
    and calls `Channel.process` on their channels, which re-announces the
    channel's true next deadline. So a call costs O(k log n) for k due or
    stale entries, never a scan of all channels; a channel whose messages
    were answered before their deadline costs one wasted visit at the old
    deadline.

    When a topic is created, channels known elsewhere in the cluster are
    created with it (docs/nsq.md §0.10), so messages published before any
    consumer connects here are kept for them; ``known_channels`` supplies
    those names and ephemeral ones are skipped, as nsqd does.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

import msgspec

from shoal.queue.backend import memory_backend_factory
from shoal.queue.channel import EPHEMERAL_SUFFIX, Channel
from shoal.queue.topic import Topic

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from shoal.queue.backend import BackendFactory
    from shoal.queue.config import QueueConfig

__all__ = [
    "Broker",
    "BrokerEvent",
    "ChannelCreated",
    "ChannelDeleted",
    "ChannelPaused",
    "TopicCreated",
    "TopicDeleted",
    "TopicPaused",
]


class TopicCreated(msgspec.Struct, frozen=True, kw_only=True):
    """A topic now exists on this node."""

    topic: str


class TopicDeleted(msgspec.Struct, frozen=True, kw_only=True):
    """A topic and all its channels are gone from this node."""

    topic: str


class ChannelCreated(msgspec.Struct, frozen=True, kw_only=True):
    """A channel now exists on this node."""

    topic: str
    channel: str


class ChannelDeleted(msgspec.Struct, frozen=True, kw_only=True):
    """A channel is gone from this node (also sent for each channel of a deleted topic)."""

    topic: str
    channel: str


class TopicPaused(msgspec.Struct, frozen=True, kw_only=True):
    """A topic's pause state was set (sent on every pause or unpause request)."""

    topic: str
    paused: bool


class ChannelPaused(msgspec.Struct, frozen=True, kw_only=True):
    """A channel's pause state was set (sent on every pause or unpause request)."""

    topic: str
    channel: str
    paused: bool


BrokerEvent = (
    TopicCreated | TopicDeleted | ChannelCreated | ChannelDeleted | TopicPaused | ChannelPaused
)


class Broker:
    """The topics of one node.

    Args:
        config: limits and defaults shared by every topic and channel.
        backend_factory: opens each topic's and channel's overflow store.
        known_channels: given a topic name, the channel names other nodes hold
            for it; consulted once when the topic is created here. None when
            there is no cluster view.

    Attributes:
        topics: the topics by name. Change it only through the broker's
            methods, so listeners hear of every change.
    """

    def __init__(
        self,
        config: QueueConfig,
        backend_factory: BackendFactory = memory_backend_factory,
        *,
        known_channels: Callable[[str], Iterable[str]] | None = None,
    ) -> None:
        self.topics: dict[str, Topic] = {}
        self._config = config
        self._backend_factory = backend_factory
        self._known_channels = known_channels
        self._listeners: list[Callable[[BrokerEvent], None]] = []
        self._heap: list[tuple[float, int, Channel]] = []
        self._seq = 0
        #: Called after a channel announces a deadline, so a driver that
        #: sleeps while there is none (`next_deadline` is None) wakes up.
        self.on_deadline: Callable[[], None] | None = None

    # -- listeners --------------------------------------------------------

    def add_listener(self, fn: Callable[[BrokerEvent], None]) -> None:
        """Call ``fn(event)`` after every create, delete and pause.

        Listeners run synchronously, in the order added, and must be quick
        (post to a channel if they need I/O). An exception from a listener
        propagates to the broker's caller; the change itself is already made.
        """
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[BrokerEvent], None]) -> None:
        """Stop calling ``fn``.

        Raises:
            ValueError: ``fn`` was not added.
        """
        self._listeners.remove(fn)

    def _emit(self, event: BrokerEvent) -> None:
        for fn in tuple(self._listeners):
            fn(event)

    # -- topics -----------------------------------------------------------

    def get_topic(self, name: str) -> Topic | None:
        """Return the topic called ``name``, or None."""
        return self.topics.get(name)

    def get_or_create_topic(self, name: str, now: float) -> tuple[Topic, bool]:
        """Return the topic called ``name``, creating it if needed.

        A new topic emits `TopicCreated`, then gets the non-ephemeral channels
        ``known_channels`` names (each emitting `ChannelCreated`).

        Returns:
            The topic and whether it was created by this call.
        """
        topic = self.topics.get(name)
        if topic is not None:
            return topic, False
        topic = Topic(name, self._config, self._backend_factory)
        topic.on_deadline = self._schedule
        self.topics[name] = topic
        self._emit(TopicCreated(topic=name))
        if self._known_channels is not None:
            for channel in tuple(self._known_channels(name)):
                if not channel.endswith(EPHEMERAL_SUFFIX):
                    self.get_or_create_channel(name, channel, now)
        return topic, True

    def delete_topic(self, name: str) -> Topic:
        """Delete a topic and all its channels (data and backends included).

        Emits `ChannelDeleted` for each channel, then `TopicDeleted`.

        Raises:
            KeyError: no topic has that name.
        """
        topic = self.topics.pop(name)
        channels = tuple(topic.channels)
        topic.delete()
        for channel in channels:
            self._emit(ChannelDeleted(topic=name, channel=channel))
        self._emit(TopicDeleted(topic=name))
        return topic

    def pause_topic(self, name: str, paused: bool) -> None:
        """Pause or unpause a topic and emit `TopicPaused`.

        Raises:
            KeyError: no topic has that name.
        """
        topic = self.topics[name]
        if paused:
            topic.pause()
        else:
            topic.unpause()
        self._emit(TopicPaused(topic=name, paused=paused))

    # -- channels ---------------------------------------------------------

    def get_channel(self, topic: str, channel: str) -> Channel | None:
        """Return the channel, or None when it or its topic does not exist."""
        owner = self.topics.get(topic)
        return None if owner is None else owner.channels.get(channel)

    def get_or_create_channel(self, topic: str, channel: str, now: float) -> tuple[Channel, bool]:
        """Return a channel, creating it and its topic if needed (SUB does both).

        Returns:
            The channel and whether it was created by this call.
        """
        owner, _ = self.get_or_create_topic(topic, now)
        found, created = owner.get_or_create_channel(channel, now)
        if created:
            self._emit(ChannelCreated(topic=topic, channel=channel))
        return found, created

    def delete_channel(self, topic: str, channel: str) -> Channel:
        """Delete a channel; an ephemeral topic left without channels goes too.

        Emits `ChannelDeleted`, then (for the topic) `TopicDeleted`.

        Raises:
            KeyError: the topic or the channel does not exist.
        """
        owner = self.topics[topic]
        found = owner.delete_channel(channel)
        self._emit(ChannelDeleted(topic=topic, channel=channel))
        if owner.should_delete:
            self.delete_topic(topic)
        return found

    def pause_channel(self, topic: str, channel: str, paused: bool) -> None:
        """Pause or unpause a channel and emit `ChannelPaused`.

        Raises:
            KeyError: the topic or the channel does not exist.
        """
        found = self.topics[topic].channels[channel]
        if paused:
            found.pause()
        else:
            found.unpause()
        self._emit(ChannelPaused(topic=topic, channel=channel, paused=paused))

    def remove_client(self, topic: str, channel: str, client_id: int) -> bool:
        """Forget a subscriber; deletes an ephemeral channel it was the last of.

        Returns:
            True when the channel was deleted (and its topic, if that was an
            ephemeral topic's last channel). False also when the channel no
            longer exists.
        """
        found = self.get_channel(topic, channel)
        if found is None or not found.remove_client(client_id):
            return False
        self.delete_channel(topic, channel)
        return True

    # -- time -------------------------------------------------------------

    def _schedule(self, channel: Channel, deadline: float) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, channel))
        if self.on_deadline is not None:
            self.on_deadline()

    @staticmethod
    def _is_stale(deadline: float, channel: Channel) -> bool:
        return channel.deleted or deadline != channel.announced_deadline

    def process(self, now: float) -> list[tuple[Channel, list[int]]]:
        """Handle every channel deadline due at or before ``now``.

        Runs `Channel.process` (timeouts, then due deferred messages) on each
        channel with a due deadline, and only on those.

        Returns:
            ``(channel, client ids)`` for each channel that had timeouts, one
            client ID per timed-out message (see `Channel.process_in_flight`).
        """
        heap = self._heap
        timed_out: list[tuple[Channel, list[int]]] = []
        # Bounded: each pass pops an entry, and a processed channel only pushes
        # deadlines later than ``now``.
        while heap and heap[0][0] <= now:
            deadline, _, channel = heapq.heappop(heap)
            if self._is_stale(deadline, channel):
                continue
            owners = channel.process(now)
            if owners:
                timed_out.append((channel, owners))
        return timed_out

    def next_deadline(self) -> float | None:
        """The earliest pending channel deadline, or None when there is none."""
        heap = self._heap
        while heap and self._is_stale(heap[0][0], heap[0][2]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    # -- shutdown ---------------------------------------------------------

    def flush(self, now: float) -> None:
        """Write every topic's and channel's messages to their backends.

        Raises:
            BackendError: a write failed; see `Topic.flush`.
        """
        for topic in self.topics.values():
            topic.flush(now)

    def close(self) -> None:
        """Close every backend, keeping its records (call `flush` first)."""
        for topic in self.topics.values():
            topic.close()
