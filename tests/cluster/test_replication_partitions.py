"""A replicated topic's owner partitioned away, in real network namespaces, then healed.

Three nodes at factor 2, each in its own namespace (`shoal.testing.netns`).
A consumer is part way through the owner's messages, with deliveries in
flight, when the owner is cut off from the other two for 60 s: publishes
to it fail with ``not enough replicas`` (no silent downgrade), the other
side declares it dead and its replica adopts and delivers every
acknowledged message not yet finished; after the heal, every acknowledged
message has been delivered at least once and the duplicates (what was in
flight at the split, and what the old owner delivers before it learns of
the adoption) are counted.
"""

from __future__ import annotations

import collections
import json
import socket
import time
from typing import TYPE_CHECKING

import pytest

from shoal.queue.frames import MAGIC_V2, FrameDecoder
from shoal.testing.netns import Host, NetnsCluster, NodeInNamespace, available
from shoal.testing.wire import NsqConnection

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = [pytest.mark.netns, pytest.mark.slow]

GOSSIP_PORT = 4160
LOOKUP_PORT = 4161
#: How long the owner stays cut off (the acceptance asks for a minute).
SPLIT_SECONDS = 60


@pytest.fixture(autouse=True)
def _require_netns() -> None:
    reason = available()
    if reason is not None:
        pytest.fail(f"network namespaces are needed for partition tests: {reason}")


def eventually(condition: Callable[[], bool], limit: float) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {limit}s")
        time.sleep(0.1)


def connect(host: Host, port: int = 4150) -> NsqConnection:
    """A V2 connection from inside ``host``'s namespace to its own node."""
    conn = NsqConnection.__new__(NsqConnection)
    conn.sock = host.create_connection((host.address, port), timeout=10)
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.decoder = FrameDecoder()
    conn.sock.sendall(MAGIC_V2)
    return conn


def stats(node: NodeInNamespace) -> dict[str, object]:
    status, body = node.http_get("/stats?format=json")
    assert status == 200, body
    replication: dict[str, object] = json.loads(body)["replication"]
    return replication


def drain(conn: NsqConnection, into: collections.Counter[bytes], want: set[bytes]) -> None:
    """Consume (FIN) until every body of ``want`` arrived at least once."""
    while not want <= into.keys():
        message = conn.read_message()
        into[message.body] += 1
        conn.fin(message.id)


def test_owner_partitioned_away_then_healed_loses_no_acknowledged_message(
    tmp_path: Path,
) -> None:
    with NetnsCluster(3) as net:
        nodes: list[NodeInNamespace] = []
        try:
            first = net.hosts[0].address
            for i, host in enumerate(net.hosts):
                args = [
                    "--gossip-profile", "local",
                    "--gossip-address", f"{host.address}:{GOSSIP_PORT}",
                    "--lookup-http-address", f"{host.address}:{LOOKUP_PORT}",
                    "--data-path", str(tmp_path / f"n{i}"),
                    "--node-name", f"node{i}",
                    "--replication-factor", "2",
                    "--replication-timeout", "1s",
                ]  # fmt: skip
                if i:
                    args += ["--seed", f"{first}:{GOSSIP_PORT}"]
                nodes.append(NodeInNamespace(host, *args, workdir=tmp_path).start())

            def all_alive() -> bool:
                for node in nodes:
                    _status, body = node.http_get("/members")
                    view = [m["status"] for m in json.loads(body)["members"]]
                    if view.count("alive") != 3:
                        return False
                return True

            eventually(all_alive, 30)
            owner = nodes[0]
            owner.host.http_post(4151, "/topic/create?topic=split", b"")
            owner.host.http_post(4151, "/channel/create?topic=split&channel=c", b"")
            acked: set[bytes] = set()
            delivered: collections.Counter[bytes] = collections.Counter()
            with connect(owner.host) as conn, connect(owner.host) as early:
                early.sub("split", "c")
                early.rdy(100)
                for start in range(0, 2_000, 100):
                    bodies = [b"m%05d" % i for i in range(start, start + 100)]
                    conn.mpub("split", bodies)
                    acked.update(bodies)
                    if start < 1_000:  # consumed while published, 100 left in flight
                        for _ in range(100):
                            message = early.read_message()
                            delivered[message.body] += 1
                            early.fin(message.id)
                replicas = stats(owner)["owned"]["split"]["replicas"]  # type: ignore[index]
                (replica_name,) = replicas
                adopter = next(n for n in nodes if f"node{nodes.index(n)}" == replica_name)

                net.partition([[0], [1, 2]])
                split_at = time.monotonic()
                # Alone, the owner refuses rather than downgrade.
                conn.send_raw(b"PUB split\n" + (4).to_bytes(4, "big") + b"late")
                assert conn.read_error() == b"E_PUB_FAILED PUB failed not enough replicas"

            eventually(lambda: bool(stats(adopter)["adopted"]), 30)
            with connect(adopter.host) as consumer:
                consumer.sub("split", "c")
                consumer.rdy(200)
                drain(consumer, delivered, acked)
            # Bounded: the rest of the minute the owner stays cut off.
            time.sleep(max(0.0, split_at + SPLIT_SECONDS - time.monotonic()))

            net.heal()
            eventually(all_alive, 60)
            # The old owner delivers what it kept until it learns of the
            # adoption, then drops the rest: duplicates, never a loss.
            old: collections.Counter[bytes] = collections.Counter()
            with connect(owner.host) as consumer:
                consumer.sub("split", "c")
                consumer.rdy(200)
                consumer.sock.settimeout(2)
                try:
                    # Bounded: ends at the first 2 s without a message.
                    while True:
                        message = consumer.read_message()
                        old[message.body] += 1
                        consumer.fin(message.id)
                except TimeoutError:
                    pass
            assert old.keys() <= acked  # nothing refused was ever delivered
            delivered.update(old)
            assert acked <= delivered.keys()
            duplicates = sum(count - 1 for count in delivered.values())
            print(
                f"partition: {len(acked)} acknowledged, 0 lost, {duplicates} duplicates,"
                f" {sum(old.values())} of the deliveries from the old owner after the heal"
            )
        finally:
            for node in nodes:
                node.kill()
            for node in nodes:
                assert "Traceback" not in node.stderr, node.stderr
