"""The modelled network and host faults, seen through the engines they drive."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from shoal.membership import MemberState
from shoal.simulations.network import PROFILES, Latency

if TYPE_CHECKING:
    from collections.abc import Callable

    from shoal.membership import Membership
    from shoal.simulations.runner import Simulation


def totals(sim: Simulation) -> tuple[int, int]:
    hosts = sim.network.hosts
    return sum(h.stats.packets_sent for h in hosts), sum(h.stats.packets_received for h in hosts)


def engine_of(sim: Simulation, name: str) -> Membership:
    engine = sim.engine(name)
    assert engine is not None
    return engine


def test_latency_draws_stay_between_base_and_cap() -> None:
    latency = Latency(base=0.001, jitter=0.0005)
    rng = random.Random(1)
    draws = [latency.draw(rng) for _ in range(2000)]
    assert min(draws) >= 0.001
    assert max(draws) <= 0.001 + 10 * 0.0005
    assert 0.0013 < sum(draws) / len(draws) < 0.0017


def test_wan_profile_adds_latency_per_region_hop() -> None:
    wan = PROFILES["wan"]
    assert wan.link_latency(0, 0).base == wan.latency.base
    assert wan.link_latency(0, 2).base == pytest.approx(wan.latency.base + 2 * wan.hop_latency)


def test_network_loss_drops_about_the_configured_share(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim(10, loss=0.3, registry=False)
    sim.scheduler.run_until(60.0)
    sent, received = totals(sim)
    assert sent > 1000
    assert 0.65 < received / sent < 0.75


def test_network_duplicates_datagrams(make_sim: Callable[..., Simulation]) -> None:
    sim = make_sim(10, duplicate=0.5, registry=False)
    sim.scheduler.run_until(30.0)
    sent, received = totals(sim)
    assert 1.4 < received / sent < 1.6


def test_network_partition_blocks_both_ways_until_heal(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim(6, registry=False)
    sim.scheduler.run_until(5.0)
    lonely = sim.network.hosts[3]
    sim.partition([["node-3"], [n for n in sim.names if n != "node-3"]], "cut")
    before = lonely.stats.packets_received
    sim.scheduler.run_until(40.0)
    assert lonely.stats.packets_received == before
    assert all(sim.view(n)["node-3"] is MemberState.DEAD for n in sim.names if n != "node-3")
    sim.heal("cut")
    sim.scheduler.run_until(80.0)
    assert lonely.stats.packets_received > before
    assert all(sim.view(n)["node-3"] is MemberState.ALIVE for n in sim.names)


def test_network_one_way_cut_blocks_only_one_direction(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim(4, registry=False)
    sim.scheduler.run_until(5.0)
    deaf = sim.network.hosts[2]
    others = [n for n in sim.names if n != "node-2"]
    sim.cut(others, ["node-2"], "deaf")
    assert sim.network.blocked(sim.network.hosts[0].address, deaf.address)
    assert not sim.network.blocked(deaf.address, sim.network.hosts[0].address)
    received = deaf.stats.packets_received
    sent = deaf.stats.packets_sent
    sim.scheduler.run_until(15.0)
    assert deaf.stats.packets_received == received
    assert deaf.stats.packets_sent > sent


def test_network_crash_silences_a_host_and_restart_raises_its_incarnation(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim(5, registry=False)
    sim.scheduler.run_until(5.0)
    old = engine_of(sim, "node-2").incarnation
    sim.crash("node-2")
    assert sim.engine("node-2") is None
    sim.scheduler.run_until(30.0)
    assert all(sim.view(n)["node-2"] is MemberState.DEAD for n in sim.live_names())
    sim.restart("node-2")
    assert engine_of(sim, "node-2").incarnation == old + 1
    sim.scheduler.run_until(40.0)
    assert all(sim.view(n).get("node-2") is MemberState.ALIVE for n in sim.live_names())


def test_network_stream_to_crashed_host_is_refused_at_once(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim(3, registry=False)
    sim.crash("node-2")
    opener = engine_of(sim, "node-1")
    opener.join([sim.network.hosts[2].address], sim.now)
    sim.network.flush(sim.network.hosts[1])
    sim.scheduler.run_until(sim.now + 0.01)
    assert opener.statistics().streams_failed == 1


def test_network_stream_across_a_cut_times_out(make_sim: Callable[..., Simulation]) -> None:
    sim = make_sim(3, registry=False)
    sim.partition([["node-1"], ["node-2"]], "cut")
    opener = engine_of(sim, "node-1")
    opener.join([sim.network.hosts[2].address], sim.now)
    sim.network.flush(sim.network.hosts[1])
    timeout = sim.config.stream_timeout
    sim.scheduler.run_until(timeout - 0.01)
    assert opener.statistics().streams_failed == 0
    sim.scheduler.run_until(timeout + 0.01)
    assert opener.statistics().streams_failed == 1


def test_network_paused_host_reads_nothing_then_catches_up(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim(5, registry=False)
    sim.scheduler.run_until(5.0)
    engine = engine_of(sim, "node-1")
    sim.pause("node-1", 3.0)
    assert sim.is_paused("node-1")
    stats = engine.statistics()
    sim.scheduler.run_until(7.9)
    frozen = engine.statistics()
    assert frozen.packets_received == stats.packets_received
    assert frozen.probes == stats.probes
    assert sim.network.hosts[1].inbox  # pings from the others wait in the socket
    sim.scheduler.run_until(8.01)
    assert not sim.is_paused("node-1")
    assert engine.statistics().packets_received > frozen.packets_received


def test_network_slow_host_misses_acks_that_arrived(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim(5, registry=False)
    sim.slow("node-1", 0.3)  # later than the local profile's 0.2 s probe timeout
    sim.scheduler.run_until(30.0)
    slow = engine_of(sim, "node-1").statistics()
    assert slow.indirect_probes >= slow.probes - 1  # every probe of its own times out
    for name in ("node-2", "node-3", "node-4"):
        healthy = engine_of(sim, name).statistics()
        assert healthy.indirect_probes < healthy.probes / 2  # only probes of node-1 do


def test_tcp_leg_retransmits_lost_segments(make_sim: Callable[..., Simulation]) -> None:
    sim = make_sim(2, registry=False)
    network = sim.network
    a, b = network.hosts
    clean = network.tcp_leg(a, b, handshake=True)
    assert clean is not None
    assert clean < 0.001
    network.loss = 0.5
    delays = [network.tcp_leg(a, b, handshake=True) for _ in range(200)]
    arrived = [d for d in delays if d is not None]
    # A segment arrives at once or only after a retransmission timeout.
    assert any(d >= 1.0 for d in arrived)
    assert all(d < 0.001 or d >= 1.0 for d in arrived)
    assert len(arrived) < len(delays)  # six lost tries in a row happen at 50% loss


def test_syn_schedule_is_linear_then_doubles() -> None:
    lan = PROFILES["lan"]
    # Linux 6.5+ (tcp_syn_linear_timeouts = 4): SYNs at 0, 1, 2, 3, 4, 5, 7, 11 s.
    sent_at = [0.0]
    for tries in range(1, 8):
        sent_at.append(sent_at[-1] + lan.syn_retry_delay(tries))
    assert sent_at == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 11.0]


def test_stream_opened_during_a_partition_connects_when_it_heals(
    make_sim: Callable[..., Simulation],
) -> None:
    # Only the stream under test: no periodic push-pull, no healing loop.
    quiet = (("push_pull_interval", 0.0), ("reconnect_interval", 1000.0))
    sim = make_sim(2, profile="lan", registry=False, overrides=quiet)
    opener, peer = engine_of(sim, "node-0"), engine_of(sim, "node-1")
    sim.partition([["node-0"], ["node-1"]])
    sim.scheduler.run_until(1.0)
    opener.join([sim.network.hosts[1].address], sim.now)  # a push-pull, SYN sent at 1.0
    sim.network.flush(sim.network.hosts[0])
    sim.scheduler.run_until(3.5)
    assert peer.statistics().push_pulls_served == 0
    sim.heal()
    # The SYN resent at 4.0 gets through, well before the 10 s stream timeout.
    sim.scheduler.run_until(4.1)
    assert peer.statistics().push_pulls_served == 1
    assert opener.statistics().streams_failed == 0


def _watch_closures(sim: Simulation) -> int:
    total = 0
    for name in sim.names:
        engine = sim.engine(name)
        if engine is not None:
            total += engine.statistics().watch_closures
    return total


def test_process_crash_closes_its_watch_streams_and_host_crash_does_not(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim(8)
    sim.scheduler.run_until(10.0)
    victim = sim.names[3]
    sim.crash(victim)
    sim.scheduler.run_until(10.5)
    # Its watchers (its ring predecessors, two each) heard the kernel's FIN
    # and suspected it before any probe could have.
    assert _watch_closures(sim) == 2
    assert all(sim.view(n)[victim] is not MemberState.ALIVE for n in sim.live_names())
    sim.scheduler.run_until(12.0)
    assert all(sim.view(n)[victim] is MemberState.DEAD for n in sim.live_names())

    silent = sim.names[5]
    sim.crash(silent, host_down=True)
    sim.scheduler.run_until(12.5)
    assert _watch_closures(sim) == 2  # a vanished host sends nothing


def test_graceful_leave_closes_no_watch(make_sim: Callable[..., Simulation]) -> None:
    sim = make_sim(8)
    sim.scheduler.run_until(10.0)
    left = sim.names[2]
    sim.leave(left)
    sim.scheduler.run_until(20.0)
    assert sim.engine(left) is None  # it stopped after its leave
    assert all(sim.view(n)[left] is MemberState.LEFT for n in sim.live_names())
    assert _watch_closures(sim) == 0
