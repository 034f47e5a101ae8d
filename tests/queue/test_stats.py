"""/stats snapshots built from a broker and protocol clients, no I/O."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shoal.queue.broker import Broker
from shoal.queue.commands import Pub, Rdy, Sub
from shoal.queue.config import QueueConfig
from shoal.queue.protocol import ClientV2
from shoal.queue.stats import (
    MEMORY_KEYS,
    client_stats,
    format_go_duration,
    producer_stats,
    render_text,
    stats_document,
    topic_stats,
    topics_stats,
)

NOW = 1_700_000_000.0


def make_client(broker: Broker, client_id: int, port: int = 5000) -> ClientV2:
    return ClientV2(
        broker,
        QueueConfig(),
        client_id=client_id,
        remote_address=f"10.0.0.{client_id}:{port}",
        version="0.1.0",
        now=NOW - 65,
    )


@pytest.fixture
def broker() -> Broker:
    return Broker(QueueConfig())


def workload(broker: Broker) -> dict[int, ClientV2]:
    """Topic ``b`` with channels ``y`` (two consumers) and ``x``; topic ``a`` empty."""
    broker.get_or_create_topic("b", NOW)
    broker.get_or_create_channel("b", "y", NOW)
    broker.get_or_create_channel("b", "x", NOW)
    broker.get_or_create_topic("a", NOW)
    consumers = [make_client(broker, 3), make_client(broker, 2)]
    for consumer in consumers:
        consumer.execute(Sub("b", "y"), NOW)
        consumer.execute(Rdy(5), NOW)
    producer = make_client(broker, 7)
    producer.execute(Pub("b", b"hello"), NOW)
    producer.execute(Pub("a", b"x"), NOW)
    producer.execute(Pub("b", b"!"), NOW)
    delivered = consumers[0].deliver(NOW)
    assert len(delivered) == 2
    return {c.id: c for c in [*consumers, producer]}


def test_document_has_nsqd_keys_in_order_with_json_types(broker: Broker) -> None:
    clients = workload(broker)
    memory = dict.fromkeys(MEMORY_KEYS, 0) | {"rss_bytes": 1}
    doc = stats_document(
        broker, clients, version="0.1.0", health="OK", start_time=NOW - 0.5, memory=memory
    )
    # A JSON round trip keeps everything: no tuples, sets or objects leak in.
    assert json.loads(json.dumps(doc)) == doc
    assert list(doc) == ["version", "health", "start_time", "topics", "memory", "producers"]
    assert doc["start_time"] == int(NOW - 0.5)
    assert doc["memory"] == memory
    a, b = doc["topics"]
    assert list(a) == [
        "topic_name",
        "channels",
        "depth",
        "backend_depth",
        "message_count",
        "message_bytes",
        "paused",
        "e2e_processing_latency",
    ]
    assert (a["topic_name"], a["channels"], a["depth"], a["message_count"]) == ("a", [], 1, 1)
    assert (b["topic_name"], b["message_count"], b["message_bytes"], b["depth"]) == ("b", 2, 6, 0)
    x, y = b["channels"]
    assert list(y) == [
        "channel_name",
        "depth",
        "backend_depth",
        "in_flight_count",
        "deferred_count",
        "message_count",
        "requeue_count",
        "timeout_count",
        "client_count",
        "clients",
        "paused",
        "e2e_processing_latency",
    ]
    assert (x["channel_name"], x["depth"], x["client_count"], x["clients"]) == ("x", 2, 0, [])
    assert (y["depth"], y["in_flight_count"], y["message_count"], y["client_count"]) == (0, 2, 2, 2)
    assert [c["remote_address"] for c in y["clients"]] == ["10.0.0.2:5000", "10.0.0.3:5000"]
    assert y["clients"][1]["in_flight_count"] == 2
    assert all("pub_counts" not in c for c in y["clients"])
    assert y["e2e_processing_latency"] == {"count": 0, "percentiles": None}
    (producer,) = doc["producers"]
    assert producer["remote_address"] == "10.0.0.7:5000"
    assert producer["pub_counts"] == [{"topic": "a", "count": 1}, {"topic": "b", "count": 2}]


def test_unknown_topic_filter_gives_null_topics(broker: Broker) -> None:
    workload(broker)
    assert topics_stats(broker, {}, topic="nope") is None


def test_channel_filter_skips_topics_without_it(broker: Broker) -> None:
    workload(broker)
    broker.get_or_create_channel("a", "x", NOW)
    topics = topics_stats(broker, {}, channel="y")
    assert topics is not None
    assert [(t["topic_name"], [c["channel_name"] for c in t["channels"]]) for t in topics] == [
        ("b", ["y"])
    ]


def test_topic_filter_narrows_pub_counts(broker: Broker) -> None:
    clients = workload(broker)
    doc = stats_document(broker, clients, version="v", health="OK", start_time=NOW, topic="a")
    assert [t["topic_name"] for t in doc["topics"]] == ["a"]
    (producer,) = doc["producers"]
    assert producer["pub_counts"] == [{"topic": "a", "count": 1}]


def test_producer_of_another_topic_is_listed_without_pub_counts(broker: Broker) -> None:
    clients = workload(broker)
    broker.get_or_create_topic("c", NOW)
    (producer,) = producer_stats(clients, topic="c") or []
    assert "pub_counts" not in producer


def test_excluded_clients_are_null(broker: Broker) -> None:
    clients = workload(broker)
    doc = stats_document(
        broker, clients, version="v", health="OK", start_time=NOW, include_clients=False
    )
    assert doc["producers"] is None
    assert all(c["clients"] is None for t in doc["topics"] for c in t["channels"])
    assert doc["topics"][1]["channels"][1]["client_count"] == 2
    assert "memory" not in doc


def test_no_publisher_gives_null_producers(broker: Broker) -> None:
    broker.get_or_create_topic("t", NOW)
    assert producer_stats({1: make_client(broker, 1)}) is None


def test_paused_deferred_and_counts_are_reported(broker: Broker) -> None:
    topic, _ = broker.get_or_create_topic("t", NOW)
    _channel, _ = broker.get_or_create_channel("t", "c", NOW)
    topic.publish([b"a", b"b"], NOW)
    topic.publish([b"later"], NOW, defer=10)
    broker.pause_channel("t", "c", True)
    broker.pause_topic("t", True)
    topic.publish([b"held"], NOW)
    client = make_client(broker, 1)
    (t,) = topics_stats(broker, {}) or []
    (c,) = t["channels"]
    assert (t["paused"], t["depth"], t["message_count"]) == (True, 1, 4)
    assert (c["paused"], c["depth"], c["deferred_count"], c["message_count"]) == (True, 2, 1, 3)
    del client


def test_client_stats_copies_and_filters() -> None:
    class Fake:
        def __init__(self) -> None:
            self.pub_counts = {"a": 1}

        def stats(self) -> dict[str, Any]:
            return {"client_id": "f", "pub_counts": [{"topic": "a", "count": 1}]}

    assert client_stats(Fake()) == {"client_id": "f", "pub_counts": [{"topic": "a", "count": 1}]}
    assert client_stats(Fake(), "b") == {"client_id": "f"}


def test_topic_latency_merges_measured_channels(broker: Broker) -> None:
    topic, _ = broker.get_or_create_topic("t", NOW)
    channels: list[dict[str, Any]] = [
        {
            "e2e_processing_latency": {
                "count": 1,
                "percentiles": [{"quantile": 0.99, "value": 10.0}],
            }
        },
        {
            "e2e_processing_latency": {
                "count": 3,
                "percentiles": [{"quantile": 0.99, "value": 30.0}],
            }
        },
        {"e2e_processing_latency": {"count": 0, "percentiles": None}},
    ]
    merged = topic_stats(topic, channels)["e2e_processing_latency"]
    assert merged == {"count": 4, "percentiles": [{"quantile": 0.99, "value": 25.0}]}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1e-9, "1ns"),
        (1.5e-6, "1.5µs"),
        (0.25, "250ms"),
        (1, "1s"),
        (59.5, "59.5s"),
        (60, "1m0s"),
        (61.25, "1m1.25s"),
        (3600, "1h0m0s"),
        (3723.5, "1h2m3.5s"),
        (2 * 86400 + 5, "48h0m5s"),
        (-2.5, "-2.5s"),
    ],
)
def test_format_go_duration_matches_go(seconds: float, text: str) -> None:
    assert format_go_duration(seconds) == text


def test_render_text_is_nsqds_dump(broker: Broker) -> None:
    broker.get_or_create_topic("t", NOW)
    broker.get_or_create_channel("t", "c", NOW)
    broker.get_or_create_topic("u", NOW)
    broker.pause_topic("u", True)
    consumer = make_client(broker, 1, port=6001)
    consumer.execute(Sub("t", "c"), NOW)
    consumer.execute(Rdy(3), NOW)
    producer = make_client(broker, 2, port=6002)
    producer.execute(Pub("t", b"abc"), NOW)
    broker.pause_channel("t", "c", True)
    memory = dict.fromkeys(MEMORY_KEYS, 0) | {"heap_objects": 42}
    doc = stats_document(
        broker,
        {1: consumer, 2: producer},
        version="0.1.0",
        health="OK",
        start_time=NOW - 3723.5,
        memory=memory,
    )
    text = render_text(doc, now=NOW, start_time=NOW - 3723.5)
    expected = (
        "shoal v0.1.0\n"
        "start_time 2023-11-14T21:11:16Z\n"
        "uptime 1h2m3.5s\n"
        "\n"
        "Health: OK\n"
        "\n"
        "Memory:\n"
        "   heap_objects             \t42\n"
        "   heap_idle_bytes          \t0\n"
        "   heap_in_use_bytes        \t0\n"
        "   heap_released_bytes      \t0\n"
        "   gc_pause_usec_100        \t0\n"
        "   gc_pause_usec_99         \t0\n"
        "   gc_pause_usec_95         \t0\n"
        "   next_gc_bytes            \t0\n"
        "   gc_total_runs            \t0\n"
        "\n"
        "Topics:\n"
        "   [t              ] depth: 0     be-depth: 0     msgs: 1        e2e%: \n"
        "   *P [c                        ] depth: 1     be-depth: 0     inflt: 0    def: 0    "
        "re-q: 0     timeout: 0     msgs: 1        e2e%: \n"
        "        [V2 10.0.0.1:6001        ] state: 3 inflt: 0    rdy: 3    fin: 0        "
        "re-q: 0        msgs: 0        connected: 1m5s\n"
        "\n"
        "*P [u              ] depth: 0     be-depth: 0     msgs: 0        e2e%: \n"
        "\n"
        "Producers:\n"
        "   [V2 10.0.0.2:6002        ] msgs: 1        topics: t=1 connected: 1m5s\n"
    )
    assert text == expected


def test_render_text_without_topics_or_producers(broker: Broker) -> None:
    doc = stats_document(broker, {}, version="0.1.0", health="NOK - disk", start_time=NOW)
    text = render_text(doc, now=NOW + 0.25)
    assert text == (
        "shoal v0.1.0\n"
        "start_time 2023-11-14T22:13:20Z\n"
        "uptime 250ms\n"
        "\n"
        "Health: NOK - disk\n"
        "\n"
        "Topics: None\n"
        "\n"
        "Producers: None\n"
    )


def test_render_text_prints_percentiles(broker: Broker) -> None:
    doc: dict[str, Any] = {
        "version": "0.1.0",
        "health": "OK",
        "start_time": int(NOW),
        "topics": [
            {
                "topic_name": "t",
                "channels": [],
                "depth": 0,
                "backend_depth": 0,
                "message_count": 0,
                "paused": False,
                "e2e_processing_latency": {
                    "count": 2,
                    "percentiles": [
                        {"quantile": 0.99, "value": 2.5e9},
                        {"quantile": 0.5, "value": 1500.0},
                    ],
                },
            }
        ],
        "producers": None,
    }
    assert "e2e%: 2.5s, 1.5us\n" in render_text(doc, now=NOW)
