"""Topic propagation through gossip, real node processes on loopback, lan profile.

    python bench/lookup.py --nodes 5 --topics 100 --bulk 1000

Prints the time from creating a topic on one node (nsqd ``/topic/create``)
to its appearance as a producer in ``/lookup`` on every other node, p50 and
max over ``--topics`` topics; then creates ``--bulk`` topics on every node
and prints the time until every node lists them all, and the gossip bytes
per second per node once the cluster is idle again with that many topics.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from shoal.testing.process import NodeProcess
from shoal.testing.progress import StatusLine


def get(address: tuple[str, int], path: str) -> tuple[int, Any]:
    host, port = address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, None


def post(address: tuple[str, int], path: str) -> None:
    host, port = address
    request = urllib.request.Request(f"http://{host}:{port}{path}", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def has_producer(node: NodeProcess, topic: str) -> bool:
    status, body = get(node.lookup_http, f"/lookup?topic={topic}")
    return status == 200 and bool(body["producers"])


def gossip_bytes(node: NodeProcess) -> int:
    _status, body = get(node.http, "/members")
    stats = body["statistics"]
    return sum(int(stats[k]) for k in ("bytes_sent", "bytes_received", "stream_bytes_sent",
                                       "stream_bytes_received"))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument(
        "--bulk", type=int, default=1000, help="topics per node for the idle figure"
    )
    parser.add_argument("--idle", type=float, default=30.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    nodes: list[NodeProcess] = []
    rng = random.Random(1)
    status = StatusLine("bench/lookup.py")  # on a terminal only: stdout is the figures
    try:
        status.update(f"starting node 1 of {args.nodes}", force=True)
        first = NodeProcess("--data-path", str(root / "n0"), workdir=root).start()
        nodes.append(first)
        for i in range(1, args.nodes):
            status.update(f"starting node {i + 1} of {args.nodes}", force=True)
            nodes.append(
                NodeProcess(
                    "--data-path", str(root / f"n{i}"), "--seed", first.gossip, workdir=root
                ).start()
            )
        while any(len(get(n.http, "/members")[1]["members"]) < args.nodes for n in nodes):
            status.update("waiting for the members to find each other")
            time.sleep(0.1)

        delays = []
        for k in range(args.topics):
            status.update(f"propagation: topic {k + 1} of {args.topics}")
            origin = rng.choice(nodes)
            others = [n for n in nodes if n is not origin]
            topic = f"prop{k}"
            started = time.monotonic()
            post(origin.http, f"/topic/create?topic={topic}")
            pending = list(others)
            while pending:
                pending = [n for n in pending if not has_producer(n, topic)]
                if time.monotonic() - started > 60:
                    raise SystemExit(f"{topic} did not reach every node in 60s")
            delays.append(time.monotonic() - started)
        delays.sort()
        status.clear()
        print(
            f"N={args.nodes}: topic creation to /lookup on every other node over {args.topics} "
            f"topics: p50 {statistics.median(delays) * 1000:.0f} ms, "
            f"p90 {delays[int(len(delays) * 0.9)] * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms"
        )

        started = time.monotonic()
        for index, node in enumerate(nodes):
            for k in range(args.bulk):
                status.update(f"bulk: node {index + 1} of {len(nodes)}, topic {k + 1}")
                post(node.http, f"/topic/create?topic=bulk{index}-{k}")
        created = time.monotonic() - started
        expected = args.bulk * args.nodes + args.topics
        while any(len(get(n.lookup_http, "/topics")[1]["topics"]) < expected for n in nodes):
            if time.monotonic() - started > 300:
                raise SystemExit("bulk topics did not converge in 300s")
            status.update(f"waiting until every node lists all {expected} topics")
            time.sleep(0.2)
        status.clear()
        print(
            f"N={args.nodes}: {args.bulk} topics created on each node in {created:.1f}s; every "
            f"node lists all {expected} after {time.monotonic() - started:.1f}s"
        )
        status.update(f"idle for {args.idle + 5:g}s to measure gossip traffic", force=True)
        time.sleep(5)
        before = [gossip_bytes(n) for n in nodes]
        time.sleep(args.idle)
        after = [gossip_bytes(n) for n in nodes]
        status.clear()
        per_node = sum(b - a for a, b in zip(before, after, strict=True)) / len(nodes) / args.idle
        print(
            f"N={args.nodes}: idle gossip with {args.bulk} topics per node: {per_node:.0f} bytes/s "
            "per node (in + out)"
        )
    finally:
        for node in nodes:
            node.kill()


if __name__ == "__main__":
    main()
