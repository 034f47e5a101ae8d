"""A topic: names messages and copies each one into every channel (docs/nsq.md §4.1).

Rules:
1. Every published message gets a fresh ID from the topic's own generator,
   the publish timestamp ``int(now * 1e9)`` and zero attempts.
2. With at least one channel and not paused, a publish is fanned out at
   once: every channel receives its own copy (same ID, body and timestamp).
3. Otherwise messages wait in the topic's backlog (memory up to
   ``mem_queue_size``, then the backend). The backlog flows only through
   `Topic.pump`, which the shell calls after `has_backlog` turns true (first
   channel created, unpause) until it returns 0. Later channels only see
   messages fanned out after they exist.

Theory of operation:
    nsqd runs one pump goroutine per topic that reads the memory queue or the
    disk queue and copies into every channel. Here the publish path copies
    directly when it can (no hop through the topic's queue, no task switch),
    which is what a running nsqd pump does at once anyway; only a backlog
    needs pumping, and the shell does it in bounded steps so one large
    backlog cannot starve the event loop. Order between a backlog being
    pumped and fresh publishes is not guaranteed, as in nsqd, where memory
    and disk reads interleave (docs/nsq.md §4.2).

    The backlog in memory is a deque of whole published batches ``(ids,
    bodies, timestamp, defer)`` (tuples, so the garbage collector stops
    tracking them), not one object per message; a batch is split only when
    `pump` takes part of it. Fan-out hands the same two tuples to every
    channel (`Channel.put_batch`), so a publish costs the same per message
    whether it is held or fanned out, and `Message` objects are first built
    when a channel delivers.

    A DPUB message keeps its ``defer`` while it waits in the topic's memory,
    and each channel defers its copy from the moment it receives it; written
    to the backend it loses the delay, as in nsqd (docs/nsq.md §4.4).

    Channel backends are opened through the same factory as the topic's, named
    ``topic:channel``; the channels of an ephemeral topic get ephemeral
    backends too, since nothing of an ephemeral topic is ever restored.

Ephemeral topics (``#ephemeral`` suffix, docs/nsq.md §4.7) are deleted when their
last channel is deleted; `Topic.delete_channel` sets `Topic.should_delete`
and the owner (the broker) acts on it. A topic that never had a channel stays.
"""

from __future__ import annotations

import collections
from itertools import repeat
from typing import TYPE_CHECKING, TypeAlias

from shoal.queue.backend import BackendError
from shoal.queue.channel import DEFERRED_SUFFIX, EPHEMERAL_SUFFIX, Channel
from shoal.queue.message import (
    Message,
    MessageIDGenerator,
    decode_message_batches,
    encode_message_fields,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from shoal.queue.backend import BackendFactory
    from shoal.queue.config import QueueConfig

__all__ = ["Topic"]


#: A published batch waiting in memory: ``(ids, bodies, timestamp, defer)``.
_Batch: TypeAlias = "tuple[tuple[bytes, ...], tuple[bytes, ...], int, float]"


def _no_wakeup() -> None:
    """Default `Topic.wakeup`: nobody pumps."""


def _no_deadline_hook(channel: Channel, deadline: float) -> None:
    """Default `Topic.on_deadline`: nobody keeps a deadline index."""


class Topic:
    """A topic's backlog, its channels and its message IDs.

    Attributes:
        name: the topic name, ``#ephemeral`` suffix included.
        ephemeral: the name ends with ``#ephemeral`` (docs/nsq.md §4.7).
        paused: messages are held in the topic instead of fanned out.
        deleted: `delete` was called; the topic must not be used again.
        should_delete: an ephemeral topic lost its last channel; its owner
            should delete it.
        channels: the channels by name. Change it only through
            `get_or_create_channel` and `delete_channel`.
        message_count: messages published to the topic.
        message_bytes: body bytes published to the topic.
        wakeup: called (no arguments) when `has_backlog` becomes true
            because a first channel appeared or the topic was unpaused; the
            shell then calls `pump` until it returns 0. Must be quick.
        on_deadline: installed as ``on_deadline`` of every channel this topic
            creates (see `Channel`); the broker sets it.
        replicated: None for a topic of NSQ's kind; for a replicated topic
            on its owner, the replication state that publishes must await
            (see `shoal.cluster.replication`); the publish paths then go
            through `new_ids` and `put_published` instead of `publish`.
    """

    __slots__ = (
        "_backend",
        "_backend_factory",
        "_config",
        "_fanout",
        "_head",
        "_ids",
        "_mem_count",
        "_memory",
        "channels",
        "deleted",
        "ephemeral",
        "message_bytes",
        "message_count",
        "name",
        "on_deadline",
        "paused",
        "replicated",
        "should_delete",
        "wakeup",
    )

    def __init__(self, name: str, config: QueueConfig, backend_factory: BackendFactory) -> None:
        self.name = name
        self.ephemeral = name.endswith(EPHEMERAL_SUFFIX)
        self.paused = False
        self.deleted = False
        self.should_delete = False
        self.channels: dict[str, Channel] = {}
        self.message_count = 0
        self.message_bytes = 0
        self.wakeup: Callable[[], None] = _no_wakeup
        self.on_deadline: Callable[[Channel, float], None] = _no_deadline_hook
        self.replicated: object | None = None
        self._config = config
        self._backend_factory = backend_factory
        self._ids = MessageIDGenerator(config.node_id)
        self._backend = backend_factory(name, ephemeral=self.ephemeral)
        self._memory: collections.deque[_Batch] = collections.deque()
        self._head = 0  # messages of ``_memory[0]`` already pumped
        self._mem_count = 0  # messages in ``_memory``, ``_head`` excluded
        # The channels as a tuple, rebuilt on create/delete, for the hot path.
        self._fanout: tuple[Channel, ...] = ()

    def __repr__(self) -> str:
        return f"<Topic {self.name} channels={len(self.channels)} depth={self.depth}>"

    @property
    def depth(self) -> int:
        """Messages waiting in the topic itself: memory plus backend."""
        return self._mem_count + self._backend.depth

    @property
    def backend_depth(self) -> int:
        """Messages waiting in the topic's backend."""
        return self._backend.depth

    @property
    def has_backlog(self) -> bool:
        """`pump` would move messages: channels exist, not paused, depth > 0."""
        return bool(self._fanout) and not self.paused and self.depth > 0

    # -- publishing -------------------------------------------------------

    def publish(self, bodies: Sequence[bytes], now: float, defer: float = 0.0) -> None:
        """Publish message bodies (PUB, MPUB, DPUB, HTTP /pub and /mpub).

        Args:
            bodies: the message bodies, in order; validation of their size is
                the protocol's job.
            now: the current time; becomes the messages' timestamp.
            defer: seconds every channel holds its copy back (DPUB).

        Raises:
            BackendError: a backend refused a record; the messages are
                counted but stored nowhere (channels that took them give
                them back).
        """
        count = len(bodies)
        if not count:
            return
        ts = int(now * 1e9)
        # Tuples: shared by every channel and kept as they are, so nobody may
        # change them, and the garbage collector can stop tracking them.
        held = bodies if type(bodies) is tuple else tuple(bodies)
        self.message_count += count
        if count == 1:  # PUB, DPUB
            ids: tuple[bytes, ...] = (self._ids.next_id(ts),)
            self.message_bytes += len(held[0])
        else:
            ids = tuple(self._ids.next_ids(ts, count))
            self.message_bytes += sum(map(len, held))
        if self._fanout and not self.paused:
            stored: list[Channel] = []
            try:
                for channel in self._fanout:
                    channel.put_batch(ids, held, ts, now, defer)
                    stored.append(channel)
            except BackendError:
                # The publish is answered with an error: no channel keeps it.
                for channel in stored:
                    channel.take_back_batch()
                raise
        else:
            self._hold(ids, held, ts, defer)

    def ids_after(self, msg_id: bytes) -> None:
        """Give every message published from now on an ID above ``msg_id``.

        A returning owner calls it with the highest of its IDs another member
        adopted, so no message it accepts later falls in an adopted range,
        even if its clock went back across a restart.
        """
        self._ids.advance_past(msg_id)

    def new_ids(self, ts: int, count: int) -> tuple[bytes, ...]:
        """Fresh message IDs for a publish at ``ts`` whose messages are placed later."""
        if count == 1:
            return (self._ids.next_id(ts),)
        return tuple(self._ids.next_ids(ts, count))

    def fanout_names(self) -> tuple[str, ...] | None:
        """The channels a publish now goes to, or None when it would be held."""
        if self._fanout and not self.paused:
            return tuple(channel.name for channel in self._fanout)
        return None

    def put_published(
        self,
        ids: tuple[bytes, ...],
        bodies: tuple[bytes, ...],
        ts: int,
        now: float,
        defer: float,
        channels: tuple[str, ...] | None,
    ) -> None:
        """Place messages that already have IDs: into ``channels``, or the backlog.

        A replicated publish is placed once its replicas hold it, and an
        adopted one with the IDs its first owner gave it; either way the
        channels are those its record names (the ones that still exist), or
        the backlog when it names none.

        Raises:
            BackendError: as `publish`.
        """
        count = len(ids)
        if not count:
            return
        self.message_count += count
        self.message_bytes += sum(map(len, bodies))
        if channels is None:
            self._hold(ids, bodies, ts, defer)
            return
        # In durable mode the publish paths await the group commit (as for
        # `publish`) before they answer.
        for name in channels:
            channel = self.channels.get(name)
            if channel is not None:
                channel.put_batch(ids, bodies, ts, now, defer)

    def _hold(
        self, ids: tuple[bytes, ...], bodies: tuple[bytes, ...], ts: int, defer: float
    ) -> None:
        """Append messages to the backlog (memory first, then the backend)."""
        count = len(ids)
        room = self._config.mem_queue_size - self._mem_count
        if room >= count:
            self._memory.append((ids, bodies, ts, defer))
            self._mem_count += count
            return
        if room > 0:
            self._memory.append((ids[:room], bodies[:room], ts, defer))
            self._mem_count += room
        else:
            room = 0
        encode = encode_message_fields
        try:
            self._backend.put_many(
                [encode(ids[index], bodies[index], ts, 0) for index in range(room, count)]
            )
        except BackendError:
            if room:  # all or nothing
                self._memory.pop()
                self._mem_count -= room
            raise

    def pump(self, now: float, limit: int) -> int:
        """Move up to ``limit`` backlog messages into every channel.

        Memory is drained before the backend.

        Returns:
            How many messages were moved; 0 when there are no channels, the
            topic is paused or the backlog is empty.

        Raises:
            RemoteProtocolError: a backend record is shorter than a header.
            BackendError: a channel's backend refused a record.
        """
        channels = self._fanout
        if not channels or self.paused or limit <= 0:
            return 0
        memory = self._memory
        moved = 0
        # Bounded: every pass pops a batch or takes all that is still wanted.
        while moved < limit and memory:
            ids, bodies, ts, defer = memory[0]
            head = self._head
            size = len(ids)
            take = min(size - head, limit - moved)
            if head + take == size:
                memory.popleft()
                self._head = 0
            else:
                self._head = head + take
            if take < size:
                ids = ids[head : head + take]
                bodies = bodies[head : head + take]
            self._mem_count -= take
            moved += take
            for channel in channels:
                channel.put_batch(ids, bodies, ts, now, defer)
        if moved < limit and self._backend.depth:
            records = self._backend.get_many(limit - moved)
            moved += len(records)
            # Records come back in their published runs: each run is fanned
            # out as a batch, shared by every channel as a fresh publish is.
            for run_ids, run_bodies, run_ts, attempts in decode_message_batches(records):
                if attempts == 0:
                    for channel in channels:
                        channel.put_batch(run_ids, run_bodies, run_ts, now)
                    continue
                for channel in channels:
                    msgs = map(Message, run_ids, run_bodies, repeat(run_ts), repeat(attempts))
                    channel.put_many(list(msgs), now)
        return moved

    # -- channels ---------------------------------------------------------

    def get_channel(self, name: str) -> Channel | None:
        """Return the channel called ``name``, or None."""
        return self.channels.get(name)

    def get_or_create_channel(self, name: str, now: float) -> tuple[Channel, bool]:
        """Return the channel called ``name``, creating it if needed.

        Creating the first channel of a topic with a backlog calls `wakeup`:
        the backlog now flows to that channel through `pump`.

        Returns:
            The channel and whether it was created by this call.
        """
        channel = self.channels.get(name)
        if channel is not None:
            return channel, False
        ephemeral = self.ephemeral or name.endswith(EPHEMERAL_SUFFIX)
        backend = self._backend_factory(f"{self.name}:{name}", ephemeral=ephemeral)
        deferred = None
        if self._config.sync_on_publish and not ephemeral:
            # Durable mode: deferred messages are records too (see `Channel`).
            deferred = self._backend_factory(
                f"{self.name}:{name}{DEFERRED_SUFFIX}", ephemeral=ephemeral
            )
        channel = Channel(self.name, name, self._config, backend, deferred, now)
        channel.on_deadline = self.on_deadline
        channel.announce()
        first = not self._fanout
        self.channels[name] = channel
        self._fanout = tuple(self.channels.values())
        if first and self.has_backlog:
            self.wakeup()
        return channel, True

    def delete_channel(self, name: str) -> Channel:
        """Remove a channel and delete it (its messages and backend are dropped).

        Sets `should_delete` when the topic is ephemeral and this was its last
        channel.

        Raises:
            KeyError: no channel has that name.
        """
        channel = self.channels.pop(name)
        self._fanout = tuple(self.channels.values())
        channel.delete()
        if self.ephemeral and not self.channels:
            self.should_delete = True
        return channel

    # -- administration ---------------------------------------------------

    def pause(self) -> None:
        """Hold new messages in the topic; channels keep what they have."""
        self.paused = True

    def unpause(self) -> None:
        """Resume fan-out; calls `wakeup` when a backlog is ready to pump."""
        self.paused = False
        if self.has_backlog:
            self.wakeup()

    def empty(self) -> None:
        """Drop the topic's own backlog; channels are untouched (docs/nsq.md §4.8)."""
        self._memory.clear()
        self._head = 0
        self._mem_count = 0
        self._backend.empty()

    def flush(self, now: float) -> None:
        """Write the topic's memory backlog and every channel's messages to backends.

        Called at shutdown, so everything is ready again after a restart
        (docs/nsq.md §4.6). DPUB messages held by the topic lose their delay.

        Raises:
            BackendError: a write failed; unwritten messages stay in memory.
        """
        put = self._backend.put
        memory = self._memory
        while memory:
            ids, bodies, ts, _defer = memory[0]
            # Bounded by the batch; ``_head`` follows each write, so a failed
            # write leaves exactly the unwritten messages in memory.
            for index in range(self._head, len(ids)):
                put(encode_message_fields(ids[index], bodies[index], ts, 0))
                self._head = index + 1
                self._mem_count -= 1
            memory.popleft()
            self._head = 0
        for channel in self._fanout:
            channel.flush(now)

    def close(self) -> None:
        """Close every channel's backend and the topic's, keeping their records."""
        for channel in self._fanout:
            channel.close()
        self._backend.close()

    def delete(self) -> None:
        """Delete every channel, drop the backlog and remove the backend for good."""
        for channel in self._fanout:
            channel.delete()
        self.channels.clear()
        self._fanout = ()
        self._memory.clear()
        self._head = 0
        self._mem_count = 0
        self._backend.delete()
        self.deleted = True
