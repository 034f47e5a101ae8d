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

A/B against another client: ``--baseline DIR`` names a source tree of
shoal (a checkout of another commit, with ``src/shoal``). The nodes start
once; the client figures are then measured ``--pairs`` times for each
client in turn (this tree's and the baseline's, alternating which goes
first), each run in a fresh process importing ``shoal.client`` from its
tree, against the same nodes. A busy machine moves both alike, so the
medians and their ratio (this / baseline) are the comparison to read:

    git worktree add ../shoal-base main
    python bench/client.py --messages 100000 --baseline ../shoal-base --pairs 3
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
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
    from collections.abc import Sequence

    from shoal.testing.process import NodeProcess

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


#: On a terminal only: stdout is the figures.
status = StatusLine("bench/client.py")

#: The sections an A/B run sums up, as their figure lines begin.
AB_SECTIONS = ("publish,", "mpublish,", "consume,")
_FIGURE = re.compile(
    r"^(?P<name>[a-z][^:]*?):\s+(?P<rate>\d+) msgs/s(?:.*?client CPU (?P<cpu>[\d.]+) us/msg)?"
)


def topic(name: str) -> str:
    """``name`` made this process's own, so A/B runs on the same nodes never share a topic."""
    return f"{name}_{os.getpid()}"


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

    def __init__(self, node_pid: int | None) -> None:
        self._pid = node_pid
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
            await producer.publish(topic("bench_seq"), body)
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
                await producer.publish(topic("bench_pub"), body)

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
            await producer.mpublish(topic("bench_pub"), [body] * batch)
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

    consumer = Consumer(topic("bench_pub"), "bench", handle, nodes=node, config=config)
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
            await producer.mpublish(topic("bench_iter"), [b"x" * 100] * 100)
    expected = expected // 100 * 100
    config = ConsumerConfig(max_in_flight=max_in_flight)
    seen = 0
    async with open_consumer(topic("bench_iter"), "c", nodes=node, config=config) as consumer:
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
            topic_name = topic(f"bench_new_{index}")
            got = trio.Event()
            arrived: list[float] = []

            async def handle(
                msg: Message, got: trio.Event = got, arrived: list[float] = arrived
            ) -> None:
                arrived.append(trio.current_time())
                got.set()

            consumer = Consumer(topic_name, "c", handle, nodes=consumer_node)
            async with trio.open_nursery() as nursery:
                await nursery.start(consumer.run)
                await trio.sleep(0.3)  # the consumer now waits in its long poll
                published = trio.current_time()
                await producer.publish(topic_name, b"hello")
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
    if args.discovery_rounds <= 0:
        return
    status.show("timing discovery of new producers")
    times = await discovery_times(nodes[0], nodes[1], args.discovery_rounds)
    status.say(
        f"new producer -> first message: median {statistics.median(times) * 1000:.0f} ms, "
        f"max {max(times) * 1000:.0f} ms over {len(times)} topics"
    )


def client_run(tree: Path, argv: Sequence[str], nodes: list[str], node_pid: int | None) -> str:
    """Run the client figures in a fresh process importing shoal from ``tree``; its stdout."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    command = [sys.executable, __file__, *argv, "--nodes", ",".join(nodes)]
    if node_pid is not None:
        command += ["--node-pid", str(node_pid)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"client run against {tree} failed:\n{done.stderr}")
    return done.stdout


def ab_compare(args: argparse.Namespace, argv: list[str], procs: list[NodeProcess]) -> None:
    """Interleave runs of this tree's client and the baseline's; print both and the medians."""
    trees = {"this": Path(__file__).resolve().parent.parent, "base": Path(args.baseline)}
    if not (trees["base"] / "src" / "shoal" / "client").is_dir():
        raise SystemExit(f"{args.baseline} has no src/shoal/client")
    nodes = [http_address(p) for p in procs]
    node_pid = procs[0].proc.pid if procs[0].proc is not None else None
    figures: dict[tuple[str, str], list[tuple[float, float | None]]] = {}
    for pair in range(args.pairs):
        order = ["this", "base"] if pair % 2 == 0 else ["base", "this"]
        for label in order:
            status.show(f"pair {pair + 1} of {args.pairs}: {label}")
            for line in client_run(trees[label], argv, nodes, node_pid).splitlines():
                status.say(f"{label}  {line}")
                match = _FIGURE.match(line)
                if match and match["name"].startswith(AB_SECTIONS):
                    cpu = float(match["cpu"]) if match["cpu"] else None
                    figures.setdefault((match["name"], label), []).append(
                        (float(match["rate"]), cpu)
                    )
    status.say(f"medians over {args.pairs} pairs (this / base):")
    for name in dict.fromkeys(name for name, _ in figures):
        this, base = figures.get((name, "this"), []), figures.get((name, "base"), [])
        if not this or not base:
            continue
        rate_this = statistics.median(r for r, _ in this)
        rate_base = statistics.median(r for r, _ in base)
        text = f"  {name + ':':30s} {rate_this:8.0f} / {rate_base:8.0f} msgs/s"
        text += f" ({rate_this / rate_base:.2f}x)"
        cpu_this = [c for _, c in this if c is not None]
        cpu_base = [c for _, c in base if c is not None]
        if cpu_this and cpu_base:
            mine, theirs = statistics.median(cpu_this), statistics.median(cpu_base)
            text += f"; client CPU {mine:.1f} / {theirs:.1f} us/msg ({mine / theirs:.2f}x)"
        status.say(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=100, help="message size in bytes")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--max-in-flight", type=int, default=200)
    parser.add_argument(
        "--discovery-rounds", type=int, default=None, help="5 by default, 0 in A/B runs"
    )
    parser.add_argument("--baseline", help="source tree of a client to compare against")
    parser.add_argument("--pairs", type=int, default=3, help="A/B runs of each client")
    parser.add_argument("--nodes", help=argparse.SUPPRESS)  # an A/B run's client process
    parser.add_argument("--node-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.nodes:
        args.discovery_rounds = args.discovery_rounds or 0
        trio.run(main_async, args, args.nodes.split(","), CpuMeter(args.node_pid))
        return
    with status.ticking(), running_cluster(2, "--mem-queue-size", "1000000") as procs:
        if args.baseline:
            args.discovery_rounds = args.discovery_rounds or 0
            argv = [
                f"--messages={args.messages}", f"--size={args.size}",
                f"--concurrency={args.concurrency}", f"--batch={args.batch}",
                f"--max-in-flight={args.max_in_flight}",
                f"--discovery-rounds={args.discovery_rounds}",
            ]  # fmt: skip
            ab_compare(args, argv, procs)
            return
        if args.discovery_rounds is None:
            args.discovery_rounds = 5
        pid = procs[0].proc.pid if procs[0].proc is not None else None
        trio.run(main_async, args, [http_address(p) for p in procs], CpuMeter(pid))


if __name__ == "__main__":
    main()
