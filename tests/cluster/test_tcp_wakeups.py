"""Which connection tasks a publish wakes: only pumps that can take a message.

A real `TCPServer` on 127.0.0.1 port 0 in this process, so the test can
count the pumps' wake-ups (`Connection.pump_wakeups`) rather than time
anything: with 1,000 subscribers at RDY 0 a publish must wake none of them,
and a line of idle RDY-1 subscribers must be served one message each in turn.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from shoal.cluster.tcp_server import Connection, TCPServer
from shoal.queue.broker import Broker
from shoal.queue.commands import Fin, Pub, Rdy, Sub, encode_command
from shoal.queue.config import QueueConfig
from shoal.queue.frames import FrameDecoder, FrameType
from shoal.queue.message import decode_message

MAGIC_V2 = b"  V2"


class Harness:
    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.server = TCPServer(Broker(QueueConfig()), QueueConfig())
        self.port = 0
        self.streams: list[trio.SocketStream] = []

    async def start(self) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await self.nursery.start(self.server.serve, listeners)
        self.port = int(listeners[0].socket.getsockname()[1])

    async def connect(self, *commands: object) -> trio.SocketStream:
        stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        self.streams.append(stream)
        await stream.send_all(MAGIC_V2 + b"".join(encode_command(c) for c in commands))  # type: ignore[arg-type]
        return stream

    def wakeups(self) -> int:
        conns: list[Connection] = list(self.server.connections.values())
        return sum(conn.pump_wakeups for conn in conns)

    async def aclose(self) -> None:
        for stream in self.streams:
            await stream.aclose()


async def read_frame(stream: trio.SocketStream, decoder: FrameDecoder) -> tuple[FrameType, bytes]:
    for _ in range(1000):
        frame = decoder.next_frame()
        if frame is not None:
            return frame
        data = await stream.receive_some(65536)
        assert data, "server closed the connection"
        decoder.receive_data(data)
    raise AssertionError("no frame")


async def publish(h: Harness, topic: str, body: bytes) -> None:
    stream = await h.connect(Pub(topic, body))
    assert await read_frame(stream, FrameDecoder()) == (FrameType.RESPONSE, b"OK")


async def subscribe(h: Harness, count: int, rdy: int) -> list[trio.SocketStream]:
    streams = [await h.connect(Sub("t", "c"), Rdy(rdy)) for _ in range(count)]
    for stream in streams:
        assert await read_frame(stream, FrameDecoder()) == (FrameType.RESPONSE, b"OK")
    return streams


@pytest.mark.slow
async def test_publish_wakes_no_pump_of_a_thousand_rdy_zero_subscribers() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            h = Harness(nursery)
            await h.start()
            await subscribe(h, 1000, rdy=0)
            await trio.testing.wait_all_tasks_blocked()
            assert len(h.server.connections) == 1000
            channel = h.server.broker.get_channel("t", "c")
            assert channel is not None
            assert channel.client_count == 1000
            before = h.wakeups()
            await publish(h, "t", b"one")
            await trio.testing.wait_all_tasks_blocked()
            assert h.wakeups() == before  # not one of the 1,000 pumps woke
            assert channel.depth == 1
            # One subscriber raising RDY gets the message: nothing was stranded.
            late = await h.connect(Sub("t", "c"), Rdy(1))
            decoder = FrameDecoder()
            assert await read_frame(late, decoder) == (FrameType.RESPONSE, b"OK")
            kind, data = await read_frame(late, decoder)
            assert kind is FrameType.MESSAGE
            assert decode_message(data).body == b"one"
            await h.aclose()
            nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_idle_rdy_one_subscribers_take_turns_one_wakeup_per_message() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            h = Harness(nursery)
            await h.start()
            subs = await subscribe(h, 20, rdy=1)
            decoders = [FrameDecoder() for _ in subs]
            await trio.testing.wait_all_tasks_blocked()
            pub = await h.connect()
            pub_decoder = FrameDecoder()
            by_address = {
                "{}:{}".format(*stream.socket.getsockname()[:2]): i for i, stream in enumerate(subs)
            }
            got: list[int] = []
            for n in range(40):
                before = h.wakeups()
                await pub.send_all(encode_command(Pub("t", b"m%d" % n)))
                assert await read_frame(pub, pub_decoder) == (FrameType.RESPONSE, b"OK")
                await trio.testing.wait_all_tasks_blocked()
                assert h.wakeups() - before == 1  # one pump per message
                (served,) = [
                    conn.client.remote_address
                    for conn in h.server.connections.values()
                    if conn.client.in_flight
                ]
                i = by_address[served]
                kind, data = await read_frame(subs[i], decoders[i])
                assert kind is FrameType.MESSAGE
                assert decode_message(data).body == b"m%d" % n
                await subs[i].send_all(encode_command(Fin(decode_message(data).id)))
                await trio.testing.wait_all_tasks_blocked()
                got.append(i)
            # Least recently served first: every subscriber once (in the order
            # their pumps went idle), then again in the same order.
            assert sorted(got[:20]) == list(range(20))
            assert got[20:] == got[:20]
            await h.aclose()
            nursery.cancel_scope.cancel()
