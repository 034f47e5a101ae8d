"""The cluster-aware producer against real nodes (and a fake member list for failures)."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

import pytest
import trio

from shoal.client.errors import NoNodesAvailable, NSQError
from shoal.client.httpclient import get_json
from shoal.client.producer import ProducerConfig, open_producer
from shoal.errors import ConfigError
from shoal.testing.fake_node import FakeNode, http_address, member_entry

if TYPE_CHECKING:
    from shoal.testing.process import NodeProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def message_count(node: NodeProcess, topic: str) -> int:
    stats = await get_json(http_address(node), "/stats", {"format": "json", "topic": topic})
    return sum(t["message_count"] for t in stats["topics"] or [])


async def test_round_robin_spreads_over_every_live_member(cluster: list[NodeProcess]) -> None:
    async with open_producer(http_address(cluster[0]), strategy="round-robin") as producer:
        assert sorted(e.name for e in producer.endpoints) == ["node-1", "node-2", "node-3"]
        used: collections.Counter[str] = collections.Counter()
        for i in range(30):
            used[(await producer.publish("prod_rr", b"%d" % i)).name] += 1
        assert producer.statistics().published == 30
    assert used == {"node-1": 10, "node-2": 10, "node-3": 10}
    assert [await message_count(n, "prod_rr") for n in cluster] == [10, 10, 10]


async def test_mpub_and_dpub_are_acknowledged(cluster: list[NodeProcess]) -> None:
    async with open_producer(http_address(cluster[1])) as producer:
        await producer.mpublish("prod_batch", [b"a", b"b", b"c"], key="k")
        await producer.publish("prod_batch", b"later", defer=5.0)
        assert producer.statistics().published == 4
    assert sum([await message_count(n, "prod_batch") for n in cluster]) == 4


async def test_consistent_hashing_keeps_a_key_on_one_node(cluster: list[NodeProcess]) -> None:
    async with open_producer(http_address(cluster[2]), strategy="consistent-hash") as producer:
        homes = {(await producer.publish("prod_hash", b"x", key="user-42")).name for _ in range(20)}
        assert len(homes) == 1
        spread = {
            (await producer.publish("prod_hash", b"y", key=f"user-{i}")).name for i in range(30)
        }
        assert len(spread) == 3
        # Without a key the topic is the key: one topic, one node.
        by_topic = {(await producer.publish("prod_hash2", b"z")).name for _ in range(10)}
        assert len(by_topic) == 1


async def test_weighted_sends_nothing_to_a_zero_weight_node(cluster: list[NodeProcess]) -> None:
    weights = {"node-1": 0.0, "node-2": 1.0, "node-3": 1.0}
    async with open_producer(
        http_address(cluster[0]), strategy="weighted", weights=weights
    ) as producer:
        used = {(await producer.publish("prod_w", b"x")).name for _ in range(40)}
    assert used == {"node-2", "node-3"}


async def test_without_discovery_only_the_given_node_is_used(cluster: list[NodeProcess]) -> None:
    config = ProducerConfig(discover=False)
    async with open_producer(http_address(cluster[1]), config=config) as producer:
        used = {(await producer.publish("prod_one", b"x")).tcp_address for _ in range(5)}
    host, port = cluster[1].tcp
    assert used == {f"{host}:{port}"}


async def test_a_refused_message_is_not_tried_elsewhere(cluster: list[NodeProcess]) -> None:
    async with open_producer(http_address(cluster[0])) as producer:
        with pytest.raises(NSQError) as info:
            await producer.publish("prod_bad", b"")
        assert info.value.code == "E_BAD_MESSAGE"
        assert producer.statistics().failovers == 0
        with pytest.raises(ValueError, match="topic"):
            await producer.publish("bad topic", b"x")


@pytest.mark.slow
async def test_killing_a_node_moves_publishing_with_no_error(
    own_cluster: list[NodeProcess],
) -> None:
    victim = own_cluster[2]
    async with open_producer(http_address(own_cluster[0]), strategy="round-robin") as producer:
        acked = [(await producer.publish("prod_fail", b"%d" % i)).name for i in range(30)]
        victim.kill()
        after = [(await producer.publish("prod_fail", b"after-%d" % i)).name for i in range(60)]
        stats = producer.statistics()
    assert acked.count("node-3") == 10
    # Every publish after the kill was acknowledged by a survivor.
    assert set(after) == {"node-1", "node-2"}
    assert stats.published == 90
    assert stats.failovers >= 1
    survivors = [await message_count(n, "prod_fail") for n in own_cluster[:2]]
    assert sum(survivors) >= 20 + 60  # at least once: nothing acknowledged is missing


async def test_a_dead_listed_member_costs_one_attempt(
    nursery: trio.Nursery, cluster: list[NodeProcess]
) -> None:
    fake = FakeNode()
    await nursery.start(fake.serve)
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    dead_port = listener.socket.getsockname()[1]
    await listener.aclose()
    live_host, live_tcp = cluster[0].tcp
    fake_port = int(fake.address.rpartition(":")[2])
    # Both list the fake as their HTTP port, so refreshes keep asking it.
    fake.members = [
        member_entry("a-dead", "127.0.0.1", dead_port, fake_port),
        member_entry("b-live", live_host, live_tcp, fake_port),
    ]
    async with open_producer(fake.address, strategy="consistent-hash") as producer:
        keys = (f"k{i}" for i in range(100))
        key = next(k for k in keys if producer.candidates(k.encode())[0].name == "a-dead")
        for _ in range(5):
            assert (await producer.publish("prod_dead", b"x", key=key)).name == "b-live"
        assert producer.statistics().failovers == 1


async def test_unreachable_nodes_raise_no_nodes_available() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with pytest.raises(NoNodesAvailable, match="refused"):
        async with open_producer(f"127.0.0.1:{port}"):
            pass  # pragma: no cover


def test_producer_config_refuses_bad_values() -> None:
    with pytest.raises(ConfigError):
        ProducerConfig(refresh_interval=0)
    with pytest.raises(ConfigError):
        ProducerConfig(failure_backoff=5, max_failure_backoff=1)


async def test_concurrent_publishes_share_mpubs_on_a_real_node(cluster: list[NodeProcess]) -> None:
    config = ProducerConfig(discover=False)
    async with open_producer(http_address(cluster[0]), config=config) as producer:

        async def publish_ten(task: int) -> None:
            for i in range(10):
                await producer.publish("prod_gather", b"%d-%d" % (task, i))

        async with trio.open_nursery() as nursery:
            for task in range(64):
                nursery.start_soon(publish_ten, task)
        [conn] = producer._connections.values()
        stats = conn.statistics()
        assert producer.statistics().published == 640
    assert await message_count(cluster[0], "prod_gather") == 640
    assert stats.published == 640
    # One command of the topic is in flight at a time; the other publishers
    # wait in the batch that leaves next, so commands carry many messages.
    assert stats.publish_commands <= 640 // 4
