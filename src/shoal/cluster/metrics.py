"""``GET /metrics``: the node's figures in Prometheus text exposition format.

Built on ``prometheus-client``, the Prometheus project's own Python library,
so the exposition format (escaping, ``# HELP``/``# TYPE`` lines, counter
``_total`` suffixes, content type) is the reference one rather than a copy.
Nothing is counted per message for it: a scrape reads the figures the node
already keeps (the broker's topic and channel counters as ``/stats`` reports
them, the membership driver's ``statistics()``, the registry, the disk
queues) into a `MetricsSnapshot`, which takes under a millisecond for
hundreds of channels.

Rendering is the costly part (about 17 µs a sample in prometheus-client,
100 ms for 500 channels), and the node must never hold its event loop for
long on one request (gossip probes time out in a fraction of a second). So
every family is declared once as a `_Family` (name, type, help, and how to
read its samples from a snapshot), and `render_text` renders the families
in pieces of at most `PIECE_SAMPLES` samples, yielding to the event loop
between pieces. The whole-family view (`SnapshotCollector`) serves statsd
and anything else that wants plain prometheus-client collectors.

prometheus-client is imported on the first scrape or statsd push, not with
this module: the node starts (and answers ``/ping``) without paying for it.
The collectors here satisfy its ``Collector`` protocol structurally.

Names are ``shoal_*``; labels are ``topic``, ``channel``, ``status`` (member
status), ``reason`` (drop reasons) and ``quantile`` (e2e latency). Counters
that the node keeps as running totals are exposed as counters; depths and
member counts as gauges.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Final

import trio

from shoal.cluster.http_server import Response

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping

    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.metrics_core import Metric

    from shoal.cluster.http_server import Request
    from shoal.cluster.membership_driver import MembershipDriverStatistics

__all__ = [
    "PIECE_SAMPLES",
    "MetricsSnapshot",
    "MetricsSources",
    "NodeCollector",
    "SnapshotCollector",
    "metrics_handler",
    "render_text",
]

#: Samples rendered between two yields to the event loop (a few milliseconds).
PIECE_SAMPLES: Final = 256

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
    ("refusals", "shoal_membership_refusals", "Probes refused by a member's host."),
    ("watch_closures", "shoal_membership_watch_closures", "Watch streams closed unannounced."),
    ("refusal_deaths", "shoal_membership_refusal_deaths", "Deaths declared on refusals."),
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
    """Where a scrape reads from; each is called once per scrape, on the event loop.

    Attributes:
        topics: the ``topics`` array of ``/stats`` (without clients).
        membership: the driver's statistics, None before gossip starts.
        registry_owners: members whose topic state the registry holds.
        registry_applied: registry messages applied.
        registry_dropped: registry messages dropped (wrong identity).
        disk_corrupt_records: corrupt records found in disk queues.
        disk_damaged_regions: regions recovery set aside.
        replication_lag: ``(topic, replica, records not acknowledged)`` of
            every replicated topic this node owns.
    """

    topics: Callable[[], list[dict[str, Any]] | None]
    membership: Callable[[], MembershipDriverStatistics | None]
    registry_owners: Callable[[], int]
    registry_applied: Callable[[], int]
    registry_dropped: Callable[[], int]
    disk_corrupt_records: Callable[[], int]
    disk_damaged_regions: Callable[[], int]
    replication_lag: Callable[[], list[tuple[str, str, int]]] = list


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MetricsSnapshot:
    """The figures of one scrape, as plain data (see `MetricsSources` for each)."""

    topics: list[dict[str, Any]]
    membership: MembershipDriverStatistics | None
    registry_owners: int
    registry_applied: int
    registry_dropped: int
    disk_corrupt_records: int
    disk_damaged_regions: int
    replication_lag: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)


#: One sample: label values, value.
_Sample = tuple[list[str], float]


@dataclasses.dataclass(frozen=True, slots=True)
class _Family:
    """One metric family: what it is, and how to read its samples from a snapshot."""

    name: str
    counter: bool
    help: str
    labels: tuple[str, ...]
    samples: Callable[[MetricsSnapshot], Iterable[_Sample]]

    def new(self) -> GaugeMetricFamily | CounterMetricFamily:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        kind = CounterMetricFamily if self.counter else GaugeMetricFamily
        return kind(self.name, self.help, labels=list(self.labels))


def _topic_rows(key: str, cast: Callable[[Any], float] = float) -> Callable[..., Iterable[_Sample]]:
    def rows(snapshot: MetricsSnapshot) -> Iterator[_Sample]:
        for topic in snapshot.topics:
            yield [str(topic["topic_name"])], cast(topic[key])

    return rows


def _channel_rows(
    key: str, cast: Callable[[Any], float] = float
) -> Callable[..., Iterable[_Sample]]:
    def rows(snapshot: MetricsSnapshot) -> Iterator[_Sample]:
        for topic in snapshot.topics:
            name = str(topic["topic_name"])
            for channel in topic["channels"]:
                yield [name, str(channel["channel_name"])], cast(channel[key])

    return rows


def _latency_rows(snapshot: MetricsSnapshot) -> Iterator[_Sample]:
    for topic in snapshot.topics:
        name = str(topic["topic_name"])
        for channel in topic["channels"]:
            result = channel["e2e_processing_latency"] or {}
            for item in result.get("percentiles") or ():
                quantile = format(float(item["quantile"]), "g")
                labels = [name, str(channel["channel_name"]), quantile]
                yield labels, float(item["value"]) / 1e9


def _one(read: Callable[[MetricsSnapshot], float]) -> Callable[..., Iterable[_Sample]]:
    return lambda snapshot: [([], read(snapshot))]


def _engine(field: str) -> Callable[..., Iterable[_Sample]]:
    def rows(snapshot: MetricsSnapshot) -> list[_Sample]:
        stats = snapshot.membership
        return [] if stats is None else [([], getattr(stats.engine, field))]

    return rows


def _driver(field: str) -> Callable[..., Iterable[_Sample]]:
    def rows(snapshot: MetricsSnapshot) -> list[_Sample]:
        stats = snapshot.membership
        return [] if stats is None else [([], getattr(stats, field))]

    return rows


def _member_rows(snapshot: MetricsSnapshot) -> list[_Sample]:
    stats = snapshot.membership
    if stats is None:
        return []
    return [([status], getattr(stats.engine, status)) for status in _STATUSES]


def _dropped_rows(snapshot: MetricsSnapshot) -> list[_Sample]:
    stats = snapshot.membership
    if stats is None:
        return []
    merged = _merge(stats.dropped, stats.engine.dropped)
    return [([reason], count) for reason, count in sorted(merged.items())]


def _lag_rows(snapshot: MetricsSnapshot) -> list[_Sample]:
    return [([topic, replica], float(lag)) for topic, replica, lag in snapshot.replication_lag]


def _paused(value: Any) -> float:
    return float(bool(value))


_T = ("topic",)
_C = ("topic", "channel")
FAMILIES: Final[tuple[_Family, ...]] = (
    _Family("shoal_topic_depth", False,
            "Messages queued in the topic before its channels, memory and disk.",
            _T, _topic_rows("depth")),
    _Family("shoal_topic_backend_depth", False, "Messages in the topic's disk queue.",
            _T, _topic_rows("backend_depth")),
    _Family("shoal_topic_messages", True, "Messages published to the topic.",
            _T, _topic_rows("message_count")),
    _Family("shoal_topic_message_bytes", True, "Bytes of messages published to the topic.",
            _T, _topic_rows("message_bytes")),
    _Family("shoal_topic_paused", False, "1 while the topic is paused.",
            _T, _topic_rows("paused", _paused)),
    *(_Family(f"shoal_channel_{name}", False, text, _C, _channel_rows(key))
      for key, name, text in _CHANNEL_GAUGES),
    *(_Family(f"shoal_channel_{name}", True, text, _C, _channel_rows(key))
      for key, name, text in _CHANNEL_COUNTERS),
    _Family("shoal_channel_paused", False, "1 while the channel is paused.",
            _C, _channel_rows("paused", _paused)),
    _Family("shoal_channel_e2e_processing_latency_seconds", False,
            "Publish-to-FIN latency quantiles over the configured window "
            "(--e2e-processing-latency-percentile).",
            ("topic", "channel", "quantile"), _latency_rows),
    _Family("shoal_members", False, "Members this node holds, by status.",
            ("status",), _member_rows),
    *(_Family(name, True, text, (), _engine(field)) for field, name, text in _ENGINE_COUNTERS),
    _Family("shoal_membership_health_score", False,
            "Lifeguard local health score (0 is healthy).", (), _engine("health_score")),
    _Family("shoal_membership_incarnation", False, "This node's incarnation.",
            (), _engine("incarnation")),
    *(_Family(name, True, text, (), _driver(field)) for field, name, text in _DRIVER_COUNTERS),
    _Family("shoal_gossip_dropped", True,
            "Gossip input dropped, by reason (driver and engine reasons alike).",
            ("reason",), _dropped_rows),
    _Family("shoal_registry_owners", False, "Members whose topic state this node holds.",
            (), _one(lambda s: s.registry_owners)),
    _Family("shoal_registry_messages_applied", True, "Registry messages applied.",
            (), _one(lambda s: s.registry_applied)),
    _Family("shoal_registry_messages_dropped", True,
            "Registry messages dropped: state under another identity of its owner.",
            (), _one(lambda s: s.registry_dropped)),
    _Family("shoal_disk_corrupt_records", True, "Corrupt records found in disk queues.",
            (), _one(lambda s: s.disk_corrupt_records)),
    _Family("shoal_disk_damaged_regions", False, "Disk queue regions set aside by recovery.",
            (), _one(lambda s: s.disk_damaged_regions)),
    _Family("shoal_replication_lag", False,
            "Records of a replicated topic its replica has not acknowledged yet.",
            ("topic", "replica"), _lag_rows),
)  # fmt: skip
"""Every family /metrics serves, in order."""


class NodeCollector:
    """Reads the node's figures (`snapshot`) and turns them into metric families.

    `snapshot` runs on the node's event loop; rendering it is `render_text`'s
    job (in pieces) or `SnapshotCollector`'s (whole families, for statsd).
    """

    def __init__(self, sources: MetricsSources) -> None:
        self._sources = sources

    def snapshot(self) -> MetricsSnapshot:
        """Read every source now."""
        sources = self._sources
        return MetricsSnapshot(
            topics=sources.topics() or [],
            membership=sources.membership(),
            registry_owners=sources.registry_owners(),
            registry_applied=sources.registry_applied(),
            registry_dropped=sources.registry_dropped(),
            disk_corrupt_records=sources.disk_corrupt_records(),
            disk_damaged_regions=sources.disk_damaged_regions(),
            replication_lag=sources.replication_lag(),
        )

    def collect(self) -> Iterable[Metric]:
        """Every family, read from the sources now."""
        return SnapshotCollector(self.snapshot()).collect()


class SnapshotCollector:
    """The metric families of one `MetricsSnapshot`, whole; touches nothing live."""

    def __init__(self, snapshot: MetricsSnapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        """Every family of the snapshot."""
        for spec in FAMILIES:
            family = spec.new()
            for labels, value in spec.samples(self._snapshot):
                family.add_metric(labels, value)
            if family.samples:
                yield family


class _Piece:
    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> Iterable[Metric]:
        return [self._family]


def _render(family: Metric, *, header: bool) -> bytes:
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Piece(family))
    text = generate_latest(registry)
    if header:
        return text
    # A continuation of a family already introduced: drop its HELP and TYPE.
    return b"".join(line for line in text.splitlines(keepends=True) if not line.startswith(b"#"))


async def render_text(snapshot: MetricsSnapshot, piece_samples: int = PIECE_SAMPLES) -> bytes:
    """The exposition text of ``snapshot``, yielding to the event loop between pieces.

    Each family is built and rendered at most ``piece_samples`` samples at a
    time; the pieces of one family follow each other, with its ``# HELP`` and
    ``# TYPE`` lines once, so the text is the same as one whole rendering.
    """
    out: list[bytes] = []
    for spec in FAMILIES:
        family = spec.new()
        started = False
        for labels, value in spec.samples(snapshot):
            family.add_metric(labels, value)
            if len(family.samples) >= piece_samples:
                out.append(_render(family, header=not started))
                started = True
                family = spec.new()
                await trio.lowlevel.checkpoint()
        if family.samples:
            out.append(_render(family, header=not started))
            await trio.lowlevel.checkpoint()
    return b"".join(out)


def _merge(*counts: Mapping[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for mapping in counts:
        for key, value in mapping.items():
            out[key] = out.get(key, 0) + value
    return out


def metrics_handler(collector: NodeCollector) -> Callable[[Request], Awaitable[Response]]:
    """The ``GET /metrics`` handler over ``collector``, in the classic text format (0.0.4).

    Not logged per request (scrapes come every few seconds, as /pub does).
    One scrape renders at a time; a second waits for the first.

    The text format is what every Prometheus reads; OpenMetrics is not
    offered, as its rendering cannot be split into pieces (see the module).
    """
    limiter = trio.CapacityLimiter(1)

    async def metrics(request: Request) -> Response:
        from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

        del request
        async with limiter:
            body = await render_text(collector.snapshot())
        return Response(status=200, body=body, content_type=CONTENT_TYPE_PLAIN_0_0_4)

    return metrics
