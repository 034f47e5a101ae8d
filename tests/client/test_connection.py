"""The V2 connection: a scripted server for the protocol's corners, a real node for the rest."""

from __future__ import annotations

import collections
import json
from typing import TYPE_CHECKING

import pytest
import trio

from shoal.client.connection import Connection, ConnectionConfig, Message, open_connection
from shoal.client.discovery import fetch_endpoint
from shoal.client.errors import ConnectionClosed, NodeUnavailable, NSQError
from shoal.errors import ConfigError, LocalProtocolError
from shoal.queue.commands import (
    Command,
    CommandDecoder,
    Fin,
    Identify,
    Mpub,
    Nop,
    Pub,
    Rdy,
    Req,
    Sub,
)
from shoal.queue.frames import encode_error, encode_message_frame, encode_response
from shoal.queue.message import Message as QueueMessage
from shoal.testing.fake_node import http_address
from shoal.testing.process import NodeProcess

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

pytestmark = pytest.mark.timeout(60)


class Script:
    """A scripted V2 server: records commands and runs a reply function for each."""

    def __init__(self, reply: Callable[[Script, Command], Awaitable[None]]) -> None:
        self.reply = reply
        self.commands: list[Command] = []
        self.identify: dict[str, object] = {}
        self.stream: trio.SocketStream | None = None

    async def send(self, data: bytes) -> None:
        assert self.stream is not None
        await self.stream.send_all(data)

    async def handle(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        decoder = CommandDecoder(
            max_msg_size=1 << 20, max_body_size=1 << 22, max_req_timeout_ms=3_600_000,
            max_rdy_count=2500,
        )  # fmt: skip
        while True:
            try:
                data = await stream.receive_some(65536)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            if not data:
                return
            decoder.receive_data(data)
            while (command := decoder.next_command()) is not None:
                if isinstance(command, Identify):
                    self.identify = json.loads(command.body)
                    await self.send(encode_response(b'{"max_rdy_count": 7, "msg_timeout": 5000}'))
                    continue
                self.commands.append(command)
                await self.reply(self, command)


async def start_script(
    nursery: trio.Nursery, reply: Callable[[Script, Command], Awaitable[None]]
) -> tuple[Script, str]:
    script = Script(reply)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, script.handle, listeners)
    return script, f"127.0.0.1:{port}"


async def ok_to_pubs(script: Script, command: Command) -> None:
    if isinstance(command, Pub | Mpub):
        await script.send(encode_response(b"OK"))


def published(commands: list[Command]) -> list[bytes]:
    """Every body the PUB and MPUB commands carried, in the order sent."""
    bodies: list[bytes] = []
    for command in commands:
        if isinstance(command, Pub):
            bodies.append(command.body)
        elif isinstance(command, Mpub):
            bodies.extend(command.bodies)
    return bodies


async def test_identify_negotiates_features(nursery: trio.Nursery) -> None:
    script, address = await start_script(nursery, ok_to_pubs)
    config = ConnectionConfig(client_id="me", heartbeat_interval=5, msg_timeout=10)
    async with open_connection(address, config) as conn:
        assert conn.max_rdy_count == 7
        assert conn.msg_timeout == 5.0
    assert script.identify["feature_negotiation"] is True
    assert script.identify["client_id"] == "me"
    assert script.identify["heartbeat_interval"] == 5000
    assert script.identify["msg_timeout"] == 10000


async def test_heartbeats_are_answered_with_nop(nursery: trio.Nursery) -> None:
    async def reply(script: Script, command: Command) -> None:
        if isinstance(command, Pub):
            await script.send(encode_response(b"_heartbeat_") + encode_response(b"OK"))

    script, address = await start_script(nursery, reply)
    async with open_connection(address) as conn:
        await conn.pub("t", b"a")  # the heartbeat did not answer the PUB
        await conn.pub("t", b"b")
        assert script.commands[:2] == [Pub("t", b"a"), Nop()]


async def test_concurrent_publishes_share_mpubs(nursery: trio.Nursery) -> None:
    script, address = await start_script(nursery, ok_to_pubs)
    async with open_connection(address) as conn:
        async with trio.open_nursery() as inner:
            for i in range(50):
                inner.start_soon(conn.pub, "t", b"%d" % i)
        stats = conn.statistics()
    assert sorted(published(script.commands)) == sorted(b"%d" % i for i in range(50))
    assert (stats.publish_commands, stats.published) == (len(script.commands), 50)
    # Started in one scheduling pass, half leave with the next write and
    # the other half with its answer.
    assert [len(c.bodies) for c in script.commands if isinstance(c, Mpub)] == [25, 25]
    assert (stats.publish_commands, stats.writes) == (2, 2)


class TaskSteps(trio.abc.Instrument):
    """Counts the scheduling steps of each task, by the last part of its name."""

    def __init__(self) -> None:
        self.steps: collections.Counter[str] = collections.Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task.name.rsplit(".", 1)[-1]] += 1


async def test_publishers_that_wait_cost_one_write_and_one_wakeup_per_batch(
    nursery: trio.Nursery,
) -> None:
    script, address = await start_script(nursery, ok_to_pubs)
    counter = TaskSteps()

    async def publisher(conn: Connection, index: int) -> None:
        for _ in range(20):
            await conn.pub("t", b"%d" % index)

    async with open_connection(address) as conn:
        trio.lowlevel.add_instrument(counter)
        try:
            async with trio.open_nursery() as inner:
                for index in range(64):
                    inner.start_soon(publisher, conn, index)
        finally:
            trio.lowlevel.remove_instrument(counter)
        stats = conn.statistics()
    steps = counter.steps
    # Two batches of 32 in turn, each one command in one write.
    assert [len(c.bodies) for c in script.commands if isinstance(c, Mpub)] == [32] * 40
    assert (stats.published, stats.publish_commands, stats.writes) == (64 * 20, 40, 40)
    # One wake-up per publish (plus each task's first step); the reader wakes
    # once per answer and writes the next batch itself, so the writer task
    # only sent the first.
    assert steps["publisher"] == 64 * 20 + 64
    assert steps["_read_loop"] <= 40 + 2
    assert steps["_write_loop"] <= 3


async def test_publish_batch_bytes_zero_sends_one_pub_per_message(nursery: trio.Nursery) -> None:
    script, address = await start_script(nursery, ok_to_pubs)
    config = ConnectionConfig(publish_batch_bytes=0)
    async with open_connection(address, config) as conn, trio.open_nursery() as inner:
        for i in range(20):
            inner.start_soon(conn.pub, "t", b"%d" % i)
    assert len(script.commands) == 20
    assert all(isinstance(c, Pub) for c in script.commands)


async def test_an_error_fails_every_publish_of_its_batch(nursery: trio.Nursery) -> None:
    release = trio.Event()

    async def reply(script: Script, command: Command) -> None:
        if isinstance(command, Pub):
            await release.wait()
            await script.send(encode_response(b"OK"))
        else:
            await script.send(encode_error("E_MPUB_FAILED", "MPUB failed"))
            assert script.stream is not None
            await script.stream.aclose()

    script, address = await start_script(nursery, reply)
    outcomes: dict[bytes, str] = {}

    async def publish(conn: Connection, body: bytes) -> None:
        try:
            await conn.pub("t", body)
        except NSQError as exc:
            outcomes[body] = exc.code
        except ConnectionClosed:
            outcomes[body] = "closed"
        else:
            outcomes[body] = "OK"

    async with open_connection(address) as conn, trio.open_nursery() as inner:
        inner.start_soon(publish, conn, b"0")
        with trio.fail_after(10):
            while conn._batcher.in_flight("t") < 1:  # noqa: ASYNC110 - the task publishes
                await trio.sleep(0.01)
            for i in range(1, 10):
                inner.start_soon(publish, conn, b"%d" % i)
            while conn._batcher.gathering("t") < 9:  # noqa: ASYNC110 - tasks join the batch
                await trio.sleep(0.01)
        release.set()
    pub, mpub = script.commands
    assert isinstance(pub, Pub)
    assert isinstance(mpub, Mpub)
    assert outcomes[pub.body] == "OK"
    # Every publish of the refused batch sees its error; what gathered
    # behind it is never written (the node closes after an error) and fails
    # as closed.
    assert {outcomes[body] for body in mpub.bodies} == {"E_MPUB_FAILED"}
    rest = set(outcomes) - {pub.body, *mpub.bodies}
    assert rest
    assert {outcomes[body] for body in rest} == {"closed"}


async def test_pub_lines_made_once_per_topic_decode_as_sent(nursery: trio.Nursery) -> None:
    script, address = await start_script(nursery, ok_to_pubs)
    sent = [Pub(topic, body) for topic in ("t", "u.v_w-1", "t") for body in (b"x", b"\n" * 300)]
    async with open_connection(address) as conn:
        for cmd in sent:
            await conn.pub(cmd.topic, cmd.body)
    assert script.commands == sent


async def test_a_cancelled_publish_still_leaves_with_its_batch(nursery: trio.Nursery) -> None:
    release = trio.Event()

    async def reply(script: Script, command: Command) -> None:
        if isinstance(command, Pub):
            await release.wait()
        await script.send(encode_response(b"OK"))

    script, address = await start_script(nursery, reply)
    scope = trio.CancelScope()

    async def cancelled_pub(conn: Connection) -> None:
        with scope:
            await conn.pub("t", b"cancelled")

    async with open_connection(address) as conn, trio.open_nursery() as inner:
        inner.start_soon(conn.pub, "t", b"first")
        with trio.fail_after(10):
            while conn._batcher.in_flight("t") < 1:  # noqa: ASYNC110 - the task publishes
                await trio.sleep(0.01)
            inner.start_soon(cancelled_pub, conn)
            inner.start_soon(conn.pub, "t", b"kept")
            while conn._batcher.gathering("t") < 2:  # noqa: ASYNC110 - tasks join the batch
                await trio.sleep(0.01)
        scope.cancel()
        release.set()
    assert scope.cancelled_caught
    assert [type(c) for c in script.commands] == [Pub, Mpub]
    assert sorted(published(script.commands)) == [b"cancelled", b"first", b"kept"]


async def test_what_a_full_socket_cannot_take_waits_and_keeps_its_order(
    nursery: trio.Nursery,
) -> None:
    reading = trio.Event()

    async def reply(script: Script, command: Command) -> None:
        if isinstance(command, Pub):
            await reading.wait()  # the server stops reading: the socket fills
        await script.send(encode_response(b"OK"))

    script, address = await start_script(nursery, reply)
    bodies = [[bytes([n]) * 1_000_000] * 3 for n in range(2)]
    async with open_connection(address) as conn, trio.open_nursery() as inner:
        inner.start_soon(conn.pub, "t", b"first")
        with trio.fail_after(10):
            while conn._batcher.in_flight("t") < 1:  # noqa: ASYNC110 - the task publishes
                await trio.sleep(0.01)
            for batch in bodies:
                inner.start_soon(conn.mpub, "t", batch)
            while conn._unsent is None:  # noqa: ASYNC110 - the socket fills
                await trio.sleep(0.01)
        reading.set()
    first, *rest = script.commands
    assert first == Pub("t", b"first")
    # Each MPUB arrived whole (the two tasks may have queued in either order).
    mpubs = sorted((c for c in rest if isinstance(c, Mpub)), key=lambda c: c.bodies[0][:1])
    assert mpubs == [Mpub("t", batch) for batch in bodies]
    assert len(rest) == 2
    assert conn.statistics().writes > 3  # some commands took more than one write


async def test_a_write_that_cannot_finish_in_write_timeout_closes(nursery: trio.Nursery) -> None:
    async def reply(script: Script, command: Command) -> None:
        await trio.sleep_forever()  # never reads again

    _, address = await start_script(nursery, reply)
    config = ConnectionConfig(write_timeout=0.2)

    async def first(conn: Connection) -> None:
        with pytest.raises(ConnectionClosed):
            await conn.pub("t", b"first")

    async with open_connection(address, config) as conn, trio.open_nursery() as inner:
        inner.start_soon(first, conn)
        with trio.fail_after(20):
            while conn._batcher.in_flight("t") < 1:  # noqa: ASYNC110 - the task publishes
                await trio.sleep(0.01)
            with pytest.raises(ConnectionClosed):
                await conn.mpub("t", [b"x" * 1_000_000] * 16)  # more than the socket buffers
    assert conn.close_reason == "write timed out"


async def test_fin_nowait_queues_fins_that_leave_in_one_write(nursery: trio.Nursery) -> None:
    ids = [b"%016d" % i for i in range(5)]
    script, address = await start_script(nursery, ok_to_pubs)
    async with open_connection(address) as conn:
        for msg_id in ids:
            Message(msg_id, b"", 0, 1, conn).fin_nowait()
        with trio.fail_after(5):
            while len(script.commands) < 5:  # noqa: ASYNC110 - the server task appends
                await trio.sleep(0.01)
        stats = conn.statistics()
    assert script.commands == [Fin(msg_id) for msg_id in ids]
    assert (stats.fins, stats.writes) == (5, 1)


async def test_message_frames_split_anywhere_reach_the_sink_whole_and_in_order(
    nursery: trio.Nursery,
) -> None:
    bodies = [b"m%d-" % i + b"x" * (i * 7 % 50) for i in range(60)]
    frames = [
        encode_message_frame(QueueMessage(b"%016d" % i, b, 0, 1)) for i, b in enumerate(bodies)
    ]
    frames.insert(30, encode_response(b"_heartbeat_"))  # a frame the decoder handles
    stream_bytes = b"".join(frames)

    async def reply(script: Script, command: Command) -> None:
        if isinstance(command, Sub):
            await script.send(encode_response(b"OK"))
        elif isinstance(command, Rdy):
            # Pieces that end mid-frame, mid-header and on boundaries.
            for start in range(0, len(stream_bytes), 97):
                await script.send(stream_bytes[start : start + 97])
                await trio.sleep(0.001)

    script, address = await start_script(nursery, reply)
    received: list[Message] = []
    async with open_connection(address) as conn:
        conn.deliver_to(received.append)
        await conn.sub("t", "c")
        await conn.rdy(60)
        with trio.fail_after(10):
            while len(received) < 60 or Nop() not in script.commands:  # noqa: ASYNC110
                await trio.sleep(0.01)
    assert [m.body for m in received] == bodies
    assert [m.id for m in received] == [b"%016d" % i for i in range(60)]
    assert all(m.attempts == 1 for m in received)


async def test_non_fatal_errors_do_not_consume_a_reply(nursery: trio.Nursery) -> None:
    async def reply(script: Script, command: Command) -> None:
        if isinstance(command, Fin):
            await script.send(encode_error("E_FIN_FAILED", "FIN x failed ID not in flight"))
        elif isinstance(command, Pub):
            await script.send(encode_response(b"OK"))

    _, address = await start_script(nursery, reply)
    async with open_connection(address) as conn:
        await conn.fin(b"0" * 16)
        await conn.pub("t", b"x")
        assert not conn.closed


async def test_a_fatal_error_fails_its_command_and_closes(nursery: trio.Nursery) -> None:
    async def reply(script: Script, command: Command) -> None:
        await script.send(encode_error("E_BAD_MESSAGE", "PUB invalid message body size 0"))
        assert script.stream is not None
        await script.stream.aclose()

    _, address = await start_script(nursery, reply)
    async with open_connection(address) as conn:
        with pytest.raises(NSQError) as info:
            await conn.pub("t", b"x")
        assert info.value.code == "E_BAD_MESSAGE"
        await conn.wait_closed()
        assert "E_BAD_MESSAGE" in conn.close_reason
        with pytest.raises(ConnectionClosed):
            await conn.pub("t", b"y")


async def test_unanswered_commands_fail_when_the_node_goes_away(nursery: trio.Nursery) -> None:
    async def reply(script: Script, command: Command) -> None:
        assert script.stream is not None
        await script.stream.aclose()

    _, address = await start_script(nursery, reply)
    async with open_connection(address) as conn:
        with pytest.raises(ConnectionClosed):
            await conn.pub("t", b"x")
        # The message channel ends too, so a consumer loop finishes.
        assert [m async for m in conn.messages] == []


async def test_consumer_commands_reach_the_server_as_sent(nursery: trio.Nursery) -> None:
    async def reply(script: Script, command: Command) -> None:
        if isinstance(command, Sub):
            await script.send(encode_response(b"OK"))

    script, address = await start_script(nursery, reply)
    async with open_connection(address) as conn:
        await conn.sub("t", "c#ephemeral")
        await conn.rdy(3)
        await conn.req(b"0123456789abcdef", 1.5)
        with trio.fail_after(5):
            while len(script.commands) < 3:  # noqa: ASYNC110 - the server task appends
                await trio.sleep(0.01)
    assert script.commands == [Sub("t", "c#ephemeral"), Rdy(3), Req(b"0123456789abcdef", 1500)]


async def test_invalid_names_are_refused_before_sending(nursery: trio.Nursery) -> None:
    script, address = await start_script(nursery, ok_to_pubs)
    async with open_connection(address) as conn:
        with pytest.raises(ValueError, match="topic"):
            await conn.pub("two words", b"x")
        with pytest.raises(ValueError, match="topic"):
            await conn.pub("t\nFIN", b"x")
        with pytest.raises(ValueError, match="channel"):
            await conn.sub("t", "bad channel")
        with pytest.raises(ValueError, match="at least one"):
            await conn.mpub("t", [])
    assert script.commands == []


async def test_connect_to_a_closed_port_is_node_unavailable() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with pytest.raises(NodeUnavailable, match="refused"):
        async with open_connection(f"127.0.0.1:{port}"):
            pass  # pragma: no cover


async def test_a_silent_server_times_out_the_handshake(nursery: trio.Nursery) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, silent, listeners)
    port = listeners[0].socket.getsockname()[1]
    with pytest.raises(NodeUnavailable, match="timed out"):
        async with open_connection(f"127.0.0.1:{port}", ConnectionConfig(connect_timeout=0.2)):
            pass  # pragma: no cover


@pytest.mark.parametrize(
    "fields",
    [
        {"heartbeat_interval": 0.5},
        {"msg_timeout": 0.5},
        {"connect_timeout": 0},
        {"max_frame_size": 8},
        {"publish_batch_bytes": -1},
    ],
)
def test_connection_config_refuses_bad_values(fields: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        ConnectionConfig(**fields)  # type: ignore[arg-type]


# -- against a real node ---------------------------------------------------------


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    with NodeProcess() as proc:
        yield proc
        assert "Traceback" not in proc.stderr, proc.stderr


async def tcp_address(node: NodeProcess) -> str:
    return (await fetch_endpoint(http_address(node))).tcp_address


async def receive(conn_messages: trio.MemoryReceiveChannel[Message]) -> Message:
    with trio.fail_after(10):
        return await conn_messages.receive()


@pytest.mark.integration
async def test_publish_and_consume_on_a_real_node(node: NodeProcess) -> None:
    address = await tcp_address(node)
    async with open_connection(address) as pub:
        await pub.pub("conn_t1", b"one")
        await pub.mpub("conn_t1", [b"two", b"three"])
    async with open_connection(address) as sub:
        await sub.sub("conn_t1", "c")
        await sub.rdy(10)
        bodies = []
        for _ in range(3):
            msg = await receive(sub.messages)
            bodies.append(msg.body)
            assert msg.attempts == 1
            await msg.fin()
        assert bodies == [b"one", b"two", b"three"]


@pytest.mark.integration
async def test_req_redelivers_with_one_more_attempt(node: NodeProcess) -> None:
    address = await tcp_address(node)
    async with open_connection(address) as conn:
        await conn.pub("conn_t2", b"again")
        await conn.sub("conn_t2", "c")
        await conn.rdy(1)
        first = await receive(conn.messages)
        await first.req(0)
        second = await receive(conn.messages)
        assert (second.id, second.attempts) == (first.id, 2)
        await second.touch()
        await second.fin()
        with pytest.raises(LocalProtocolError):
            await second.fin()


@pytest.mark.integration
async def test_dpub_holds_the_message_back(node: NodeProcess) -> None:
    address = await tcp_address(node)
    async with open_connection(address) as conn:
        await conn.sub("conn_t3", "c")
        await conn.rdy(1)
        start = trio.current_time()
        await conn.dpub("conn_t3", b"later", 0.3)
        msg = await receive(conn.messages)
        assert msg.body == b"later"
        assert trio.current_time() - start >= 0.25
        await msg.fin()


@pytest.mark.integration
async def test_the_node_refuses_an_empty_body(node: NodeProcess) -> None:
    async with open_connection(await tcp_address(node)) as conn:
        with pytest.raises(NSQError) as info:
            await conn.pub("conn_t4", b"")
        assert info.value.code == "E_BAD_MESSAGE"


@pytest.mark.integration
async def test_rdy_is_recorded(node: NodeProcess) -> None:
    async with open_connection(await tcp_address(node)) as conn:
        await conn.sub("conn_t5", "c")
        await conn.rdy(3)
        assert conn.rdy_count == 3
