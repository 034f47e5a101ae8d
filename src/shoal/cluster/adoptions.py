"""Adoptions in the gossiped registry: what an adopter announces, what a returning owner drops.

Rules:
1. An adopter announces each adoption in its own registry state
   (`Registry.adopt`): the owner, the topic and the range ``[lo, hi]`` of
   the owner's message IDs it took. Every member learns it by gossip.
2. An owner drops, instead of delivering again, every message of its topic
   whose ID lies in an announced range of its own (`Adoption.covers`): the
   channels of the topic get a `Channel.discard` test, so the message is
   finished (and the FIN forwarded to the replicas) when it next reaches
   delivery, wherever it waited. Messages it accepted after the adoption
   have higher IDs and are never touched: the topic's ID generator is
   moved past every adopted range (`Topic.ids_after`), so even a clock
   that went back across a restart cannot put a new message in one.
3. A restarted owner learns before it serves: `wait_for_view` holds the
   node's start (its TCP and HTTP listeners open after it) until one
   registry exchange with a peer has completed, bounded by
   `RETURN_SYNC_TIMEOUT`. An owner back from a partition learns when the
   heal's exchange or broadcast arrives, and drops from then on.
4. The adopter expires its ranges after `ADOPTION_TTL` (`run`), so the
   state stays bounded.

Why a range of IDs is exact: the adopter held a prefix of the owner's
records of one life, minus what it knew was finished. An owner's IDs of one
topic increase in publish order within a life and with the wall clock
across lives (the registry's generations assume that clock too), so each
of the owner's messages with an ID in ``[lo, hi]`` was adopted, or finished
on the owner already; older messages (below ``lo``, from a life before the
topic was replicated) and newer ones (above ``hi``) are outside it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from shoal.queue.broker import ChannelCreated, TopicCreated
from shoal.queue.message import node_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from shoal.cluster.routing import TopicRouting
    from shoal.queue.broker import Broker, BrokerEvent
    from shoal.queue.topic import Topic

__all__ = ["EXPIRY_INTERVAL", "RETURN_SYNC_TIMEOUT", "Adoptions"]

log = logging.getLogger("shoal.replication")

#: Longest wait of a restarting node for its first registry exchange
#: before it serves (no peer answered: it serves what its disk kept, and
#: drops adopted messages once it learns of them).
RETURN_SYNC_TIMEOUT = 5.0
#: Seconds between two passes that expire this node's old adoption ranges.
EXPIRY_INTERVAL = 60.0


class Adoptions:
    """This node's side of announced adoptions: as an adopter and as a returning owner.

    Args:
        name: this node's member name.
        broker: the node's broker (its topics' channels get the drop test).
        routing: the gossiped registry and the way to broadcast to it.
        wall: wall-clock seconds (adoption stamps and their expiry).
        monotonic: local monotonic seconds (registry bookkeeping).
        node_id: the node ID this node writes into its message IDs, or
            None. When given, only messages carrying it are dropped: a
            topic may also hold messages this node adopted from others,
            whose IDs can fall in a range numerically without having been
            adopted from here.

    Attributes:
        dropped: messages this node finished instead of delivering them
            again, because another member had adopted them.
    """

    def __init__(
        self,
        name: str,
        broker: Broker,
        routing: TopicRouting,
        *,
        wall: Callable[[], float],
        monotonic: Callable[[], float],
        node_id: int | None = None,
    ) -> None:
        self.name = name
        self.node_id = node_id
        self.broker = broker
        self.routing = routing
        self._wall = wall
        self._monotonic = monotonic
        self.dropped = 0
        # topic -> adopted ranges of this node's IDs, as currently announced
        self._ranges: dict[str, list[tuple[bytes, bytes]]] = {}
        self._seen = -1
        routing.registry.add_listener(self._on_registry_change)
        broker.add_listener(self._on_broker_event)
        self.refresh()

    # -- adopter side -----------------------------------------------------------

    def announce(self, owner: str, topic: str, lo: bytes, hi: bytes, count: int) -> None:
        """This node adopted ``count`` of ``owner``'s messages of ``topic``, IDs in [lo, hi]."""
        registry = self.routing.registry
        entry = registry.adopt(
            topic, owner, lo, hi, count, wall=self._wall(), now=self._monotonic()
        )
        self.routing.gossip.send(entry)

    def expire(self) -> int:
        """Withdraw this node's ranges older than `ADOPTION_TTL`; how many entries changed."""
        registry = self.routing.registry
        entries = registry.expire_adoptions(wall=self._wall(), now=self._monotonic())
        for entry in entries:
            self.routing.gossip.send(entry)
        return len(entries)

    async def run(self) -> None:
        """Expire old ranges every `EXPIRY_INTERVAL`, forever."""
        while True:
            await trio.sleep(EXPIRY_INTERVAL)
            self.expire()

    # -- owner side -------------------------------------------------------------

    def _on_registry_change(self) -> None:
        if self.routing.registry.adoption_changes != self._seen:
            self.refresh()

    def refresh(self) -> None:
        """Take the announced adoptions of this node's topics; give their channels the drop test."""
        registry = self.routing.registry
        self._seen = registry.adoption_changes
        ranges: dict[str, list[tuple[bytes, bytes]]] = {}
        for adoption in registry.adoptions(self.name):
            ranges.setdefault(adoption.topic, []).append((adoption.lo, adoption.hi))
        learned = [t for t in ranges if sorted(ranges[t]) != sorted(self._ranges.get(t, []))]
        self._ranges = ranges
        for name in learned:
            log.warning(
                "topic %s: other members adopted %d range(s) of this node's messages;"
                " those are dropped instead of delivered again",
                name,
                len(ranges[name]),
            )
        for topic in list(self.broker.topics.values()):
            self._install(topic)

    def _on_broker_event(self, event: BrokerEvent) -> None:
        if isinstance(event, TopicCreated | ChannelCreated):
            topic = self.broker.topics.get(event.topic)
            if topic is not None:
                self._install(topic)

    def _install(self, topic: Topic) -> None:
        ranges = self._ranges.get(topic.name)
        discard = self._discard_for(topic.name) if ranges else None
        for channel in topic.channels.values():
            channel.discard = discard
        if ranges:
            topic.ids_after(max(hi for _lo, hi in ranges))

    def _discard_for(self, topic: str) -> Callable[[bytes], bool]:
        node_id = self.node_id

        def discard(msg_id: bytes) -> bool:
            for lo, hi in self._ranges.get(topic, ()):
                if lo <= msg_id <= hi:
                    if node_id is not None and node_of(msg_id) != node_id:
                        return False  # another node's ID: not ours to judge
                    self.dropped += 1
                    return True
            return False

        return discard

    async def wait_for_view(self, *, needed: bool, within: float = RETURN_SYNC_TIMEOUT) -> bool:
        """Hold a start until the registry caught up with a peer; False when ``within`` s passed.

        Args:
            needed: this node restarted with replicated topics on its disk
                and has peers to learn from; otherwise nothing is held.
            within: the bound of the wait, in seconds.
        """
        gossip = self.routing.gossip
        if not needed or gossip.exchanges_applied:
            return True
        caught_up = trio.Event()
        gossip.add_exchange_listener(caught_up.set)
        with trio.move_on_after(within):
            await caught_up.wait()
            return True
        log.warning(
            "no registry exchange within %.1fs: serving what the disk kept; adopted"
            " messages are dropped once their adoption is learned",
            within,
        )
        return False

    # -- visibility -------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        """The ``adoptions`` part of ``/stats``'s ``replication`` object."""
        registry = self.routing.registry
        return {
            "announced": len(registry.adoptions()),
            "of_this_node": [
                {
                    "adopter": a.adopter,
                    "topic": a.topic,
                    "first_id": a.lo.decode("ascii", "replace"),
                    "last_id": a.hi.decode("ascii", "replace"),
                    "messages": a.count,
                }
                for a in sorted(registry.adoptions(self.name), key=lambda a: (a.topic, a.at))
            ],
            "dropped_as_adopted": self.dropped,
        }
