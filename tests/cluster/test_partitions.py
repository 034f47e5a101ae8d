"""Real partitions: node processes in their own network namespaces, links cut and lossy.

Each node runs in a namespace joined to the others through a bridge in a
hub namespace (`shoal.testing.netns`). Cuts take the link down; loss drops
a share of the packets arriving at each host (iptables ``statistic``: this
kernel has no ``tc netem``).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pytest

from shoal.testing.netns import NetnsCluster, NodeInNamespace, require

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = [pytest.mark.netns, pytest.mark.slow]

GOSSIP_PORT = 4160
LOOKUP_PORT = 4161


@pytest.fixture(autouse=True)
def _require_netns() -> None:
    # Skips with its reason on a machine without root or iptables; CI sets
    # SHOAL_REQUIRE_NETNS=1 so that it fails there instead.
    require()


def members(node: NodeInNamespace) -> dict[str, str]:
    status, body = node.http_get("/members")
    assert status == 200, body
    return {m["name"]: m["status"] for m in json.loads(body)["members"]}


def producers(node: NodeInNamespace, topic: str) -> set[int]:
    """The last address byte of every producer /lookup lists for ``topic``."""
    status, body = node.host.http_get(LOOKUP_PORT, f"/lookup?topic={topic}")
    if status != 200:
        return set()
    return {int(p["broadcast_address"].rsplit(".", 1)[1]) for p in json.loads(body)["producers"]}


def eventually(condition: Callable[[], bool], limit: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit:
            raise AssertionError(f"condition not met within {limit}s")
        time.sleep(0.2)
    return time.monotonic() - started


class Nodes:
    def __init__(self, net: NetnsCluster, root: Path, profile: str) -> None:
        self.net = net
        self.root = root
        self.profile = profile
        self.nodes: list[NodeInNamespace] = []

    def start_all(self) -> list[NodeInNamespace]:
        first = self.net.hosts[0].address
        for i, host in enumerate(self.net.hosts):
            args = [
                "--gossip-profile", self.profile,
                "--gossip-address", f"{host.address}:{GOSSIP_PORT}",
                "--lookup-http-address", f"{host.address}:{LOOKUP_PORT}",
                "--data-path", str(self.root / f"n{i}"),
                "--node-name", f"node{i}",
            ]  # fmt: skip
            if i:
                args += ["--seed", f"{first}:{GOSSIP_PORT}"]
            self.nodes.append(NodeInNamespace(host, *args, workdir=self.root).start())
        return self.nodes

    def close(self) -> None:
        for node in self.nodes:
            node.kill()
            assert "Traceback" not in node.stderr, node.stderr


@pytest.fixture
def five(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Nodes]:
    profile: str = getattr(request, "param", "local")
    with NetnsCluster(5) as net:
        nodes = Nodes(net, tmp_path, profile)
        try:
            nodes.start_all()
            yield nodes
        finally:
            nodes.close()


def all_alive(node: NodeInNamespace, n: int = 5) -> bool:
    view = members(node)
    return len(view) == n and all(s == "alive" for s in view.values())


def test_split_longer_than_dead_retention_heals_without_restarts(five: Nodes) -> None:
    nodes = five.nodes
    eventually(lambda: all(all_alive(n) for n in nodes), 30)
    for i, node in enumerate(nodes):
        node.host.http_post(4151, f"/topic/create?topic=t{i}", b"")
    eventually(lambda: all(len(producers(n, "t0")) == 1 for n in nodes), 15)

    five.net.partition([[0, 1], [2, 3, 4]])
    # The local profile keeps dead members 60 s: stay split longer than that.
    side_a, side_b = ("node0", "node1"), ("node2", "node3", "node4")
    eventually(
        lambda: (
            all(members(n)[m] == "dead" for n in nodes[:2] for m in side_b)
            and all(members(n)[m] == "dead" for n in nodes[2:] for m in side_a)
        ),
        45,
    )
    assert producers(nodes[0], "t3") == set()
    assert producers(nodes[3], "t0") == set()
    assert producers(nodes[3], "t3") == {int(nodes[3].host.address.rsplit(".", 1)[1])}
    time.sleep(65)

    five.net.heal()
    took = eventually(lambda: all(all_alive(n) for n in nodes), 60)
    print(f"heal: full view on every node {took:.1f}s after the links came back")
    eventually(lambda: all(len(producers(n, f"t{i}")) == 1 for n in nodes for i in range(5)), 30)


@pytest.mark.parametrize("five", ["lan"], indirect=True)
def test_ten_percent_loss_on_every_link_declares_no_one_dead(five: Nodes) -> None:
    nodes = five.nodes
    eventually(lambda: all(all_alive(n) for n in nodes), 30)
    for host in five.net.hosts:
        host.set_loss(10)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for node in nodes:
            view = members(node)
            assert "dead" not in view.values(), view
        time.sleep(1)
    for host in five.net.hosts:
        host.set_loss(0)
    _status, body = nodes[0].http_get("/members")
    stats: dict[str, Any] = json.loads(body)["statistics"]
    print("membership statistics of node0 under 10% loss:", json.dumps(stats["engine"])[:400])
    # TCP resends through loss: no watch stream closed.
    assert all(statistics(n)["watch"]["closures"] == 0 for n in nodes)


def statistics(node: NodeInNamespace) -> dict[str, Any]:
    status, body = node.http_get("/members")
    assert status == 200, body
    stats: dict[str, Any] = json.loads(body)["statistics"]
    return stats


@pytest.mark.parametrize("five", ["lan"], indirect=True)
def test_cut_link_is_detected_by_silence_with_lifeguard_timing(
    five: Nodes, record_property: Callable[[str, object], None]
) -> None:
    """A host that drops off the network refuses nothing and closes nothing.

    So neither refusals nor the neighbour watch may speed its detection:
    it is declared dead when its suspicion times out (at least 4 s at five
    members in the lan profile), as before either existed.
    """
    nodes = five.nodes
    eventually(lambda: all(all_alive(n) for n in nodes), 30)
    # Every node holds its watch streams before the cut.
    eventually(lambda: all(statistics(n)["watch"]["established"] >= 2 for n in nodes), 15)
    victim, others = nodes[-1], nodes[:-1]
    victim.host.cut()
    cut_at = time.monotonic()
    took = eventually(lambda: all(members(n)["node4"] == "dead" for n in others), 60)
    record_property("link_cut_to_dead_everywhere_s", round(took, 2))
    stats = [statistics(n) for n in others]
    assert sum(s["watch"]["closures"] for s in stats) == 0
    assert sum(s["engine"]["refusal_deaths"] for s in stats) == 0
    assert time.monotonic() - cut_at >= 4.0  # a suspicion timeout, not evidence
