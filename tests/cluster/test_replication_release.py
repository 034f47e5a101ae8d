"""A member outranking a live owner's replica joins: the old replica is released, not dropped early.

Two ``shoal node`` processes, ``a`` owning a topic of factor 2 and ``b`` its
replica, then a third whose name outranks ``b`` in the topic's rendezvous
order. ``b`` leaves the set at once, but keeps its copy until ``a`` has
caught the newcomer up and sent ``b`` its release (docs/replication.md).
A newcomer that cannot be caught up (its stream limit is below the
snapshot's size) is never acknowledged, so ``b`` keeps its copy and adopts
it when ``a`` dies.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from tests.cluster.test_cluster_processes import get

from shoal.replication.placement import replicas
from shoal.testing.process import NodeProcess, statuses
from shoal.testing.wire import NsqConnection

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARGS = ("--gossip-profile", "local", "--replication-factor", "2", "--replication-timeout", "5s")
TOPIC = "orders"


def eventually(condition: Callable[[], bool], limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def held(node: NodeProcess) -> dict[tuple[str, str], int]:
    """``(owner, topic) -> messages`` of the copies ``node`` holds."""
    _status, stats = get(node.http, "/stats?format=json")
    copies: list[dict[str, Any]] = stats["replication"]["held"]
    return {(copy["owner"], copy["topic"]): copy["messages"] for copy in copies}


#: The newcomer's name: the first that outranks ``b`` for ``a``'s topic.
NEWCOMER = next(
    name
    for name in (f"n{i}" for i in range(100))
    if replicas("a", TOPIC, ["b", name], 2) == (name,)
)


class Nodes:
    """The processes of one test, started on demand and killed at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[NodeProcess] = []

    def start(self, name: str, seed: NodeProcess | None = None, *extra: str) -> NodeProcess:
        args = [*ARGS, "--node-name", name, "--data-path", str(self.root / name), *extra]
        if seed is not None:
            args += ["--seed", seed.gossip]
        node = NodeProcess(*args, workdir=self.root).start()
        self.started.append(node)
        return node

    def owner_and_replica(self, body: bytes) -> tuple[NodeProcess, NodeProcess]:
        """``a`` and ``b``, with 20 messages of ``body`` published to ``a`` and copied to ``b``."""
        a = self.start("a")
        b = self.start("b", a)
        eventually(lambda: list(statuses(a).values()).count("alive") == 2)
        with NsqConnection(a.tcp, timeout=15) as conn:
            for _ in range(4):  # no consumer: all stay owed
                conn.mpub(TOPIC, [body] * 5)
        assert held(b) == {("a", TOPIC): 20}
        return a, b

    def close(self) -> None:
        for node in self.started:
            node.kill()
        for node in self.started:
            assert "Traceback" not in node.stderr, node.stderr


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    started = Nodes(tmp_path)
    try:
        yield started
    finally:
        started.close()


def test_old_replica_drops_its_copy_once_the_newcomer_holds_it(nodes: Nodes) -> None:
    a, b = nodes.owner_and_replica(b"m")
    n = nodes.start(NEWCOMER, a)
    eventually(lambda: held(n) == {("a", TOPIC): 20} and held(b) == {})
    _status, stats = get(a.http, "/stats?format=json")
    assert stats["replication"]["owned"][TOPIC]["replicas"] == [NEWCOMER]


def test_old_replica_keeps_and_adopts_what_the_newcomer_never_got(nodes: Nodes) -> None:
    a, b = nodes.owner_and_replica(b"x" * 10_000)
    # The snapshot (200 kB) exceeds what the newcomer accepts in one message.
    nodes.start(
        NEWCOMER,
        a,
        "--gossip-set",
        "max_stream_size=65536",
        "--gossip-set",
        "max_app_message_size=65536",
    )

    def newcomer_placed() -> bool:
        _status, stats = get(a.http, "/stats?format=json")
        replicas_now = stats["replication"]["owned"][TOPIC]["replicas"]
        return replicas_now == [NEWCOMER] and statuses(b).get(NEWCOMER) == "alive"

    eventually(newcomer_placed)
    assert held(b) == {("a", TOPIC): 20}  # outside the set, but not released
    a.kill()

    def adopted() -> list[dict[str, Any]]:
        _status, stats = get(b.http, "/stats?format=json")
        found: list[dict[str, Any]] = stats["replication"]["adopted"]
        return found

    eventually(lambda: bool(adopted()))
    assert adopted() == [{"owner": "a", "topic": TOPIC, "messages": 20}]
