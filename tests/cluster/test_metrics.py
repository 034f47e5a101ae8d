"""/metrics rendering: pieces add up to the whole, and the event loop runs between them."""

from __future__ import annotations

import trio
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from shoal.cluster.metrics import MetricsSnapshot, SnapshotCollector, render_text
from shoal.queue import stats
from shoal.queue.broker import Broker
from shoal.queue.config import QueueConfig


def snapshot(topics: int, channels: int) -> MetricsSnapshot:
    broker = Broker(QueueConfig())
    for t in range(topics):
        topic, _ = broker.get_or_create_topic(f"t{t}", 0.0)
        for c in range(channels):
            topic.get_or_create_channel(f"c{c}", 0.0)
    listed = stats.topics_stats(broker, None, now=0.0) or []
    # One channel with latency quantiles, as --e2e-processing-latency-percentile gives.
    listed[0]["channels"][0]["e2e_processing_latency"] = {
        "count": 2,
        "percentiles": [{"quantile": 0.99, "value": 2.5e8}, {"quantile": 0.5, "value": 1e6}],
    }
    return MetricsSnapshot(
        topics=listed,
        membership=None,
        registry_owners=3,
        registry_applied=7,
        registry_dropped=1,
        disk_corrupt_records=0,
        disk_damaged_regions=0,
    )


def whole(snap: MetricsSnapshot) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snap))
    return generate_latest(registry)


async def test_pieces_render_the_same_text_as_one_whole_rendering() -> None:
    snap = snapshot(topics=20, channels=3)
    text = await render_text(snap, piece_samples=16)
    assert text == whole(snap)
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    assert len(families["shoal_channel_depth"].samples) == 60
    latency = families["shoal_channel_e2e_processing_latency_seconds"].samples
    assert {(s.labels["quantile"], s.value) for s in latency} == {("0.99", 0.25), ("0.5", 0.001)}
    assert families["shoal_registry_owners"].samples[0].value == 3
    assert text.count(b"# TYPE shoal_channel_depth gauge") == 1


async def test_the_event_loop_runs_between_pieces() -> None:
    snap = snapshot(topics=50, channels=4)  # 200 channels
    turns = 0
    done = False

    async def other_task() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        await trio.lowlevel.checkpoint()
        before = turns
        await render_text(snap, piece_samples=32)
        done = True
    # 200 samples in each of the ten channel families: at least six pieces each.
    assert turns - before >= 6 * 10
