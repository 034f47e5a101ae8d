"""The registry's gossip policy: broadcasts, gap repair, whom to exchange with, the exchange."""

from __future__ import annotations

import random

import pytest

from shoal.errors import RemoteProtocolError
from shoal.membership.events import MemberJoined, MemberSuspected
from shoal.membership.state import Member, MemberState
from shoal.registry import (
    MAX_BROADCAST_KEY,
    NodeInfo,
    OwnerDelta,
    Registry,
    RegistryGossip,
    broadcast_of,
    encode_delta,
)
from shoal.registry.store import TOMBSTONE_GC


def member(name: str, state: MemberState = MemberState.ALIVE) -> Member:
    return Member(
        name=name,
        address=(f"10.0.0.{name[-1]}", 4160),
        state=state,
        incarnation=1,
        meta={},
        state_changed_at=0.0,
    )


class World:
    """Gossip cores wired by hand: broadcasts land in a list, a dict holds the view."""

    def __init__(self, name: str, now: float = 0.0) -> None:
        info = NodeInfo(
            broadcast_address="10.0.0.1", hostname=name, tcp_port=4150, http_port=4151, version="t"
        )
        self.now = now
        self.sent: list[tuple[str, bytes]] = []
        self.view: dict[str, Member] = {}
        self.wakes = 0
        registry = Registry(name, generation=1, info=info, now=now)
        self.gossip = RegistryGossip(registry, clock=lambda: self.now, wake=self._wake)
        self.gossip.attach(broadcast=self._broadcast, member=self.view.get)

    def _broadcast(self, key: str, data: bytes) -> None:
        self.sent.append((key, data))

    def _wake(self) -> None:
        self.wakes += 1


def test_broadcast_of_names_the_owner_and_key() -> None:
    world = World("node-1")
    entry = world.gossip.registry.set_topic("orders", ["c"], wall=1.0, now=1.0)
    key, data = broadcast_of(world.gossip.registry, entry)
    assert key == "reg:node-1:t:orders"
    receiver = World("node-2")
    assert receiver.gossip.notify_message(data) is True


def test_broadcast_key_is_cut_to_the_limit() -> None:
    world = World("n" * 150 + "1")
    entry = world.gossip.registry.set_topic("t" * 64, [], wall=1.0, now=1.0)
    key, _ = broadcast_of(world.gossip.registry, entry)
    assert len(key) == MAX_BROADCAST_KEY


def test_send_broadcasts_through_the_attached_engine() -> None:
    world = World("node-1")
    world.gossip.announce()
    world.gossip.send(world.gossip.registry.set_topic("t", [], wall=1.0, now=1.0))
    assert [key for key, _ in world.sent] == ["reg:node-1:info", "reg:node-1:t:t"]


def test_news_with_a_gap_queues_its_live_owner_and_wakes() -> None:
    sender = World("node-2")
    first = sender.gossip.registry.set_topic("a", [], wall=1.0, now=1.0)
    second = sender.gossip.registry.set_topic("b", [], wall=1.0, now=1.0)
    del first  # missed: only the second broadcast arrives
    receiver = World("node-1")
    receiver.view["node-2"] = member("node-2")
    assert receiver.gossip.notify_message(broadcast_of(sender.gossip.registry, second)[1])
    assert receiver.gossip.pending == [("10.0.0.2", 4160)]
    assert receiver.wakes == 1


def test_gap_of_a_dead_owner_is_not_repaired() -> None:
    sender = World("node-2")
    sender.gossip.registry.set_topic("a", [], wall=1.0, now=1.0)
    second = sender.gossip.registry.set_topic("b", [], wall=1.0, now=1.0)
    receiver = World("node-1")
    receiver.view["node-2"] = member("node-2", MemberState.DEAD)
    receiver.gossip.notify_message(broadcast_of(sender.gossip.registry, second)[1])
    assert receiver.gossip.pending == []
    assert receiver.wakes == 0


def test_news_in_order_queues_nothing() -> None:
    sender = World("node-2")
    receiver = World("node-1")
    receiver.view["node-2"] = member("node-2")
    # The info entry (version 1) first, then the topic (version 2): no gap.
    receiver.gossip.notify_message(encode_delta(sender.gossip.registry.delta({})))
    entry = sender.gossip.registry.set_topic("a", [], wall=1.0, now=1.0)
    assert receiver.gossip.notify_message(broadcast_of(sender.gossip.registry, entry)[1])
    assert receiver.gossip.pending == []


def test_malformed_broadcast_raises_and_applies_nothing() -> None:
    world = World("node-1")
    with pytest.raises(RemoteProtocolError):
        world.gossip.notify_message(b"\xff\x00")
    assert world.gossip.registry.owners() == ["node-1"]


def test_joined_member_is_queued_and_a_suspected_one_is_not() -> None:
    world = World("node-1")
    world.gossip.on_member_events(
        [
            MemberSuspected(member=member("node-3"), accuser="node-1"),
            MemberJoined(member=member("node-2")),
        ]
    )
    assert world.gossip.pending == [("10.0.0.2", 4160)]
    assert world.wakes == 1


def test_take_targets_prefers_the_queue_and_deduplicates() -> None:
    world = World("node-1")
    world.gossip.pending = [("a", 1), ("b", 2), ("a", 1)]
    picked: list[int] = []

    def pick(rng: random.Random) -> tuple[str, int] | None:
        picked.append(1)
        return ("z", 9)

    assert world.gossip.take_targets(random.Random(0), pick) == [("a", 1), ("b", 2)]
    assert picked == []
    assert world.gossip.pending == []
    assert world.gossip.take_targets(random.Random(0), pick) == [("z", 9)]
    assert world.gossip.take_targets(random.Random(0), lambda rng: None) == []


def test_next_interval_is_jittered_around_the_sync_interval() -> None:
    rng = random.Random(1)
    values = [RegistryGossip.next_interval(rng) for _ in range(200)]
    assert min(values) >= 24.0
    assert max(values) <= 36.0
    assert len(set(values)) > 100


def test_exchange_legs_leave_both_sides_equal() -> None:
    a = World("node-1")
    b = World("node-2")
    a.gossip.registry.set_topic("only-a", ["x"], wall=1.0, now=1.0)
    b.gossip.registry.set_topic("only-b", ["y"], wall=1.0, now=1.0)
    delta, digest = b.gossip.answer_exchange(a.gossip.open_exchange())
    a.gossip.apply_exchange(delta, 2.0)
    b.gossip.apply_exchange(a.gossip.delta_for(digest), 2.0)
    assert a.gossip.registry.snapshot() == b.gossip.registry.snapshot()
    # Between equals only empty deltas travel.
    delta, digest = b.gossip.answer_exchange(a.gossip.open_exchange())
    assert delta == encode_delta([])
    assert a.gossip.delta_for(digest) == encode_delta([])


def test_exchange_rejects_a_malformed_digest() -> None:
    with pytest.raises(RemoteProtocolError):
        World("node-1").gossip.answer_exchange(b"\x00garbage")


def test_digest_is_cached_until_the_registry_changes() -> None:
    world = World("node-1")
    first = world.gossip.digest()
    assert world.gossip.digest()[1] is first[1]
    world.gossip.registry.set_topic("t", [], wall=1.0, now=1.0)
    assert world.gossip.digest()[0]["node-1"][1] == 2


def test_collect_forgets_old_tombstones() -> None:
    sender = World("node-2")
    sender.gossip.registry.set_topic("gone", [], wall=1.0, now=1.0)
    sender.gossip.registry.remove_topic("gone", 1.0)
    receiver = World("node-1")
    receiver.gossip.apply_exchange(encode_delta(sender.gossip.registry.delta({})), 1.0)
    keys = receiver.gossip.registry.snapshot()["node-2"][1]
    assert "t:gone" in keys
    receiver.gossip.collect(1.0 + TOMBSTONE_GC + 1)
    assert "t:gone" not in receiver.gossip.registry.snapshot()["node-2"][1]


def test_alive_is_true_of_itself_and_of_live_members_only() -> None:
    world = World("node-1")
    world.view["node-2"] = member("node-2", MemberState.SUSPECT)
    world.view["node-3"] = member("node-3", MemberState.LEFT)
    assert world.gossip.alive("node-1")
    assert world.gossip.alive("node-2")
    assert not world.gossip.alive("node-3")
    assert not world.gossip.alive("node-4")


def test_lone_entry_broadcast_carries_watermark_zero() -> None:
    world = World("node-1")
    entry = world.gossip.registry.set_topic("t", [], wall=1.0, now=1.0)
    _, data = broadcast_of(world.gossip.registry, entry)
    assert data == encode_delta([OwnerDelta("node-1", 1, 0, False, [entry])])
