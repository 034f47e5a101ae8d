"""``GET /metrics``: the node's figures in Prometheus text exposition format.

Built on ``prometheus-client``, the Prometheus project's own Python library,
so the exposition format (escaping, ``# HELP``/``# TYPE`` lines, counter
``_total`` suffixes, content type) is the reference one rather than a copy.
Nothing is counted per message for it: `NodeCollector` is a custom collector
that reads the snapshots the node already keeps (the broker's topic and
channel counters as ``/stats`` reports them, the membership driver's
``statistics()``, the registry, the disk queues) when a scrape asks, and
turns them into metric families. A scrape costs what a ``/stats`` does.

Names are ``shoal_*``; labels are ``topic``, ``channel``, ``status`` (member
status), ``reason`` (drop reasons) and ``quantile`` (e2e latency). Counters
that the node keeps as running totals are exposed as counters; depths and
member counts as gauges.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from shoal.cluster.http_server import Response

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from prometheus_client.metrics_core import Metric

    from shoal.cluster.http_server import Request
    from shoal.cluster.membership_driver import MembershipDriverStatistics

__all__ = ["MetricsSources", "NodeCollector", "metrics_handler"]

_STATUSES = ("alive", "suspect", "dead", "left")

#: (stats key, metric suffix, help) of the per-channel figures.
_CHANNEL_GAUGES = (
    ("depth", "depth", "Messages queued in the channel, memory and disk."),
    ("backend_depth", "backend_depth", "Messages queued in the channel's disk queue."),
    ("in_flight_count", "in_flight", "Messages delivered and not yet finished."),
    ("deferred_count", "deferred", "Messages deferred (DPUB, REQ with a delay)."),
    ("client_count", "clients", "Clients subscribed to the channel."),
)
_CHANNEL_COUNTERS = (
    ("message_count", "messages", "Messages the channel received."),
    ("requeue_count", "requeued", "Messages requeued by clients (REQ)."),
    ("timeout_count", "timed_out", "Messages requeued because their timeout passed."),
)
#: (engine statistics field, metric name, help) of the membership counters.
_ENGINE_COUNTERS = (
    ("probes", "shoal_membership_probes", "Probes started."),
    ("probe_failures", "shoal_membership_probe_failures", "Probes that got no ack."),
    ("indirect_probes", "shoal_membership_indirect_probes", "Indirect probes requested."),
    ("suspicions", "shoal_membership_suspicions", "Members this node marked suspect."),
    ("deaths_declared", "shoal_membership_deaths_declared", "Suspicions that became deaths."),
    ("refutations", "shoal_membership_refutations", "Accusations about this node refuted."),
    ("push_pulls", "shoal_membership_push_pulls", "Full-state exchanges opened."),
    ("name_conflicts", "shoal_membership_name_conflicts", "Claims of a name held elsewhere."),
)
_DRIVER_COUNTERS = (
    ("packets_received", "shoal_gossip_packets_received", "Gossip datagrams received."),
    ("packets_sent", "shoal_gossip_packets_sent", "Gossip datagrams sent."),
    ("bytes_received", "shoal_gossip_bytes_received", "Bytes of gossip datagrams received."),
    ("bytes_sent", "shoal_gossip_bytes_sent", "Bytes of gossip datagrams sent."),
    (
        "stream_bytes_received",
        "shoal_gossip_stream_bytes_received",
        "Bytes of gossip stream messages received.",
    ),
    (
        "stream_bytes_sent",
        "shoal_gossip_stream_bytes_sent",
        "Bytes of gossip stream messages sent.",
    ),
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MetricsSources:
    """Where a scrape reads from; each is called once per scrape.

    Attributes:
        topics: the ``topics`` array of ``/stats`` (without clients).
        membership: the driver's statistics, None before gossip starts.
        registry_owners: members whose topic state the registry holds.
        registry_applied: registry messages applied.
        registry_dropped: registry messages dropped (wrong identity).
        disk_corrupt_records: corrupt records found in disk queues.
        disk_damaged_regions: regions recovery set aside.
    """

    topics: Callable[[], list[dict[str, Any]] | None]
    membership: Callable[[], MembershipDriverStatistics | None]
    registry_owners: Callable[[], int]
    registry_applied: Callable[[], int]
    registry_dropped: Callable[[], int]
    disk_corrupt_records: Callable[[], int]
    disk_damaged_regions: Callable[[], int]


class NodeCollector(Collector):
    """Turns the node's snapshots into metric families at scrape time."""

    def __init__(self, sources: MetricsSources) -> None:
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        """Every family, read from the sources now."""
        yield from self._queues()
        yield from self._membership()
        sources = self._sources
        yield _gauge(
            "shoal_registry_owners",
            "Members whose topic state this node holds.",
            sources.registry_owners(),
        )
        yield _counter(
            "shoal_registry_messages_applied",
            "Registry messages applied.",
            sources.registry_applied(),
        )
        yield _counter(
            "shoal_registry_messages_dropped",
            "Registry messages dropped: state under another identity of its owner.",
            sources.registry_dropped(),
        )
        yield _counter(
            "shoal_disk_corrupt_records",
            "Corrupt records found in disk queues.",
            sources.disk_corrupt_records(),
        )
        yield _gauge(
            "shoal_disk_damaged_regions",
            "Disk queue regions set aside by recovery.",
            sources.disk_damaged_regions(),
        )

    def _queues(self) -> Iterable[Metric]:
        topics = self._sources.topics() or []
        t_labels = ["topic"]
        c_labels = ["topic", "channel"]
        q_labels = ["topic", "channel", "quantile"]
        t_depth = GaugeMetricFamily(
            "shoal_topic_depth",
            "Messages queued in the topic before its channels, memory and disk.",
            labels=t_labels,
        )
        t_backend = GaugeMetricFamily(
            "shoal_topic_backend_depth", "Messages in the topic's disk queue.", labels=t_labels
        )
        t_messages = CounterMetricFamily(
            "shoal_topic_messages", "Messages published to the topic.", labels=t_labels
        )
        t_bytes = CounterMetricFamily(
            "shoal_topic_message_bytes",
            "Bytes of messages published to the topic.",
            labels=t_labels,
        )
        t_paused = GaugeMetricFamily(
            "shoal_topic_paused", "1 while the topic is paused.", labels=t_labels
        )
        gauges = {
            key: GaugeMetricFamily(f"shoal_channel_{name}", text, labels=c_labels)
            for key, name, text in _CHANNEL_GAUGES
        }
        counters = {
            key: CounterMetricFamily(f"shoal_channel_{name}", text, labels=c_labels)
            for key, name, text in _CHANNEL_COUNTERS
        }
        c_paused = GaugeMetricFamily(
            "shoal_channel_paused", "1 while the channel is paused.", labels=c_labels
        )
        latency = GaugeMetricFamily(
            "shoal_channel_e2e_processing_latency_seconds",
            "Publish-to-FIN latency quantiles over the configured window "
            "(--e2e-processing-latency-percentile).",
            labels=q_labels,
        )
        for topic in topics:
            name = str(topic["topic_name"])
            t_depth.add_metric([name], topic["depth"])
            t_backend.add_metric([name], topic["backend_depth"])
            t_messages.add_metric([name], topic["message_count"])
            t_bytes.add_metric([name], topic["message_bytes"])
            t_paused.add_metric([name], int(bool(topic["paused"])))
            for channel in topic["channels"]:
                labels = [name, str(channel["channel_name"])]
                for key, family in gauges.items():
                    family.add_metric(labels, channel[key])
                for key, counter in counters.items():
                    counter.add_metric(labels, channel[key])
                c_paused.add_metric(labels, int(bool(channel["paused"])))
                for item in (channel["e2e_processing_latency"] or {}).get("percentiles") or ():
                    quantile = format(float(item["quantile"]), "g")
                    latency.add_metric([*labels, quantile], float(item["value"]) / 1e9)
        yield from (t_depth, t_backend, t_messages, t_bytes, t_paused)
        yield from gauges.values()
        yield from counters.values()
        yield from (c_paused, latency)

    def _membership(self) -> Iterable[Metric]:
        stats = self._sources.membership()
        if stats is None:
            return
        engine = stats.engine
        members = GaugeMetricFamily(
            "shoal_members", "Members this node holds, by status.", labels=["status"]
        )
        for status in _STATUSES:
            members.add_metric([status], getattr(engine, status))
        yield members
        for field, name, text in _ENGINE_COUNTERS:
            yield _counter(name, text, getattr(engine, field))
        yield _gauge(
            "shoal_membership_health_score",
            "Lifeguard local health score (0 is healthy).",
            engine.health_score,
        )
        yield _gauge("shoal_membership_incarnation", "This node's incarnation.", engine.incarnation)
        for field, name, text in _DRIVER_COUNTERS:
            yield _counter(name, text, getattr(stats, field))
        dropped = CounterMetricFamily(
            "shoal_gossip_dropped",
            "Gossip input dropped, by reason (driver and engine reasons alike).",
            labels=["reason"],
        )
        for reason, count in sorted(_merge(stats.dropped, engine.dropped).items()):
            dropped.add_metric([reason], count)
        yield dropped


def _merge(*counts: Mapping[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for mapping in counts:
        for key, value in mapping.items():
            out[key] = out.get(key, 0) + value
    return out


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, text, value=value)


def metrics_handler(collector: NodeCollector) -> Callable[[Request], Response]:
    """The ``GET /metrics`` handler over ``collector``.

    Not logged per request (scrapes come every few seconds, as /pub does).

    The collector lives in a registry of its own, not prometheus-client's
    global one, so several nodes in one process (tests) never share series.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    def metrics(request: Request) -> Response:
        # The scraper's Accept header picks the classic text format (0.0.4,
        # what every Prometheus reads) or OpenMetrics.
        encoder, content_type = choose_encoder(request.header("Accept") or "")
        return Response(status=200, body=encoder(registry), content_type=content_type)

    return metrics
