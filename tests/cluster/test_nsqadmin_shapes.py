"""The HTTP shapes nsqadmin reads from a lookup port, against a real node.

nsqadmin's clusterinfo (v1.3.0) asks each lookupd for ``/info`` (version),
``/topics``, ``/channels?topic=``, ``/nodes`` and ``/lookup?topic=``, then
each producer's ``/stats?format=json``; it tombstones with
``POST /topic/tombstone?topic=&node=<broadcast_address>:<http_port>``. Every
key it decodes must be there with the type it expects.
"""

from __future__ import annotations

import json
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from shoal.testing.process import NodeProcess

pytestmark = pytest.mark.integration

PRODUCER_KEYS = {
    "remote_address": str,
    "hostname": str,
    "broadcast_address": str,
    "tcp_port": int,
    "http_port": int,
    "version": str,
}


def call(address: tuple[str, int], path: str, method: str = "GET") -> Any:
    host, port = address
    request = urllib.request.Request(f"http://{host}:{port}{path}", method=method, data=None)
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def check_producer(entry: dict[str, Any], node: NodeProcess) -> None:
    for key, kind in PRODUCER_KEYS.items():
        assert isinstance(entry[key], kind), key
    assert entry["tcp_port"] == node.tcp[1]
    assert entry["http_port"] == node.http[1]


def test_lookup_port_answers_what_nsqadmin_reads(node: NodeProcess) -> None:
    topic, channel = "admin_shapes", "admin_channel"
    host, port = node.http
    urllib.request.urlopen(
        urllib.request.Request(f"http://{host}:{port}/pub?topic={topic}", data=b"x"), timeout=10
    ).close()
    call(node.http, f"/channel/create?topic={topic}&channel={channel}", "POST")
    lookup = node.lookup_http

    assert isinstance(call(lookup, "/info")["version"], str)
    assert topic in call(lookup, "/topics")["topics"]
    assert call(lookup, f"/channels?topic={topic}")["channels"] == [channel]

    nodes = call(lookup, "/nodes")["producers"]
    (entry,) = [n for n in nodes if topic in n["topics"]]
    check_producer(entry, node)
    assert isinstance(entry["topics"], list)
    assert entry["tombstones"] == [False] * len(entry["topics"])

    found = call(lookup, f"/lookup?topic={topic}")
    assert found["channels"] == [channel]
    (producer,) = found["producers"]
    check_producer(producer, node)

    stats = call(node.http, f"/stats?format=json&topic={topic}")
    (topic_stats,) = stats["topics"]
    assert topic_stats["topic_name"] == topic
    assert {c["channel_name"] for c in topic_stats["channels"]} == {channel}
    for key in ("depth", "backend_depth", "message_count", "paused"):
        assert key in topic_stats

    node_id = f"{entry['broadcast_address']}:{entry['http_port']}"
    call(lookup, f"/topic/tombstone?topic={topic}&node={node_id}", "POST")
    nodes = call(lookup, "/nodes")["producers"]
    (entry,) = [n for n in nodes if topic in n["topics"]]
    assert entry["tombstones"][entry["topics"].index(topic)] is True
