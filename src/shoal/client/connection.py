"""One NSQ TCP protocol V2 connection over trio (docs/nsq.md §1).

`open_connection` dials a node, sends the magic and ``IDENTIFY`` with
``feature_negotiation`` (so the node's limits, ``max_rdy_count`` and
``msg_timeout``, come back as JSON), and runs a reader task for as long as
the ``async with`` block lasts.

Theory of operation:
    Commands that the node answers (``PUB``, ``MPUB``, ``DPUB``, ``SUB``,
    ``CLS``) are pipelined: a caller appends a pending slot as it queues its
    command, so the order of slots is the order of commands on the wire,
    and the reader resolves the oldest slot with each response or error
    frame, in the order the node answers. Heartbeats are
    answered with ``NOP`` by the reader itself and never reach a slot.
    ``E_FIN_FAILED``, ``E_REQ_FAILED`` and ``E_TOUCH_FAILED`` are the only
    non-fatal errors (docs/nsq.md §0 trap 7) and belong to commands that have no
    success reply, so they are logged and do not consume a slot. Every other
    error frame fails the oldest slot and the node then closes the
    connection. Message frames go to `Connection.messages`, or straight to
    the callable a consumer gave `Connection.deliver_to`; every whole frame
    of a read is parsed in one pass.

    Concurrent `Connection.pub` calls of a topic share commands
    (`shoal.client.batching`): the publishes of one scheduling pass leave
    together with the next write, and those made while their topic's
    command is unanswered gather into one ``MPUB`` that leaves when it is
    answered. A command's answer is every caller's, and wakes each of them
    once, from the reader, in one loop.

    Callers never write to the socket themselves: commands are queued and a
    writer task sends whatever has accumulated in one write, once the tasks
    that were ready have had a scheduling pass to add theirs, so concurrent
    publishes and a consumer's stream of ``FIN`` cost one system call per
    batch rather than per command, and a cancelled caller can never leave
    half a command on the wire. The write is the non-blocking system call
    itself: while the socket has room (the usual case) it costs no task
    switch and no timeout scope. The reader writes too, at the end of each
    read, what handling the read queued (the publish batches its answers
    released, a heartbeat's ``NOP``): those need no wait for other tasks,
    so a batch of publishers costs one reader wake-up and one write per
    round trip, and the writer task is not woken at all. The reader reads
    with the system call too, and waits for the socket only after a short
    read: one scheduling pass per read.

    When the socket is full, what it did not take waits for the writer
    task, and nothing else is written until it has gone, so commands keep
    their order. That wait is shielded and bounded by
    `ConnectionConfig.write_timeout`: a write either completes or the
    connection is given up as stuck. A full queue
    (`ConnectionConfig.max_buffered`) makes callers wait, so a slow node
    pushes back. Leaving the ``async with`` block flushes what is queued.

Error handling:
    When the connection ends (EOF, reset, protocol error, a fatal error frame,
    or `Connection.aclose`) every unanswered command fails with
    `ConnectionClosed` (or the `NSQError` the node sent for it), later
    commands fail at once with `ConnectionClosed`, and `Connection.messages`
    ends. The reader never raises into the caller's nursery.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import logging
import os
import socket
import struct
from typing import TYPE_CHECKING, Any

import trio

from shoal import __version__
from shoal.client._nursery import open_service_nursery
from shoal.client.batching import DEFAULT_MAX_BATCH_BYTES, Batch, PublishBatcher
from shoal.client.errors import ConnectionClosed, NodeUnavailable, NSQError
from shoal.client.httpclient import describe_os_error, parse_address
from shoal.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from shoal.queue.commands import (
    Cls,
    Command,
    Dpub,
    Fin,
    Identify,
    Mpub,
    Nop,
    Rdy,
    Req,
    Sub,
    Touch,
    encode_command,
)
from shoal.queue.frames import DEFAULT_MAX_FRAME_SIZE, MAGIC_V2, FrameDecoder, FrameType
from shoal.queue.message import HEADER, HEADER_SIZE
from shoal.queue.names import is_valid_channel_name, is_valid_topic_name

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

__all__ = [
    "NON_FATAL_ERRORS",
    "Connection",
    "ConnectionConfig",
    "ConnectionStatistics",
    "Message",
    "open_connection",
]

log = logging.getLogger("shoal.client")

#: Error codes after which the node keeps the connection open.
NON_FATAL_ERRORS = frozenset({"E_FIN_FAILED", "E_REQ_FAILED", "E_TOUCH_FAILED"})
#: Bytes asked of the socket per read.
RECEIVE_SIZE = 64 * 1024
#: ``max_rdy_count`` assumed when the node does not negotiate features.
DEFAULT_MAX_RDY_COUNT = 2500
# Topics whose names a connection remembers as checked.
_VALID_TOPICS = 1024
# Most scheduling passes the writer waits for more commands before a write.
_COALESCE_PASSES = 32
_HEARTBEAT = b"_heartbeat_"
# A frame's size and type (docs/nsq.md §1), read by the reader's message fast path.
_FRAME_HEAD = struct.Struct(">ii")
_MESSAGE_FRAME = FrameType.MESSAGE.value
# A message frame's data: timestamp and attempts, then the ID, then the body.
_MESSAGE_HEAD = HEADER
_MESSAGE_HEAD_SIZE = HEADER_SIZE
_NOP = encode_command(Nop())


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionConfig:
    """What a connection tells the node about itself, and its own limits.

    Attributes:
        client_id: ``client_id`` in ``IDENTIFY`` (shown in ``/stats``);
            empty means the short host name, as go-nsq does.
        hostname: ``hostname`` in ``IDENTIFY``; empty means the host name.
        user_agent: ``user_agent`` in ``IDENTIFY``.
        heartbeat_interval: seconds between the node's heartbeats; the node
            drops a connection silent for twice this. Consumers need
            heartbeats (``SUB`` is refused without them), so no ``-1``.
        msg_timeout: seconds before an unanswered message is requeued; 0
            keeps the node's default.
        connect_timeout: seconds to connect and finish ``IDENTIFY``.
        write_timeout: seconds one write may take before the connection is
            given up as stuck.
        max_buffered: bytes of commands queued for the writer before callers
            wait for it to drain (backpressure from a slow node).
        max_frame_size: largest frame accepted from the node, in bytes.
        publish_batch_bytes: most message bytes that concurrent `Connection.pub`
            calls gather into one ``MPUB``, made in one scheduling pass or
            while earlier publishes of their topic are in flight (see
            `shoal.client.batching`); an error answer then fails every
            publish of the batch. 0 sends each publish as its own ``PUB``.
            Keep it below the node's ``max_body_size``.
    """

    client_id: str = ""
    hostname: str = ""
    user_agent: str = f"shoal/{__version__}"
    heartbeat_interval: float = 30.0
    msg_timeout: float = 0.0
    connect_timeout: float = 5.0
    write_timeout: float = 10.0
    max_buffered: int = 1 << 20
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    publish_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES

    def __post_init__(self) -> None:
        if not 1.0 <= self.heartbeat_interval <= 3600.0:
            raise ConfigError("heartbeat_interval must be between 1 s and 1 h")
        if self.msg_timeout != 0.0 and not 1.0 <= self.msg_timeout <= 86400.0:
            raise ConfigError("msg_timeout must be 0 (node default) or between 1 s and 1 day")
        if self.connect_timeout <= 0 or self.write_timeout <= 0:
            raise ConfigError("connect_timeout and write_timeout must be positive")
        if self.max_buffered < 1:
            raise ConfigError("max_buffered must be positive")
        if self.max_frame_size < 64:
            raise ConfigError("max_frame_size must be at least 64 bytes")
        if self.publish_batch_bytes < 0:
            raise ConfigError("publish_batch_bytes must be 0 (no gathering) or more")

    def identify_body(self) -> bytes:
        """The ``IDENTIFY`` JSON for this configuration."""
        hostname = self.hostname or socket.gethostname()
        body: dict[str, Any] = {
            "client_id": self.client_id or hostname.split(".")[0],
            "hostname": hostname,
            "user_agent": self.user_agent,
            "feature_negotiation": True,
            "heartbeat_interval": round(self.heartbeat_interval * 1000),
        }
        if self.msg_timeout:
            body["msg_timeout"] = round(self.msg_timeout * 1000)
        return json.dumps(body).encode()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionStatistics:
    """A snapshot of a connection's counters, where batching shows.

    Attributes:
        writes: socket writes (system calls); each carries every command
            queued since the one before, or the rest of one the socket took
            only part of.
        fins: ``FIN`` commands queued.
        rdys: ``RDY`` commands queued.
        publish_commands: ``PUB`` or gathered ``MPUB`` commands `Connection.pub`
            sent.
        published: messages in those commands.
    """

    writes: int
    fins: int
    rdys: int
    publish_commands: int
    published: int


class Message:
    """A message delivered to a consumer, with the commands that answer it.

    Answer each message once: `fin` when it is done, `req` to have it
    delivered again later, or `touch` to ask for more time first.

    Attributes:
        id: the 16-byte ID.
        body: the payload.
        timestamp: publish time, nanoseconds since the epoch.
        attempts: deliveries so far, this one included.
        connection: the connection it came on (answers go back on it).
    """

    __slots__ = ("_answered", "_responded", "attempts", "body", "connection", "id", "timestamp")

    def __init__(
        self, msg_id: bytes, body: bytes, timestamp: int, attempts: int, connection: Connection
    ) -> None:
        self.id = msg_id
        self.body = body
        self.timestamp = timestamp
        self.attempts = attempts
        self.connection = connection
        self._responded = False
        # Made only for `wait_responded`: most messages are never waited on.
        self._answered: trio.Event | None = None

    def __repr__(self) -> str:
        return f"<Message {self.id.decode()} attempts={self.attempts} body={self.body[:32]!r}>"

    @property
    def responded(self) -> bool:
        """True once `fin` or `req` was called."""
        return self._responded

    async def wait_responded(self) -> None:
        """Return once `fin` or `req` has been called."""
        if self._answered is None:
            self._answered = trio.Event()
            if self._responded:
                self._answered.set()
        await self._answered.wait()

    def _answer(self) -> None:
        if self._responded:
            raise LocalProtocolError(f"message {self.id.decode()} was already answered")
        self._responded = True
        if self._answered is not None:
            self._answered.set()

    async def fin(self) -> None:
        """Tell the node the message is done (``FIN``).

        Raises:
            LocalProtocolError: the message was already answered.
            ConnectionClosed: the connection is gone; the node will deliver
                the message again once its timeout expires.
        """
        self._answer()
        await self.connection.fin(self.id)

    def fin_nowait(self) -> None:
        """`fin` without a checkpoint: the ``FIN`` is queued for the writer.

        For code answering a run of messages in one go (the consumer's
        handler loop): the FINs of the run leave in one write. Never blocks:
        FINs are bounded by the messages in flight, which RDY bounds.

        Raises:
            LocalProtocolError: the message was already answered.
            ConnectionClosed: the connection is gone.
        """
        # `_answer` and `Connection.fin_nowait` written out: this runs once
        # per message a consumer's handler returns from.
        if self._responded:
            raise LocalProtocolError(f"message {self.id.decode()} was already answered")
        self._responded = True
        if self._answered is not None:
            self._answered.set()
        conn = self.connection
        conn._write_nowait(b"FIN %s\n" % self.id)
        conn._fins += 1

    async def req(self, delay: float = 0.0) -> None:
        """Put the message back, deliverable after ``delay`` seconds (``REQ``).

        Raises:
            LocalProtocolError: the message was already answered.
            ConnectionClosed: the connection is gone.
        """
        self._answer()
        await self.connection.req(self.id, delay)

    async def touch(self) -> None:
        """Reset the message's timeout (``TOUCH``); it stays unanswered.

        Raises:
            LocalProtocolError: the message was already answered.
            ConnectionClosed: the connection is gone.
        """
        if self._responded:
            raise LocalProtocolError(f"message {self.id.decode()} was already answered")
        await self.connection.touch(self.id)


class _Pending:
    """A command waiting for its response frame.

    One waiter at most (the caller that sent the command), so it parks that
    task directly rather than through a `trio.Event` (a set of waiters);
    every publish makes one.
    """

    __slots__ = ("_task", "data", "error", "settled")

    def __init__(self) -> None:
        self.data = b""
        self.error: BaseException | None = None
        self.settled = False
        self._task: trio.lowlevel.Task | None = None

    def resolve(self, data: bytes) -> None:
        self.data = data
        self.settled = True
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.settled = True
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        """Return once resolved or failed (a checkpoint either way)."""
        if self.settled:
            await trio.lowlevel.checkpoint()
            return
        self._task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self.abort)

    def abort(self, _: object) -> trio.lowlevel.Abort:
        """The caller was cancelled: its answer, when it comes, wakes nobody."""
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED


class _BatchAnswer:
    """The pending slot of a publish batch: its one answer goes to every caller in it."""

    __slots__ = ("_conn", "batch")

    def __init__(self, conn: Connection, batch: Batch[_Pending]) -> None:
        self._conn = conn
        self.batch = batch

    def resolve(self, data: bytes) -> None:
        # `_Pending.resolve` written out: this runs once per published message.
        reschedule = trio.lowlevel.reschedule
        for waiter in self.batch.waiters:
            waiter.data = data
            waiter.settled = True
            task = waiter._task
            if task is not None:
                waiter._task = None
                reschedule(task)
        self._conn._batch_answered(self.batch)

    def fail(self, error: BaseException) -> None:
        for waiter in self.batch.waiters:
            waiter.fail(_copy_error(error))
        self._conn._batch_answered(self.batch)


class Connection:
    """A V2 connection; build it with `open_connection`.

    Attributes:
        address: ``host:port`` as dialled.
        settings: the node's ``IDENTIFY`` JSON reply (empty if the node did
            not negotiate features).
        messages: where message frames arrive, for a subscribed connection.
        rdy_count: the last RDY count sent.
    """

    def __init__(self, stream: trio.SocketStream, address: str, config: ConnectionConfig) -> None:
        self.address = address
        self._stream = stream
        self._config = config
        self._decoder = FrameDecoder(config.max_frame_size)
        self._buffered = 0  # bytes given to the decoder and not yet returned in frames
        self._fd = stream.socket.fileno()
        self._send_lock = trio.Lock()
        self._outgoing: list[bytes] = []
        self._outgoing_size = 0
        # The tail of a write the socket took only part of; while it is set
        # only the writer task writes (it waits for room), so order holds.
        self._unsent: memoryview | None = None
        # True while the reader handles one read's frames: what it queues
        # then (answers releasing a publish batch, NOP) leaves with the
        # write it makes at the end of the read, without waking the writer.
        self._reading = False
        self._has_output = trio.Event()
        # Made by a caller that waits for the queue to drain; None otherwise.
        self._drained: trio.Event | None = None
        self._pending: collections.deque[_Pending | _BatchAnswer] = collections.deque()
        self._batcher: PublishBatcher[_Pending] = PublishBatcher(config.publish_batch_bytes)
        self._closed = trio.Event()
        self._ended = False  # `_closed` is set: read per publish, so a plain attribute
        self._close_reason = ""
        self._fatal_reason = ""
        self._reader_scope = trio.CancelScope()
        self.settings: dict[str, Any] = {}
        self.rdy_count = 0
        self._valid_topics: set[str] = set()
        self._writes = 0
        self._fins = 0
        self._rdys = 0
        # Replaced once IDENTIFY tells us max_rdy_count (the most the node
        # will ever have in flight to us, so the reader never waits long).
        self._message_send, self.messages = trio.open_memory_channel[Message](0)
        self._sink: Callable[[Message], None] | None = None

    # -- state ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the connection has ended."""
        return self._ended

    @property
    def close_reason(self) -> str:
        """Why the connection ended (empty while open)."""
        return self._close_reason

    async def wait_closed(self) -> None:
        """Return once the connection has ended."""
        await self._closed.wait()

    @property
    def max_rdy_count(self) -> int:
        """The largest RDY the node accepts."""
        value = self.settings.get("max_rdy_count")
        return value if isinstance(value, int) and value > 0 else DEFAULT_MAX_RDY_COUNT

    @property
    def msg_timeout(self) -> float:
        """Seconds the node waits for an answer to a message (``msg_timeout``)."""
        value = self.settings.get("msg_timeout")
        if isinstance(value, int | float) and value > 0:
            return float(value) / 1000.0
        return self._config.msg_timeout or 60.0

    def _mark_closed(self, reason: str) -> None:
        if self._ended:
            return
        self._ended = True
        self._close_reason = reason
        self._closed.set()
        self._unsent = None
        self._wake_drained()
        self._reader_scope.cancel()
        self._message_send.close()
        while self._pending:
            self._pending.popleft().fail(ConnectionClosed(self.address, reason))
        for batch in self._batcher.drain():
            for waiter in batch.waiters:
                waiter.fail(ConnectionClosed(self.address, reason))

    # -- handshake and reader ---------------------------------------------------

    async def _handshake(self) -> None:
        identify = encode_command(Identify(self._config.identify_body()))
        await self._stream.send_all(MAGIC_V2 + identify)
        while True:
            ftype, data = await self._next_frame()
            if ftype == FrameType.RESPONSE and data == _HEARTBEAT:
                await self._stream.send_all(_NOP)
            elif ftype == FrameType.RESPONSE:
                break
            elif ftype == FrameType.ERROR:
                raise _nsq_error(data)
            else:
                raise RemoteProtocolError("message frame before IDENTIFY was answered")
        if data.startswith(b"{"):
            try:
                settings = json.loads(data)
            except ValueError:
                raise RemoteProtocolError("IDENTIFY reply is not JSON") from None
            if isinstance(settings, dict):
                self.settings = settings
        elif data != b"OK":
            raise RemoteProtocolError(f"unexpected IDENTIFY reply {data[:64]!r}")
        self._message_send, self.messages = trio.open_memory_channel[Message](self.max_rdy_count)

    async def _next_frame(self) -> tuple[FrameType, bytes]:
        while True:
            frame = self._decoder.next_frame()
            if frame is not None:
                self._buffered -= len(frame[1]) + 8
                return frame
            data = await self._stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise trio.BrokenResourceError("the node closed the connection")
            self._decoder.receive_data(data)
            self._buffered += len(data)

    def deliver_to(self, sink: Callable[[Message], None] | None) -> None:
        """Hand each message to ``sink`` as it is parsed instead of to `messages`.

        For a consumer that queues messages itself: the reader calls ``sink``
        synchronously for every message of a read, with no channel and no
        checkpoint in between. ``sink`` must not block; the node's RDY
        bounds how many messages it is given before they are answered.
        `messages` then receives nothing, and still ends when the
        connection does. None goes back to `messages`.
        """
        self._sink = sink

    async def _read_loop(self) -> None:
        # None while reading: if the loop is cancelled (the `async with` is
        # being left) the connection stays writable, so a stopping consumer
        # can still hand its messages back; leaving the block closes it.
        reason: str | None = None
        try:
            with self._reader_scope:
                await self._read_frames()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            reason = f"connection lost ({_describe(exc)})"
        except ConnectionClosed as exc:
            reason = exc.reason
        except RemoteProtocolError as exc:
            reason = f"protocol error: {exc}"
        finally:
            if reason is not None or self._fatal_reason:
                self._mark_closed(self._fatal_reason or reason or "closed by the node")

    async def _read_frames(self) -> None:
        """Parse every whole frame of each read in one pass, then write what it released.

        Message frames, nearly all of a consumer's traffic, are decoded here
        into `Message` directly (no intermediate record) and handed over
        without a checkpoint each; other frames go through `_on_frame`.

        The socket is read with the system call itself, and waited on only
        when a read comes back short (the kernel had no more): a read then
        costs one scheduling pass, where ``receive_some`` costs two and a
        read that finds nothing. Answers release the publish batches that
        gathered behind them, and those leave in one write from here, with
        no hop to the writer task.
        """
        decoder = self._decoder
        next_frame = decoder.next_frame
        read = os.read
        fd = self._fd
        wait_readable = trio.lowlevel.wait_readable
        unpack_head = _MESSAGE_HEAD.unpack_from
        message_type = FrameType.MESSAGE
        full = True  # nothing known yet: try reading before waiting
        chunk = b""
        while True:
            self._reading = True
            try:
                if chunk:
                    sink = self._sink
                    if not self._buffered and sink is not None:
                        taken = self._deliver_whole_messages(chunk, sink)
                        if taken:
                            chunk = chunk[taken:]
                    if chunk:
                        decoder.receive_data(chunk)
                        self._buffered += len(chunk)
                    chunk = b""
                while (frame := next_frame()) is not None:
                    ftype, data = frame
                    self._buffered -= len(data) + 8
                    if ftype is not message_type:
                        self._on_frame(ftype, data)
                        continue
                    if len(data) < _MESSAGE_HEAD_SIZE:
                        raise RemoteProtocolError(f"message frame of {len(data)} bytes")
                    timestamp, attempts = unpack_head(data)
                    message = Message(data[10:26], data[26:], timestamp, attempts, self)
                    sink = self._sink
                    if sink is not None:
                        sink(message)
                        continue
                    # The channel holds max_rdy_count, so this normally never
                    # waits, and a read's worth of messages is queued without a
                    # checkpoint per message.
                    try:
                        self._message_send.send_nowait(message)
                    except trio.WouldBlock:
                        self._reading = False
                        self._flush_nowait()
                        await self._message_send.send(message)
                        self._reading = True
            finally:
                self._reading = False
            if self._outgoing:
                self._flush_nowait()
            if full:
                await trio.lowlevel.checkpoint()  # more is likely waiting: others run first
            else:
                await wait_readable(fd)  # the last read emptied the socket
            try:
                chunk = read(fd, RECEIVE_SIZE)
            except BlockingIOError:
                full = False
                continue
            if not chunk:
                raise trio.BrokenResourceError("the node closed the connection")
            full = len(chunk) == RECEIVE_SIZE

    def _deliver_whole_messages(self, chunk: bytes, sink: Callable[[Message], None]) -> int:
        """Hand ``sink`` the whole message frames that ``chunk`` starts with; the bytes taken.

        A consumer's reads are nearly all message frames: sliced straight
        from the read, each field is copied once, where the decoder copies
        the frame out of its buffer first. Only for a read that starts on a
        frame boundary (nothing left in the decoder); the first frame that
        is not a whole, plausible message frame stops it, and it and the
        rest go through the decoder, which checks them.
        """
        unpack_frame = _FRAME_HEAD.unpack_from
        unpack_head = _MESSAGE_HEAD.unpack_from
        largest = self._config.max_frame_size
        smallest = 4 + _MESSAGE_HEAD_SIZE
        size_left = len(chunk)
        pos = 0
        while size_left - pos >= 8:
            size, ftype = unpack_frame(chunk, pos)
            end = pos + 4 + size
            if ftype != _MESSAGE_FRAME or end > size_left or not smallest <= size <= largest:
                break
            timestamp, attempts = unpack_head(chunk, pos + 8)
            sink(
                Message(
                    chunk[pos + 18 : pos + 34], chunk[pos + 34 : end], timestamp, attempts, self
                )
            )
            pos = end
        return pos

    def _on_frame(self, ftype: FrameType, data: bytes) -> None:
        """A response or error frame (the reader decodes message frames itself)."""
        if ftype == FrameType.RESPONSE:
            if data == _HEARTBEAT:
                self._write_nowait(_NOP)
            elif self._pending:
                self._pending.popleft().resolve(data)
            else:
                raise RemoteProtocolError(f"unexpected response {data[:64]!r}")
        else:
            error = _nsq_error(data)
            if error.code in NON_FATAL_ERRORS:
                log.warning("%s: %s", self.address, error)
                return
            # The node closes the connection after any other error.
            self._fatal_reason = str(error)
            if self._pending:
                self._pending.popleft().fail(error)

    # -- writing ------------------------------------------------------------------

    async def _write(
        self, data: bytes, pending: _Pending | None = None, *, checkpoint: bool = True
    ) -> None:
        """Queue ``data`` for the writer task (and ``pending`` for its answer).

        Queueing never awaits I/O, so a cancelled caller cannot leave half a
        command on the wire; only a full buffer makes the caller wait.
        ``checkpoint=False`` skips the final checkpoint, for a caller that
        waits for the answer next anyway (one scheduling pass per command
        saved).
        """
        if self._outgoing_size >= self._config.max_buffered:
            await self._wait_drained()
        if self._ended:
            raise ConnectionClosed(self.address, self._close_reason)
        if pending is not None:
            self._pending.append(pending)
        self._outgoing.append(data)
        self._outgoing_size += len(data)
        self._has_output.set()
        if checkpoint:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def _write_nowait(self, data: bytes) -> None:
        """Queue ``data`` for the writer task at once, whatever is buffered.

        Only for commands whose volume something else bounds (FIN: the
        messages in flight; a publish batch: its callers); everything else
        goes through `_write`. Queued by the reader while it handles a read,
        ``data`` leaves with the reader's own write at the end of the read.

        Raises:
            ConnectionClosed: the connection is gone.
        """
        if self._ended:
            raise ConnectionClosed(self.address, self._close_reason)
        self._outgoing.append(data)
        self._outgoing_size += len(data)
        if not self._reading:
            self._has_output.set()

    async def _wait_drained(self) -> None:
        """Return once the queue is below ``max_buffered`` or the connection ended."""
        while self._outgoing_size >= self._config.max_buffered and not self._ended:
            if self._drained is None:
                self._drained = trio.Event()
            await self._drained.wait()

    def _wake_drained(self) -> None:
        drained = self._drained
        if drained is not None:
            self._drained = None
            drained.set()

    async def _write_loop(self) -> None:
        while True:
            await self._has_output.wait()
            self._has_output = trio.Event()
            # Let the tasks that are ready run first: while they keep queueing
            # (a consumer finishing a run of messages, concurrent publishers)
            # their commands join this write. Stops at the first pass that
            # adds nothing, so a lone command waits one scheduling pass.
            batcher = self._batcher
            for _ in range(_COALESCE_PASSES):
                if self._unsent is not None or not (self._outgoing or batcher.ready):
                    break
                queued = (self._outgoing_size, batcher.added)
                await trio.lowlevel.cancel_shielded_checkpoint()
                if (self._outgoing_size, batcher.added) == queued:
                    break
            await self._flush()

    def _flush_nowait(self, *, release: bool = False) -> None:
        """Write everything queued in one system call, without waiting.

        ``release``: publish batches that wait for the next write
        (`PublishBatcher.release`) join this one; only the writer task,
        once the ready tasks had their pass, asks for them, so publishes
        made in one pass share a batch.

        The usual case on a socket with room: no task switch, no timeout
        scope. What the socket does not take is left in ``_unsent`` for the
        writer task, which waits for room (`_flush`); until then nothing
        else is written, so commands keep their order.
        """
        if release and self._batcher.ready and not self._ended:
            for batch in self._batcher.release():
                self._send_batch(batch)
        if self._unsent is not None or not self._outgoing or self._ended:
            return
        outgoing = self._outgoing
        data = outgoing[0] if len(outgoing) == 1 else b"".join(outgoing)
        outgoing.clear()
        self._outgoing_size = 0
        self._wake_drained()
        self._writes += 1
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._mark_closed(f"connection lost ({_describe(exc)})")
            return
        if sent < len(data):
            self._unsent = memoryview(data)[sent:]
            self._has_output.set()

    async def _flush(self) -> None:
        """Send everything queued, waiting for room in the socket if need be.

        Waiting is shielded and bounded by ``write_timeout``: a write either
        completes or the connection is given up as stuck.
        """
        self._flush_nowait(release=True)
        if self._unsent is None:
            return  # the usual case: no lock, no timeout scope
        async with self._send_lock:
            while not self._ended:
                self._flush_nowait(release=True)
                if self._unsent is None:
                    return
                failure = "write timed out"
                with trio.CancelScope(shield=True), trio.move_on_after(self._config.write_timeout):
                    while (unsent := self._unsent) is not None:
                        try:
                            await trio.lowlevel.wait_writable(self._fd)
                            self._writes += 1
                            sent = os.write(self._fd, unsent)
                        except BlockingIOError:
                            continue
                        except (trio.ClosedResourceError, OSError) as exc:
                            failure = f"connection lost ({_describe(exc)})"
                            break
                        self._unsent = unsent[sent:] if sent < len(unsent) else None
                    else:
                        continue  # all of it went: take what was queued meanwhile
                self._mark_closed(failure)

    async def _command(self, command: Command | bytes) -> bytes:
        """Send a command (or its encoding) and return its response frame's data."""
        pending = _Pending()
        data = command if isinstance(command, bytes) else encode_command(command)
        await self._write(data, pending, checkpoint=False)
        await pending.wait()
        if pending.error is not None:
            raise pending.error
        return pending.data

    async def _expect_ok(self, command: Command | bytes) -> None:
        data = await self._command(command)
        if data != b"OK":
            raise RemoteProtocolError(f"expected OK, got {data[:64]!r}")

    # -- commands -----------------------------------------------------------------

    async def pub(self, topic: str, body: bytes) -> None:
        """Publish one message and wait for ``OK``.

        Publishes of a topic made in one scheduling pass, or while earlier
        ones are unanswered, share one ``MPUB``
        (`ConnectionConfig.publish_batch_bytes`, `shoal.client.batching`),
        answered for all of them at once.

        Raises:
            ValueError: ``topic`` is not a valid topic name (checked here: a
                name with a space or a newline would change the command).
            NSQError: the node refused it (``E_BAD_TOPIC``, ``E_BAD_MESSAGE``...)
                or the batch it was sent in; the node closes the connection
                after.
            ConnectionClosed: the connection ended before the answer; the
                message may or may not have been published.

        A caller cancelled while it waits leaves its message to be published
        with its batch: as with a ``PUB`` already written, it may or may not
        be.
        """
        if topic not in self._valid_topics:
            check_topic(topic)
            if len(self._valid_topics) >= _VALID_TOPICS:
                self._valid_topics.clear()
            self._valid_topics.add(topic)
        if self._outgoing_size >= self._config.max_buffered or self._ended:
            await self._wait_drained()
            if self._ended:
                raise ConnectionClosed(self.address, self._close_reason)
        waiter = _Pending()
        batcher = self._batcher
        batches = batcher.add(topic, body, waiter)
        if batches:
            for batch in batches:
                self._send_batch(batch)
            self._has_output.set()
        elif batcher.ready:
            self._has_output.set()  # the batch leaves with the next write
        # `waiter.wait()` written out: one coroutine fewer per publish.
        if waiter.settled:
            await trio.lowlevel.checkpoint()
        else:
            waiter._task = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(waiter.abort)
        if waiter.error is not None:
            raise waiter.error
        if waiter.data != b"OK":
            raise RemoteProtocolError(f"expected OK, got {waiter.data[:64]!r}")

    def statistics(self) -> ConnectionStatistics:
        """Return a snapshot of the counters."""
        return ConnectionStatistics(
            writes=self._writes,
            fins=self._fins,
            rdys=self._rdys,
            publish_commands=self._batcher.commands,
            published=self._batcher.messages,
        )

    def _send_batch(self, batch: Batch[_Pending]) -> None:
        """Queue a batch the batcher released, with the slot its answer resolves.

        Does not wake the writer: the caller does, or writes itself (the
        reader after a read, `_flush_nowait` releasing batches).
        """
        if self._ended or self._fatal_reason:
            # Gone, or going: the node closes the connection after the error
            # it just sent, so the batch would be written for nothing.
            reason = self._close_reason or self._fatal_reason
            for waiter in batch.waiters:
                waiter.fail(ConnectionClosed(self.address, reason))
            return
        self._pending.append(_BatchAnswer(self, batch))
        data = batch.encode()
        self._outgoing.append(data)
        self._outgoing_size += len(data)

    def _batch_answered(self, batch: Batch[_Pending]) -> None:
        for ready in self._batcher.answered(batch):
            self._send_batch(ready)

    async def mpub(self, topic: str, bodies: list[bytes]) -> None:
        """Publish a batch atomically (``MPUB``); raises as `pub`."""
        check_topic(topic)
        if not bodies:
            raise ValueError("MPUB needs at least one message")
        await self._expect_ok(Mpub(topic, list(bodies)))

    async def dpub(self, topic: str, body: bytes, defer: float) -> None:
        """Publish one message deliverable after ``defer`` seconds; raises as `pub`."""
        check_topic(topic)
        await self._expect_ok(Dpub(topic, max(0, round(defer * 1000)), body))

    async def sub(self, topic: str, channel: str) -> None:
        """Subscribe to ``channel`` of ``topic``; raises as `pub`."""
        check_topic(topic)
        if not is_valid_channel_name(channel):
            raise ValueError(f"invalid channel name {channel!r}")
        await self._expect_ok(Sub(topic, channel))

    async def rdy(self, count: int) -> None:
        """Allow ``count`` messages in flight on this connection.

        Raises:
            ConnectionClosed: the connection is gone.
        """
        self.rdy_count = count
        self._rdys += 1
        await self._write(encode_command(Rdy(count)))

    async def fin(self, msg_id: bytes) -> None:
        """``FIN`` a message by ID; raises `ConnectionClosed` if gone."""
        await self._write(encode_command(Fin(msg_id)))
        self._fins += 1

    def fin_nowait(self, msg_id: bytes) -> None:
        """``FIN`` a message by ID without a checkpoint; see `Message.fin_nowait`."""
        self._write_nowait(b"FIN %s\n" % msg_id)
        self._fins += 1

    async def req(self, msg_id: bytes, delay: float = 0.0) -> None:
        """``REQ`` a message by ID with a delay in seconds; raises as `fin`."""
        await self._write(encode_command(Req(msg_id, max(0, round(delay * 1000)))))

    async def touch(self, msg_id: bytes) -> None:
        """``TOUCH`` a message by ID; raises as `fin`."""
        await self._write(encode_command(Touch(msg_id)))

    async def cls(self) -> None:
        """Ask the node to stop sending (``CLS``) and wait for ``CLOSE_WAIT``."""
        data = await self._command(Cls())
        if data != b"CLOSE_WAIT":
            raise RemoteProtocolError(f"expected CLOSE_WAIT, got {data[:64]!r}")

    async def aclose(self) -> None:
        """End the connection; unanswered commands fail with `ConnectionClosed`."""
        self._mark_closed("closed by the client")
        await trio.aclose_forcefully(self._stream)


def check_topic(topic: str) -> None:
    """Refuse a topic name that is not valid (or would change the command line).

    Raises:
        ValueError: naming the topic.
    """
    if not _valid_topic(topic):
        raise ValueError(f"invalid topic name {topic!r}")


@functools.lru_cache(maxsize=1024)
def _valid_topic(topic: str) -> bool:
    """`is_valid_topic_name`, remembered: a publisher names the same few topics."""
    return is_valid_topic_name(topic)


def _copy_error(error: BaseException) -> BaseException:
    """A fresh instance of ``error`` for one more caller (each raise owns its traceback)."""
    if isinstance(error, NSQError):
        return NSQError(error.code, error.description)
    if isinstance(error, ConnectionClosed):
        return ConnectionClosed(error.address, error.reason)
    return error


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _nsq_error(data: bytes) -> NSQError:
    code, _, description = data.decode("utf-8", "replace").partition(" ")
    return NSQError(code, description)


@contextlib.asynccontextmanager
async def open_connection(
    address: str, config: ConnectionConfig | None = None
) -> AsyncIterator[Connection]:
    """Connect to a node's TCP port and identify.

    Args:
        address: ``host:port`` of the node's NSQ TCP listener.
        config: identity and limits; the defaults suit most callers.

    Yields:
        The identified connection, its reader running.

    Raises:
        NodeUnavailable: the node could not be reached or did not finish
            ``IDENTIFY`` within ``connect_timeout``.
        NSQError: the node refused ``IDENTIFY``.

    Resource handling:
        The connection is closed when the block exits, however it exits.
    """
    config = config or ConnectionConfig()
    try:
        host, port = parse_address(address)
    except ValueError as exc:
        raise NodeUnavailable(address, str(exc)) from None
    stream: trio.SocketStream | None = None
    conn: Connection | None = None
    with trio.move_on_after(config.connect_timeout) as scope:
        try:
            stream = await trio.open_tcp_stream(host, port)
            conn = Connection(stream, address, config)
            await conn._handshake()
        except (OSError, trio.BrokenResourceError, RemoteProtocolError) as exc:
            if stream is not None:
                await trio.aclose_forcefully(stream)
            reason = describe_os_error(exc)
            raise NodeUnavailable(address, reason) from None
        except BaseException:
            if stream is not None:
                await trio.aclose_forcefully(stream)
            raise
    if scope.cancelled_caught or stream is None or conn is None:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        raise NodeUnavailable(address, "timed out connecting")
    try:
        async with open_service_nursery() as nursery:
            nursery.start_soon(conn._read_loop)
            nursery.start_soon(conn._write_loop)
            try:
                yield conn
            finally:
                # Commands queued last (a stopping consumer's REQs) still go out.
                with trio.CancelScope(shield=True), trio.move_on_after(config.write_timeout):
                    await conn._flush()
                conn._mark_closed("closed by the client")
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)
