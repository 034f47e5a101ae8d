"""The nsqlookupd API over gossip state: shapes checked key by key against docs/nsq.md §3."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from shoal.cluster.http_server import Response
from shoal.cluster.lookup_api import LookupAPI
from shoal.cluster.routing import TopicRouting
from shoal.membership.state import Member, MemberState
from shoal.queue.broker import Broker
from shoal.queue.config import QueueConfig
from shoal.registry import NodeInfo, Registry, RegistryGossip
from shoal.replication.placement import replicas
from shoal.testing.http import make_request

WALL = 1_795_000_000.0

PRODUCER_KEYS = {
    "remote_address": str,
    "hostname": str,
    "broadcast_address": str,
    "tcp_port": int,
    "http_port": int,
    "version": str,
}


class Node:
    """A node's routing without sockets: broadcasts land in a list."""

    def __init__(self, name: str, n: int) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.down: set[str] = set()
        self.broker = Broker(QueueConfig())
        info = NodeInfo(
            broadcast_address=f"10.1.0.{n}", hostname=f"host{n}", tcp_port=4150, http_port=4151,
            version="0.1.0",
        )  # fmt: skip
        self.registry = Registry(name, generation=n, info=info, now=0.0)
        self.gossip = RegistryGossip(self.registry, clock=lambda: 1.0)
        self.gossip.attach(
            broadcast=lambda key, data: self.sent.append((key, data)), member=self.member
        )
        self.routing = TopicRouting(
            self.gossip, self.broker, wall=lambda: WALL, monotonic=lambda: 1.0
        )
        self.api = LookupAPI(
            self.routing, remote_address=lambda p: f"{p.info.broadcast_address}:4160"
        )

    def member(self, name: str) -> Member:
        state = MemberState.DEAD if name in self.down else MemberState.ALIVE
        return Member(
            name=name,
            address=("10.1.0.9", 4160),
            state=state,
            incarnation=1,
            meta={},
            state_changed_at=0.0,
        )

    def hear(self, other: Node) -> None:
        for _key, data in other.sent:
            self.gossip.notify_message(data)


async def call(handler: Any, method: str, path: str) -> tuple[int, Any]:
    reply = handler(make_request(method, path))
    if not isinstance(reply, Response):
        reply = await reply
    body = (
        json.loads(reply.body)
        if reply.body and reply.content_type.startswith("application/json")
        else reply.body
    )
    return reply.status, body


def check_shape(value: dict[str, Any], keys: dict[str, type]) -> None:
    assert set(value) == set(keys), value
    for key, kind in keys.items():
        assert isinstance(value[key], kind), (key, value[key])
        assert not isinstance(value[key], bool) or kind is bool


@pytest.fixture
def pair() -> tuple[Node, Node]:
    a, b = Node("a", 1), Node("b", 2)
    now = 0.0
    a.broker.get_or_create_channel("orders", "billing", now)
    b.hear(a)
    return a, b


async def test_lookup_lists_remote_producer_with_every_key(pair: tuple[Node, Node]) -> None:
    _a, b = pair
    status, body = await call(b.api.lookup, "GET", "/lookup?topic=orders")
    assert status == 200
    assert set(body) == {"channels", "producers", "version"}
    assert body["channels"] == ["billing"]
    (producer,) = body["producers"]
    check_shape(producer, PRODUCER_KEYS)
    assert (producer["broadcast_address"], producer["tcp_port"], producer["http_port"]) == (
        "10.1.0.1",
        4150,
        4151,
    )


async def test_lookup_unknown_topic_is_404_topic_not_found(pair: tuple[Node, Node]) -> None:
    assert await call(pair[1].api.lookup, "GET", "/lookup?topic=nope") == (
        404,
        {"message": "TOPIC_NOT_FOUND"},
    )


async def test_lookup_without_topic_is_400(pair: tuple[Node, Node]) -> None:
    assert await call(pair[1].api.lookup, "GET", "/lookup") == (
        400,
        {"message": "MISSING_ARG_TOPIC"},
    )


async def test_lookup_dead_producer_gives_200_with_empty_producers(pair: tuple[Node, Node]) -> None:
    _a, b = pair
    b.down.add("a")
    status, body = await call(b.api.lookup, "GET", "/lookup?topic=orders")
    assert status == 200
    assert body["producers"] == []
    assert body["channels"] == ["billing"]


async def test_topics_and_channels_shapes(pair: tuple[Node, Node]) -> None:
    _a, b = pair
    assert await call(b.api.topics, "GET", "/topics") == (200, {"topics": ["orders"]})
    assert await call(b.api.channels, "GET", "/channels?topic=orders") == (
        200,
        {"channels": ["billing"]},
    )
    assert await call(b.api.channels, "GET", "/channels?topic=none") == (200, {"channels": []})
    assert await call(b.api.channels, "GET", "/channels") == (400, {"message": "MISSING_ARG_TOPIC"})


async def test_nodes_have_parallel_topics_and_tombstones(pair: tuple[Node, Node]) -> None:
    a, b = pair
    status, body = await call(b.api.nodes, "GET", "/nodes")
    assert status == 200
    assert set(body) == {"producers"}
    by_host = {p["hostname"]: p for p in body["producers"]}
    assert set(by_host) == {"host1", "host2"}
    for producer in body["producers"]:
        check_shape(producer, {**PRODUCER_KEYS, "tombstones": list, "topics": list})
        assert len(producer["tombstones"]) == len(producer["topics"])
    assert by_host["host1"]["topics"] == ["orders"]
    assert by_host["host1"]["tombstones"] == [False]
    del a


async def test_tombstone_hides_producer_from_lookup_only(pair: tuple[Node, Node]) -> None:
    _a, b = pair
    assert await call(
        b.api.topic_tombstone, "POST", "/topic/tombstone?topic=orders&node=10.1.0.1:4151"
    ) == (200, b"")
    _status, body = await call(b.api.lookup, "GET", "/lookup?topic=orders")
    assert body["producers"] == []
    _status, nodes = await call(b.api.nodes, "GET", "/nodes")
    host1 = next(p for p in nodes["producers"] if p["hostname"] == "host1")
    assert host1["tombstones"] == [True]
    assert await call(b.api.topic_tombstone, "POST", "/topic/tombstone?topic=orders") == (
        400,
        {"message": "MISSING_ARG_NODE"},
    )


async def test_topic_create_and_delete_are_gossiped(pair: tuple[Node, Node]) -> None:
    a, b = pair
    assert await call(b.api.topic_create, "POST", "/topic/create?topic=fresh") == (200, b"")
    a.hear(b)
    status, body = await call(a.api.lookup, "GET", "/lookup?topic=fresh")
    assert (status, body["producers"], body["channels"]) == (200, [], [])
    assert await call(b.api.topic_create, "POST", "/topic/create?topic=bad!") == (
        400,
        {"message": "INVALID_ARG_TOPIC"},
    )
    assert await call(b.api.topic_delete, "POST", "/topic/delete?topic=orders") == (200, b"")
    a.hear(b)
    _status, topics = await call(a.api.topics, "GET", "/topics")
    assert topics == {"topics": ["fresh"]}


async def test_channel_delete_of_unknown_channel_is_404(pair: tuple[Node, Node]) -> None:
    _a, b = pair
    assert await call(
        b.api.channel_delete, "POST", "/channel/delete?topic=orders&channel=nope"
    ) == (404, {"message": "CHANNEL_NOT_FOUND"})
    assert await call(
        b.api.channel_delete, "POST", "/channel/delete?topic=orders&channel=billing"
    ) == (200, b"")
    assert await call(b.api.channels, "GET", "/channels?topic=orders") == (200, {"channels": []})


async def test_info_and_ping() -> None:
    node = Node("a", 1)
    status, body = await call(node.api.info, "GET", "/info")
    assert status == 200
    check_shape(body, {"version": str})
    assert await call(node.api.ping, "GET", "/ping") == (200, b"OK")


async def test_long_poll_returns_when_a_producer_appears(autojump_clock: trio.abc.Clock) -> None:
    a, b = Node("a", 1), Node("b", 2)
    b.routing.register("later", None)
    _status, first = await call(b.api.lookup, "GET", "/lookup?topic=later")
    async with trio.open_nursery() as nursery:

        async def publish_later() -> None:
            await trio.sleep(3)
            a.broker.get_or_create_topic("later", 0.0)
            b.hear(a)

        nursery.start_soon(publish_later)
        with trio.fail_after(10):
            started = trio.current_time()
            status, body = await call(
                b.api.lookup, "GET", f"/lookup?topic=later&wait=30&version={first['version']}"
            )
            assert trio.current_time() - started == pytest.approx(3)
    assert status == 200
    assert [p["hostname"] for p in body["producers"]] == ["host1"]
    assert body["version"] != first["version"]


async def test_long_poll_ends_at_the_wait_with_the_same_answer(
    autojump_clock: trio.abc.Clock,
) -> None:
    b = Node("b", 2)
    b.routing.register("quiet", None)
    _status, first = await call(b.api.lookup, "GET", "/lookup?topic=quiet")
    with trio.fail_after(10):
        started = trio.current_time()
        status, body = await call(
            b.api.lookup, "GET", f"/lookup?topic=quiet&wait=2&version={first['version']}"
        )
        assert trio.current_time() - started == pytest.approx(2)
    assert (status, body["version"]) == (200, first["version"])


async def test_new_topic_precreates_channels_known_in_the_cluster() -> None:
    a = Node("a", 1)
    b = Node("b", 2)
    a.broker.get_or_create_channel("orders", "billing", 0.0)
    a.broker.get_or_create_channel("orders", "tail#ephemeral", 0.0)
    b.hear(a)
    assert b.routing.known_channels("orders") == ["billing"]


async def test_lookup_names_the_replicas_of_a_replicated_topic_on_every_node() -> None:
    a, b, c = Node("a", 1), Node("b", 2), Node("c", 3)
    a.routing.factor_of = lambda topic: 2 if topic == "kept" else 1
    a.routing.lag_of = lambda topic: {"c": 4} if topic == "kept" else None
    a.broker.get_or_create_topic("kept", 0.0)
    a.broker.get_or_create_topic("plain", 0.0)
    for node in (a, b, c):
        for other in (a, b, c):
            if other is not node:
                node.hear(other)
    # The same placement the owner runs, over the live brokers each node sees.
    wanted = list(replicas("a", "kept", ["a", "b", "c"], 2))
    for node in (a, b, c):
        _status, body = await call(node.api.lookup, "GET", "/lookup?topic=kept")
        (producer,) = body["producers"]
        assert producer["replication_factor"] == 2
        assert producer["replicas"] == wanted
        # Only the owner knows the lag of its replicas.
        assert ("replication_lag" in producer) is (node is a)
    _status, body = await call(a.api.lookup, "GET", "/lookup?topic=kept")
    assert body["producers"][0]["replication_lag"] == {"c": 4}
    # A dead member is no candidate: the next one in the topic's order replaces it.
    viewer = b if wanted[0] == "c" else c
    viewer.down.add(wanted[0])
    _status, body = await call(viewer.api.lookup, "GET", "/lookup?topic=kept")
    assert body["producers"][0]["replicas"] == list(
        replicas("a", "kept", {"a", "b", "c"} - {wanted[0]}, 2)
    )
    _status, body = await call(b.api.lookup, "GET", "/lookup?topic=plain")
    check_shape(body["producers"][0], PRODUCER_KEYS)
