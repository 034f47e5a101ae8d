"""Real node processes on loopback forming a cluster: membership and lookup from gossip."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

import nsq
import pytest

from shoal.membership.keyring import generate_key
from shoal.testing.process import NodeProcess, ProcessCluster, members, name_of, statuses
from shoal.testing.waiting import wait_for
from shoal.testing.wire import NsqConnection

pytestmark = pytest.mark.integration

#: The local profile detects failures in about a second; these tests check
#: behaviour, the benchmarks measure the lan profile.
CLUSTER_FLAGS = ("--gossip-profile", "local")


def get(address: tuple[str, int], path: str) -> tuple[int, Any]:
    host, port = address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def post(address: tuple[str, int], path: str) -> int:
    host, port = address
    request = urllib.request.Request(f"http://{host}:{port}{path}", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as reply:
        return int(reply.status)


def member(node: NodeProcess, name: str) -> dict[str, Any]:
    return next(m for m in members(node) if m["name"] == name)


def test_five_nodes_see_each_other_then_a_crash_a_leave_and_a_restart(
    cluster: ProcessCluster,
) -> None:
    first = cluster.start()
    nodes = [first] + [cluster.start(seed=first) for _ in range(4)]
    wait_for(lambda: all(list(statuses(n).values()).count("alive") == 5 for n in nodes))
    names = [name_of(n) for n in nodes]

    crashed = nodes[4]
    crashed.kill()
    others = nodes[:4]
    wait_for(lambda: all(statuses(n)[names[4]] == "dead" for n in others))

    nodes[3].stop()
    wait_for(lambda: all(statuses(n)[names[3]] == "left" for n in nodes[:3]))

    before = member(first, names[4])["incarnation"]
    restarted = cluster.start(data="n4", seed=first)
    assert name_of(restarted) == names[4]
    wait_for(lambda: all(statuses(n)[names[4]] == "alive" for n in nodes[:3]))
    assert member(first, names[4])["incarnation"] > before


def test_lookup_on_any_node_lists_a_new_producer_quickly(cluster: ProcessCluster) -> None:
    a = cluster.start()
    b = cluster.start(seed=a)
    c = cluster.start(seed=a)
    wait_for(lambda: list(statuses(c).values()).count("alive") == 3)
    with NsqConnection(a.tcp) as conn:
        conn.pub("t", b"first")
    took = wait_for(lambda: get(c.lookup_http, "/lookup?topic=t")[0] == 200, limit=10)
    assert took < 2.0
    status, body = get(c.lookup_http, "/lookup?topic=t")
    (producer,) = body["producers"]
    assert (producer["broadcast_address"], producer["tcp_port"], producer["http_port"]) == (
        "127.0.0.1", a.tcp[1], a.http[1],
    )  # fmt: skip
    assert get(c.http, "/lookup?topic=t") == (status, body)
    del b


def test_pynsq_reader_pointed_at_one_node_consumes_from_every_producer(
    cluster: ProcessCluster,
) -> None:
    a = cluster.start()
    b = cluster.start(seed=a)
    c = cluster.start(seed=a)
    wait_for(lambda: list(statuses(c).values()).count("alive") == 3)
    sent = {b"from a %d" % i for i in range(50)} | {b"from b %d" % i for i in range(50)}
    with NsqConnection(a.tcp) as conn:
        conn.mpub("shared", sorted(m for m in sent if m.startswith(b"from a")))
    with NsqConnection(b.tcp) as conn:
        conn.mpub("shared", sorted(m for m in sent if m.startswith(b"from b")))
    wait_for(lambda: len(get(c.lookup_http, "/lookup?topic=shared")[1].get("producers", [])) == 2)
    got: set[bytes] = set()
    done: list[asyncio.Event] = []

    def handle(message: Any) -> bool:
        got.add(message.body)
        if got == sent:
            done[0].set()
        return True

    async def scenario() -> None:
        done.append(asyncio.Event())
        host, port = c.lookup_http
        reader = nsq.Reader(
            topic="shared",
            channel="all",
            message_handler=handle,
            lookupd_http_addresses=[f"http://{host}:{port}"],
            max_in_flight=20,
        )
        try:
            await asyncio.wait_for(done[0].wait(), 30)
        finally:
            reader.close()

    asyncio.run(scenario())
    assert got == sent


def test_killed_producer_drops_out_of_lookup_and_returns_after_restart(
    cluster: ProcessCluster,
) -> None:
    a = cluster.start(data="a")
    b = cluster.start(seed=a)
    c = cluster.start(seed=a)
    wait_for(lambda: list(statuses(c).values()).count("alive") == 3)
    with NsqConnection(a.tcp) as conn:
        conn.pub("orders", b"x")
    # Both watchers must know the topic before its producer dies, or one of
    # them answers TOPIC_NOT_FOUND rather than an empty producer list.
    wait_for(lambda: all(get(n.lookup_http, "/lookup?topic=orders")[0] == 200 for n in (b, c)))
    a.kill()

    def producer_ports(node: NodeProcess) -> list[int]:
        return [
            p["tcp_port"] for p in get(node.lookup_http, "/lookup?topic=orders")[1]["producers"]
        ]

    wait_for(lambda: producer_ports(b) == [] and producer_ports(c) == [])
    assert get(b.lookup_http, "/topics")[1] == {"topics": ["orders"]}
    restarted = cluster.start(data="a", seed=b)
    port = restarted.tcp[1]
    wait_for(lambda: producer_ports(b) == [port] and producer_ports(c) == [port])


def test_topic_deleted_through_lookup_and_nsqd_apis_disappears_everywhere(
    cluster: ProcessCluster,
) -> None:
    a = cluster.start()
    b = cluster.start(seed=a)
    c = cluster.start(seed=a)
    wait_for(lambda: list(statuses(c).values()).count("alive") == 3)
    with NsqConnection(a.tcp) as conn:
        conn.pub("doomed", b"x")
    wait_for(
        lambda: all(get(n.lookup_http, "/topics")[1]["topics"] == ["doomed"] for n in (a, b, c))
    )
    assert post(c.lookup_http, "/topic/delete?topic=doomed") == 200
    assert post(a.http, "/topic/delete?topic=doomed") == 200
    wait_for(lambda: all(get(n.lookup_http, "/topics")[1]["topics"] == [] for n in (a, b, c)))


def test_node_with_a_wrong_key_cannot_join_a_keyed_cluster(cluster: ProcessCluster) -> None:
    key = generate_key()
    a = cluster.start("--gossip-key", key)
    b = cluster.start("--gossip-key", key, seed=a)
    wait_for(lambda: list(statuses(a).values()).count("alive") == 2)
    outsider = cluster.start("--gossip-key", generate_key(), seed=a)
    time.sleep(2)
    assert len(statuses(a)) == 2
    assert len(statuses(outsider)) == 1
    _status, body = get(a.http, "/members")
    assert body["statistics"]["dropped"].get("decrypt", 0) > 0
    del b
