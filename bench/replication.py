"""Publish msgs/s at replication factor 1, 2 and 3 (batches of 200 and of 1), and failover time.

    python bench/replication.py --messages 100000 --connections 4

For each factor, starts three nodes on loopback with ``--replication-factor``
set, creates the topic and a channel on the first, and publishes
--messages bodies of --size bytes to it over --connections raw V2
connections, each with one MPUB (or PUB, at batch 1) in flight, as nsq's
bench_writer; a publish is counted once its ``OK`` arrived, which at factor
2 and 3 means the replicas hold it. Then, at factor 2, it publishes
--failover-messages, SIGKILLs the owner and times how long until a third
node's ``/lookup`` lists the adopter as a producer of the topic and a
consumer subscribed there receives the first adopted message.

Clients and nodes share the machine: on a small one the figures are the
ratio between rows more than absolute rates. The CPU columns are steadier
on a loaded machine: the CPU time the owner and the other two nodes (its
replicas) spent per 1,000 messages published, from /proc. Each row is
the median of --repeat runs. The last column is the batch frames the
owner sent per publish (MPUB or PUB), all replicas together (``/stats``
``replication.frames``): publishes that arrive together share one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from lookup import get, post

from shoal.testing.process import NodeProcess
from shoal.testing.progress import StatusLine
from shoal.testing.wire import NsqConnection

#: On a terminal only: stdout is the figures.
status = StatusLine("bench/replication.py")


def wait(condition: Any, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("condition not met in time")
        time.sleep(0.01)


def start_cluster(root: Path, factor: int, profile: str) -> list[NodeProcess]:
    args = ["--gossip-profile", profile, "--replication-factor", str(factor)]
    first = NodeProcess(*args, "--data-path", str(root / "n0"), workdir=root).start()
    nodes = [first] + [
        NodeProcess(
            *args, "--data-path", str(root / f"n{index}"), "--seed", first.gossip, workdir=root
        ).start()
        for index in (1, 2)
    ]

    def alive() -> bool:
        return all(
            [m["status"] for m in get(n.http, "/members")[1]["members"]].count("alive") == 3
            for n in nodes
        )

    wait(alive)
    return nodes


def cpu_seconds(node: NodeProcess) -> float:
    """User + system CPU time the node's process has used so far (Linux /proc)."""
    assert node.proc is not None
    with open(f"/proc/{node.proc.pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); fields[0] is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batches_sent(node: NodeProcess) -> int:
    """Batch frames the node sent its replicas so far."""
    _status, stats = get(node.http, "/stats?format=json")
    return int(stats["replication"]["frames"]["batches_sent"])


def publish(node: NodeProcess, topic: str, total: int, batch: int, size: int, conns: int) -> float:
    """Publish ``total`` messages over ``conns`` connections; msgs/s acknowledged."""
    body = b"x" * size
    share = total // conns
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with NsqConnection(node.tcp, timeout=60) as conn:
                sent = 0
                while sent < share:
                    count = min(batch, share - sent)
                    if count == 1:
                        conn.pub(topic, body)
                    else:
                        conn.mpub(topic, [body] * count)
                    sent += count
        except BaseException as exc:  # reported below, the run is invalid
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(conns)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"publishing failed: {errors[0]!r}")
    return share * conns / elapsed


def failover(root: Path, messages: int, profile: str) -> tuple[float, float]:
    """Seconds from SIGKILL of the owner to (adopter in /lookup, first adopted message)."""
    nodes = start_cluster(root, 2, profile)
    try:
        owner, other = nodes[0], nodes[2]
        post(owner.http, "/topic/create?topic=fo")
        post(owner.http, "/channel/create?topic=fo&channel=c")
        publish(owner, "fo", messages, 200, 100, 1)
        owner.kill()
        killed = time.monotonic()

        def adopter() -> NodeProcess | None:
            status, body = get(other.lookup_http, "/lookup?topic=fo")
            if status != 200:
                return None
            ports = {p["tcp_port"] for p in body["producers"]}
            return next((n for n in nodes[1:] if n.tcp[1] in ports), None)

        wait(lambda: adopter() is not None)
        listed = time.monotonic() - killed
        found = adopter()
        assert found is not None
        with NsqConnection(found.tcp) as conn:
            conn.sub("fo", "c")
            conn.rdy(1)
            conn.read_message()
        return listed, time.monotonic() - killed
    finally:
        for node in nodes:
            node.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batch1-messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--failover-messages", type=int, default=20_000)
    parser.add_argument("--profile", default="lan", choices=["lan", "local", "wan"])
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; prints the median")
    args = parser.parse_args()
    with status.ticking():
        measure(args)


def measure(args: argparse.Namespace) -> None:
    rates: dict[tuple[int, int], float] = {}
    status.say(
        f"{'factor':>6} {'batch':>6} {'msgs/s':>10} {'vs factor 1':>12}"
        f" {'owner cpu ms/1k':>16} {'others cpu ms/1k':>17} {'batches/pub':>12}"
    )
    for factor in (1, 2, 3):
        with tempfile.TemporaryDirectory(prefix="shoal-bench-repl-") as tmp:
            nodes = start_cluster(Path(tmp), factor, args.profile)
            try:
                owner = nodes[0]
                for batch, total in ((200, args.messages), (1, args.batch1_messages)):
                    runs = []
                    for run in range(args.repeat):
                        status.show(
                            f"factor {factor}, batch {batch}: run {run + 1} of {args.repeat}"
                        )
                        topic = f"b{batch}r{run}"  # a fresh topic: every run starts alike
                        post(owner.http, f"/topic/create?topic={topic}")
                        post(owner.http, f"/channel/create?topic={topic}&channel=c")
                        frames = batches_sent(owner)
                        before = [cpu_seconds(node) for node in nodes]
                        rate = publish(owner, topic, total, batch, args.size, args.connections)
                        used = [
                            cpu_seconds(node) - was for node, was in zip(nodes, before, strict=True)
                        ]
                        publishes = total // args.connections * args.connections / batch
                        sent = (batches_sent(owner) - frames) / publishes
                        runs.append((rate, used[0], sum(used[1:]), sent))
                    rate = statistics.median(r[0] for r in runs)
                    rates[factor, batch] = rate
                    per_k = 1e6 / total  # seconds per run -> ms per 1,000 messages
                    owner_cpu = statistics.median(r[1] for r in runs) * per_k
                    others_cpu = statistics.median(r[2] for r in runs) * per_k
                    sent = statistics.median(r[3] for r in runs)
                    status.say(
                        f"{factor:>6} {batch:>6} {rate:>10,.0f} {rate / rates[1, batch]:>11.2f}x"
                        f" {owner_cpu:>16.1f} {others_cpu:>17.1f} {sent:>12.2f}"
                    )
            finally:
                for node in nodes:
                    node.kill()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-failover-") as tmp:
        status.show("failover: SIGKILL of an owner, waiting for its adopter")
        listed, delivered = failover(Path(tmp), args.failover_messages, args.profile)
    status.say(
        f"failover ({args.profile} profile, factor 2): adopter in /lookup {listed:.2f}s, "
        f"first adopted message {delivered:.2f}s after SIGKILL"
    )


if __name__ == "__main__":
    main()
