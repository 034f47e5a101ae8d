"""Restart persistence against real node processes: crash, graceful stop, corruption, backlog."""

from __future__ import annotations

import json
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest

from shoal.testing.process import NodeProcess
from shoal.testing.wire import NsqConnection

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration


def http_json(node: NodeProcess, path: str) -> Any:
    host, port = node.http
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as reply:
        return json.loads(reply.read())


def http_post(node: NodeProcess, path: str, body: bytes = b"") -> int:
    host, port = node.http
    request = urllib.request.Request(f"http://{host}:{port}{path}", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as reply:
        return int(reply.status)


def publish(node: NodeProcess, topic: str, bodies: list[bytes]) -> None:
    with NsqConnection(node.tcp) as conn:
        for start in range(0, len(bodies), 100):
            batch = bodies[start : start + 100]
            if len(batch) == 1:
                conn.pub(topic, batch[0])
            else:
                conn.mpub(topic, batch)


def consume(
    node: NodeProcess, topic: str, channel: str, count: int, *, fin: bool = True
) -> list[bytes]:
    """Receive ``count`` messages (FIN each unless told not to)."""
    with NsqConnection(node.tcp, timeout=20) as conn:
        conn.sub(topic, channel)
        conn.rdy(500)
        bodies = []
        for _ in range(count):
            msg = conn.read_message()
            bodies.append(msg.body)
            if fin:
                conn.fin(msg.id)
        if fin:
            conn.send_raw(b"NOP\n")
        return bodies


def node_on(data: Path, *args: str) -> NodeProcess:
    return NodeProcess("--data-path", str(data), *args, workdir=data.parent)


def test_sigkill_after_ok_loses_nothing_with_sync_every_1(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bodies = [b"durable %d" % i for i in range(1500)]
    with node_on(data, "--sync-every", "1") as node:
        assert http_post(node, "/topic/create?topic=orders") == 200
        assert http_post(node, "/channel/create?topic=orders&channel=billing") == 200
        publish(node, "orders", bodies[:1000])
        publish(node, "unconsumed", bodies[1000:])  # no channel: waits at the topic
        node.kill()
    with node_on(data, "--sync-every", "1") as node:
        assert sorted(consume(node, "orders", "billing", 1000)) == sorted(bodies[:1000])
        assert sorted(consume(node, "unconsumed", "late", 500)) == sorted(bodies[1000:])
        assert "Traceback" not in node.stderr


def test_sigterm_keeps_memory_and_in_flight_messages(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bodies = [b"graceful %d" % i for i in range(3000)]
    with node_on(data) as node:
        with NsqConnection(node.tcp, timeout=20) as sub:
            sub.identify(msg_timeout=60_000)
            sub.sub("events", "ch")
            publish(node, "events", bodies)
            sub.rdy(10)
            held = [sub.read_message().body for _ in range(10)]  # in flight at shutdown
            assert node.stop() == 0
        assert "Traceback" not in node.stderr
    assert len(held) == 10
    with node_on(data) as node:
        got = consume(node, "events", "ch", 3000)
        assert sorted(got) == sorted(bodies)
        stats = http_json(node, "/stats?format=json&topic=events")
        (channel,) = stats["topics"][0]["channels"]
        assert channel["depth"] == 0


def test_metadata_restores_paused_state_and_channels(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with node_on(data) as node:
        http_post(node, "/topic/create?topic=kept")
        http_post(node, "/channel/create?topic=kept&channel=a")
        http_post(node, "/channel/create?topic=kept&channel=b%23ephemeral")
        http_post(node, "/channel/pause?topic=kept&channel=a")
        assert node.stop() == 0
    with node_on(data) as node:
        stats = http_json(node, "/stats?format=json&topic=kept")
        channels = {c["channel_name"]: c["paused"] for c in stats["topics"][0]["channels"]}
        assert channels == {"a": True}


def test_damage_costs_only_the_records_it_touches(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bodies = [b"record %04d" % i for i in range(200)]
    with node_on(data) as node:
        publish(node, "logs", bodies)  # no channel: all 200 in the topic's disk queue
        assert node.stop() == 0
    (segment,) = sorted(data.glob("logs.diskqueue.[0-9]*.dat"))
    size = segment.stat().st_size
    with segment.open("r+b") as fh:
        fh.truncate(size - 7)  # torn last record
        fh.seek(size // 2)
        fh.write(b"\xff" * 40)  # garbage in the middle
    with node_on(data) as node:
        assert "DISKQUEUE" in node.stderr
        stats = http_json(node, "/stats?format=json&topic=logs")
        depth = stats["topics"][0]["depth"]
        # 40 garbage bytes touch at most two records, the torn tail one more:
        # every other record is served, in order.
        assert 197 <= depth < 200
        got = consume(node, "logs", "ch", depth)
        assert got == [body for body in bodies if body in set(got)]
        assert bodies[-1] not in got
        assert list(data.glob("logs.diskqueue.*.bad*"))
        assert "Traceback" not in node.stderr


@pytest.mark.slow
def test_backlog_beyond_mem_queue_size_goes_to_disk_and_comes_back(tmp_path: Path) -> None:
    data = tmp_path / "data"
    total = 200_000
    with node_on(data, "--mem-queue-size", "1000") as node:
        with NsqConnection(node.tcp, timeout=30) as conn:
            batch = [b"x" * 100] * 200
            for _ in range(total // 200):
                conn.mpub("backlog", batch)
        stats = http_json(node, "/stats?format=json&topic=backlog")
        topic = stats["topics"][0]
        assert topic["depth"] == total
        assert topic["backend_depth"] == total - 1000
        received = consume(node, "backlog", "drain", total)
        assert len(received) == total


def test_stats_report_e2e_latency_percentiles_when_asked(tmp_path: Path) -> None:
    args = (
        "--e2e-processing-latency-percentile",
        "1.0",
        "--e2e-processing-latency-percentile",
        "0.5",
    )
    with node_on(tmp_path / "data", *args) as node:
        publish(node, "timed", [b"m%d" % i for i in range(20)])
        consume(node, "timed", "ch", 20)
        stats = http_json(node, "/stats?format=json&topic=timed")
        (channel,) = stats["topics"][0]["channels"]
        latency = channel["e2e_processing_latency"]
        assert latency["count"] == 20
        assert [p["quantile"] for p in latency["percentiles"]] == [1.0, 0.5]
        assert all(p["value"] > 0 for p in latency["percentiles"])
        assert stats["topics"][0]["e2e_processing_latency"]["count"] == 20
