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

from shoal.cluster.tcp_server import READS_PER_CHECKPOINT, TCPServer
from shoal.queue.broker import Broker
from shoal.queue.commands import Command, Pub, encode_command
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


async def serve(nursery: trio.Nursery) -> int:
    server = TCPServer(Broker(QueueConfig()), QueueConfig())
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    await nursery.start(server.serve, listeners)
    return int(listeners[0].socket.getsockname()[1])


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


async def test_pub_answered_before_the_next_costs_its_connection_one_wakeup() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await serve(nursery)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            decoder = FrameDecoder()
            await stream.send_all(MAGIC_V2 + PUB)  # creates the topic
            await read_oks(stream, decoder, 1)
            counter = StepCounter()
            trio.lowlevel.add_instrument(counter)
            try:
                for _ in range(20):
                    await stream.send_all(PUB)
                    await read_oks(stream, decoder, 1)
            finally:
                trio.lowlevel.remove_instrument(counter)
            # Woken by the PUB's arrival; read, publish, answer and find the
            # socket empty again in that one step (no checkpoint after a
            # read that found data).
            assert counter.steps["connection"] == 20
            await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_commands_waiting_when_read_cost_one_wakeup_per_checkpoint_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The client sends its next PUB while the server handles the current
    # one, so each read finds a command waiting: as on a loaded loopback,
    # where the client runs while the server writes its answer.
    chain = 40
    sent = 0
    fd = -1
    execute = ClientV2.execute

    def execute_and_send_next(self: ClientV2, cmd: Command, now: float) -> bytes | None:
        nonlocal sent
        response = execute(self, cmd, now)
        if 0 < sent < chain:
            assert os.write(fd, PUB) == len(PUB)
            sent += 1
        return response

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await serve(nursery)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            fd = stream.socket.fileno()
            decoder = FrameDecoder()
            await stream.send_all(MAGIC_V2 + PUB)  # creates the topic
            await read_oks(stream, decoder, 1)
            monkeypatch.setattr(ClientV2, "execute", execute_and_send_next)
            counter = StepCounter()
            trio.lowlevel.add_instrument(counter)
            try:
                sent = 1
                await stream.send_all(PUB)
                await read_oks(stream, decoder, chain)
            finally:
                trio.lowlevel.remove_instrument(counter)
            assert sent == chain
            # Not one wake-up per read, but the reader still yields once every
            # READS_PER_CHECKPOINT reads, so it cannot starve the other tasks.
            steps = counter.steps["connection"]
            assert math.ceil(chain / READS_PER_CHECKPOINT) <= steps
            assert steps <= chain // READS_PER_CHECKPOINT + 2
            await stream.aclose()
            nursery.cancel_scope.cancel()
