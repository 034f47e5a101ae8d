"""A replicated topic's owner comes back after its messages were adopted: real processes.

Three ``shoal node`` processes, ``--replication-factor 2``, durable, on
loopback. The owner is SIGKILLed with a backlog, a replica adopts it and a
consumer drains it there; the owner is restarted on its data path, where
its disk still holds that backlog. It must learn the adoption (gossiped in
the registry) before it serves, and deliver only what it accepted since.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
from tests.cluster.test_cluster_processes import get, post
from tests.cluster.test_replication_processes import eventually, node_named, replicas_of

from shoal.testing.process import NodeProcess, statuses
from shoal.testing.wire import NsqConnection

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARGS = ("--gossip-profile", "local", "--replication-factor", "2", "--sync-every", "1")


def stats(node: NodeProcess) -> dict[str, Any]:
    return dict(get(node.http, "/stats?format=json")[1])


def channel_stats(node: NodeProcess, topic: str, channel: str) -> dict[str, Any]:
    for t in stats(node)["topics"]:
        if t["topic_name"] == topic:
            for c in t["channels"]:
                if c["channel_name"] == channel:
                    return dict(c)
    raise AssertionError(f"{topic}/{channel} not on the node")


def consume(node: NodeProcess, topic: str, count: int, received: Counter[bytes]) -> None:
    """Take ``count`` messages from ``node`` and FIN them, counting every body."""
    with NsqConnection(node.tcp, timeout=30) as conn:
        conn.sub(topic, "work")
        conn.rdy(100)
        for _ in range(count):
            message = conn.read_message()
            received[message.body] += 1
            conn.fin(message.id)


def test_a_restarted_owner_drops_what_was_adopted_and_delivers_what_came_after(
    tmp_path: Path,
) -> None:
    def start(data: str, seed: NodeProcess | None) -> NodeProcess:
        args = [*ARGS, "--data-path", str(tmp_path / data)]
        if seed is not None:
            args += ["--seed", seed.gossip]
        return NodeProcess(*args, workdir=tmp_path).start()

    a = start("a", None)
    b = start("b", a)
    c = start("c", a)
    nodes = [a, b, c]
    try:
        eventually(lambda: all(list(statuses(n).values()).count("alive") == 3 for n in nodes))
        assert post(a.http, "/topic/create?topic=back") == 200
        assert post(a.http, "/channel/create?topic=back&channel=work") == 200
        before = [b"old%04d" % i for i in range(300)]
        with NsqConnection(a.tcp) as conn:
            for start_at in range(0, len(before), 50):
                conn.mpub("back", before[start_at : start_at + 50])
        (replica_name,) = replicas_of(a, "back")
        adopter = node_named(nodes, replica_name)
        other = next(n for n in (b, c) if n is not adopter)

        # Every node names the same replica, from the factor gossiped with the topic.
        def lookup_producers(node: NodeProcess) -> list[dict[str, Any]]:
            # Until the topic's gossip reaches the node: 404, TOPIC_NOT_FOUND.
            return list(get(node.lookup_http, "/lookup?topic=back")[1].get("producers", []))

        def names_the_replica(node: NodeProcess) -> bool:
            found = lookup_producers(node)
            return bool(found) and found[0].get("replicas") == [replica_name]

        for node in (b, c):
            eventually(partial(names_the_replica, node))
        (own,) = lookup_producers(a)
        assert own["replication_factor"] == 2
        assert own["replication_lag"] == {replica_name: 0}
        # The command line shows them too, with the lag from the owner's /stats.
        host, port = c.http
        shown = subprocess.run(
            [sys.executable, "-m", "shoal", "lookup", "back", "--node", f"{host}:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.splitlines()
        assert shown[2].split()[-2:] == [replica_name, f"{replica_name}=0"]

        a.kill()
        eventually(lambda: bool(stats(adopter)["replication"]["adopted"]))
        # The adoption is gossiped: the other member knows it too.
        eventually(lambda: stats(other)["replication"]["adoptions"]["announced"] == 1)
        received: Counter[bytes] = Counter()
        consume(adopter, "back", len(before), received)
        assert set(received) == set(before)

        # The owner comes back on its data path, its disk holding all 300.
        # Seeded by the member that did not adopt: the adoption reaches the
        # owner relayed by gossip.
        a.args += ["--seed", other.gossip]
        a.start()
        adoptions = stats(a)["replication"]["adoptions"]
        ((adoption),) = adoptions["of_this_node"]
        assert (adoption["adopter"], adoption["topic"], adoption["messages"]) == (
            replica_name,
            "back",
            300,
        )
        after = [b"new%04d" % i for i in range(50)]
        with NsqConnection(a.tcp) as conn:
            conn.mpub("back", after)
        consume(a, "back", len(after), received)
        assert set(received) == set(before) | set(after)
        assert sum(received.values()) == len(before) + len(after), "duplicates delivered"
        # Nothing is left to deliver: the adopted ones were dropped, not queued.
        work = channel_stats(a, "back", "work")
        assert (work["depth"], work["in_flight_count"]) == (0, 0)
        assert stats(a)["replication"]["adoptions"]["dropped_as_adopted"] == len(before)
    finally:
        for node in nodes:
            node.kill()
        for node in nodes:
            assert "Traceback" not in node.stderr, node.stderr
