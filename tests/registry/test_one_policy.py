"""One registry scenario, two drivers of the same gossip policy, the same registry state.

The scenario: three owners announce topics; one owner writes a change
whose broadcast is lost and then one that is not (a gap, which the policy
repairs at once, long before the periodic exchange); an owner deletes a
topic (a tombstone); an owner crashes and comes back with a new generation
and announces its topic again (a rejoin). It runs once through the real
node's wiring (`TopicRouting.start` over `MembershipDriver`s on the
in-memory transport, trio's virtual clock) and once through the simulator,
and every member ends with the same registry in both worlds, versions and
wall stamps aside (the two clocks differ).
"""

from __future__ import annotations

import dataclasses
import random
from typing import TYPE_CHECKING, Any

import pytest
import trio

from shoal.cluster.membership_driver import MembershipDriver
from shoal.cluster.routing import TopicRouting
from shoal.membership import MembershipConfig, MemberState
from shoal.queue.broker import Broker
from shoal.queue.config import QueueConfig
from shoal.registry import SYNC_INTERVAL, NodeInfo, Registry, RegistryGossip
from shoal.simulations.runner import RunSettings, Simulation
from shoal.testing import MemoryNet, eventually

if TYPE_CHECKING:
    from shoal.registry import Registry as RegistryType

NAMES = ("node-0", "node-1", "node-2")
#: Well under the periodic exchange: a gap must be repaired by the policy's
#: own trigger, not by the next random exchange.
GAP_REPAIR_WITHIN = 0.5 * 0.8 * SYNC_INTERVAL
CONFIG = MembershipConfig.local()

State = dict[str, dict[str, Any]]


def normalized(registry: RegistryType) -> State:
    """Owner -> key -> value, without versions, generations or wall stamps."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if k != "at"}
        return value

    return {
        owner: {key: plain(value) for key, (value, _version) in entries.items()}
        for owner, (_generation, entries) in registry.snapshot().items()
    }


def holds(registry: RegistryType, owner: str, key: str) -> bool:
    entries = registry.snapshot().get(owner, (0, {}))[1]
    return key in entries and entries[key][0] is not None


# -- the real node's wiring, in memory -------------------------------------------


@dataclasses.dataclass
class Peer:
    gossip: RegistryGossip
    broker: Broker
    scope: trio.CancelScope
    driver: MembershipDriver


async def boot(nursery: trio.Nursery, net: MemoryNet, index: int) -> Peer:
    name = NAMES[index]
    host = f"10.0.0.{index}"
    info = NodeInfo(
        broadcast_address=host, hostname=name, tcp_port=4150, http_port=4151, version="sim"
    )
    now = trio.current_time()
    registry = Registry(name, generation=int(now * 1e9) + 1, info=info, now=now)
    gossip = RegistryGossip(registry, clock=trio.current_time)
    driver = MembershipDriver(
        CONFIG,
        name=name,
        bind=f"{host}:4160",
        rng=random.Random(name),
        delegate=gossip,
        transport=net.transport(),
    )
    broker = Broker(QueueConfig())
    scope = trio.CancelScope()

    async def run(*, task_status: trio.TaskStatus[None]) -> None:
        with scope:
            async with trio.open_nursery() as inner:
                await inner.start(driver.serve)
                TopicRouting.start(
                    inner,
                    driver,
                    gossip,
                    broker,
                    wall=trio.current_time,
                    monotonic=trio.current_time,
                )
                task_status.started()

    await nursery.start(run)
    return Peer(gossip, broker, scope, driver)


def create(peer: Peer, topic: str) -> None:
    now = trio.current_time()
    peer.broker.get_or_create_topic(topic, now)
    peer.broker.get_or_create_channel(topic, "archive", now)


def all_alive(peers: list[Peer]) -> bool:
    return all(
        {m.name: m.state for m in p.driver.members()} == dict.fromkeys(NAMES, MemberState.ALIVE)
        for p in peers
    )


async def real_world() -> dict[str, State]:
    net = MemoryNet()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            peers = [await boot(nursery, net, i) for i in range(3)]
            for peer in peers[1:]:
                await peer.driver.join(["10.0.0.0:4160"])
            await eventually(lambda: all_alive(peers))
            a, b, c = peers
            create(a, "orders")
            create(b, "billing")
            create(c, "audit")
            await trio.sleep(5)
            # A gap: a change whose broadcast is lost, then one that travels.
            now = trio.current_time()
            a.gossip.registry.set_topic("quiet", ["archive"], wall=now, now=now)
            create(a, "loud")
            started = trio.current_time()
            await eventually(
                lambda: all(holds(p.gossip.registry, "node-0", "t:quiet") for p in peers)
            )
            assert trio.current_time() - started < GAP_REPAIR_WITHIN
            # A tombstone.
            b.broker.delete_topic("billing")
            await trio.sleep(5)
            # A rejoin: c crashes, is declared dead, comes back with a new generation.
            c.scope.cancel()
            await eventually(
                lambda: all(
                    (m := p.driver.member("node-2")) is not None and m.state is MemberState.DEAD
                    for p in (a, b)
                )
            )
            c = peers[2] = await boot(nursery, net, 2)
            await c.driver.join(["10.0.0.0:4160"])
            await eventually(lambda: all_alive(peers))
            create(c, "audit")
            await trio.sleep(2 * SYNC_INTERVAL)
            states = {NAMES[i]: normalized(p.gossip.registry) for i, p in enumerate(peers)}
            nursery.cancel_scope.cancel()
    return states


# -- the simulator ---------------------------------------------------------------


def simulated_world() -> dict[str, State]:
    sim = Simulation(RunSettings(nodes=3, profile="local"), duration=900.0)
    run = sim.scheduler.run_until
    run(10.0)
    for name, topic in zip(NAMES, ("orders", "billing", "audit"), strict=True):
        sim.create_topic(name, topic)
    run(15.0)
    now = sim.now
    sim.registries["node-0"].registry.set_topic("quiet", ["archive"], wall=now, now=now)
    sim.create_topic("node-0", "loud")
    run(now + GAP_REPAIR_WITHIN)
    assert all(holds(sim.registries[n].registry, "node-0", "t:quiet") for n in NAMES)
    holder = sim.registries["node-1"]
    entry = holder.registry.remove_topic("billing", sim.now)
    assert entry is not None
    holder.send(entry)
    run(sim.now + 5)
    sim.crash("node-2")
    while any(sim.view(n).get("node-2") is not MemberState.DEAD for n in NAMES[:2]):
        assert sim.now < 600.0, "node-2 was never declared dead"
        run(sim.now + 1)
    sim.restart("node-2")
    while any(set(sim.view(n).values()) != {MemberState.ALIVE} for n in NAMES):
        assert sim.now < 800.0, "node-2 never rejoined"
        run(sim.now + 1)
    sim.create_topic("node-2", "audit")
    run(sim.now + 2 * SYNC_INTERVAL)
    return {name: normalized(sim.registries[name].registry) for name in NAMES}


@pytest.mark.slow
async def test_node_routing_and_simulator_reach_the_same_registry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    real = await real_world()
    simulated = simulated_world()
    expected_topics = {
        "node-0": {"t:orders", "t:quiet", "t:loud"},
        "node-1": {"t:billing"},
        "node-2": {"t:audit"},
    }
    for world in (real, simulated):
        first = world["node-0"]
        assert all(state == first for state in world.values())
        for owner, keys in expected_topics.items():
            assert {k for k in first[owner] if k.startswith("t:")} == keys
        assert first["node-1"]["t:billing"] is None  # the tombstone travelled
    assert real == simulated
