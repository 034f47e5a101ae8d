"""Operations on real node processes: /metrics, membership logs, name conflicts, keys."""

from __future__ import annotations

import json
import signal
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shoal.membership.keyring import generate_key
from shoal.testing.process import NodeProcess, ProcessCluster, name_of, statuses
from shoal.testing.waiting import wait_for
from shoal.testing.wire import NsqConnection

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Failures are detected in about a second with the local profile.
CLUSTER_FLAGS = ("--gossip-profile", "local")


def fetch(address: tuple[str, int], path: str) -> tuple[int, str, bytes]:
    host, port = address
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as reply:
        return int(reply.status), reply.headers.get("Content-Type", ""), reply.read()


def producer_ports(node: NodeProcess, topic: str) -> list[int]:
    host, port = node.lookup_http
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/lookup?topic={topic}", timeout=10) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError:
        return []
    return sorted(p["tcp_port"] for p in body["producers"])


def samples(node: NodeProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics, by (name, labels)."""
    status, content_type, body = fetch(node.http, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    return found[(name, frozenset(labels.items()))]


def test_metrics_after_a_publish_and_a_death(cluster: ProcessCluster) -> None:
    a = cluster.start("--e2e-processing-latency-percentile", "0.99")
    b = cluster.start(seed=a)
    c = cluster.start(seed=a)
    # Every node must know every other before c dies: a member that never
    # heard of c ignores news of its death (there is nothing to mark dead).
    wait_for(lambda: all(list(statuses(n).values()).count("alive") == 3 for n in (a, b, c)))
    channel = {"topic": "orders", "channel": "billing"}
    with NsqConnection(a.tcp) as conn:
        conn.pub("orders", b"first")  # creates the topic; no channel yet: stays in the topic
        conn.sub("orders", "billing")
        conn.mpub("orders", [b"second", b"third"])
        conn.rdy(1)
        message = conn.read_message()
        conn.rdy(0)
        wait_for(lambda: value(samples(a), "shoal_channel_in_flight", **channel) == 1)
        assert value(samples(a), "shoal_channel_clients", **channel) == 1
        conn.fin(message.id)
        wait_for(lambda: value(samples(a), "shoal_channel_in_flight", **channel) == 0)
    dead = name_of(c)
    c.kill()
    wait_for(lambda: statuses(a)[dead] == "dead")

    found = samples(a)
    assert value(found, "shoal_topic_messages_total", topic="orders") == 3
    assert value(found, "shoal_topic_depth", topic="orders") == 0
    assert value(found, "shoal_channel_depth", **channel) == 2
    assert value(found, "shoal_channel_in_flight", **channel) == 0
    assert value(found, "shoal_channel_deferred", **channel) == 0
    assert value(found, "shoal_channel_messages_total", **channel) == 3
    assert value(found, "shoal_channel_requeued_total", **channel) == 0
    assert value(found, "shoal_channel_timed_out_total", **channel) == 0
    assert value(found, "shoal_channel_clients", **channel) == 0
    latency = value(found, "shoal_channel_e2e_processing_latency_seconds", quantile="0.99",
                    **channel)  # fmt: skip
    assert 0 < latency < 10
    assert value(found, "shoal_members", status="alive") == 2
    assert value(found, "shoal_members", status="dead") == 1
    assert value(found, "shoal_members", status="suspect") == 0
    # Deaths now come within a second of the kill, possibly before a's own
    # first probe: wait for the counter to move rather than read it once.
    wait_for(lambda: value(samples(a), "shoal_membership_probes_total") > 0)
    # Every engine counter is there (the death may have come by refusal
    # evidence or by another member's word, so which ones moved varies).
    for name in ("probe_failures", "suspicions", "deaths_declared", "refutations"):
        assert value(found, f"shoal_membership_{name}_total") >= 0
    assert value(found, "shoal_gossip_packets_received_total") > 0
    assert value(found, "shoal_gossip_bytes_sent_total") > 0
    assert value(found, "shoal_registry_owners") == 3
    assert value(found, "shoal_disk_corrupt_records_total") == 0
    # Another node's scrape sees the same death.
    wait_for(lambda: value(samples(b), "shoal_members", status="dead") == 1)

    # Membership transitions are in the log, one line each, in nsqd's layout.
    lines = [line for line in a.stderr.splitlines() if "MEMBERSHIP:" in line]
    assert any(f"MEMBERSHIP: {dead} joined at" in line and " INFO: " in line for line in lines)
    assert any(f"MEMBERSHIP: {dead} at " in line and "is dead" in line for line in lines)
    assert all(line.startswith("[shoal] ") for line in lines)


def test_log_format_json_and_log_level_filter(cluster: ProcessCluster) -> None:
    a = cluster.start("--log-format", "json", "--log-level", "debug")
    quiet = cluster.start("--log-level", "warn", seed=a)
    b = cluster.start(seed=a)
    wait_for(lambda: list(statuses(a).values()).count("alive") == 3)
    left = name_of(b)
    for node in (a, quiet):
        fetch(node.http, "/metrics")  # its request line is DEBUG (scrapes are frequent)
    assert b.stop() == 0
    wait_for(lambda: statuses(a)[left] == "left")
    time.sleep(0.5)  # let the line reach the pipe

    records = [json.loads(line) for line in a.stderr.splitlines() if line.strip()]
    assert {"time", "level", "logger", "msg"} <= set(records[0])
    events = {(r.get("event"), r.get("member")) for r in records}
    assert ("joined", left) in events
    assert ("left", left) in events
    assert any(r["level"] == "debug" and "/metrics" in r["msg"] for r in records)
    assert " INFO: " not in quiet.stderr  # warn leaves INFO out
    assert "MEMBERSHIP:" not in quiet.stderr


def test_mismatched_gossip_key_is_logged_on_both_nodes(cluster: ProcessCluster) -> None:
    a = cluster.start("--gossip-key", generate_key())
    outsider = cluster.start("--gossip-key", generate_key(), seed=a)
    wait_for(lambda: "fails authentication" in a.stderr)
    wait_for(lambda: "failed the join" in outsider.stderr)
    assert "gossip from 127.0.0.1:" in a.stderr
    line = next(x for x in outsider.stderr.splitlines() if "failed the join" in x)
    assert f"seed {a.gossip}" in line
    assert "gossip key" in line
    assert " WARNING: " in line
    assert len(statuses(a)) == 1


#: How long the real node's topics must survive the impostor. The impostor's
#: state could only come back through a membership push-pull (every 15 s in
#: the local profile), the healing loop (every 10 s) or the registry's
#: anti-entropy (every 30 s ± 20 %); 40 s covers one full round of each.
AFTER_IMPOSTOR = 40.0


def test_name_conflict_is_refused_and_the_registry_stays_intact(cluster: ProcessCluster) -> None:
    a = cluster.start()
    b = cluster.start(seed=a)
    c = cluster.start(seed=a)
    nodes = [a, b, c]
    wait_for(lambda: all(list(statuses(n).values()).count("alive") == 3 for n in nodes))
    for node, topic in zip(nodes, ("ta", "tb", "tc"), strict=True):
        with NsqConnection(node.tcp) as conn:
            conn.pub(topic, b"x")
    expected = {"ta": [a.tcp[1]], "tb": [b.tcp[1]], "tc": [c.tcp[1]]}

    def intact() -> bool:
        return all(
            producer_ports(n, topic) == ports for n in nodes for topic, ports in expected.items()
        )

    wait_for(intact)
    victim = name_of(b)
    # Seeds: another member, and the victim itself.
    impostor = cluster.start("--node-name", victim, "--seed", b.gossip, seed=a)
    with NsqConnection(impostor.tcp) as conn:
        conn.pub("impostor", b"y")

    wait_for(lambda: "name conflict" in impostor.stderr and "name conflict" in a.stderr)
    wait_for(lambda: "name conflict" in b.stderr)
    mine = [x for x in impostor.stderr.splitlines() if "name conflict" in x]
    assert len(mine) == 1, mine  # rate-limited: one line, not one per seed or attempt
    assert " ERROR: " in mine[0]
    assert f"the name {victim!r} is held by the live member at {b.gossip}" in mine[0]
    assert "another --node-name" in mine[0]
    for seed in (a, b):
        theirs = [x for x in seed.stderr.splitlines() if "name conflict" in x]
        assert len(theirs) == 1, theirs
        assert f"refused {impostor.gossip} claiming the name {victim!r}" in theirs[0]
    assert list(statuses(impostor)) == [victim]  # it learned nobody

    impostor.signal(signal.SIGINT)
    assert impostor.wait() == 0
    deadline = time.monotonic() + AFTER_IMPOSTOR
    while time.monotonic() < deadline:
        assert intact()
        assert all(statuses(n)[victim] == "alive" for n in nodes)
        assert all(producer_ports(n, "impostor") == [] for n in nodes)
        time.sleep(1.0)
