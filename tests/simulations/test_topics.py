"""The simulated nodes' topic registries: broadcasts and the digest exchange."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from shoal.errors import RemoteProtocolError
from shoal.registry import SYNC_INTERVAL, OwnerDelta, encode_delta
from shoal.simulations.topics import SimulatedRegistry

if TYPE_CHECKING:
    from collections.abc import Callable

    from shoal.simulations.runner import Simulation


def holder(name: str) -> SimulatedRegistry:
    return SimulatedRegistry(name, generation=1, host="10.0.0.1", clock=lambda: 0.0, now=0.0)


def test_broadcast_entry_is_news_once() -> None:
    sender = holder("a")
    receiver = holder("b")
    entry = sender.registry.set_topic("orders", ["archive"], wall=1.0, now=1.0)
    data = encode_delta([OwnerDelta("a", 1, 0, False, [entry])])
    assert receiver.notify_message(data) is True
    assert receiver.notify_message(data) is False  # a repeat is not re-gossiped
    result = receiver.registry.lookup("orders", lambda owner: True, wall=2.0)
    assert result is not None
    assert result[0] == ["archive"]


def test_malformed_broadcast_is_a_remote_error() -> None:
    with pytest.raises(RemoteProtocolError):
        holder("b").notify_message(b"\xff\x00")


def test_push_pull_carries_no_registry_state() -> None:
    node = holder("a")
    assert node.local_state() == b""
    node.merge_remote_state(b"anything", "b")
    assert node.registry.owners() == ["a"]


def test_digest_is_cached_until_the_registry_changes() -> None:
    node = holder("a")
    first = node.digest()
    assert node.digest()[1] is first[1]  # the same encoding, not a new one
    node.registry.set_topic("t", [], wall=1.0, now=1.0)
    assert node.digest()[0]["a"][1] == 2


def test_digest_exchange_repairs_what_broadcasts_missed(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim(4)
    sim.scheduler.run_until(1.0)
    # A change written without its broadcast: only the exchange can spread it.
    sim.registries["node-2"].registry.set_topic("quiet", ["c"], wall=1.0, now=1.0)
    assert not sim.recorder.registries_equal()
    sim.scheduler.run_until(1.0 + 4 * SYNC_INTERVAL)
    assert sim.recorder.registries_equal()
    for name in sim.names:
        result = sim.registries[name].registry.lookup("quiet", lambda owner: True, wall=9.0)
        assert result is not None
    assert sim.sync.exchanges > 0
    assert sim.sync.exchanges_failed == 0


def test_digest_exchange_costs_bytes_even_between_equals(
    make_sim: Callable[..., Simulation],
) -> None:
    with_registry = make_sim(4)
    without = make_sim(4, registry=False)
    for sim in (with_registry, without):
        sim.scheduler.run_until(60.0)
    stream_bytes = [
        sum(h.stats.stream_bytes_sent for h in sim.network.hosts)
        for sim in (with_registry, without)
    ]
    assert stream_bytes[0] > stream_bytes[1]


def test_exchange_with_a_partitioned_member_times_out(
    make_sim: Callable[..., Simulation],
) -> None:
    # A long suspicion keeps the cut-off member live long enough to be picked.
    sim = make_sim(2, overrides=(("suspicion_mult", 100),))
    sim.partition([["node-0"], ["node-1"]], "cut")
    sim.scheduler.run_until(3 * SYNC_INTERVAL)
    assert sim.sync.exchanges_failed > 0


def test_refuted_suspicions_prompt_no_exchange(make_sim: Callable[..., Simulation]) -> None:
    # Heavy loss: members are suspected and refute all the time, but one that
    # was only suspected kept its registry and its broadcasts, so the loops
    # exchange at their periodic rate only.
    sim = make_sim(10, loss=0.2)
    sim.scheduler.run_until(300.0)
    suspicions = sum(e.statistics().suspicions for e in map(sim.engine, sim.names) if e)
    assert suspicions > 20
    periodic = 10 * 300.0 / (0.8 * SYNC_INTERVAL)
    assert sim.sync.exchanges <= periodic
