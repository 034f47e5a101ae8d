"""Client benchmark: shoal.client publish and consume rates, and discovery time.

    python bench/client.py --messages 50000 --size 100

Starts its own nodes on loopback and prints:

- publish msgs/s of `Producer.publish` awaited one at a time, of
  ``--concurrency`` concurrent publishes (gathered into ``MPUB`` commands on
  one connection), and of `Producer.mpublish` batches of ``--batch``;
- consume msgs/s of a `Consumer` with ``--max-in-flight`` draining what was
  published, with a handler and as an async iterator;
- for the concurrent publishes and both consumes (the handler figures are
  the client's targets), this process's CPU time per message and the node's
  (read from ``/proc``), which a busy machine moves much less than the
  rates: 1e6 / (client + node us/msg) is the rate two free cores would give,
  and 1e6 / max of the two the rate if each had its own core;
- for the concurrent publishes, the commands they took (``PUB`` or gathered
  ``MPUB``) and the writes; for the consumes, the ``FIN`` commands per
  write (since the connection opened, for the iterator) and the ``RDY``
  commands sent;
- the time from publishing the first message of a new topic on node 2 to a
  `Consumer` that was already waiting on node 1 receiving it (the long-poll
  discovery path), over ``--discovery-rounds`` topics.
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import TYPE_CHECKING

import trio

from shoal.client import (
    ConsumerConfig,
    Message,
    ProducerConfig,
    open_consumer,
    open_producer,
)
from shoal.client.consumer import Consumer
from shoal.testing.fake_node import http_address, running_cluster
from shoal.testing.progress import StatusLine

if TYPE_CHECKING:
    from shoal.testing.process import NodeProcess

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


#: On a terminal only: stdout is the figures.
status = StatusLine("bench/client.py")


def _cpu() -> float:
    """This process's CPU seconds: a figure the machine's other load moves less than rates."""
    times = os.times()
    return times.user + times.system


def _process_cpu(pid: int) -> float | None:
    """CPU seconds of another process (utime + stime from ``/proc``), None off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


class CpuMeter:
    """CPU seconds spent by this process and by a node between `start` and `per_message`."""

    def __init__(self, node: NodeProcess | None) -> None:
        self._pid = node.proc.pid if node is not None and node.proc is not None else None
        self._client = 0.0
        self._node: float | None = None

    def _node_now(self) -> float | None:
        return None if self._pid is None else _process_cpu(self._pid)

    def start(self) -> None:
        self._client = _cpu()
        self._node = self._node_now()

    def per_message(self, count: int) -> str:
        client = (_cpu() - self._client) / count * 1e6
        text = f"client CPU {client:.1f} us/msg"
        node_now = self._node_now()
        if node_now is not None and self._node is not None:
            node = (node_now - self._node) / count * 1e6
            text += f", node CPU {node:.1f} us/msg"
        return text


async def publish_rates(
    node: str, messages: int, size: int, concurrency: int, batch: int, meter: CpuMeter
) -> None:
    body = b"x" * size
    config = ProducerConfig(discover=False)
    async with open_producer(node, config=config) as producer:
        count = max(1, messages // 10)
        start = trio.current_time()
        for _ in range(count):
            await producer.publish("bench_seq", body)
        elapsed = trio.current_time() - start
        status.say(
            f"publish, one at a time:      {count / elapsed:10.0f} msgs/s ({count} messages)"
        )

        start = trio.current_time()
        meter.start()
        conn = next(iter(producer._connections.values()))
        before = conn.statistics()
        per_task = messages // concurrency

        async def worker() -> None:
            for _ in range(per_task):
                await producer.publish("bench_pub", body)

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        elapsed = trio.current_time() - start
        total = per_task * concurrency
        rate = total / elapsed
        cpu = meter.per_message(total)
        after = conn.statistics()
        commands = after.publish_commands - before.publish_commands
        writes = after.writes - before.writes
        status.say(
            f"publish, {concurrency:3d} concurrent:     {rate:10.0f} msgs/s ({total} messages; "
            f"{cpu}; {total / commands:.1f} msgs/command, {total / writes:.1f} msgs/write)"
        )

        start = trio.current_time()
        batches = messages // batch
        for _ in range(batches):
            await producer.mpublish("bench_pub", [body] * batch)
        elapsed = trio.current_time() - start
        total = batches * batch
        status.say(
            f"mpublish, batches of {batch:4d}: {total / elapsed:10.0f} msgs/s ({total} messages)"
        )


async def consume_rate(node: str, expected: int, max_in_flight: int, meter: CpuMeter) -> None:
    config = ConsumerConfig(max_in_flight=max_in_flight)
    received = 0
    done = trio.Event()
    first: float | None = None

    async def handle(msg: Message) -> None:
        nonlocal received, first
        if first is None:
            first = trio.current_time()
        received += 1
        if received == expected:
            done.set()

    consumer = Consumer("bench_pub", "bench", handle, nodes=node, config=config)
    meter.start()
    async with trio.open_nursery() as nursery:
        await nursery.start(consumer.run)
        await consumer.wait_connected()
        conn = consumer.connections[0]
        before = conn.statistics()
        with trio.fail_after(600):
            await done.wait()
        end = trio.current_time()
        cpu = meter.per_message(expected)
        after = conn.statistics()
        fins_per_write = (after.fins - before.fins) / max(1, after.writes - before.writes)
        rdys = after.rdys  # since the connection opened
        consumer.stop()
    assert first is not None
    rate = expected / (end - first)
    status.say(
        f"consume, max_in_flight {max_in_flight:4d}: {rate:10.0f} msgs/s ({expected} messages; "
        f"{cpu}; {fins_per_write:.1f} FINs/write, {rdys} RDY)"
    )


async def iterate_rate(node: str, expected: int, max_in_flight: int, meter: CpuMeter) -> None:
    async with open_producer(node, config=ProducerConfig(discover=False)) as producer:
        for _ in range(expected // 100):
            await producer.mpublish("bench_iter", [b"x" * 100] * 100)
    expected = expected // 100 * 100
    config = ConsumerConfig(max_in_flight=max_in_flight)
    seen = 0
    async with open_consumer("bench_iter", "c", nodes=node, config=config) as consumer:
        start: float | None = None
        async for msg in consumer:
            if start is None:
                start = trio.current_time()
                meter.start()
            seen += 1
            if seen == expected:
                await msg.fin()
                break
        assert start is not None
        rate = expected / (trio.current_time() - start)
        cpu = meter.per_message(expected)
        stats = consumer.connections[0].statistics()
    status.say(
        f"consume, async iterator:     {rate:10.0f} msgs/s ({expected} messages; "
        f"{cpu}; {stats.fins / max(1, stats.writes):.1f} FINs/write)"
    )


async def discovery_times(consumer_node: str, producer_node: str, rounds: int) -> list[float]:
    times: list[float] = []
    config = ProducerConfig(discover=False)
    async with open_producer(producer_node, config=config) as producer:
        for index in range(rounds):
            topic = f"bench_new_{index}"
            got = trio.Event()
            arrived: list[float] = []

            async def handle(
                msg: Message, got: trio.Event = got, arrived: list[float] = arrived
            ) -> None:
                arrived.append(trio.current_time())
                got.set()

            consumer = Consumer(topic, "c", handle, nodes=consumer_node)
            async with trio.open_nursery() as nursery:
                await nursery.start(consumer.run)
                await trio.sleep(0.3)  # the consumer now waits in its long poll
                published = trio.current_time()
                await producer.publish(topic, b"hello")
                with trio.fail_after(60):
                    await got.wait()
                times.append(arrived[0] - published)
                consumer.stop()
    return times


async def main_async(args: argparse.Namespace, nodes: list[str], meter: CpuMeter) -> None:
    status.show("publishing")
    await publish_rates(nodes[0], args.messages, args.size, args.concurrency, args.batch, meter)
    total = (args.messages // args.concurrency) * args.concurrency
    total += (args.messages // args.batch) * args.batch
    status.show(f"consuming {total:,} with a handler, then iterating")
    await consume_rate(nodes[0], total, args.max_in_flight, meter)
    await iterate_rate(nodes[0], min(total, args.messages), args.max_in_flight, meter)
    status.show("timing discovery of new producers")
    times = await discovery_times(nodes[0], nodes[1], args.discovery_rounds)
    status.say(
        f"new producer -> first message: median {statistics.median(times) * 1000:.0f} ms, "
        f"max {max(times) * 1000:.0f} ms over {len(times)} topics"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=100, help="message size in bytes")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--max-in-flight", type=int, default=200)
    parser.add_argument("--discovery-rounds", type=int, default=5)
    args = parser.parse_args()
    with status.ticking(), running_cluster(2, "--mem-queue-size", "1000000") as procs:
        trio.run(main_async, args, [http_address(p) for p in procs], CpuMeter(procs[0]))


if __name__ == "__main__":
    main()
