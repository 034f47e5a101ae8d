"""statsd pushes: nsqd's names, counters as increases, bounded datagrams, a real node."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from shoal.cluster.statsd import StatsdFormatter, pack_lines, statsd_prefix
from shoal.testing.process import NodeProcess
from shoal.testing.wire import NsqConnection

if TYPE_CHECKING:
    from pathlib import Path


def families(messages: float, depth: float) -> list[GaugeMetricFamily | CounterMetricFamily]:
    count = CounterMetricFamily("shoal_channel_messages", "", labels=["topic", "channel"])
    count.add_metric(["orders", "billing"], messages)
    gauge = GaugeMetricFamily("shoal_topic_depth", "", labels=["topic"])
    gauge.add_metric(["orders"], depth)
    members = GaugeMetricFamily("shoal_members", "", labels=["status"])
    members.add_metric(["alive"], 3)
    latency = GaugeMetricFamily("shoal_channel_e2e_processing_latency_seconds", "",
                                labels=["topic", "channel", "quantile"])  # fmt: skip
    latency.add_metric(["orders", "billing", "0.99"], 0.25)
    return [count, gauge, members, latency]


def test_prefix_expands_the_host_key_as_nsqd_does() -> None:
    assert statsd_prefix("nsq.%s", "10.0.0.1", 4151) == "nsq.10_0_0_1_4151."
    assert statsd_prefix("app.", "h", 1) == "app."
    assert statsd_prefix("", "h", 1) == ""


def test_lines_use_nsqd_names_and_send_counter_increases() -> None:
    formatter = StatsdFormatter("nsq.h_1.")
    assert formatter.lines(families(5, 2)) == [
        "nsq.h_1.topic.orders.channel.billing.messages:5|c",
        "nsq.h_1.topic.orders.depth:2|g",
        "nsq.h_1.members.alive:3|g",
        "nsq.h_1.topic.orders.channel.billing.e2e_processing_latency_seconds.0_99:0.25|g",
    ]
    assert formatter.lines(families(8, 0))[:2] == [
        "nsq.h_1.topic.orders.channel.billing.messages:3|c",
        "nsq.h_1.topic.orders.depth:0|g",
    ]
    # A recreated channel starts again from zero: its whole count is new.
    assert formatter.lines(families(1, 0))[0] == "nsq.h_1.topic.orders.channel.billing.messages:1|c"


def test_packets_stay_within_the_size() -> None:
    lines = [f"n.{i}:1|g" for i in range(100)]
    packets = pack_lines(lines, 64)
    assert all(len(p) <= 64 for p in packets)
    assert b"\n".join(packets).split(b"\n") == [line.encode() for line in lines]
    assert pack_lines(["x" * 100], 64) == [b"x" * 100]


@pytest.mark.integration
@pytest.mark.slow
def test_a_node_pushes_to_statsd(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(10)
        host, port = server.getsockname()
        args = ("--statsd-address", f"{host}:{port}", "--statsd-interval", "200ms")
        with NodeProcess(*args, workdir=tmp_path) as node:
            with NsqConnection(node.tcp) as conn:
                conn.pub("orders", b"x")
            prefix = f"nsq.127_0_0_1_{node.http[1]}."
            received: list[str] = []
            for _ in range(50):
                data = server.recv(65536)
                assert len(data) <= 508
                received += data.decode().split("\n")
                if f"{prefix}topic.orders.messages:1|c" in received:
                    break
            assert f"{prefix}topic.orders.messages:1|c" in received
            assert f"{prefix}topic.orders.depth:1|g" in received
            assert f"{prefix}members.alive:1|g" in received
