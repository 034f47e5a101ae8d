"""The NSQ TCP protocol V2 server: the trio shell around `ClientV2`.

Each connection runs three tasks in its own nursery:

- the reader decodes commands, applies them and writes responses; it ends
  the connection on EOF and on a fatal error;
- the pump sends message frames while RDY allows, woken by its channel when
  messages become deliverable for it and by the reader when RDY or the
  in-flight count changes; an idle pump tells its channel how much room it
  has (`Channel.want`), and the channel wakes only waiters that can take a
  message, so a subscriber with RDY 0 costs nothing per publish;
- the timer sends ``_heartbeat_`` every heartbeat interval and enforces the
  read deadline: a reader that has waited 2 x heartbeat interval for data
  ends the connection (docs/nsq.md §1.5).

Writes from the three tasks go through one lock, each with a deadline of one
heartbeat interval, so a client that stops reading is disconnected instead of
pinning memory. Message frames are buffered per pump round: everything
deliverable in one round goes out in one write, which is nsqd's output
buffer flushed when "the client cannot take more or the channel is empty";
the responses to all the commands of one read go out in one write too.

Costs. Entering a trio cancel scope or taking a trio lock costs several
microseconds, which a busy connection would pay per read and per write. So
the read deadline is not a cancel scope around each read: the reader only
records when it started waiting, and the timer, which wakes at least once a
heartbeat interval anyway, checks that time. And a write first goes straight
to the socket when no other write is under way; only what the socket does
not take at once waits, under the lock and its deadline. Either way the
bytes leave in the order the writes were made.

Reads go straight to the socket too. trio's ``receive_some`` yields to the
scheduler after every read that found data (a pass of the run loop and an
``epoll_wait``), and a client that publishes one message per round trip has
usually sent its next command by the time the answer to the last one is
written, so that yield was a third of the connection's work per command.
The reader waits (`trio.lowlevel.wait_readable`) only when the socket is
empty. Otherwise it reads on without yielding while no other task is ready
to run (`ReadyTasks`, an instrument counting them: a pump its publish woke
runs before the next read), and for at most `READS_PER_CHECKPOINT` reads or
`CHECKPOINT_BYTES`, so that connections whose data arrived meanwhile, which
only a pass of the run loop finds, are not starved either.

Upgrades. When IDENTIFY negotiates TLS, snappy or deflate, the reader sends
the IDENTIFY response in the clear, then (holding the write lock, so no
heartbeat slips in) wraps the stream in each layer in nsqd's order and sends
one ``OK`` through it (`Connection._upgrade`); the layers themselves live in
`shoal.cluster.tls` and `shoal.cluster.stream_codecs`. From then on writes
skip the direct-to-socket path. AUTH and an expired AUTH answer make the
core raise `AuthQuery`; the reader asks the auth servers
(`shoal.cluster.auth`) and executes the command again.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from typing import TYPE_CHECKING

import trio

from shoal import __version__
from shoal.cluster.slices import PUBLISH_SLICE, execute_mpub
from shoal.cluster.stream_codecs import CompressedStream, DeflateCodec, SnappyCodec
from shoal.cluster.tls import HANDSHAKE_TIMEOUT, peer_common_name
from shoal.queue import errors
from shoal.queue.backend import BackendError
from shoal.queue.commands import (
    Auth,
    Command,
    CommandDecoder,
    Dpub,
    Fin,
    Identify,
    Mpub,
    Pub,
    Rdy,
    Req,
    Sub,
)
from shoal.queue.errors import ClientError, FatalClientError
from shoal.queue.frames import HEARTBEAT_FRAME, OK_FRAME
from shoal.queue.protocol import DEFLATE, SNAPPY, TLS, AuthQuery, ClientV2, ReplicatedPublish

if TYPE_CHECKING:
    import ssl
    from collections.abc import Awaitable, Callable

    from shoal.cluster.auth import AuthClient
    from shoal.cluster.replication import Replicator
    from shoal.queue.broker import Broker
    from shoal.queue.channel import Channel
    from shoal.queue.config import QueueConfig

__all__ = ["Connection", "ReadyTasks", "TCPServer"]

log = logging.getLogger("shoal.tcp")

#: Bytes asked of the socket per read: big enough for a 200-message MPUB.
RECEIVE_SIZE = 256 * 1024

#: Reads the reader may serve in a row without yielding to the node's other
#: tasks, while data is there each time it reads ...
READS_PER_CHECKPOINT = 16
#: ... or until they add up to this many bytes.
CHECKPOINT_BYTES = 256 * 1024


class ReadyTasks(trio.abc.Instrument):
    """Counts the tasks that trio made runnable and that have not run yet.

    A reader that finds more data waiting reads on without yielding only
    while this count is 0: once another task is ready (a pump its publish
    woke, the scan loop, a connection whose data arrived), the reader yields
    before its next read, so that task runs first.

    The count comes from two instrument hooks: `task_scheduled` adds one,
    `before_task_step` takes one. Tasks already waiting to run when the
    instrument is installed are not counted, so it never goes below 0.
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        """One more task is ready to run."""
        self.count += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        """A ready task runs."""
        if self.count:
            self.count -= 1


class Connection:
    """One client connection: a stream plus its protocol state.

    Attributes:
        pump_wakeups: how many times the pump woke from idle (for tests and
            diagnostics: a publish should wake only pumps that can deliver).
    """

    def __init__(self, server: TCPServer, stream: trio.SocketStream, client: ClientV2) -> None:
        self.server = server
        self.stream: trio.abc.Stream = stream
        # The socket's descriptor for direct reads and writes; -1 once a TLS
        # or compression layer sits between the connection and the socket.
        self._fd = stream.socket.fileno()
        self._common_name = ""
        self.client = client
        self._send_lock = trio.Lock()
        self._wake = trio.Event()
        self._identified = trio.Event()
        self.pump_wakeups = 0
        self._scope: trio.CancelScope | None = None
        # trio time at which the reader began waiting for data; inf while it
        # is busy with what it received (the read deadline is then off).
        self._reading_since = math.inf

    def wake(self) -> None:
        """Ask the pump to look for deliverable messages again."""
        self._wake.set()

    async def send(self, data: bytes) -> None:
        """Write ``data`` within one heartbeat interval, or give up on the client.

        When no other write is under way the data goes straight to the socket
        and, if the socket takes all of it, the call returns without a
        checkpoint; the rest waits for the lock and the deadline.

        Raises:
            trio.TooSlowError: the client did not take the data in time.
            trio.BrokenResourceError: the connection is broken.
            trio.ClosedResourceError: the socket was closed.
        """
        sent = self._write_now(data)
        if sent != len(data):
            await self._send_rest(data, sent)

    def _write_now(self, data: bytes) -> int:
        """Write what the socket takes at once, when no other write is under way.

        Returns:
            The bytes written (0 when the socket's buffer is full), or -1 when
            the data must wait its turn: a write is under way, or a layer sits
            on the socket.

        Raises:
            trio.BrokenResourceError: the connection is broken.
        """
        fd = self._fd
        if fd < 0 or self._send_lock.locked():
            return -1
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc

    async def _send_rest(self, data: bytes, sent: int) -> None:
        """Send what `_write_now` did not (``sent`` bytes of ``data``, or -1: none, not tried).

        Raises:
            As `send`.
        """
        lock = self._send_lock
        interval = self.client.heartbeat_interval
        timeout = interval if interval > 0 else math.inf
        if sent >= 0:
            # The lock was free when `_write_now` wrote, and nothing has
            # yielded since: take it before any checkpoint, so no other write
            # can slip in between the two parts.
            lock.acquire_nowait()
            try:
                with trio.fail_after(timeout):
                    await self.stream.send_all(memoryview(data)[sent:])
            finally:
                lock.release()
            return
        async with lock:
            with trio.fail_after(timeout):
                await self.stream.send_all(data)

    def close(self) -> None:
        """End the connection from elsewhere in the node (its channel was deleted)."""
        if self._scope is not None:
            self._scope.cancel()

    async def run(self) -> None:
        """Serve the connection until either side ends it.

        Error handling:
            A broken or too slow peer ends only its own connection; so does an
            unexpected error, which is logged in one line. The node carries on.
        """
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._pump)
                nursery.start_soon(self._timer)
                await self._read()
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as group:
            log.info(
                "client %s: connection ended: %s", self.client.remote_address, group.exceptions[0]
            )
        except* Exception as group:
            # One line, no traceback: the node's log is read by people.
            log.error(  # noqa: TRY400
                "client %s: closing after an internal error: %r",
                self.client.remote_address,
                group.exceptions[0],
            )
        finally:
            self.client.close()
            with trio.move_on_after(1) as scope:
                scope.shield = True
                await self.stream.aclose()

    def _read_now(self) -> bytes | None:
        """Read what the socket holds without waiting.

        Returns:
            The bytes read (empty at end of stream), or None when nothing is
            there yet or a layer sits on the socket.

        Raises:
            trio.BrokenResourceError: the connection is broken.
        """
        fd = self._fd
        if fd < 0:
            return None
        try:
            return os.read(fd, RECEIVE_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc

    async def _read(self) -> None:
        decoder = self.server.new_decoder()
        client = self.client
        decoder.precheck = client.check_state
        receive = self.stream.receive_some
        current_time = trio.current_time
        wait_readable = trio.lowlevel.wait_readable
        ready = self.server.ready_tasks
        checkpoint = trio.lowlevel.checkpoint
        # Reads, and bytes read, since the reader last yielded.
        reads = taken = 0
        # Whether the last read's commands made another task ready.
        woke = False
        while True:
            if ready.count or reads >= READS_PER_CHECKPOINT:
                reads = taken = 0
                await checkpoint()
                if woke and ready.count:
                    # trio runs the tasks made ready together in a random
                    # order: once more, and the ones this read woke have run.
                    await checkpoint()
            data: bytes | bytearray | None = self._read_now()
            if data is None:
                reads = taken = 0
                self._reading_since = current_time()
                fd = self._fd
                if fd < 0:
                    data = await receive(RECEIVE_SIZE)
                else:
                    await wait_readable(fd)
                    data = self._read_now()
                self._reading_since = math.inf
                if data is None:
                    continue  # woken, yet nothing to read: wait again
            if not data:
                return
            taken += len(data)
            reads = reads + 1 if taken < CHECKPOINT_BYTES else READS_PER_CHECKPOINT
            ready_before = ready.count
            decoder.receive_data(data)
            out: list[bytes] = []
            wake = False
            published = False
            # A run of FINs is taken whole (`CommandDecoder.next_fins`), except
            # before SUB and right after a publish: publishers rarely send
            # FINs, and skipping the look costs nothing but a FIN parsed on its
            # own (before SUB, refused as `finish_many` would refuse it).
            look_for_fins = client.channel is not None
            try:
                # Bounded by the data received: every pass consumes a command
                # or ends the loop.
                while True:
                    if look_for_fins:
                        fins = decoder.next_fins()
                        if fins:
                            out += client.finish_many(fins, time.time())
                            wake = True
                    cmd = decoder.next_command()
                    if cmd is None:
                        break
                    try:
                        if type(cmd) is Mpub and len(cmd.bodies) > PUBLISH_SLICE:
                            response = await execute_mpub(client, cmd, self._authenticate)
                        else:
                            response = client.execute(cmd, time.time())
                    except ClientError as err:
                        if err.fatal:
                            raise
                        out.append(err.frame())
                        continue
                    except AuthQuery as query:
                        response = await self._authenticate(cmd, query)
                    except ReplicatedPublish as pending:
                        response = await self._replicated(pending)
                    if response is not None:
                        out.append(response)
                    kind = type(cmd)
                    look_for_fins = kind is not Pub and kind is not Mpub
                    published = published or kind is Pub or kind is Mpub or kind is Dpub
                    if kind is Rdy or kind is Fin or kind is Req:
                        wake = True
                    elif kind is Sub:
                        self.server.attach(client)
                        self.server.on_subscribe(client)
                    elif kind is Identify:
                        self._identified.set()
                        upgrades = client.take_upgrades()
                        if upgrades:
                            await self.send(b"".join(out))
                            out = []
                            await self._upgrade(upgrades)
                            receive = self.stream.receive_some
            except FatalClientError as err:
                log.info("client %s: %s %s", client.remote_address, err.code, err.description)
                out.append(err.frame())
                if not published or await self._committed():
                    await self.send(b"".join(out))
                return
            if wake:
                self._wake.set()
            if published and self.server.commit is not None and not await self._committed():
                return
            if out:
                reply = b"".join(out) if len(out) > 1 else out[0]
                sent = self._write_now(reply)
                if sent != len(reply):
                    await self._send_rest(reply, sent)
            woke = ready.count > ready_before

    async def _committed(self) -> bool:
        """In durable mode, wait until this read's publishes are fsynced before any OK goes out.

        Returns:
            False when the fsync failed: an error frame was sent instead of
            every answer of this read, and the connection must end.
        """
        commit = self.server.commit
        if commit is None:
            return True
        try:
            await commit()
        except BackendError as exc:
            log.error("client %s: publish not durable: %s", self.client.remote_address, exc)  # noqa: TRY400 - one line, no traceback
            await self.send(FatalClientError(errors.E_PUB_FAILED, f"PUB failed {exc}").frame())
            return False
        return True

    async def _upgrade(self, upgrades: tuple[str, ...]) -> None:
        """Wrap the stream in each negotiated layer, sending ``OK`` through each.

        Raises:
            trio.BrokenResourceError: the TLS handshake failed.
            trio.TooSlowError: the handshake took longer than nsqd allows.
        """
        client = self.client
        async with self._send_lock:
            self._fd = -1
            for layer in upgrades:
                if layer == TLS:
                    context = self.server.ssl_context
                    assert context is not None  # the core offers TLS only with one
                    tls = trio.SSLStream(self.stream, context, server_side=True)
                    with trio.fail_after(HANDSHAKE_TIMEOUT):
                        await tls.do_handshake()
                    self.stream = tls
                    client.tls = True
                    client.tls_version = tls.version() or ""
                    cipher = tls.cipher()
                    client.tls_cipher_suite = cipher[0] if cipher else ""
                    self._common_name = peer_common_name(tls.getpeercert())
                elif layer == SNAPPY:
                    self.stream = CompressedStream(self.stream, SnappyCodec())
                    client.snappy = True
                elif layer == DEFLATE:
                    self.stream = CompressedStream(self.stream, DeflateCodec(client.deflate_level))
                    client.deflate = True
                log.debug("client %s: upgraded to %s", client.remote_address, layer)
                await self.stream.send_all(OK_FRAME)

    async def _replicated(self, pending: ReplicatedPublish) -> bytes:
        """Publish to a replicated topic: ``OK`` once its replicas hold it, else the error.

        The error is not fatal: nothing was accepted, so the client may retry
        on the same connection.
        """
        replicator = self.server.replicator
        topic = pending.topic
        if replicator is not None and await replicator.publish(
            topic, pending.bodies, time.time(), pending.defer
        ):
            counts = self.client.pub_counts
            counts[topic.name] = counts.get(topic.name, 0) + len(pending.bodies)
            return OK_FRAME
        refusal = f"{pending.verb} failed not enough replicas"
        return ClientError(pending.failed_code, refusal).frame()

    async def _authenticate(self, cmd: Command, query: AuthQuery) -> bytes | None:
        """Ask the auth servers, then answer AUTH or execute ``cmd`` again.

        Raises:
            FatalClientError: as `ClientV2.auth_answered` and `ClientV2.execute`.
        """
        client = self.client
        auth = self.server.auth
        state = None
        if auth is not None:
            state = await auth.query(
                remote_ip=client.remote_address.rsplit(":", 1)[0].strip("[]"),
                tls=client.tls,
                secret=query.secret,
                common_name=self._common_name,
            )
        for_auth = isinstance(cmd, Auth)
        response = client.auth_answered(state, for_auth=for_auth)
        if for_auth:
            return response
        try:
            return client.execute(cmd, time.time())
        except AuthQuery:
            # The fresh answer expired already: nsqd would fail the same way.
            raise FatalClientError(errors.E_AUTH_FAILED, "AUTH failed") from None

    async def _pump(self) -> None:
        client = self.client
        while True:
            self._wake = trio.Event()
            frames = client.deliver_frames(time.time())
            if frames:
                await self.send(frames)
                continue
            channel = client.channel
            if channel is not None:
                channel.want(client.id, client.ready_room)
            await self._wake.wait()
            self.pump_wakeups += 1

    async def _timer(self) -> None:
        client = self.client
        current_time = trio.current_time
        interval = client.heartbeat_interval
        beat_at = current_time() + interval if interval > 0 else math.inf
        while True:
            interval = client.heartbeat_interval
            changed = self._identified
            # With heartbeats off there is neither a heartbeat nor a deadline.
            read_deadline = self._reading_since + 2 * interval if interval > 0 else math.inf
            with trio.move_on_at(min(beat_at, read_deadline)):
                await changed.wait()
            if changed.is_set():
                # IDENTIFY changed the interval: start again with it.
                if self._identified is changed:
                    self._identified = trio.Event()
                interval = client.heartbeat_interval
                beat_at = current_time() + interval if interval > 0 else math.inf
                continue
            now = current_time()
            if interval > 0 and now >= self._reading_since + 2 * interval:
                log.info(
                    "client %s: no command for %.0fs, closing",
                    client.remote_address,
                    2 * interval,
                )
                self.close()
                return
            if now >= beat_at:
                # The next heartbeat is due one interval after this one.
                await self.send(HEARTBEAT_FRAME)
                beat_at = current_time() + interval


class TCPServer:
    """Accepts NSQ clients and runs a `Connection` for each.

    Args:
        broker: the node's topics and channels.
        config: limits and defaults shared by every connection.
        on_subscribe: called after each successful SUB (the node uses it to
            start draining a topic backlog into a new channel).
        ssl_context: the server side of the IDENTIFY ``tls_v1`` upgrade.
        auth: the auth servers, when ``config.auth_required``.
    """

    def __init__(
        self,
        broker: Broker,
        config: QueueConfig,
        *,
        on_subscribe: Callable[[ClientV2], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        auth: AuthClient | None = None,
    ) -> None:
        self.broker = broker
        self.config = config
        self.ssl_context = ssl_context
        self.auth = auth
        self.connections: dict[int, Connection] = {}
        #: Publishes replicated topics and awaits their replicas (set by the node).
        self.replicator: Replicator | None = None
        self._ids = itertools.count(1)
        self._on_subscribe = on_subscribe
        #: Durable mode: awaited before publishes are answered (the disk
        #: queues' group commit); raises `BackendError` when it fails.
        self.commit: Callable[[], Awaitable[None]] | None = None
        #: Tasks ready to run, counted while `serve` runs (see `ReadyTasks`).
        self.ready_tasks = ReadyTasks()

    def new_decoder(self) -> CommandDecoder:
        """A decoder with this server's limits, expecting the V2 magic first."""
        cfg = self.config
        return CommandDecoder(
            max_msg_size=cfg.max_msg_size,
            max_body_size=cfg.max_body_size,
            max_req_timeout_ms=int(cfg.max_req_timeout * 1000),
            max_rdy_count=cfg.max_rdy_count,
        )

    def attach(self, client: ClientV2) -> None:
        """Route the wake-ups of ``client``'s channel (just subscribed) to our pumps."""
        if client.channel is not None:
            client.channel.on_wake = self.wake_client

    def wake_client(self, client_id: int) -> None:
        """The `Channel.on_wake` hook: wake that connection's pump, if it is still here."""
        conn = self.connections.get(client_id)
        if conn is not None:
            conn.wake()

    def on_subscribe(self, client: ClientV2) -> None:
        """Forward a successful SUB to the node's hook."""
        if self._on_subscribe is not None:
            self._on_subscribe(client)

    def close_clients_of(self, channel: Channel) -> None:
        """Close every connection subscribed to ``channel`` (it was deleted)."""
        for conn in list(self.connections.values()):
            if conn.client.channel is channel:
                conn.close()

    def timed_out(self, client_ids: list[int]) -> None:
        """Account for in-flight messages of these clients that timed out."""
        for client_id in client_ids:
            conn = self.connections.get(client_id)
            if conn is not None:
                conn.client.timed_out(1)
                conn.wake()

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one accepted stream (the `trio.serve_listeners` handler)."""
        try:
            peer = stream.socket.getpeername()
            remote = f"{peer[0]}:{peer[1]}"
        except OSError:
            remote = "unknown:0"
        client_id = next(self._ids)
        client = ClientV2(
            self.broker,
            self.config,
            client_id=client_id,
            remote_address=remote,
            version=__version__,
            now=time.time(),
        )
        conn = Connection(self, stream, client)
        self.connections[client_id] = conn
        log.debug("TCP: new client(%s)", remote)
        try:
            await conn.run()
        finally:
            del self.connections[client_id]

    async def serve(
        self,
        listeners: list[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections on ``listeners`` until cancelled."""
        trio.lowlevel.add_instrument(self.ready_tasks)
        try:
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    nursery.start_soon(self._accept_loop, listener, nursery)
                task_status.started()
        finally:
            trio.lowlevel.remove_instrument(self.ready_tasks)

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    # Out of file descriptors and the like: back off, keep serving.
                    log.warning("TCP: accept failed: %s", exc)
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(self.handle, stream)
