"""Registry state is applied only for the life of its owner that membership admitted."""

from __future__ import annotations

from shoal.cluster.registry import NodeInfo, Registry
from shoal.cluster.routing import TopicRouting
from shoal.queue.broker import Broker
from shoal.queue.config import QueueConfig


class Node:
    """Routing without sockets: broadcasts land in a list."""

    def __init__(self, name: str, generation: int, identities: dict[str, int]) -> None:
        self.sent: list[bytes] = []
        self.broker = Broker(QueueConfig())
        info = NodeInfo(broadcast_address="10.1.0.1", hostname=name, tcp_port=4150,
                        http_port=4151, version="0.1.0")  # fmt: skip
        self.registry = Registry(name, generation=generation, info=info, now=0.0)
        self.routing = TopicRouting(
            self.registry,
            self.broker,
            broadcast=lambda key, data: self.sent.append(data),
            alive=lambda owner: True,
            identity=identities.get,
            wall=lambda: 1_795_000_000.0,
            monotonic=lambda: 1.0,
        )

    def publish(self, topic: str) -> None:
        self.broker.get_or_create_topic(topic, 0.0)


def test_state_under_another_generation_of_a_known_member_is_dropped() -> None:
    identities = {"b": 20}
    observer = Node("a", 10, identities)
    real = Node("b", 20, {})
    impostor = Node("b", 99, {})  # same name, started later: a newer generation
    real.publish("orders")
    impostor.publish("other")
    for data in real.sent:
        observer.routing.notify_message(data)
    for data in impostor.sent:
        assert observer.routing.notify_message(data) is False  # not news: never re-gossiped
    assert observer.registry.topics(lambda owner: True) == ["orders"]
    assert observer.routing.messages_dropped == len(impostor.sent)


def test_state_of_an_owner_membership_does_not_know_yet_is_applied() -> None:
    observer = Node("a", 10, {})
    newcomer = Node("c", 30, {})
    newcomer.publish("fresh")
    for data in newcomer.sent:
        observer.routing.notify_message(data)
    assert observer.registry.topics(lambda owner: True) == ["fresh"]
    assert observer.routing.messages_dropped == 0
