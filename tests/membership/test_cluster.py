"""Whole-cluster SWIM behaviour in virtual time over the in-memory network."""

import dataclasses
import functools
import random
import statistics

import cbor2
import pytest

from shoal.membership import (
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MembershipConfig,
    MemberState,
    MemberSuspected,
    NameConflict,
)
from shoal.membership.codec import CodecLimits, decode_packet
from shoal.membership.messages import UserMsg
from shoal.testing import Cluster, Transmission

LOCAL = MembershipConfig.local()
DEAD = MemberState.DEAD


def everyone_sees(cluster: Cluster, target: str, state: MemberState | None) -> bool:
    views = cluster.state_of(target)
    return bool(views) and all(v is state for v in views.values())


def failures(cluster: Cluster) -> list[tuple[str, str]]:
    return [
        (name, event.member.name)
        for name in cluster.names
        for _, event in cluster.events(name)
        if isinstance(event, MemberFailed)
    ]


class VersionedStore:
    """A tiny application delegate: key -> (version, value), newest version wins."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[int, bytes]] = {}

    def record(self, key: str, version: int, value: bytes) -> bytes:
        self.data[key] = (version, value)
        return cbor2.dumps([key, version, value])

    def _apply(self, key: str, version: int, value: bytes) -> bool:
        known = self.data.get(key)
        if known is not None and known[0] >= version:
            return False
        self.data[key] = (version, value)
        return True

    def local_state(self) -> bytes:
        return cbor2.dumps({k: [v, value] for k, (v, value) in self.data.items()})

    def merge_remote_state(self, data: bytes, from_name: str) -> None:
        for key, (version, value) in cbor2.loads(data).items():
            self._apply(key, version, value)

    def notify_message(self, data: bytes) -> bool:
        key, version, value = cbor2.loads(data)
        return self._apply(key, version, value)


def stores(cluster: Cluster) -> dict[str, VersionedStore]:
    out = {}
    for name, delegate in cluster.delegates.items():
        assert isinstance(delegate, VersionedStore)
        out[name] = delegate
    return out


def test_cluster_join_via_seed_converges() -> None:
    cluster = Cluster(8, LOCAL, seed=1)
    converged_at = cluster.run_until_true(cluster.converged, timeout=10.0)
    assert converged_at is not None
    assert converged_at < 2.5  # catch-up push-pulls, not the 15 s periodic one
    cluster.run_for(20.0)
    assert cluster.converged()
    for name in cluster.names:
        events = [e for _, e in cluster.events(name)]
        joined = sorted(e.member.name for e in events if isinstance(e, MemberJoined))
        assert joined == sorted(n for n in cluster.names if n != name)
        assert not [e for e in events if isinstance(e, MemberSuspected)]


def test_cluster_crash_detected_by_all_within_expected_time() -> None:
    cluster = Cluster(5, LOCAL, seed=2)
    cluster.run_for(10.0)
    assert cluster.converged()
    cluster.crash("node-3")
    crashed_at = cluster.now
    detected = cluster.run_until_true(lambda: everyone_sees(cluster, "node-3", DEAD), timeout=30.0)
    assert detected is not None
    # Probe round (~1-2 s) + collapsed suspicion (min = 3 s) + dissemination.
    assert 3.0 <= detected - crashed_at <= 8.0
    assert sorted(failures(cluster)) == [(n, "node-3") for n in cluster.running]


@pytest.mark.slow
def test_cluster_crash_detection_with_lan_defaults_at_five_members() -> None:
    times = []
    for seed in range(5):
        cluster = Cluster(5, MembershipConfig.lan(), seed=seed)
        cluster.run_for(20.0)
        cluster.crash("node-4")
        crashed_at = cluster.now
        detected = cluster.run_until_true(
            functools.partial(everyone_sees, cluster, "node-4", DEAD), timeout=60.0
        )
        assert detected is not None
        times.append(detected - crashed_at)
    # docs/membership.md G2: p50 <= 7 s at n = 5.
    assert statistics.median(times) <= 7.0


@pytest.mark.slow
@pytest.mark.parametrize("seed", [3, 4])
def test_cluster_ten_percent_loss_declares_no_healthy_member_dead(seed: int) -> None:
    # LAN defaults without the TCP fallback, so lost probes do lead to
    # suspicions; every one of them must be refuted in time.
    config = dataclasses.replace(MembershipConfig.lan(), tcp_fallback_ping=False)
    cluster = Cluster(5, config, seed=seed, loss=0.10)
    cluster.run_until(300.0)
    suspicions = sum(cluster.engine(n).statistics().suspicions for n in cluster.names)
    refutations = sum(cluster.engine(n).statistics().refutations for n in cluster.names)
    assert suspicions > 0
    assert refutations > 0
    assert failures(cluster) == []
    assert cluster.converged()


@pytest.mark.slow
def test_cluster_partition_longer_than_dead_retention_heals_on_its_own() -> None:
    cluster = Cluster(6, LOCAL, seed=4)
    cluster.run_for(10.0)
    left, right = cluster.names[:3], cluster.names[3:]
    cluster.partition([left, right])
    cluster.run_for(LOCAL.dead_retention + 60.0)
    # Each side has forgotten the other entirely.
    assert cluster.converged(left)
    assert cluster.converged(right)
    assert cluster.engine("node-0").member("node-5") is None
    assert cluster.engine("node-5").member("node-0") is None
    cluster.heal()
    healed_at = cluster.now
    merged = cluster.run_until_true(cluster.converged, timeout=60.0)
    assert merged is not None
    assert merged - healed_at <= 2 * LOCAL.reconnect_interval


def test_cluster_partition_shorter_than_retention_heals() -> None:
    cluster = Cluster(6, LOCAL, seed=5)
    cluster.run_for(10.0)
    cluster.partition([cluster.names[:2], cluster.names[2:]])
    cluster.run_for(30.0)
    assert cluster.engine("node-0").member("node-4") is not None
    assert cluster.state_of("node-4")["node-0"] is DEAD
    cluster.heal()
    healed_at = cluster.now
    merged = cluster.run_until_true(cluster.converged, timeout=60.0)
    assert merged is not None
    assert merged - healed_at <= 2 * LOCAL.reconnect_interval


def test_cluster_seeds_are_retried_until_they_answer() -> None:
    # A bootstrap split: the seed is unreachable while everyone starts, so
    # every join fails and each node is alone. Seeds are retried forever.
    cluster = Cluster(4, LOCAL, seed=6, bootstrap="none")
    cluster.partition([["node-0"], cluster.names[1:]])
    for name in cluster.names[1:]:
        cluster.join(name)
    cluster.run_for(120.0)
    assert all(len(cluster.view(name)) == 1 for name in cluster.names)
    cluster.heal()
    healed_at = cluster.now
    merged = cluster.run_until_true(cluster.converged, timeout=60.0)
    assert merged is not None
    assert merged - healed_at <= 2 * LOCAL.reconnect_interval


def test_cluster_restart_reclaims_name_with_newer_incarnation() -> None:
    cluster = Cluster(5, LOCAL, seed=7)
    cluster.run_for(10.0)
    cluster.crash("node-2")
    assert cluster.run_until_true(lambda: everyone_sees(cluster, "node-2", DEAD), timeout=30.0)
    engine = cluster.restart("node-2", incarnation=1)
    assert cluster.run_until_true(cluster.converged, timeout=30.0) is not None
    assert engine.incarnation > 1
    for name in cluster.running:
        member = cluster.engine(name).member("node-2")
        assert member is not None
        assert (member.state, member.incarnation) == (MemberState.ALIVE, engine.incarnation)
        if name != "node-2":
            kinds = [
                type(e)
                for _, e in cluster.events(name)
                if not isinstance(e, NameConflict) and e.member.name == "node-2"
            ]
            assert kinds[-2:] == [MemberFailed, MemberJoined]


def test_cluster_graceful_leave_is_seen_as_left_not_failed() -> None:
    cluster = Cluster(5, LOCAL, seed=8)
    cluster.run_for(5.0)
    cluster.leave("node-4")
    done = cluster.run_until_true(
        lambda: (
            cluster.engine("node-4").leave_complete()
            and everyone_sees(cluster, "node-4", MemberState.LEFT)
        ),
        timeout=10.0,
    )
    assert done is not None
    cluster.crash("node-4")
    cluster.run_for(30.0)
    assert everyone_sees(cluster, "node-4", MemberState.LEFT)
    assert failures(cluster) == []
    assert all(
        any(isinstance(e, MemberLeft) for _, e in cluster.events(n)) for n in cluster.running
    )


def test_cluster_app_state_reaches_everyone_via_broadcast() -> None:
    sizes: list[int] = []

    def measure(transmission: Transmission, rng: random.Random) -> list[float] | None:
        if transmission.kind == "packet":
            sizes.append(len(transmission.data))
        return None

    # A first wave of gossip misses a member for about 3 seeds in 100 (it then
    # waits for a push-pull); this seed is not one of them.
    cluster = Cluster(8, LOCAL, seed=11, delegate_factory=lambda name: VersionedStore())
    cluster.network.route_hook = measure
    cluster.run_for(5.0)
    by_name = stores(cluster)
    cluster.broadcast_app(
        "node-3", "owner:node-3", by_name["node-3"].record("owner:node-3", 1, b"topic-a")
    )
    sent_at = cluster.now
    arrived = cluster.run_until_true(
        lambda: all(s.data.get("owner:node-3") == (1, b"topic-a") for s in by_name.values()),
        timeout=10.0,
    )
    assert arrived is not None
    assert arrived - sent_at < 2.0  # far sooner than push-pull (15 s) could
    assert max(sizes) <= LOCAL.packet_budget


def test_cluster_app_state_reaches_everyone_via_push_pull_after_drop() -> None:
    limits = CodecLimits.from_config(LOCAL)

    def drop_app_messages(transmission: Transmission, rng: random.Random) -> list[float] | None:
        packet = transmission.kind == "packet"
        if packet and any(isinstance(m, UserMsg) for m in decode_packet(transmission.data, limits)):
            return []
        return None

    cluster = Cluster(5, LOCAL, seed=10, delegate_factory=lambda name: VersionedStore())
    cluster.network.route_hook = drop_app_messages
    cluster.run_for(5.0)
    by_name = stores(cluster)
    cluster.broadcast_app(
        "node-1", "owner:node-1", by_name["node-1"].record("owner:node-1", 1, b"t")
    )
    arrived = cluster.run_until_true(
        lambda: all("owner:node-1" in s.data for s in by_name.values()), timeout=90.0
    )
    assert arrived is not None
    # Every application broadcast was lost: the state came by push-pull.
    assert cluster.engine("node-1").statistics().app_broadcasts_queued == 1
    assert all(cluster.engine(n).statistics().app_messages_received == 0 for n in cluster.names)
    assert failures(cluster) == []


def test_cluster_large_app_message_reaches_everyone_over_streams() -> None:
    cluster = Cluster(6, LOCAL, seed=11, delegate_factory=lambda name: VersionedStore())
    cluster.run_for(5.0)
    by_name = stores(cluster)
    big = b"z" * 20_000
    cluster.broadcast_app("node-0", "blob", by_name["node-0"].record("blob", 1, big))
    sent_at = cluster.now
    arrived = cluster.run_until_true(
        lambda: all(s.data.get("blob") == (1, big) for s in by_name.values()), timeout=10.0
    )
    assert arrived is not None
    assert arrived - sent_at < 1.0
    assert cluster.engine("node-0").statistics().app_stream_broadcasts > 0
