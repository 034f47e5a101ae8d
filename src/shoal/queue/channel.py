"""A channel: one consumer group's copy of a topic's stream (docs/nsq.md §4.1-§4.4).

Rules:
1. Every message a channel holds is in exactly one place: ready (the memory
   deque, or the backend past ``mem_queue_size``), deferred (due at a time),
   or in flight (delivered to one client, due back at a deadline). FIN is the
   only way out, apart from `Channel.empty` and `Channel.delete`.
2. The channel never reads a clock: every call that depends on time takes
   ``now`` (wall-clock float seconds), and `Channel.next_deadline` tells the
   caller when to come back.
3. Only the client a message was delivered to may FIN, REQ or TOUCH it; any
   other attempt raises `InFlightError` with nsqd's text and changes nothing.

Theory of operation:
    ``put`` appends to the ready queue (memory first, then the backend as an
    encoded record) or, for a deferred (DPUB) copy, to the deferred heap.
    ``put_batch`` takes a whole published batch as the topic holds it.
    ``deliver`` pops up to ``limit`` ready messages for one client, bumps
    their attempts and records them in flight with deadline ``now + timeout``;
    ``deliver_batches`` does the same and hands them out as batches, which is
    what the protocol frames without ever building `Message` objects.
    Server-side RDY is "messages in flight on this connection", so the shell
    decides ``limit`` and the channel only hands out what is ready; several
    connections of one channel compete for the same queues (docs/nsq.md §4.2).
    ``process_in_flight`` puts expired deliveries back in the ready queue and
    ``process_deferred`` releases due deferred messages; nsqd's 100 ms scanner
    is replaced by the caller sleeping until `next_deadline`.

    A disconnecting client keeps its in-flight messages until their deadline,
    as nsqd does (docs/nsq.md §0.9): ``remove_client`` only forgets the client.

Data structures and costs (n = messages in the structure):
    ready (memory): a deque of `MessageBatch` ``(ids, bodies, timestamp,
        attempts)`` plus how many messages of the first batch were already
        taken. A published batch is appended as it is (every channel of the
        topic shares the same two tuples). Idle messages are therefore plain
        bytes in tuples, which the garbage collector stops tracking, instead
        of millions of objects every full collection has to visit; a
        requeued message is a batch of one.
    in flight: a dict ``id -> (body, timestamp, attempts, owner,
        delivered_at, ticket, key)`` plus a binary heap of keys ``(deadline, seq,
        ids)`` with lazy deletion. One delivery of a batch pushes one key
        for all its IDs, and the dict entries are built by ``zip`` in one
        pass, so delivering costs no Python-level work per message. An entry
        is live for the key it holds (by identity); FIN and REQ only pop the
        dict (O(1)), and a popped key skips its IDs whose entry is gone or
        holds another key. TOUCH pushes a key for one ID (O(log n)). The
        heap is rebuilt from the dict, one key per surviving group, when the
        IDs its keys name exceed twice the live ones by more than 1024, so
        it stays O(n) and the rebuild is O(1) amortised per operation. (A
        ``SortedList`` with eager removal was measured at about 1.7 us per
        deliver+finish for the index alone, a heap key per message at about
        0.5 us.)
    deferred: a binary heap of ``(due, seq, message, ticket)``; deferred messages are
        never addressed by ID (REQ, FIN and TOUCH only see in-flight ones),
        so push and pop are O(log n) with no deletion at all.
    ``seq`` is a per-channel counter: it breaks deadline ties in FIFO order
    and keeps tuple comparison away from messages.

Durable mode (``QueueConfig.sync_on_publish``, with a backend that keeps
records until acknowledged, `shoal.queue.backend` rule 4):
    a message leaves the durable store only when FINed (or the channel is
    emptied or deleted). Delivery takes a record and keeps its ticket
    in the in-flight entry; FIN acknowledges the ticket; REQ and timeouts
    first store the message again (a new record carrying its attempts)
    and only then acknowledge the old one; deferred messages (REQ with a
    delay, DPUB) are records of a second backend, ``deferred_backend``,
    carrying their due time, read back whole when the channel opens and
    acknowledged when released or dropped. At every instant each
    unfinished message therefore has a durable record, and a restart
    hands every one of them out again: at least once, duplicates only for
    what was in flight.

Waking consumers (nsqd's channel select, docs/nsq.md §4.2):
    A publish must cost the same whatever the number of subscribers, so the
    channel wakes only connections that can take a message. A connection
    whose pump goes idle says so with ``want(client_id, room)``: with room
    (RDY above its in-flight count) it joins the waiting line, an ordered
    dict in which a client keeps its place until it is woken; with no room
    it leaves it. When messages become deliverable (a put, a REQ without
    delay, a timeout, due deferred messages, unpause) `wakeup` pops waiters,
    least recently served first, until their room covers the ready messages,
    and calls ``on_wake(client_id)`` for each. A subscriber with RDY 0 is
    never in the line, so it costs nothing per message; a line of idle
    RDY-1 consumers takes one message each in turn (round robin).

    No message is stranded: a woken client that takes fewer than are ready
    goes idle again through ``want``, and ``want`` wakes the next waiters
    while messages are ready. Woken clients that find nothing (another
    connection took the messages first) simply queue again at the back.

Hooks set by the shell and the broker (both default to no-ops and must be
quick and must not call back into the channel):
    ``on_wake(client_id)``: that client was popped from the waiting line
        because messages are ready; its pump should look again.
    ``on_deadline(channel, deadline)``: the channel gained a deadline earlier
        than the one it last announced; the broker keeps its deadline index
        with it (`announced_deadline`, `process`).
"""

from __future__ import annotations

import collections
import heapq
import math
from itertools import repeat
from typing import TYPE_CHECKING, Final, TypeAlias

from shoal.errors import ShoalError
from shoal.queue.backend import BackendError
from shoal.queue.diskqueue import decode_deferred, encode_deferred
from shoal.queue.latency import LatencyWindow
from shoal.queue.message import (
    Message,
    decode_message,
    decode_message_batches,
    encode_message,
    encode_message_fields,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from shoal.queue.backend import Backend
    from shoal.queue.config import QueueConfig
    from shoal.queue.message import MessageBatch

__all__ = ["DEFERRED_SUFFIX", "EPHEMERAL_SUFFIX", "Channel", "InFlightError"]

#: A topic or channel whose name ends with this is ephemeral (docs/nsq.md §4.7).
EPHEMERAL_SUFFIX = "#ephemeral"
#: ``topic:channel`` plus this names a channel's deferred-message backend; no
#: topic or channel name can contain a colon, so it never clashes.
DEFERRED_SUFFIX = ":deferred"

#: IDs named by stale in-flight heap keys tolerated beyond twice the live ones.
_STALE_SLACK = 1024

_NOT_IN_FLIGHT = "ID not in flight"
_NOT_OWNER = "client does not own message"


class InFlightError(ShoalError):
    """FIN, REQ or TOUCH named a message the client may not answer.

    The message is nsqd's text (``ID not in flight`` or ``client does not own
    message``); the protocol sends it in a non-fatal ``E_FIN_FAILED``,
    ``E_REQ_FAILED`` or ``E_TOUCH_FAILED`` frame. The channel is unchanged.
    """


def _no_wake(client_id: int) -> None:
    """Default `Channel.on_wake`: no shell is listening."""


def _no_deadline_hook(channel: Channel, deadline: float) -> None:
    """Default `Channel.on_deadline`: nobody keeps a deadline index."""


#: A heap key of the in-flight index: ``(deadline, seq, ids)``.
_Key: TypeAlias = "tuple[float, int, Sequence[bytes]]"

#: One delivered, unanswered message: ``(body, timestamp, attempts, owner
#: client id, delivered_at, backend ticket, live heap key)``; attempts counts
#: this delivery; the ticket is -1 unless the backend keeps the record.
_InFlight: TypeAlias = "tuple[bytes, int, int, int, float, int, _Key]"
_BODY: Final = 0
_TIMESTAMP: Final = 1
_ATTEMPTS: Final = 2
_OWNER: Final = 3
_DELIVERED_AT: Final = 4
_TICKET: Final = 5
_KEY: Final = 6
_NO_TICKET: Final = -1


class Channel:
    """The queues of one channel of one topic.

    Attributes:
        topic_name: the topic this channel belongs to.
        name: the channel name, ``#ephemeral`` suffix included.
        ephemeral: the name ends with ``#ephemeral``: the channel is deleted
            when its last client leaves and is never persisted.
        paused: `deliver` hands out nothing while set (in-flight messages are
            unaffected, docs/nsq.md §4.8).
        deleted: `delete` was called; the channel must not be used again.
        message_count: messages put into the channel (deferred ones included),
            not counting requeues and timeouts, as nsqd's ``message_count``.
        requeue_count: REQs answered.
        timeout_count: deliveries that reached their deadline unanswered.
        on_wake: called with a waiting client's ID when messages become
            deliverable for it; see the module notes.
        on_deadline: called with ``(channel, deadline)`` when the channel gains
            a deadline earlier than `announced_deadline`.
        on_finish: None, or called with each message ID finished (FIN) once
            it is gone; a replicated topic forwards FINs to its replicas.
        discard: None, or true of a message ID that must never be delivered
            again from here: a returning owner's messages that another
            member adopted. Such a message is finished (``on_finish``
            included) when it reaches delivery instead of being handed out,
            whether it waited in memory, on disk, deferred or timed out.
    """

    __slots__ = (
        "_announced",
        "_backend",
        "_clients",
        "_deferred",
        "_deferred_backend",
        "_durable",
        "_head",
        "_heap",
        "_heap_ids",
        "_in_flight",
        "_last_batch",
        "_max_msg_timeout",
        "_mem_count",
        "_mem_size",
        "_memory",
        "_seq",
        "_waiting",
        "deleted",
        "discard",
        "e2e",
        "ephemeral",
        "message_count",
        "name",
        "on_deadline",
        "on_finish",
        "on_wake",
        "paused",
        "requeue_count",
        "timeout_count",
        "topic_name",
    )

    def __init__(
        self,
        topic_name: str,
        name: str,
        config: QueueConfig,
        backend: Backend,
        deferred_backend: Backend | None = None,
        now: float = 0.0,
    ) -> None:
        self.topic_name = topic_name
        self.name = name
        self.ephemeral = name.endswith(EPHEMERAL_SUFFIX)
        self.paused = False
        self.deleted = False
        self.message_count = 0
        self.requeue_count = 0
        self.timeout_count = 0
        self.on_wake: Callable[[int], None] = _no_wake
        self.on_deadline: Callable[[Channel, float], None] = _no_deadline_hook
        self.on_finish: Callable[[bytes], None] | None = None
        self.discard: Callable[[bytes], bool] | None = None
        self._mem_size = config.mem_queue_size
        self._max_msg_timeout = config.max_msg_timeout
        self._backend = backend
        self._deferred_backend = deferred_backend
        self._durable = config.sync_on_publish
        self.e2e: LatencyWindow | None = None
        if config.e2e_processing_latency_percentiles:
            self.e2e = LatencyWindow(
                config.e2e_processing_latency_percentiles,
                config.e2e_processing_latency_window_time,
                0.0,
            )
        self._memory: collections.deque[MessageBatch] = collections.deque()
        self._head = 0  # messages of ``_memory[0]`` already taken
        self._mem_count = 0  # messages in ``_memory``, ``_head`` excluded
        self._in_flight: dict[bytes, _InFlight] = {}
        self._heap: list[_Key] = []
        self._heap_ids = 0  # IDs named by the keys in ``_heap``, stale ones included
        self._deferred: list[tuple[float, int, Message, int]] = []
        self._seq = 0
        self._clients: set[int] = set()
        # client ID -> room, least recently served first (see the module notes)
        self._waiting: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._announced = math.inf
        # What the last put_batch stored: (in memory, in the backend, deferred
        # after seq or -1), for take_back_batch.
        self._last_batch: tuple[int, int, int] | None = None
        if deferred_backend is not None:
            self._load_deferred(deferred_backend, now)

    def __repr__(self) -> str:
        return f"<Channel {self.topic_name}/{self.name} depth={self.depth}>"

    # -- counters ---------------------------------------------------------

    @property
    def depth(self) -> int:
        """Ready messages: memory plus backend (in-flight and deferred excluded)."""
        return self._mem_count + self._backend.depth

    @property
    def backend_depth(self) -> int:
        """Ready messages held by the backend."""
        return self._backend.depth

    @property
    def in_flight_count(self) -> int:
        """Messages delivered and not yet answered or timed out."""
        return len(self._in_flight)

    @property
    def deferred_count(self) -> int:
        """Messages waiting for their REQ delay or DPUB defer."""
        return len(self._deferred)

    @property
    def client_count(self) -> int:
        """Clients subscribed to the channel."""
        return len(self._clients)

    @property
    def clients(self) -> frozenset[int]:
        """IDs of the subscribed clients."""
        return frozenset(self._clients)

    @property
    def waiting(self) -> tuple[int, ...]:
        """IDs of the clients waiting for messages, next to be woken first."""
        return tuple(self._waiting)

    @property
    def announced_deadline(self) -> float:
        """The earliest deadline passed to `on_deadline` since the last `process`.

        ``math.inf`` when none was announced. A deadline index holding an
        older, later value for this channel holds a stale entry.
        """
        return self._announced

    # -- putting messages in ----------------------------------------------

    def put(self, msg: Message, now: float) -> None:
        """Accept one message from the topic.

        A message with ``defer > 0`` waits in the deferred queue until
        ``now + defer``; any other goes to the ready queue (memory while it
        holds fewer than ``mem_queue_size``, else the backend).

        Raises:
            BackendError: the backend refused the record; the message was not
                stored but ``message_count`` already counts it.
        """
        self.message_count += 1
        if msg.defer > 0:
            self._defer(msg, now + msg.defer)
            return
        self._ready(msg.id, msg.body, msg.timestamp, msg.attempts)
        if not self.paused:
            self.wakeup()

    def put_many(self, msgs: Sequence[Message], now: float) -> None:
        """Accept a batch of messages from the topic, as `put` would one by one.

        ``wakeup`` runs once for the batch.

        Raises:
            BackendError: the backend refused a record; earlier messages of the
                batch are stored, that one and later ones are not.
        """
        if not msgs:
            return
        self.message_count += len(msgs)
        ready: Sequence[Message] = msgs
        deferred = [m for m in msgs if m.defer > 0]
        if deferred:
            ready = [m for m in msgs if m.defer <= 0]
            for msg in deferred:
                self._defer(msg, now + msg.defer)
            if not ready:
                return
        room = self._mem_size - self._mem_count
        if room >= len(ready):
            self._memory.extend([((m.id,), (m.body,), m.timestamp, m.attempts) for m in ready])
            self._mem_count += len(ready)
        else:
            if room > 0:
                self._memory.extend(
                    [((m.id,), (m.body,), m.timestamp, m.attempts) for m in ready[:room]]
                )
                self._mem_count += room
            else:
                room = 0
            self._backend.put_many([encode_message(msg) for msg in ready[room:]])
        if not self.paused:
            self.wakeup()

    def put_batch(
        self,
        ids: Sequence[bytes],
        bodies: Sequence[bytes],
        timestamp: int,
        now: float,
        defer: float = 0.0,
    ) -> None:
        """Accept freshly published messages given as fields (the topic's fan-out).

        Equivalent to `put_many` with ``Message(id, body, timestamp, 0,
        defer)`` for each pair, without building those objects: the ready
        part is kept as the two sequences themselves, which must therefore
        never change afterwards (the topic passes tuples, shared by all its
        channels).

        The batch is stored whole or not at all, and `take_back_batch` can
        undo it until the next call: a publish answered with an error is
        never delivered later.

        Raises:
            BackendError: the backend refused a record; nothing of the batch
                is stored.
        """
        count = len(ids)
        if not count:
            return
        self._last_batch = None
        if defer > 0:
            due = now + defer
            seq = self._seq
            try:
                for msg in map(Message, ids, bodies, repeat(timestamp), repeat(0), repeat(defer)):
                    self._defer(msg, due)
            except BackendError:
                self._drop_deferred_after(seq)
                raise
            self.message_count += count
            self._last_batch = (0, 0, seq)
            return
        room = self._mem_size - self._mem_count
        if room >= count:
            self._memory.append((ids, bodies, timestamp, 0))
            self._mem_count += count
            self._last_batch = (count, 0, -1)
        else:
            if room > 0:
                self._memory.append((ids[:room], bodies[:room], timestamp, 0))
                self._mem_count += room
            else:
                room = 0
            try:
                self._backend.put_many(
                    [
                        encode_message_fields(ids[index], bodies[index], timestamp, 0)
                        for index in range(room, count)
                    ]
                )
            except BackendError:
                if room:
                    self._memory.pop()
                    self._mem_count -= room
                raise
            self._last_batch = (room, count - room, -1)
        self.message_count += count
        if not self.paused:
            self.wakeup()

    def take_back_batch(self) -> bool:
        """Undo the last `put_batch` (another channel of the topic refused the publish).

        Only valid right after it, before anything is delivered: the shell
        calls it from the same synchronous publish.

        Returns:
            Whether the batch was taken back whole.
        """
        last, self._last_batch = self._last_batch, None
        if last is None:
            return False
        in_memory, in_backend, seq = last
        if seq >= 0:
            dropped = self._drop_deferred_after(seq)
            self.message_count -= dropped
            return True
        if in_backend and not self._backend.unput(in_backend):
            return False
        if in_memory:
            self._memory.pop()
            self._mem_count -= in_memory
        self.message_count -= in_memory + in_backend
        return True

    def _drop_deferred_after(self, seq: int) -> int:
        """Forget deferred messages pushed after ``seq`` (their records acknowledged)."""
        keep = [entry for entry in self._deferred if entry[1] <= seq]
        dropped = [entry for entry in self._deferred if entry[1] > seq]
        if dropped:
            heapq.heapify(keep)
            self._deferred = keep
            store = self._deferred_backend
            if store is not None:
                store.ack_many([entry[3] for entry in dropped if entry[3] != _NO_TICKET])
        return len(dropped)

    # -- waking consumers --------------------------------------------------

    def want(self, client_id: int, room: int) -> None:
        """A client's delivery went idle with ``room`` messages still allowed.

        With ``room > 0`` the client waits for messages: `wakeup` will call
        ``on_wake(client_id)`` once some are ready (at once when some already
        are). A client already waiting keeps its place in the line, with the
        new room. With ``room <= 0`` it stops waiting; if messages are ready
        the next waiters are woken in its stead, so none is stranded.
        """
        if room > 0:
            self._waiting[client_id] = room
        else:
            self._waiting.pop(client_id, None)
        self.wakeup()

    def wakeup(self) -> None:
        """Wake the waiting clients that can take the ready messages.

        Waiters are popped least recently served first, until their room
        covers the ready messages or the line is empty; each gets one
        ``on_wake`` call. Costs O(woken): a publish with no client waiting
        costs nothing here, however many are subscribed.
        """
        waiting = self._waiting
        if not waiting or self.paused:
            return
        ready = self._mem_count + self._backend.depth
        on_wake = self.on_wake
        popitem = waiting.popitem
        # Bounded: every pass pops a waiter.
        while ready > 0 and waiting:
            client_id, room = popitem(last=False)
            ready -= room
            on_wake(client_id)

    def _ready(self, msg_id: bytes, body: bytes, timestamp: int, attempts: int) -> None:
        """Append a message to the ready queue (memory, else backend)."""
        if self._mem_count < self._mem_size:
            self._memory.append(((msg_id,), (body,), timestamp, attempts))
            self._mem_count += 1
        else:
            self._backend.put(encode_message_fields(msg_id, body, timestamp, attempts))

    def _defer(self, msg: Message, due: float) -> None:
        """Hold a message until ``due`` (durably, as a deferred record, in durable mode).

        Raises:
            BackendError: the deferred record could not be stored.
        """
        ticket = _NO_TICKET
        store = self._deferred_backend
        if store is not None:
            store.put(encode_deferred(due, encode_message(msg)))
            taken = store.take()  # the record just written: everything before is loaded
            if taken is not None:
                ticket = taken[1]
        self._seq += 1
        heapq.heappush(self._deferred, (due, self._seq, msg, ticket))
        if due < self._announced:
            self._announced = due
            self.on_deadline(self, due)

    def _load_deferred(self, store: Backend, now: float) -> None:
        """Read every deferred record back into the heap (on open, after a restart)."""
        del now
        for _ in range(store.depth + 1):
            taken = store.take()
            if taken is None:
                break
            payload, ticket = taken
            decoded = decode_deferred(payload)
            if decoded is None:
                store.ack_many((ticket,))
                continue
            due, record = decoded
            msg = decode_message(record)
            self._seq += 1
            heapq.heappush(self._deferred, (due, self._seq, msg, ticket))

    def _ack(self, ticket: int) -> None:
        if ticket != _NO_TICKET:
            self._backend.ack_many((ticket,))

    # -- delivery and answers --------------------------------------------

    def deliver(self, client_id: int, now: float, timeout: float, limit: int) -> list[Message]:
        """Hand up to ``limit`` ready messages to one client.

        Memory is drained before the backend. Each message's ``attempts`` is
        incremented and it goes in flight, owned by ``client_id``, due back
        at ``now + timeout``. A message whose ID is already in flight (only
        possible with duplicated backend records) replaces that entry: the
        earlier delivery can no longer be answered.

        Args:
            client_id: the connection taking the messages.
            now: the current time.
            timeout: the connection's msg_timeout in seconds.
            limit: how many the connection may still take (RDY minus its
                in-flight count).

        Returns:
            The delivered messages, oldest first; empty when paused, when
            ``limit <= 0`` or when nothing is ready. They are new objects:
            changing them changes nothing in the channel.

        Raises:
            RemoteProtocolError: a backend record is shorter than a header; the
                records read before it are lost with it.
        """
        out: list[Message] = []
        for ids, bodies, timestamp, attempts in self.deliver_batches(
            client_id, now, timeout, limit
        ):
            out += map(Message, ids, bodies, repeat(timestamp), repeat(attempts))
        return out

    def deliver_batches(
        self, client_id: int, now: float, timeout: float, limit: int
    ) -> list[MessageBatch]:
        """Do what `deliver` does, handing the messages out as batches.

        Returns:
            `MessageBatch` tuples ``(ids, bodies, timestamp, attempts)`` in
            delivery order, attempts already counting this delivery; together
            they hold at most ``limit`` messages. Framing these directly
            (`shoal.queue.frames.encode_message_batches`) spares the consumer
            hot path a `Message` object per message.

        Raises:
            RemoteProtocolError: a backend record is shorter than a header; the
                records read before it are lost with it.
        """
        if self.paused or limit <= 0:
            return []
        batches, tickets = self._take(limit)
        if self.discard is not None and batches:
            batches, tickets = self._without_discarded(batches, tickets, limit)
        if not batches:
            return batches
        deadline = now + timeout
        in_flight = self._in_flight
        heap = self._heap
        seq = self._seq
        named = self._heap_ids
        for batch, ticket in zip(batches, tickets, strict=True):
            ids, bodies, timestamp, attempts = batch
            seq += 1
            key = (deadline, seq, ids)
            # One C-level pass builds and stores every entry of the batch.
            in_flight.update(
                zip(
                    ids,
                    zip(
                        bodies,
                        repeat(timestamp),
                        repeat(attempts),
                        repeat(client_id),
                        repeat(now),
                        repeat(ticket),
                        repeat(key),
                    ),
                    strict=False,  # the inner zip is as long as ``bodies``
                )
            )
            heapq.heappush(heap, key)
            named += len(ids)
        self._seq = seq
        self._heap_ids = named
        if named > 2 * len(in_flight) + _STALE_SLACK:
            self._compact()
        if deadline < self._announced:
            self._announced = deadline
            self.on_deadline(self, deadline)
        if client_id in self._waiting:
            # Served: it queues again at the back when it next goes idle.
            del self._waiting[client_id]
        return batches

    def _take(self, limit: int) -> tuple[list[MessageBatch], list[int]]:
        """Up to ``limit`` ready messages, memory first, with their backend tickets."""
        batches = self._take_memory(limit) if self._mem_count else []
        tickets = [_NO_TICKET] * len(batches)
        missing = limit - sum([len(batch[0]) for batch in batches])
        if missing > 0:
            backend = self._backend
            if backend.depth:
                records, taken = backend.take_many(missing)
                if taken.count(_NO_TICKET) == len(taken):
                    # Nothing to acknowledge: the records' runs are delivered
                    # as batches, one in-flight key per run.
                    for ids, bodies, timestamp, attempts in decode_message_batches(records):
                        batches.append((ids, bodies, timestamp, attempts + 1))
                        tickets.append(_NO_TICKET)
                else:
                    # Each record keeps its own ticket, so it is a batch of one.
                    for record, ticket in zip(records, taken, strict=True):
                        msg = decode_message(record)
                        batches.append(((msg.id,), (msg.body,), msg.timestamp, msg.attempts + 1))
                        tickets.append(ticket)
                if self._durable:
                    backend.note_reads()  # one small write per delivery round
        return batches, tickets

    def _without_discarded(
        self, batches: list[MessageBatch], tickets: list[int], limit: int
    ) -> tuple[list[MessageBatch], list[int]]:
        """Finish the taken messages `discard` names, and take others in their place."""
        discard = self.discard
        assert discard is not None
        on_finish = self.on_finish
        kept: list[MessageBatch] = []
        kept_tickets: list[int] = []
        count = 0
        # Bounded: a pass that drops nothing ends the loop, and every other
        # pass takes at least one message out of the queues for good.
        while batches:
            dropped = 0
            for batch, ticket in zip(batches, tickets, strict=True):
                ids, bodies, timestamp, attempts = batch
                gone = [discard(msg_id) for msg_id in ids]
                if not any(gone):
                    kept.append(batch)
                    kept_tickets.append(ticket)
                    count += len(ids)
                    continue
                keep = [i for i, flag in enumerate(gone) if not flag]
                dropped += len(ids) - len(keep)
                if on_finish is not None:
                    for msg_id, flag in zip(ids, gone, strict=True):
                        if flag:
                            on_finish(msg_id)
                if ticket != _NO_TICKET:
                    # A backend batch holds one message: this one, dropped.
                    self._backend.ack_many((ticket,))
                    continue
                if keep:
                    kept.append(
                        (
                            tuple(ids[i] for i in keep),
                            tuple(bodies[i] for i in keep),
                            timestamp,
                            attempts,
                        )
                    )
                    kept_tickets.append(_NO_TICKET)
                    count += len(keep)
            if not dropped or count >= limit:
                break
            batches, tickets = self._take(limit - count)
        return kept, kept_tickets

    def _take_memory(self, limit: int) -> list[MessageBatch]:
        """Pop up to ``limit`` messages from memory as batches, attempts + 1."""
        memory = self._memory
        head = self._head
        out: list[MessageBatch] = []
        taken = 0
        # Bounded: every pass pops a batch or takes all that is still wanted.
        while taken < limit and memory:
            ids, bodies, timestamp, attempts = memory[0]
            left = len(ids) - head
            want = limit - taken
            if left <= want:
                memory.popleft()
                take = left
                if head:
                    ids = ids[head:]
                    bodies = bodies[head:]
                head = 0
            else:
                take = want
                ids = ids[head : head + take]
                bodies = bodies[head : head + take]
                head += take
            out.append((ids, bodies, timestamp, attempts + 1))
            taken += take
        self._head = head
        self._mem_count -= taken
        return out

    def _owned(self, client_id: int, msg_id: bytes) -> _InFlight:
        """The in-flight entry of ``msg_id``, which ``client_id`` must own.

        Raises:
            InFlightError: with nsqd's text for either refusal.
        """
        entry = self._in_flight.get(msg_id)
        if entry is None:
            raise InFlightError(_NOT_IN_FLIGHT)
        if entry[_OWNER] != client_id:
            raise InFlightError(_NOT_OWNER)
        return entry

    def finish(self, client_id: int, msg_id: bytes, now: float | None = None) -> None:
        """FIN: the client processed the message; forget it.

        With ``now`` and e2e percentiles configured, the publish-to-FIN
        latency is recorded.

        Raises:
            InFlightError: the ID is not in flight, or another client owns it;
                nothing changed.
        """
        entry = self._owned(client_id, msg_id)
        del self._in_flight[msg_id]
        self._ack(entry[_TICKET])
        if self.on_finish is not None:
            self.on_finish(msg_id)
        if self.e2e is not None and now is not None:
            self.e2e.record(int(now * 1e9) - entry[_TIMESTAMP], now)

    def finish_many(
        self, client_id: int, msg_ids: Iterable[bytes], now: float | None = None
    ) -> list[tuple[bytes, str]]:
        """FIN a run of messages, as `finish` called for each ID in order would.

        Returns:
            ``(id, reason)`` in order for each ID that `finish` would have
            refused with `InFlightError` (``reason`` is that error's text);
            every other ID is finished.
        """
        in_flight = self._in_flight
        get = in_flight.get
        failed: list[tuple[bytes, str]] = []
        e2e = self.e2e if now is not None else None
        now_ns = int(now * 1e9) if now is not None else 0
        on_finish = self.on_finish
        tickets: list[int] = []
        for msg_id in msg_ids:
            entry = get(msg_id)
            if entry is not None and entry[_OWNER] == client_id:
                del in_flight[msg_id]
                if entry[_TICKET] != _NO_TICKET:
                    tickets.append(entry[_TICKET])
                if e2e is not None:
                    e2e.record(now_ns - entry[_TIMESTAMP], now)  # type: ignore[arg-type]
                if on_finish is not None:
                    on_finish(msg_id)
            else:
                failed.append((msg_id, _NOT_IN_FLIGHT if entry is None else _NOT_OWNER))
        if tickets:
            self._backend.ack_many(tickets)  # one journal write for the run
        return failed

    def requeue(self, client_id: int, msg_id: bytes, delay: float, now: float) -> None:
        """REQ: put an in-flight message back, now or after ``delay`` seconds.

        ``delay <= 0`` appends it to the ready queue; otherwise it is deferred
        until ``now + delay``. Attempts are kept. Clamping the delay to
        ``max_req_timeout`` is the protocol's job.

        Raises:
            InFlightError: the ID is not in flight, or another client owns it;
                nothing changed.
        """
        entry = self._owned(client_id, msg_id)
        body, timestamp, attempts = entry[_BODY], entry[_TIMESTAMP], entry[_ATTEMPTS]
        # Stored again first, acknowledged after: a crash in between duplicates, never loses.
        if delay > 0:
            self._defer(Message(msg_id, body, timestamp, attempts), now + delay)
        else:
            self._ready(msg_id, body, timestamp, attempts)
        del self._in_flight[msg_id]
        self._ack(entry[_TICKET])
        self.requeue_count += 1
        if delay <= 0 and not self.paused:
            self.wakeup()

    def touch(self, client_id: int, msg_id: bytes, now: float, timeout: float) -> None:
        """TOUCH: push an in-flight message's deadline to ``now + timeout``.

        The deadline never goes beyond delivery time + ``max_msg_timeout``
        (docs/nsq.md §1.7).

        Raises:
            InFlightError: the ID is not in flight, or another client owns it;
                nothing changed.
        """
        entry = self._owned(client_id, msg_id)
        deadline = min(now + timeout, entry[_DELIVERED_AT] + self._max_msg_timeout)
        self._seq += 1
        key = (deadline, self._seq, (msg_id,))
        self._in_flight[msg_id] = (*entry[:_KEY], key)
        heapq.heappush(self._heap, key)
        self._heap_ids += 1
        if self._heap_ids > 2 * len(self._in_flight) + _STALE_SLACK:
            self._compact()
        if deadline < self._announced:
            self._announced = deadline
            self.on_deadline(self, deadline)

    def _compact(self) -> None:
        """Rebuild the in-flight heap from the live entries only (O(n)).

        Entries sharing a key stay together under one key; a key some of
        whose IDs went stale is replaced by one naming only the live ones.
        """
        in_flight = self._in_flight
        groups: dict[int, tuple[_Key, list[bytes]]] = {}
        for msg_id, entry in in_flight.items():
            key = entry[_KEY]
            group = groups.get(id(key))  # keys are alive: entries hold them
            if group is None:
                groups[id(key)] = (key, [msg_id])
            else:
                group[1].append(msg_id)
        heap: list[_Key] = []
        for key, live in groups.values():
            if len(live) == len(key[2]):
                heap.append(key)
                continue
            new_key = (key[0], key[1], tuple(live))
            heap.append(new_key)
            for msg_id in live:
                in_flight[msg_id] = (*in_flight[msg_id][:_KEY], new_key)
        heapq.heapify(heap)
        self._heap = heap
        self._heap_ids = len(in_flight)

    def _key_is_live(self, key: _Key) -> bool:
        """Whether some entry still holds ``key``."""
        get = self._in_flight.get
        for msg_id in key[2]:
            entry = get(msg_id)
            if entry is not None and entry[_KEY] is key:
                return True
        return False

    # -- time -------------------------------------------------------------

    def process_in_flight(self, now: float) -> list[int]:
        """Requeue every in-flight message whose deadline is at or before ``now``.

        Each goes back to the ready queue with its attempts kept, and counts in
        ``timeout_count``.

        Returns:
            The owning client ID of each timed-out message (one entry per
            message), so the shell can lower those clients' in-flight counts.
        """
        heap = self._heap
        in_flight = self._in_flight
        owners: list[int] = []
        pop = heapq.heappop
        while heap and heap[0][0] <= now:
            key = pop(heap)
            ids = key[2]
            self._heap_ids -= len(ids)
            for msg_id in ids:
                entry = in_flight.get(msg_id)
                if entry is None or entry[_KEY] is not key:
                    continue  # answered, touched or redelivered since: stale
                self._ready(msg_id, entry[_BODY], entry[_TIMESTAMP], entry[_ATTEMPTS])
                del in_flight[msg_id]
                self._ack(entry[_TICKET])
                owners.append(entry[_OWNER])
        if owners:
            self.timeout_count += len(owners)
            if not self.paused:
                self.wakeup()
        return owners

    def process_deferred(self, now: float) -> int:
        """Move deferred messages due at or before ``now`` to the ready queue.

        Returns:
            How many were moved.
        """
        deferred = self._deferred
        moved = 0
        while deferred and deferred[0][0] <= now:
            _due, _seq, msg, ticket = deferred[0]
            self._ready(msg.id, msg.body, msg.timestamp, msg.attempts)
            heapq.heappop(deferred)
            if ticket != _NO_TICKET and self._deferred_backend is not None:
                self._deferred_backend.ack_many((ticket,))
            moved += 1
        if moved and not self.paused:
            self.wakeup()
        return moved

    def process(self, now: float) -> list[int]:
        """Run `process_in_flight` and `process_deferred`, then re-announce.

        This is the entry point of a deadline index (the broker): afterwards
        `announced_deadline` is the channel's true `next_deadline` (or
        ``math.inf``) and ``on_deadline`` has been called with it.

        Returns:
            What `process_in_flight` returned.
        """
        owners = self.process_in_flight(now)
        self.process_deferred(now)
        self._announced = math.inf
        deadline = self.next_deadline()
        if deadline is not None:
            self._announced = deadline
            self.on_deadline(self, deadline)
        return owners

    def announce(self) -> None:
        """Announce the channel's earliest deadline through ``on_deadline`` (after opening)."""
        deadline = self.next_deadline()
        if deadline is not None:
            self._announced = deadline
            self.on_deadline(self, deadline)

    def next_deadline(self) -> float | None:
        """The earliest in-flight deadline or deferred due time, or None."""
        heap = self._heap
        while heap:
            key = heap[0]
            if self._key_is_live(key):
                break
            heapq.heappop(heap)  # drop a stale key now rather than report it
            self._heap_ids -= len(key[2])
        best = heap[0][0] if heap else None
        if self._deferred:
            due = self._deferred[0][0]
            if best is None or due < best:
                best = due
        return best

    # -- clients ----------------------------------------------------------

    def add_client(self, client_id: int) -> None:
        """Record a subscribed client (SUB)."""
        self._clients.add(client_id)

    def remove_client(self, client_id: int) -> bool:
        """Forget a client that closed or was closed.

        Its in-flight messages stay in flight until their deadline (docs/nsq.md §0.9).

        Returns:
            True when the channel is ephemeral and has no client left, i.e. it
            should now be deleted (docs/nsq.md §4.7).
        """
        self._clients.discard(client_id)
        self._waiting.pop(client_id, None)
        return self.ephemeral and not self._clients

    # -- administration ---------------------------------------------------

    def pause(self) -> None:
        """Stop handing out messages; everything else goes on."""
        self.paused = True

    def unpause(self) -> None:
        """Resume handing out messages (calls ``wakeup``)."""
        self.paused = False
        self.wakeup()

    def empty(self) -> list[int]:
        """Drop every message: memory, backend, in flight and deferred (docs/nsq.md §4.8).

        Later FIN/REQ/TOUCH of the dropped in-flight IDs fail with ``ID not in
        flight``.

        Returns:
            The owner of each dropped in-flight message (one entry per
            message), so the shell can reset those clients' in-flight counts.
        """
        owners = [entry[_OWNER] for entry in self._in_flight.values()]
        self._memory.clear()
        self._head = 0
        self._mem_count = 0
        self._in_flight.clear()
        self._heap.clear()
        self._heap_ids = 0
        self._deferred.clear()
        self._backend.empty()
        if self._deferred_backend is not None:
            self._deferred_backend.empty()
        return owners

    def sync(self) -> None:
        """Make what the backend holds durable (see ``QueueConfig.sync_on_publish``).

        Raises:
            BackendError: the sync failed.
        """
        self._backend.sync()

    def flush(self, now: float) -> None:
        """Write memory, in-flight and deferred messages to the backend (shutdown).

        They are ready again when the backend is reopened. In-flight messages
        follow the ready ones in deadline order, then the deferred ones in due
        order; deferred messages lose their remaining delay, as in nsqd
        (docs/nsq.md §4.4, §4.6). Afterwards only the backend holds messages.

        Raises:
            BackendError: a write failed; the messages not yet written are
                still where they were.
        """
        del now  # kept for symmetry with the other time-driven calls
        put = self._backend.put
        if self._durable:
            # In-flight and deferred messages already have durable records
            # (acknowledged only by FIN): writing them again would duplicate.
            self._flush_memory(put)
            return
        self._flush_memory(put)
        in_flight = self._in_flight
        # Deadline order; sorted() is stable, so a batch keeps delivery order.
        for msg_id, entry in sorted(in_flight.items(), key=lambda item: item[1][_KEY][:2]):
            put(encode_message_fields(msg_id, entry[_BODY], entry[_TIMESTAMP], entry[_ATTEMPTS]))
            del in_flight[msg_id]
        self._heap.clear()
        self._heap_ids = 0
        deferred = self._deferred
        while deferred:
            put(encode_message(deferred[0][2]))
            heapq.heappop(deferred)

    def _flush_memory(self, put: Callable[[bytes], None]) -> None:
        memory = self._memory
        while memory:
            ids, bodies, timestamp, attempts = memory[0]
            # Bounded by the batch; ``_head`` follows each write, so a failed
            # write leaves exactly the unwritten messages in memory.
            for index in range(self._head, len(ids)):
                put(encode_message_fields(ids[index], bodies[index], timestamp, attempts))
                self._head = index + 1
                self._mem_count -= 1
            memory.popleft()
            self._head = 0

    def close(self) -> None:
        """Close the backends, keeping their records; call `flush` first to keep the rest."""
        self._backend.close()
        if self._deferred_backend is not None:
            self._deferred_backend.close()

    def delete(self) -> None:
        """Drop every message and remove the backend for good."""
        self.empty()
        self._backend.delete()
        if self._deferred_backend is not None:
            self._deferred_backend.delete()
        self.deleted = True
