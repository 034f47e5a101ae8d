"""The lookup-aware consumer against real clusters (and a fake lookup for timing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from shoal.client.consumer import Consumer, ConsumerConfig, open_consumer
from shoal.client.errors import NoNodesAvailable
from shoal.client.httpclient import get_json
from shoal.client.producer import ProducerConfig, open_producer
from shoal.errors import ConfigError
from shoal.queue.commands import Cls, CommandDecoder, Fin, Identify, Rdy, Sub
from shoal.queue.frames import encode_message_frame, encode_response
from shoal.queue.message import Message as QueueMessage
from shoal.testing.fake_node import FakeNode, http_address, producer_entry

if TYPE_CHECKING:
    from collections.abc import Callable

    from shoal.client.connection import Message
    from shoal.testing.process import NodeProcess

pytestmark = pytest.mark.timeout(90)

FAST = ConsumerConfig(max_in_flight=10, requeue_delay=0.01, max_requeue_delay=0.05)


async def publish_to(node: NodeProcess, topic: str, *bodies: bytes) -> None:
    config = ProducerConfig(discover=False)
    async with open_producer(http_address(node), config=config) as producer:
        for body in bodies:
            await producer.publish(topic, body)


async def channel_stats(node: NodeProcess, topic: str, channel: str) -> dict[str, int]:
    params = {"format": "json", "topic": topic, "channel": channel}
    stats = await get_json(http_address(node), "/stats", params)
    [entry] = stats["topics"]
    [chan] = entry["channels"]
    return chan  # type: ignore[no-any-return]


async def wait_until(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    with trio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 - counters of other tasks and processes
            await trio.sleep(0.01)


# -- pure parts --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_in_flight", "count", "expected"),
    [(7, 3, [3, 2, 2]), (3, 3, [1, 1, 1]), (100, 1, [100]), (2, 0, [])],
)
def test_rdy_is_spread_over_connections(
    max_in_flight: int, count: int, expected: list[int]
) -> None:
    consumer = Consumer(
        "t", "c", nodes="127.0.0.1:1", config=ConsumerConfig(max_in_flight=max_in_flight)
    )
    keys = [f"n{i}" for i in range(count)]
    assert list(consumer.rdy_counts(keys, 0).values()) == expected


def test_a_rdy_window_rotates_when_slots_are_scarce() -> None:
    consumer = Consumer("t", "c", nodes="127.0.0.1:1", config=ConsumerConfig(max_in_flight=2))
    keys = ["a", "b", "c"]
    windows = [sorted(k for k, v in consumer.rdy_counts(keys, r).items() if v) for r in range(3)]
    assert windows == [["a", "b"], ["b", "c"], ["a", "c"]]


def test_requeue_delay_doubles_up_to_the_cap() -> None:
    config = ConsumerConfig(requeue_delay=1.0, max_requeue_delay=5.0)
    assert [config.requeue_delay_for(a) for a in (1, 2, 3, 4, 100)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_names_and_config_are_checked() -> None:
    with pytest.raises(ValueError, match="topic"):
        Consumer("bad topic", "c", nodes="127.0.0.1:1")
    with pytest.raises(ValueError, match="channel"):
        Consumer("t", "", nodes="127.0.0.1:1")
    with pytest.raises(ConfigError):
        Consumer("t", "c", nodes=[])
    with pytest.raises(ConfigError):
        ConsumerConfig(max_in_flight=0)


async def test_an_unreachable_node_fails_the_first_lookup() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with pytest.raises(NoNodesAvailable, match="refused"):
        async with open_consumer("t", "c", nodes=f"127.0.0.1:{port}"):
            pass  # pragma: no cover


# -- against real nodes ---------------------------------------------------------------


@pytest.mark.integration
async def test_consumes_from_every_producer(cluster: list[NodeProcess]) -> None:
    for index, node in enumerate(cluster):
        await publish_to(node, "cons_all", b"from-%d" % index)
    received: list[bytes] = []

    async def handle(msg: Message) -> None:
        received.append(msg.body)

    consumer = Consumer("cons_all", "c", handle, nodes=http_address(cluster[0]), config=FAST)
    async with trio.open_nursery() as nursery:
        await nursery.start(consumer.run)
        await wait_until(lambda: len(received) == 3)
        assert consumer.statistics().connections == 3
        assert sorted(c.rdy_count for c in consumer.connections) == [3, 3, 4]
        consumer.stop()
    assert sorted(received) == [b"from-0", b"from-1", b"from-2"]
    for node in cluster:
        stats = await channel_stats(node, "cons_all", "c")
        assert (stats["depth"], stats["in_flight_count"]) == (0, 0)  # finished on return


@pytest.mark.integration
async def test_a_failing_handler_requeues_with_backoff(cluster: list[NodeProcess]) -> None:
    await publish_to(cluster[1], "cons_req", b"flaky")
    attempts: list[int] = []

    async def handle(msg: Message) -> None:
        attempts.append(msg.attempts)
        if msg.attempts < 3:
            raise RuntimeError("not yet")

    consumer = Consumer("cons_req", "c", handle, nodes=http_address(cluster[0]), config=FAST)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer.run)
        await wait_until(lambda: consumer.statistics().finished == 1)
        consumer.stop()
    assert attempts == [1, 2, 3]
    assert consumer.statistics().requeued == 2


@pytest.mark.integration
async def test_messages_past_max_attempts_are_given_up(cluster: list[NodeProcess]) -> None:
    await publish_to(cluster[2], "cons_give_up", b"poison")
    calls: list[int] = []

    async def handle(msg: Message) -> None:
        calls.append(msg.attempts)
        raise RuntimeError("always")

    config = ConsumerConfig(max_attempts=2, requeue_delay=0.01, max_requeue_delay=0.01)
    consumer = Consumer("cons_give_up", "c", handle, nodes=http_address(cluster[0]), config=config)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer.run)
        await wait_until(lambda: consumer.statistics().given_up == 1)
        consumer.stop()
    assert calls == [1, 2]
    stats = await channel_stats(cluster[2], "cons_give_up", "c")
    assert (stats["depth"], stats["in_flight_count"]) == (0, 0)


@pytest.mark.integration
async def test_the_iterator_finishes_a_message_when_asked_for_the_next(
    cluster: list[NodeProcess],
) -> None:
    await publish_to(cluster[0], "cons_iter", b"1", b"2", b"3")
    bodies = []
    async with open_consumer("cons_iter", "c", nodes=http_address(cluster[1])) as consumer:
        async for msg in consumer:
            bodies.append(msg.body)
            if msg.body == b"2" and msg.attempts == 1:
                await msg.req(0.0)  # answered by the loop itself: seen again
            if len(bodies) == 4:
                await msg.fin()
                break
    assert sorted(bodies) == [b"1", b"2", b"2", b"3"]
    stats = await channel_stats(cluster[0], "cons_iter", "c")
    assert (stats["depth"], stats["in_flight_count"]) == (0, 0)


@pytest.mark.integration
async def test_unanswered_messages_are_requeued_on_exit(cluster: list[NodeProcess]) -> None:
    await publish_to(cluster[0], "cons_exit", *[b"%d" % i for i in range(5)])
    config = ConsumerConfig(max_in_flight=5)
    async with open_consumer("cons_exit", "c", nodes=http_address(cluster[0]), config=config) as c:
        async for _ in c:
            break  # one in hand, four prefetched: none answered
    # A new consumer gets all five at once, not after the 60 s message timeout.
    async with open_consumer("cons_exit", "c", nodes=http_address(cluster[0]), config=config) as c:
        seen = set()
        with trio.fail_after(5):
            async for msg in c:
                seen.add(msg.body)
                if len(seen) == 5:
                    await msg.fin()
                    break


@pytest.mark.integration
async def test_a_consumer_started_first_receives_from_a_new_producer_within_2s(
    cluster: list[NodeProcess],
) -> None:
    received = trio.Event()
    arrival: list[float] = []

    async def handle(msg: Message) -> None:
        arrival.append(trio.current_time())
        received.set()

    consumer = Consumer("cons_late", "c", handle, nodes=http_address(cluster[0]))
    async with trio.open_nursery() as nursery:
        await nursery.start(consumer.run)
        assert consumer.statistics().producers == 0
        await trio.sleep(0.5)  # the consumer is waiting in a long poll now
        published = trio.current_time()
        await publish_to(cluster[2], "cons_late", b"first")
        with trio.fail_after(10):
            await received.wait()
        consumer.stop()
    assert arrival[0] - published < 2.0


@pytest.mark.integration
@pytest.mark.slow
async def test_a_dropped_connection_triggers_a_lookup_at_once(
    own_cluster: list[NodeProcess],
) -> None:
    for node in own_cluster:
        await publish_to(node, "cons_drop", b"x")
    config = ConsumerConfig(lookup_interval=30.0)

    async def handle(msg: Message) -> None:
        pass

    consumer = Consumer("cons_drop", "c", handle, nodes=http_address(own_cluster[0]), config=config)
    async with trio.open_nursery() as nursery:
        await nursery.start(consumer.run)
        await wait_until(lambda: consumer.statistics().connections == 3)
        before = consumer.statistics().lookups
        own_cluster[2].kill()
        await wait_until(lambda: consumer.statistics().lookups > before, limit=2.0)
        # Once gossip declares it dead the long poll drops it from the producers.
        await wait_until(lambda: consumer.statistics().producers == 2, limit=20.0)
        assert consumer.statistics().connections == 2
        consumer.stop()


@pytest.mark.integration
async def test_the_long_poll_connects_a_new_producer_at_once(
    nursery: trio.Nursery, cluster: list[NodeProcess]
) -> None:
    fake = FakeNode()
    await nursery.start(fake.serve)
    config = ConsumerConfig(lookup_interval=30.0)
    got = trio.Event()

    async def handle(msg: Message) -> None:
        got.set()

    consumer = Consumer("cons_poll", "c", handle, nodes=fake.address, config=config)
    nursery.start_soon(consumer.run)
    await publish_to(cluster[1], "cons_poll", b"x")
    await wait_until(lambda: any("/lookup" in r for r in fake.requests))
    await trio.sleep(0.2)
    start = trio.current_time()
    host, tcp = cluster[1].tcp
    fake.set_topic("cons_poll", [producer_entry(host, tcp, cluster[1].http[1])])
    with trio.fail_after(5):
        await got.wait()
    assert trio.current_time() - start < 1.0  # not the 30 s interval
    consumer.stop()


@pytest.mark.integration
async def test_plain_polling_asks_every_interval_without_waiting(nursery: trio.Nursery) -> None:
    fake = FakeNode()
    await nursery.start(fake.serve)
    config = ConsumerConfig(lookup_interval=0.1, long_poll=False)

    async def handle(msg: Message) -> None:
        pass  # pragma: no cover - the topic never appears

    consumer = Consumer("cons_plain", "c", handle, nodes=fake.address, config=config)
    nursery.start_soon(consumer.run)
    await trio.sleep(0.55)
    consumer.stop()
    assert 3 <= len(fake.lookups) <= 7  # paced by the interval, not a busy loop
    assert all("wait" not in args for args in fake.lookups)


@pytest.mark.integration
async def test_long_polls_name_the_version_they_know(nursery: trio.Nursery) -> None:
    fake = FakeNode()
    await nursery.start(fake.serve)
    fake.set_topic("cons_v", [])
    config = ConsumerConfig(lookup_interval=0.2)

    async def handle(msg: Message) -> None:
        pass  # pragma: no cover - no producer

    consumer = Consumer("cons_v", "c", handle, nodes=fake.address, config=config)
    nursery.start_soon(consumer.run)
    await wait_until(lambda: len(fake.lookups) >= 3)
    consumer.stop()
    first, second, third = fake.lookups[:3]
    assert "wait" not in first  # the first answer is immediate
    assert second == {"topic": "cons_v", "wait": "0.2", "version": fake.version("cons_v")}
    assert third == second  # the poll timed out with nothing new: same question again


@pytest.mark.integration
async def test_one_slot_is_rotated_over_every_producer(cluster: list[NodeProcess]) -> None:
    for index, node in enumerate(cluster):
        await publish_to(node, "cons_rotate", b"from-%d" % index)
    received: list[bytes] = []

    async def handle(msg: Message) -> None:
        received.append(msg.body)

    config = ConsumerConfig(max_in_flight=1, rdy_rotate_interval=0.2)
    consumer = Consumer("cons_rotate", "c", handle, nodes=http_address(cluster[0]), config=config)
    async with trio.open_nursery() as inner:
        await inner.start(consumer.run)
        await wait_until(lambda: consumer.statistics().connections == 3)
        assert sum(c.rdy_count for c in consumer.connections) == 1
        await wait_until(lambda: len(received) == 3)
        consumer.stop()
    assert sorted(received) == [b"from-0", b"from-1", b"from-2"]


# -- batching, counted against a scripted node ---------------------------------------


class BurstNode:
    """A scripted node's TCP side: a burst of RDY messages, then one more per FIN'd burst.

    It answers ``IDENTIFY`` with ``max_rdy_count`` ``burst``, so the consumer's
    RDY is ``burst``; it sends ``burst`` messages in one write after the RDY
    and again each time the previous burst is all finished, ``rounds`` times.
    """

    def __init__(self, burst: int, rounds: int) -> None:
        self.burst = burst
        self.rounds = rounds
        self.rdys: list[int] = []
        self.fins: list[bytes] = []
        self.sent = 0
        self.done = trio.Event()

    def _messages(self) -> bytes:
        frames = []
        for _ in range(self.burst):
            msg_id = b"%016x" % self.sent
            self.sent += 1
            frames.append(encode_message_frame(QueueMessage(msg_id, b"body", 0, 1)))
        return b"".join(frames)

    async def serve(self, nursery: trio.Nursery, topic: str) -> FakeNode:
        """Listen on a loopback port, and return a lookup that lists it as ``topic``'s producer."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, self.handle, listeners)
        fake = FakeNode()
        await nursery.start(fake.serve)
        tcp_port = listeners[0].socket.getsockname()[1]
        http_port = int(fake.address.rsplit(":", 1)[1])
        fake.set_topic(topic, [producer_entry("127.0.0.1", tcp_port, http_port)])
        return fake

    async def handle(self, stream: trio.SocketStream) -> None:
        decoder = CommandDecoder(
            max_msg_size=1 << 20, max_body_size=1 << 22, max_req_timeout_ms=3_600_000,
            max_rdy_count=self.burst,
        )  # fmt: skip
        while data := await stream.receive_some(65536):
            decoder.receive_data(data)
            while (command := decoder.next_command()) is not None:
                if isinstance(command, Identify):
                    reply = b'{"max_rdy_count": %d, "msg_timeout": 60000}' % self.burst
                    await stream.send_all(encode_response(reply))
                elif isinstance(command, Sub):
                    await stream.send_all(encode_response(b"OK"))
                elif isinstance(command, Cls):
                    await stream.send_all(encode_response(b"CLOSE_WAIT"))
                elif isinstance(command, Rdy):
                    self.rdys.append(command.count)
                    if len(self.rdys) == 1:
                        await stream.send_all(self._messages())
                elif isinstance(command, Fin):
                    self.fins.append(command.id)
                    if len(self.fins) == self.sent == self.burst * self.rounds:
                        self.done.set()
                    elif len(self.fins) == self.sent:
                        await stream.send_all(self._messages())


@pytest.mark.parametrize("form", ["handler", "iterator"])
async def test_consume_fins_a_burst_in_one_write_and_sends_rdy_once(
    nursery: trio.Nursery, form: str
) -> None:
    node = BurstNode(burst=7, rounds=5)
    fake = await node.serve(nursery, "cons_burst")
    config = ConsumerConfig(max_in_flight=100)

    if form == "handler":

        async def handle(msg: Message) -> None:
            pass

        consumer = Consumer("cons_burst", "c", handle, nodes=fake.address, config=config)
        await nursery.start(consumer.run)
        with trio.fail_after(20):
            await node.done.wait()
        [conn] = consumer.connections
        stats, rdys = conn.statistics(), list(node.rdys)
        consumer.stop()
    else:
        async with open_consumer("cons_burst", "c", nodes=fake.address, config=config) as it:
            seen = 0
            with trio.fail_after(20):
                async for msg in it:
                    seen += 1
                    if seen == 35:
                        msg.fin_nowait()
                        break
                await node.done.wait()
            [conn] = it.connections
            stats, rdys = conn.statistics(), list(node.rdys)
    assert len(set(node.fins)) == 35
    # One RDY for every message: the standing credit is never topped up.
    assert rdys == [7]
    assert stats.rdys == 1
    # SUB, RDY, then one write per burst carrying its seven FINs.
    assert (stats.fins, stats.writes) == (35, 2 + 5)


async def test_iteration_ends_when_the_consumer_stops(nursery: trio.Nursery) -> None:
    node = BurstNode(burst=3, rounds=1)
    fake = await node.serve(nursery, "cons_end")
    bodies = []
    async with open_consumer("cons_end", "c", nodes=fake.address) as it:
        with trio.fail_after(20):
            async for msg in it:
                bodies.append(msg.body)
                if len(bodies) == 3:
                    it.stop()
    assert bodies == [b"body"] * 3
    assert len(node.fins) == 3  # the last one too, as the loop asked for more
