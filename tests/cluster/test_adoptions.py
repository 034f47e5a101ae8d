"""The owner's side of announced adoptions, in process: what it drops and when it serves."""

from __future__ import annotations

import trio

from shoal.cluster.adoptions import Adoptions
from shoal.cluster.routing import TopicRouting
from shoal.queue.broker import Broker
from shoal.queue.config import QueueConfig
from shoal.queue.message import MessageIDGenerator
from shoal.registry import NodeInfo, Registry, RegistryGossip

WALL = 1_795_000_000.0
INFO = NodeInfo(
    broadcast_address="127.0.0.1", hostname="h", tcp_port=4150, http_port=4151, version="v"
)


class Owner:
    """A node's broker, registry and adoptions, without sockets."""

    def __init__(self, name: str = "a") -> None:
        self.broker = Broker(QueueConfig())
        self.registry = Registry(name, generation=1, info=INFO, now=0.0)
        self.gossip = RegistryGossip(self.registry, clock=lambda: 1.0)
        self.routing = TopicRouting(
            self.gossip, self.broker, wall=lambda: WALL, monotonic=lambda: 1.0
        )
        self.adoptions = Adoptions(
            name, self.broker, self.routing, wall=lambda: WALL, monotonic=lambda: 1.0
        )
        self.finished: list[bytes] = []

    def publish(self, topic: str, bodies: list[bytes]) -> None:
        found, _ = self.broker.get_or_create_topic(topic, WALL)
        found.publish(bodies, WALL)

    def drain(self, topic: str, channel: str) -> list[bytes]:
        """Deliver and FIN everything ready in ``channel``: the bodies, in order."""
        found = self.broker.get_or_create_channel(topic, channel, WALL)[0]
        out = []
        # Bounded: every round takes at least one message, or ends.
        while messages := found.deliver(1, WALL, 30.0, 100):
            for message in messages:
                out.append(message.body)
                found.finish(1, message.id)
        return out

    def ids(self, topic: str, channel: str) -> list[bytes]:
        """The IDs ``channel`` holds, read through a delivery that is then requeued."""
        found = self.broker.get_or_create_channel(topic, channel, WALL)[0]
        messages = found.deliver(2, WALL, 30.0, 1000)
        for message in messages:
            found.requeue(2, message.id, 0.0, WALL)
        return [m.id for m in messages]


def adopter_says(owner: Owner, topic: str, lo: bytes, hi: bytes, count: int) -> None:
    """Another member announces an adoption; the owner hears the broadcast."""
    other = Registry("r", generation=1, info=INFO, now=0.0)
    other_gossip = RegistryGossip(other, clock=lambda: 1.0)
    sent: list[bytes] = []
    other_gossip.attach(broadcast=lambda key, data: sent.append(data), member=lambda n: None)
    other_gossip.send(other.adopt(topic, owner.registry.name, lo, hi, count, wall=WALL, now=1.0))
    for data in sent:
        owner.gossip.notify_message(data)


def test_an_owner_that_learns_an_adoption_drops_exactly_the_adopted_range() -> None:
    owner = Owner()
    owner.broker.get_or_create_channel("t", "work", WALL)
    owner.publish("t", [b"m%d" % i for i in range(10)])
    ids = owner.ids("t", "work")
    # The adopter took m2..m6; m0 and m1 it knew were finished.
    adopter_says(owner, "t", ids[2], ids[6], 5)
    owner.publish("t", [b"later"])  # accepted after the adoption: a higher ID
    channel = owner.broker.topics["t"].channels["work"]
    channel.on_finish = owner.finished.append
    assert owner.drain("t", "work") == [b"m0", b"m1", b"m7", b"m8", b"m9", b"later"]
    assert owner.adoptions.dropped == 5
    # The drops were FINs as far as the replicas are concerned.
    assert owner.finished[:5] == ids[2:7]
    stats = owner.adoptions.statistics()
    assert stats["dropped_as_adopted"] == 5
    assert [(x["adopter"], x["topic"], x["messages"]) for x in stats["of_this_node"]] == [
        ("r", "t", 5)
    ]


def test_a_channel_created_after_the_adoption_drops_too_and_other_topics_do_not() -> None:
    owner = Owner()
    owner.publish("t", [b"x", b"y"])  # no channel yet: the topic's backlog keeps them
    owner.publish("u", [b"z"])
    adopter_says(owner, "t", b"0" * 16, b"f" * 16, 2)
    owner.broker.get_or_create_channel("u", "work", WALL)
    owner.broker.get_or_create_channel("t", "work", WALL)
    assert owner.broker.topics["t"].pump(WALL, 100) == 2
    assert owner.broker.topics["u"].pump(WALL, 100) == 1
    assert owner.drain("t", "work") == []
    assert owner.drain("u", "work") == [b"z"]
    assert owner.adoptions.dropped == 2


def test_another_owners_adoption_drops_nothing_here() -> None:
    owner = Owner()
    owner.broker.get_or_create_channel("t", "work", WALL)
    owner.publish("t", [b"mine"])
    other = Registry("r", generation=1, info=INFO, now=0.0)
    entry = other.adopt("t", "someone-else", b"0" * 16, b"f" * 16, 1, wall=WALL, now=1.0)
    owner.registry.apply("r", 1, False, [entry], 1.0)
    assert owner.drain("t", "work") == [b"mine"]


async def test_a_restart_waits_for_one_exchange_and_no_longer(
    autojump_clock: trio.abc.Clock,
) -> None:
    owner = Owner()
    assert await owner.adoptions.wait_for_view(needed=False, within=5.0)
    before = trio.current_time()
    assert not await owner.adoptions.wait_for_view(needed=True, within=5.0)
    assert trio.current_time() - before == 5.0

    async def exchange_later() -> None:
        await trio.sleep(1.0)
        peer = RegistryGossip(Registry("p", generation=1, info=INFO, now=0.0), clock=lambda: 1.0)
        delta, _digest = peer.answer_exchange(owner.gossip.open_exchange())
        owner.gossip.apply_exchange(delta, 1.0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(exchange_later)
        before = trio.current_time()
        assert await owner.adoptions.wait_for_view(needed=True, within=5.0)
        assert trio.current_time() - before == 1.0
    # Once caught up, a later start does not wait at all.
    assert await owner.adoptions.wait_for_view(needed=True, within=5.0)


def test_messages_of_another_node_id_in_the_range_are_not_this_nodes_to_drop() -> None:
    owner = Owner()
    owner.adoptions.node_id = 5
    owner.broker.get_or_create_channel("t", "work", WALL)
    topic = owner.broker.topics["t"]
    ts = int(WALL * 1e9)
    mine = MessageIDGenerator(5).next_id(ts)
    theirs = MessageIDGenerator(9).next_id(ts)  # adopted here from another member earlier
    topic.put_published((mine,), (b"mine",), ts, WALL, 0.0, ("work",))
    topic.put_published((theirs,), (b"theirs",), ts, WALL, 0.0, ("work",))
    adopter_says(owner, "t", min(mine, theirs), max(mine, theirs), 1)
    assert owner.drain("t", "work") == [b"theirs"]
    assert owner.adoptions.dropped == 1
