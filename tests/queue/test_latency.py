from __future__ import annotations

from shoal.queue.backend import MemoryBackend
from shoal.queue.channel import Channel
from shoal.queue.config import QueueConfig
from shoal.queue.latency import CAPACITY, LatencyWindow


def test_latency_window_reports_each_quantile_in_nanoseconds() -> None:
    window = LatencyWindow((0.5, 0.99, 1.0), 600.0, 0.0)
    for ms in range(1, 101):
        window.record(ms * 1_000_000, 10.0)
    snap = window.snapshot(11.0)
    assert snap["count"] == 100
    values = {p["quantile"]: p["value"] for p in snap["percentiles"]}
    assert values == {0.5: 51_000_000, 0.99: 100_000_000, 1.0: 100_000_000}


def test_latency_window_with_nothing_recorded_reports_null() -> None:
    assert LatencyWindow((0.99,), 600.0, 0.0).snapshot(1.0) == {"count": 0, "percentiles": None}


def test_latency_window_forgets_samples_older_than_the_window() -> None:
    window = LatencyWindow((1.0,), 60.0, 0.0)
    window.record(5_000_000_000, 0.0)
    window.record(1_000, 40.0)  # the first half rotated: both still counted
    assert window.snapshot(40.0)["count"] == 2
    assert window.snapshot(200.0) == {"count": 0, "percentiles": None}


def test_latency_window_memory_stays_bounded() -> None:
    window = LatencyWindow((0.5,), 600.0, 0.0)
    for i in range(50 * CAPACITY):
        window.record(i, 1.0)
    snap = window.snapshot(1.0)
    assert snap["count"] == 50 * CAPACITY
    median = snap["percentiles"][0]["value"]
    assert 0.4 * 50 * CAPACITY < median < 0.6 * 50 * CAPACITY


def test_channel_records_publish_to_fin_latency_when_configured() -> None:
    config = QueueConfig(e2e_processing_latency_percentiles=(1.0,))
    channel = Channel("t", "c", config, MemoryBackend())
    from shoal.queue.message import Message

    channel.put(Message(b"0123456789abcdef", b"x", int(100.0 * 1e9)), 100.0)
    (msg,) = channel.deliver(1, 100.5, 60.0, 10)
    channel.finish(1, msg.id, 102.0)
    assert channel.e2e is not None
    snap = channel.e2e.snapshot(102.0)
    assert snap["count"] == 1
    assert abs(snap["percentiles"][0]["value"] - 2_000_000_000) < 1_000
