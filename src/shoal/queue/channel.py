"""A channel: one consumer group's copy of a topic's stream (nsq.md §4.1-§4.4).

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
    ``deliver`` pops up to ``limit`` ready messages for one client, bumps
    their attempts and records them in flight with deadline ``now + timeout``.
    Server-side RDY is "messages in flight on this connection", so the shell
    decides ``limit`` and the channel only hands out what is ready; several
    connections of one channel compete for the same queues (nsq.md §4.2).
    ``process_in_flight`` puts expired deliveries back in the ready queue and
    ``process_deferred`` releases due deferred messages; nsqd's 100 ms scanner
    is replaced by the caller sleeping until `next_deadline`.

    A disconnecting client keeps its in-flight messages until their deadline,
    as nsqd does (nsq.md §0.9): ``remove_client`` only forgets the client.

Data structures and costs (n = messages in the structure):
    in flight: a dict ``id -> entry`` plus a binary heap of
        ``(deadline, seq, id)`` keys with lazy deletion. FIN and REQ only pop
        the dict (O(1)); the key left in the heap is recognised as stale
        (the entry is gone or holds another key) when it reaches the top.
        TOUCH pushes a new key (O(log n)). The heap is rebuilt from the dict
        when stale keys outnumber live ones by more than 1024, so its size
        stays O(n) and the rebuild is O(1) amortised per operation. A
        ``SortedList`` with eager removal was measured at about 1.7 us per
        deliver+finish for the index alone against about 0.5 us for this
        heap, on the consume hot path.
    deferred: a binary heap of ``(due, seq, message)``; deferred messages are
        never addressed by ID (REQ, FIN and TOUCH only see in-flight ones),
        so push and pop are O(log n) with no deletion at all.
    ``seq`` is a per-channel counter: it breaks deadline ties in FIFO order
    and keeps tuple comparison away from messages.

Hooks set by the shell and the broker (both default to no-ops and must be
quick and must not call back into the channel):
    ``wakeup()``: messages just became deliverable (a put, a REQ without
        delay, a timeout, due deferred messages, unpause).
    ``on_deadline(channel, deadline)``: the channel gained a deadline earlier
        than the one it last announced; the broker keeps its deadline index
        with it (`announced_deadline`, `process`).
"""

from __future__ import annotations

import collections
import heapq
import math
from typing import TYPE_CHECKING

from shoal.errors import ShoalError
from shoal.queue.message import Message, decode_message, encode_message

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from shoal.queue.backend import Backend
    from shoal.queue.config import QueueConfig

__all__ = ["EPHEMERAL_SUFFIX", "Channel", "InFlightError"]

#: A topic or channel whose name ends with this is ephemeral (nsq.md §4.7).
EPHEMERAL_SUFFIX = "#ephemeral"

#: Stale in-flight heap keys tolerated beyond the live ones before a rebuild.
_STALE_SLACK = 1024

_NOT_IN_FLIGHT = "ID not in flight"
_NOT_OWNER = "client does not own message"


class InFlightError(ShoalError):
    """FIN, REQ or TOUCH named a message the client may not answer.

    The message is nsqd's text (``ID not in flight`` or ``client does not own
    message``); the protocol sends it in a non-fatal ``E_FIN_FAILED``,
    ``E_REQ_FAILED`` or ``E_TOUCH_FAILED`` frame. The channel is unchanged.
    """


def _no_wakeup() -> None:
    """Default `Channel.wakeup`: nobody is waiting."""


def _no_deadline_hook(channel: Channel, deadline: float) -> None:
    """Default `Channel.on_deadline`: nobody keeps a deadline index."""


class _InFlight:
    """One delivered, unanswered message and who owns it."""

    __slots__ = ("client_id", "delivered_at", "key", "msg")

    def __init__(
        self, msg: Message, client_id: int, delivered_at: float, key: tuple[float, int, bytes]
    ) -> None:
        self.msg = msg
        self.client_id = client_id
        self.delivered_at = delivered_at
        #: The live heap key ``(deadline, seq, id)``; any other key for this ID is stale.
        self.key = key


class Channel:
    """The queues of one channel of one topic.

    Attributes:
        topic_name: the topic this channel belongs to.
        name: the channel name, ``#ephemeral`` suffix included.
        ephemeral: the name ends with ``#ephemeral``: the channel is deleted
            when its last client leaves and is never persisted.
        paused: `deliver` hands out nothing while set (in-flight messages are
            unaffected, nsq.md §4.8).
        deleted: `delete` was called; the channel must not be used again.
        message_count: messages put into the channel (deferred ones included),
            not counting requeues and timeouts, as nsqd's ``message_count``.
        requeue_count: REQs answered.
        timeout_count: deliveries that reached their deadline unanswered.
        wakeup: called when messages become deliverable; see the module notes.
        on_deadline: called with ``(channel, deadline)`` when the channel gains
            a deadline earlier than `announced_deadline`.
    """

    __slots__ = (
        "_announced",
        "_backend",
        "_clients",
        "_deferred",
        "_heap",
        "_in_flight",
        "_max_msg_timeout",
        "_mem_size",
        "_memory",
        "_seq",
        "deleted",
        "ephemeral",
        "message_count",
        "name",
        "on_deadline",
        "paused",
        "requeue_count",
        "timeout_count",
        "topic_name",
        "wakeup",
    )

    def __init__(self, topic_name: str, name: str, config: QueueConfig, backend: Backend) -> None:
        self.topic_name = topic_name
        self.name = name
        self.ephemeral = name.endswith(EPHEMERAL_SUFFIX)
        self.paused = False
        self.deleted = False
        self.message_count = 0
        self.requeue_count = 0
        self.timeout_count = 0
        self.wakeup: Callable[[], None] = _no_wakeup
        self.on_deadline: Callable[[Channel, float], None] = _no_deadline_hook
        self._mem_size = config.mem_queue_size
        self._max_msg_timeout = config.max_msg_timeout
        self._backend = backend
        self._memory: collections.deque[Message] = collections.deque()
        self._in_flight: dict[bytes, _InFlight] = {}
        self._heap: list[tuple[float, int, bytes]] = []
        self._deferred: list[tuple[float, int, Message]] = []
        self._seq = 0
        self._clients: set[int] = set()
        self._announced = math.inf

    def __repr__(self) -> str:
        return f"<Channel {self.topic_name}/{self.name} depth={self.depth}>"

    # -- counters ---------------------------------------------------------

    @property
    def depth(self) -> int:
        """Ready messages: memory plus backend (in-flight and deferred excluded)."""
        return len(self._memory) + self._backend.depth

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
        self._ready(msg)
        if not self.paused:
            self.wakeup()

    def put_many(self, msgs: Sequence[Message], now: float) -> None:
        """Accept a batch of messages from the topic, as `put` would one by one.

        The batch form exists for the publish hot path: the ready part is
        appended to memory in one slice and ``wakeup`` runs once.

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
        memory = self._memory
        room = self._mem_size - len(memory)
        if room >= len(ready):
            memory.extend(ready)
        else:
            if room > 0:
                memory.extend(ready[:room])
            else:
                room = 0
            put = self._backend.put
            for msg in ready[room:]:
                put(encode_message(msg))
        if not self.paused:
            self.wakeup()

    def _ready(self, msg: Message) -> None:
        """Append a message to the ready queue (memory, else backend)."""
        if len(self._memory) < self._mem_size:
            self._memory.append(msg)
        else:
            self._backend.put(encode_message(msg))

    def _defer(self, msg: Message, due: float) -> None:
        self._seq += 1
        heapq.heappush(self._deferred, (due, self._seq, msg))
        if due < self._announced:
            self._announced = due
            self.on_deadline(self, due)

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
            ``limit <= 0`` or when nothing is ready.

        Raises:
            RemoteProtocolError: a backend record is shorter than a header; the
                records read before it are lost with it.
        """
        if self.paused or limit <= 0:
            return []
        memory = self._memory
        if len(memory) >= limit:
            popleft = memory.popleft
            out = [popleft() for _ in range(limit)]
        else:
            out = list(memory)
            memory.clear()
            backend = self._backend
            missing = limit - len(out)
            if missing > 0 and backend.depth:
                get = backend.get
                for _ in range(missing):
                    record = get()
                    if record is None:
                        break
                    out.append(decode_message(record))
            if not out:
                return out
        deadline = now + timeout
        in_flight = self._in_flight
        heap = self._heap
        push = heapq.heappush
        seq = self._seq
        for msg in out:
            msg.attempts += 1
            seq += 1
            key = (deadline, seq, msg.id)
            in_flight[msg.id] = _InFlight(msg, client_id, now, key)
            push(heap, key)
        self._seq = seq
        if len(heap) > 2 * len(in_flight) + _STALE_SLACK:
            self._compact()
        if deadline < self._announced:
            self._announced = deadline
            self.on_deadline(self, deadline)
        return out

    def finish(self, client_id: int, msg_id: bytes) -> None:
        """FIN: the client processed the message; forget it.

        Raises:
            InFlightError: the ID is not in flight, or another client owns it;
                nothing changed.
        """
        entry = self._in_flight.get(msg_id)
        if entry is None:
            raise InFlightError(_NOT_IN_FLIGHT)
        if entry.client_id != client_id:
            raise InFlightError(_NOT_OWNER)
        del self._in_flight[msg_id]

    def requeue(self, client_id: int, msg_id: bytes, delay: float, now: float) -> None:
        """REQ: put an in-flight message back, now or after ``delay`` seconds.

        ``delay <= 0`` appends it to the ready queue; otherwise it is deferred
        until ``now + delay``. Attempts are kept. Clamping the delay to
        ``max_req_timeout`` is the protocol's job.

        Raises:
            InFlightError: the ID is not in flight, or another client owns it;
                nothing changed.
        """
        entry = self._in_flight.get(msg_id)
        if entry is None:
            raise InFlightError(_NOT_IN_FLIGHT)
        if entry.client_id != client_id:
            raise InFlightError(_NOT_OWNER)
        del self._in_flight[msg_id]
        self.requeue_count += 1
        if delay > 0:
            self._defer(entry.msg, now + delay)
            return
        self._ready(entry.msg)
        if not self.paused:
            self.wakeup()

    def touch(self, client_id: int, msg_id: bytes, now: float, timeout: float) -> None:
        """TOUCH: push an in-flight message's deadline to ``now + timeout``.

        The deadline never goes beyond delivery time + ``max_msg_timeout``
        (nsq.md §1.7).

        Raises:
            InFlightError: the ID is not in flight, or another client owns it;
                nothing changed.
        """
        entry = self._in_flight.get(msg_id)
        if entry is None:
            raise InFlightError(_NOT_IN_FLIGHT)
        if entry.client_id != client_id:
            raise InFlightError(_NOT_OWNER)
        deadline = min(now + timeout, entry.delivered_at + self._max_msg_timeout)
        self._seq += 1
        entry.key = (deadline, self._seq, msg_id)
        heapq.heappush(self._heap, entry.key)
        if len(self._heap) > 2 * len(self._in_flight) + _STALE_SLACK:
            self._compact()
        if deadline < self._announced:
            self._announced = deadline
            self.on_deadline(self, deadline)

    def _compact(self) -> None:
        """Rebuild the in-flight heap from the live keys only (O(n))."""
        self._heap = [entry.key for entry in self._in_flight.values()]
        heapq.heapify(self._heap)

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
            entry = in_flight.get(key[2])
            if entry is None or entry.key is not key:
                continue  # answered, touched or redelivered since: stale
            del in_flight[key[2]]
            owners.append(entry.client_id)
            self._ready(entry.msg)
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
            self._ready(heapq.heappop(deferred)[2])
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

    def next_deadline(self) -> float | None:
        """The earliest in-flight deadline or deferred due time, or None."""
        heap = self._heap
        in_flight = self._in_flight
        while heap:
            key = heap[0]
            entry = in_flight.get(key[2])
            if entry is not None and entry.key is key:
                break
            heapq.heappop(heap)  # drop a stale key now rather than report it
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

        Its in-flight messages stay in flight until their deadline (nsq.md §0.9).

        Returns:
            True when the channel is ephemeral and has no client left, i.e. it
            should now be deleted (nsq.md §4.7).
        """
        self._clients.discard(client_id)
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
        """Drop every message: memory, backend, in flight and deferred (nsq.md §4.8).

        Later FIN/REQ/TOUCH of the dropped in-flight IDs fail with ``ID not in
        flight``.

        Returns:
            The owner of each dropped in-flight message (one entry per
            message), so the shell can reset those clients' in-flight counts.
        """
        owners = [entry.client_id for entry in self._in_flight.values()]
        self._memory.clear()
        self._in_flight.clear()
        self._heap.clear()
        self._deferred.clear()
        self._backend.empty()
        return owners

    def flush(self, now: float) -> None:
        """Write memory, in-flight and deferred messages to the backend (shutdown).

        They are ready again when the backend is reopened. In-flight messages
        follow the ready ones in deadline order, then the deferred ones in due
        order; deferred messages lose their remaining delay, as in nsqd
        (nsq.md §4.4, §4.6). Afterwards only the backend holds messages.

        Raises:
            BackendError: a write failed; the messages not yet written are
                still where they were.
        """
        del now  # kept for symmetry with the other time-driven calls
        put = self._backend.put
        memory = self._memory
        while memory:
            put(encode_message(memory[0]))
            memory.popleft()
        in_flight = self._in_flight
        for entry in sorted(in_flight.values(), key=lambda e: e.key):
            put(encode_message(entry.msg))
            del in_flight[entry.msg.id]
        self._heap.clear()
        deferred = self._deferred
        while deferred:
            put(encode_message(deferred[0][2]))
            heapq.heappop(deferred)

    def close(self) -> None:
        """Close the backend, keeping its records; call `flush` first to keep the rest."""
        self._backend.close()

    def delete(self) -> None:
        """Drop every message and remove the backend for good."""
        self.empty()
        self._backend.delete()
        self.deleted = True
