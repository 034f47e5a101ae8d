"""How often a connection's reader gives the event loop up: counted, never timed.

A real `TCPServer` on 127.0.0.1 port 0 in this process, and a trio
instrument counting the steps of each connection's task (the reader runs in
it): a step is one wake-up by the scheduler. A command that is answered
before its client sends the next one must cost its connection one wake-up,
the one that brought it; and a reader that finds data each time it reads
must still yield every `READS_PER_CHECKPOINT` reads, so it cannot starve the
node's other tasks.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from typing import TYPE_CHECKING

import trio
import trio.lowlevel
import trio.testing

from shoal.cluster.tcp_server import READS_PER_CHECKPOINT, TCPServer
from shoal.queue.broker import Broker
from shoal.queue.commands import Command, Pub, Rdy, Sub, encode_command
from shoal.queue.config import QueueConfig
from shoal.queue.frames import FrameDecoder, FrameType
from shoal.queue.protocol import ClientV2

if TYPE_CHECKING:
    import pytest

MAGIC_V2 = b"  V2"
PUB = encode_command(Pub("t", b"x" * 200))


class StepCounter(trio.abc.Instrument):
    """Counts the steps of every connection task (`TCPServer.handle`)."""

    def __init__(self) -> None:
        self.steps: Counter[str] = Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("TCPServer.handle"):
            self.steps["connection"] += 1


async def serve_with_server(nursery: trio.Nursery) -> tuple[TCPServer, int]:
    server = TCPServer(Broker(QueueConfig()), QueueConfig())
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    await nursery.start(server.serve, listeners)
    return server, int(listeners[0].socket.getsockname()[1])


async def serve(nursery: trio.Nursery) -> int:
    return (await serve_with_server(nursery))[1]


def send_nowait(stream: trio.SocketStream, data: bytes) -> None:
    """Send without a checkpoint, so the client's task is not ready to run meanwhile.

    (A ready task makes the server's reader yield, which is what these
    tests count.)
    """
    assert os.write(stream.socket.fileno(), data) == len(data)


async def read_oks(stream: trio.SocketStream, decoder: FrameDecoder, count: int) -> None:
    got = 0
    for _ in range(10 * count + 10):
        while got < count and (frame := decoder.next_frame()) is not None:
            assert frame == (FrameType.RESPONSE, b"OK")
            got += 1
        if got == count:
            return
        data = await stream.receive_some(65536)
        assert data, "server closed the connection"
        decoder.receive_data(data)
    raise AssertionError(f"{got} of {count} OKs")


async def publisher(nursery: trio.Nursery) -> tuple[trio.SocketStream, FrameDecoder]:
    """A server, and a connection to it that has published once (creating the topic)."""
    stream = await trio.open_tcp_stream("127.0.0.1", await serve(nursery))
    decoder = FrameDecoder()
    await stream.send_all(MAGIC_V2 + PUB)
    await read_oks(stream, decoder, 1)
    return stream, decoder


async def test_pub_answered_before_the_next_costs_its_connection_one_wakeup() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            stream, decoder = await publisher(nursery)
            counter = StepCounter()
            trio.lowlevel.add_instrument(counter)
            try:
                for _ in range(20):
                    send_nowait(stream, PUB)
                    await read_oks(stream, decoder, 1)
            finally:
                trio.lowlevel.remove_instrument(counter)
            # Woken by the PUB's arrival; read, publish, answer and find the
            # socket empty again in that one step (no checkpoint after a
            # read that found data).
            assert counter.steps["connection"] == 20
            await stream.aclose()
            nursery.cancel_scope.cancel()


class Chain:
    """Makes the client send its next PUB while the server handles the current one.

    So each read finds a command waiting, as on a loaded loopback, where the
    client runs while the server writes its answer.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fd: int, length: int) -> None:
        self.sent = 0
        self.length = length
        execute = ClientV2.execute

        def execute_and_send_next(client: ClientV2, cmd: Command, now: float) -> bytes | None:
            response = execute(client, cmd, now)
            if type(cmd) is Pub and 0 < self.sent < self.length:
                assert os.write(fd, PUB) == len(PUB)
                self.sent += 1
            return response

        monkeypatch.setattr(ClientV2, "execute", execute_and_send_next)

    async def run(self, stream: trio.SocketStream, decoder: FrameDecoder) -> None:
        self.sent = 1
        send_nowait(stream, PUB)
        await read_oks(stream, decoder, self.length)
        assert self.sent == self.length


async def test_commands_waiting_when_read_cost_one_wakeup_per_checkpoint_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            stream, decoder = await publisher(nursery)
            chain = Chain(monkeypatch, stream.socket.fileno(), 40)
            counter = StepCounter()
            trio.lowlevel.add_instrument(counter)
            try:
                await chain.run(stream, decoder)
            finally:
                trio.lowlevel.remove_instrument(counter)
            # Not one wake-up per read, but the reader still yields once every
            # READS_PER_CHECKPOINT reads, so it cannot starve the other tasks
            # (twice when the client's task is ready by then: it reads the OKs).
            steps = counter.steps["connection"]
            runs = math.ceil(40 / READS_PER_CHECKPOINT)
            assert runs <= steps <= 2 * runs + 1
            await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_publish_that_wakes_a_pump_lets_it_run_before_the_next_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server, port = await serve_with_server(nursery)
            subscriber = await trio.open_tcp_stream("127.0.0.1", port)
            await subscriber.send_all(MAGIC_V2 + encode_command(Sub("t", "c")))
            await read_oks(subscriber, FrameDecoder(), 1)
            await subscriber.send_all(encode_command(Rdy(100)))
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(MAGIC_V2)
            await trio.testing.wait_all_tasks_blocked()
            (consumer,) = [c for c in server.connections.values() if c.client.channel]
            woken = consumer.pump_wakeups
            chain = Chain(monkeypatch, stream.socket.fileno(), 10)
            counter = StepCounter()
            trio.lowlevel.add_instrument(counter)
            try:
                await chain.run(stream, FrameDecoder())
            finally:
                trio.lowlevel.remove_instrument(counter)
            messages = FrameDecoder()
            got = 0
            while got < 10:
                data = await subscriber.receive_some(65536)
                assert data, "server closed the connection"
                messages.receive_data(data)
                while (frame := messages.next_frame()) is not None:
                    assert frame[0] == FrameType.MESSAGE
                    got += 1
            # Every PUB woke the subscriber's pump, which delivered it before
            # the publisher's reader went on to the next PUB.
            assert consumer.pump_wakeups - woken == 10
            assert counter.steps["connection"] >= 10
            await stream.aclose()
            await subscriber.aclose()
            nursery.cancel_scope.cancel()
