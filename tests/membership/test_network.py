"""The in-memory network: delivery, faults, streams and determinism, with a fake endpoint."""

import random
from collections.abc import Sequence

from shoal.membership import Address, MembershipConfig
from shoal.testing import Cluster, MemoryNetwork, Transmission

A: Address = ("10.0.0.1", 1)
B: Address = ("10.0.0.2", 1)
C: Address = ("10.0.0.3", 1)


class Peer:
    """A scripted endpoint: sends what it is told, records what it gets, echoes streams."""

    def __init__(self) -> None:
        self.outbox: list[tuple[Address, bytes]] = []
        self.requests: list[tuple[Address, bytes]] = []
        self.received: list[tuple[float, Address, bytes]] = []
        self.replies: list[tuple[float, Address, bytes]] = []
        self.failed: list[tuple[float, Address]] = []
        self.wake_at = float("inf")
        self.ticks: list[float] = []

    def receive_packet(self, data: bytes, src: Address, now: float) -> None:
        self.received.append((now, src, data))

    def receive_stream(self, data: bytes, src: Address, now: float) -> bytes | None:
        return b"re:" + data if data != b"silent" else None

    def receive_stream_reply(self, data: bytes, src: Address, now: float) -> None:
        self.replies.append((now, src, data))

    def stream_failed(self, dst: Address, now: float) -> None:
        self.failed.append((now, dst))

    def tick(self, now: float) -> None:
        self.ticks.append(now)
        self.wake_at = float("inf")

    def next_deadline(self) -> float:
        return self.wake_at

    def packets_to_send(self) -> list[tuple[Address, bytes]]:
        out, self.outbox = self.outbox, []
        return out

    def streams_to_open(self) -> list[tuple[Address, bytes]]:
        out, self.requests = self.requests, []
        return out

    def events(self) -> Sequence[object]:
        return []


def pair(**kwargs: object) -> tuple[MemoryNetwork, Peer, Peer]:
    network = MemoryNetwork(random.Random(1), **kwargs)  # type: ignore[arg-type]
    a, b = Peer(), Peer()
    network.attach(A, a)
    network.attach(B, b)
    return network, a, b


def send(network: MemoryNetwork, peer: Peer, address: Address, dst: Address, data: bytes) -> None:
    peer.outbox.append((dst, data))
    network.flush(address)


def test_network_delivers_packets_after_latency() -> None:
    network, a, b = pair(latency=(0.01, 0.02))
    send(network, a, A, B, b"hello")
    network.run_until(0.005)
    assert b.received == []
    network.run_until(1.0)
    [(at, src, data)] = b.received
    assert 0.01 <= at <= 0.02
    assert (src, data) == (A, b"hello")


def test_network_wakes_endpoints_at_their_deadline() -> None:
    network, a, _ = pair()
    a.wake_at = 2.5
    network.flush(A)
    network.run_until(10.0)
    assert a.ticks == [2.5]
    assert network.now == 10.0


def test_network_loss_drops_about_the_configured_share() -> None:
    network, a, b = pair(loss=0.3)
    for i in range(1000):
        send(network, a, A, B, str(i).encode())
    network.run_until(1.0)
    assert 600 < len(b.received) < 800
    assert network.stats.packets_dropped == 1000 - len(b.received)


def test_network_duplicates_and_reorders() -> None:
    network, a, b = pair(duplicate=0.5, latency=(0.0, 0.1))
    for i in range(200):
        send(network, a, A, B, bytes([i]))
    network.run_until(1.0)
    payloads = [data for _, _, data in b.received]
    assert len(payloads) > 200
    assert len(set(payloads)) == 200
    assert payloads != sorted(payloads)


def test_network_partition_blocks_both_ways_until_heal() -> None:
    network, a, b = pair()
    c = Peer()
    network.attach(C, c)
    network.partition([[A], [B, C]])
    send(network, a, A, B, b"x")
    send(network, b, B, A, b"y")
    send(network, b, B, C, b"z")
    network.run_until(1.0)
    assert (a.received, [d for _, _, d in b.received]) == ([], [])
    assert [d for _, _, d in c.received] == [b"z"]
    network.heal()
    send(network, a, A, B, b"x")
    network.run_until(2.0)
    assert [d for _, _, d in b.received] == [b"x"]


def test_network_streams_get_replies() -> None:
    network, a, _ = pair(latency=(0.01, 0.01))
    a.requests.append((B, b"ping"))
    network.flush(A)
    network.run_until(1.0)
    assert a.replies == [(0.02, B, b"re:ping")]


def test_network_stream_without_reply_is_quiet() -> None:
    network, a, _ = pair()
    a.requests.append((B, b"silent"))
    network.flush(A)
    network.run_until(5.0)
    assert (a.replies, a.failed) == ([], [])


def test_network_stream_to_absent_or_cut_off_peer_fails() -> None:
    network, a, _ = pair(stream_timeout=3.0, latency=(0.01, 0.01))
    a.requests.append((C, b"nobody"))
    network.flush(A)
    network.run_until(1.0)
    assert a.failed == [(0.01, C)]
    network.partition([[A], [B]])
    a.requests.append((B, b"cut"))
    network.flush(A)
    network.run_until(10.0)
    assert a.failed[1] == (4.0, B)


def test_network_streams_ignore_packet_loss() -> None:
    network, a, _ = pair(loss=1.0)
    a.requests.append((B, b"reliable"))
    network.flush(A)
    network.run_until(1.0)
    assert [data for _, _, data in a.replies] == [b"re:reliable"]


def test_network_route_hook_decides_fate() -> None:
    seen: list[Transmission] = []

    def hook(transmission: Transmission, rng: random.Random) -> list[float] | None:
        seen.append(transmission)
        if transmission.data == b"drop":
            return []
        if transmission.data == b"twice":
            return [0.5, 0.7]
        return None

    network, a, b = pair(route_hook=hook)
    for data in (b"drop", b"twice", b"normal"):
        send(network, a, A, B, data)
    network.run_until(1.0)
    assert sorted(data for _, _, data in b.received) == [b"normal", b"twice", b"twice"]
    assert [t.kind for t in seen] == ["packet"] * 3


def test_network_detached_endpoint_gets_nothing() -> None:
    network, a, b = pair()
    send(network, a, A, B, b"x")
    assert network.detach(B) is b
    network.run_until(1.0)
    assert b.received == []


def test_cluster_same_seed_replays_exactly() -> None:
    def run() -> list[tuple[float, object, object]]:
        cluster = Cluster(5, MembershipConfig.local(), seed=42, loss=0.05)
        cluster.run_for(5.0)
        cluster.crash("node-2")
        cluster.run_for(10.0)
        return list(cluster.network.event_log)

    assert run() == run()


def test_cluster_restart_and_crash_track_running_members() -> None:
    cluster = Cluster(3, MembershipConfig.local(), seed=1)
    cluster.crash("node-1")
    assert cluster.running == ["node-0", "node-2"]
    engine = cluster.restart("node-1", incarnation=7)
    assert engine.incarnation == 7
    assert cluster.running == ["node-0", "node-1", "node-2"]


def test_cluster_preformed_starts_converged_without_gossip() -> None:
    cluster = Cluster(20, MembershipConfig.local(), seed=3, bootstrap="preformed")
    assert cluster.converged()
    assert all(cluster.engine(n).statistics().broadcasts_queued == 0 for n in cluster.names)
    cluster.run_for(5.0)
    assert cluster.converged()
