"""/stats snapshots: nsqd's JSON document and its text dump (docs/nsq.md §2.3).

Rules:
1. The JSON document has nsqd's keys, key order and value types, because
   nsqadmin, nsq_stat and client libraries decode it: counts are integers,
   ``start_time`` and ``connect_ts`` are unix seconds, and the arrays that
   nsqd leaves nil are ``null`` here too (``topics`` for an unknown topic
   filter, ``clients`` and ``producers`` when clients are excluded, and
   ``producers`` when no connection has published).
2. Topics and channels are sorted by name; channel clients by client ID.
3. Pure: the caller passes the broker, the TCP clients, ``now`` and the
   process figures (``memory``); nothing here reads a clock or the system.

End-to-end processing latency (docs/nsq.md §4.9) is not measured by the
channels, so every ``e2e_processing_latency`` is what nsqd reports when no
percentile is configured: ``{"count": 0, "percentiles": null}``. A channel
that gains a latency stream would supply it through `channel_stats`'s
``latency`` argument; `render_text` already prints percentiles.

Filters (nsqd's ``GetStats``): ``topic`` keeps that topic only (unknown:
``"topics": null``); ``channel`` keeps that channel in every listed topic and
skips topics without it; a topic filter also narrows each client's
``pub_counts`` to that topic. ``pub_counts`` is omitted when empty, as nsqd's
``omitempty`` does; nsqd lists only one entry because of a loop that stops
early, every entry is listed here.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shoal.queue.broker import Broker
    from shoal.queue.channel import Channel
    from shoal.queue.topic import Topic

__all__ = [
    "MEMORY_KEYS",
    "StatsClient",
    "channel_stats",
    "client_stats",
    "empty_latency",
    "format_go_duration",
    "producer_stats",
    "render_text",
    "stats_document",
    "topic_stats",
    "topics_stats",
]

#: The keys of nsqd's ``memory`` object, in its order (Go runtime figures).
MEMORY_KEYS = (
    "heap_objects",
    "heap_idle_bytes",
    "heap_in_use_bytes",
    "heap_released_bytes",
    "gc_pause_usec_100",
    "gc_pause_usec_99",
    "gc_pause_usec_95",
    "next_gc_bytes",
    "gc_total_runs",
)


class StatsClient(Protocol):
    """What /stats needs of a TCP client (`shoal.queue.protocol.ClientV2` has it)."""

    @property
    def pub_counts(self) -> Mapping[str, int]:
        """Messages published per topic; non-empty makes the client a producer."""
        ...

    def stats(self) -> dict[str, Any]:
        """The client object of docs/nsq.md §2.3, ``pub_counts`` included."""
        ...


def empty_latency() -> dict[str, Any]:
    """The ``e2e_processing_latency`` of nsqd with no percentiles configured."""
    return {"count": 0, "percentiles": None}


def client_stats(client: StatsClient, topic: str = "") -> dict[str, Any]:
    """One client object; ``topic`` narrows ``pub_counts`` (empty: omitted)."""
    data = client.stats()
    counts = data.pop("pub_counts", None) or []
    if topic:
        counts = [entry for entry in counts if entry["topic"] == topic]
    if counts:
        data["pub_counts"] = counts
    return data


def channel_stats(
    channel: Channel,
    clients: Mapping[int, StatsClient] | None,
    *,
    topic: str = "",
    latency: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One channel object.

    Args:
        channel: the channel.
        clients: the node's TCP clients by ID; None excludes them
            (``"clients": null``, as ``include_clients=false`` asks).
        topic: the request's topic filter (narrows client ``pub_counts``).
        latency: the channel's e2e latency result, if it measures one.
    """
    listed: list[dict[str, Any]] | None = None
    if clients is not None:
        listed = []
        for client_id in sorted(channel.clients):
            client = clients.get(client_id)
            if client is not None:
                listed.append(client_stats(client, topic))
    return {
        "channel_name": channel.name,
        "depth": channel.depth,
        "backend_depth": channel.backend_depth,
        "in_flight_count": channel.in_flight_count,
        "deferred_count": channel.deferred_count,
        "message_count": channel.message_count,
        "requeue_count": channel.requeue_count,
        "timeout_count": channel.timeout_count,
        "client_count": channel.client_count,
        "clients": listed,
        "paused": channel.paused,
        "e2e_processing_latency": latency if latency is not None else empty_latency(),
    }


def topic_stats(topic: Topic, channels: list[dict[str, Any]]) -> dict[str, Any]:
    """One topic object around its already built channel objects."""
    return {
        "topic_name": topic.name,
        "channels": channels,
        "depth": topic.depth,
        "backend_depth": topic.backend_depth,
        "message_count": topic.message_count,
        "message_bytes": topic.message_bytes,
        "paused": topic.paused,
        "e2e_processing_latency": _merge_latency([c["e2e_processing_latency"] for c in channels]),
    }


def _merge_latency(results: list[dict[str, Any]]) -> dict[str, Any]:
    """A topic's latency: the sum of its channels' counts, percentiles by quantile.

    nsqd merges its channels' quantile streams; with streams absent the
    result is the empty one. Percentile values are averaged per quantile,
    weighted by count (the only merge the published results allow).
    """
    measured = [r for r in results if r.get("percentiles")]
    if not measured:
        return empty_latency()
    count = sum(int(r["count"]) for r in measured)
    sums: dict[float, float] = {}
    weights: dict[float, int] = {}
    for result in measured:
        weight = max(int(result["count"]), 1)
        for item in result["percentiles"]:
            q = float(item["quantile"])
            sums[q] = sums.get(q, 0.0) + float(item["value"]) * weight
            weights[q] = weights.get(q, 0) + weight
    percentiles = [
        {"quantile": q, "value": sums[q] / weights[q]} for q in sorted(sums, reverse=True)
    ]
    return {"count": count, "percentiles": percentiles}


def topics_stats(
    broker: Broker,
    clients: Mapping[int, StatsClient] | None,
    *,
    topic: str = "",
    channel: str = "",
    now: float = 0.0,
) -> list[dict[str, Any]] | None:
    """The ``topics`` array: sorted, filtered as nsqd's ``GetStats`` does.

    Returns:
        None when ``topic`` names no topic (nsqd's ``"topics": null``).
    """
    if topic:
        found = broker.get_topic(topic)
        if found is None:
            return None
        selected = [found]
    else:
        selected = [broker.topics[name] for name in sorted(broker.topics)]
    out: list[dict[str, Any]] = []
    for owner in selected:
        if channel:
            only = owner.channels.get(channel)
            if only is None:
                continue
            chosen = [only]
        else:
            chosen = [owner.channels[name] for name in sorted(owner.channels)]
        channels = [
            channel_stats(
                c, clients, topic=topic, latency=c.e2e.snapshot(now) if c.e2e is not None else None
            )
            for c in chosen
        ]
        out.append(topic_stats(owner, channels))
    return out


def producer_stats(
    clients: Mapping[int, StatsClient], *, topic: str = ""
) -> list[dict[str, Any]] | None:
    """The ``producers`` array: clients that have published, by client ID.

    Returns:
        None when there are none (nsqd's nil slice).
    """
    out = [
        client_stats(clients[client_id], topic)
        for client_id in sorted(clients)
        if clients[client_id].pub_counts
    ]
    return out or None


def stats_document(
    broker: Broker,
    clients: Mapping[int, StatsClient],
    *,
    version: str,
    health: str,
    start_time: float,
    topic: str = "",
    channel: str = "",
    include_clients: bool = True,
    memory: Mapping[str, Any] | None = None,
    now: float = 0.0,
) -> dict[str, Any]:
    """The whole ``/stats?format=json`` document.

    Args:
        broker: the node's topics.
        clients: the node's TCP clients by ID.
        version: the node's version string.
        health: ``OK`` or ``NOK - <reason>``.
        start_time: when the node started, unix seconds.
        topic: keep only this topic ("" keeps all).
        channel: keep only this channel in each topic ("" keeps all).
        include_clients: list channel clients and producers; otherwise both
            are ``null``.
        memory: the process figures (`MEMORY_KEYS` plus any extras); None
            omits ``memory``, as ``include_mem=false`` asks.
        now: the current time (rotates the e2e latency windows).
    """
    listed = clients if include_clients else None
    document: dict[str, Any] = {
        "version": version,
        "health": health,
        "start_time": int(start_time),
        "topics": topics_stats(broker, listed, topic=topic, channel=channel, now=now),
    }
    if memory is not None:
        document["memory"] = dict(memory)
    document["producers"] = producer_stats(clients, topic=topic) if include_clients else None
    return document


# -- the text dump ------------------------------------------------------------


def format_go_duration(seconds: float) -> str:
    """``seconds`` as Go's ``time.Duration.String`` writes it (``1h2m3.5s``, ``250ms``)."""
    ns = round(seconds * 1_000_000_000)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 1_000_000_000:
        if u < 1_000:
            return f"{sign}{u}ns"
        if u < 1_000_000:
            return f"{sign}{_frac(u, 3)}µs"
        return f"{sign}{_frac(u, 6)}ms"
    whole, rest = divmod(u, 1_000_000_000)
    out = f"{_frac(whole * 1_000_000_000 % 60_000_000_000 + rest, 9)}s"
    if whole >= 60:
        minutes, hours = (whole // 60) % 60, whole // 3600
        out = f"{minutes}m{out}"
        if hours:
            out = f"{hours}h{out}"
    return sign + out


def _frac(value: int, digits: int) -> str:
    """``value / 10**digits`` with trailing zeros (and a bare point) removed."""
    whole, rest = divmod(value, 10**digits)
    if not rest:
        return str(whole)
    return f"{whole}.{rest:0{digits}d}".rstrip("0")


def _nano_to_human(value: float) -> str:
    """Format nanoseconds as nsqd's ``NanoSecondToHuman`` does."""
    if value > 1e9:
        return f"{value / 1e9:.1f}s"
    if value > 1e6:
        return f"{value / 1e6:.1f}ms"
    if value > 1e3:
        return f"{value / 1e3:.1f}us"
    return f"{value:.1f}ns"


def _latency_text(result: Mapping[str, Any] | None) -> str:
    if not result or not result.get("percentiles"):
        return ""
    return ", ".join(_nano_to_human(float(p["value"])) for p in result["percentiles"])


def _client_line(client: Mapping[str, Any], now: float) -> str:
    """Format one client as nsqd's ``ClientV2Stats.String`` does."""
    connected = format_go_duration(max(int(now) - int(client["connect_ts"]), 0))
    port = str(client["remote_address"]).rsplit(":", 1)[-1]
    ident = f"{client['hostname']}:{port} {client['user_agent']}"
    counts = client.get("pub_counts") or []
    if counts:
        total = sum(int(c["count"]) for c in counts)
        topics = ",".join(f"{c['topic']}={c['count']}" for c in counts)
        return (
            f"[{client['version']} {ident:<21}] msgs: {total:<8d} topics: {topics} "
            f"connected: {connected}"
        )
    return (
        f"[{client['version']} {ident:<21}] state: {client['state']} "
        f"inflt: {client['in_flight_count']:<4d} rdy: {client['ready_count']:<4d} "
        f"fin: {client['finish_count']:<8d} re-q: {client['requeue_count']:<8d} "
        f"msgs: {client['message_count']:<8d} connected: {connected}"
    )


def render_text(
    document: Mapping[str, Any],
    *,
    now: float,
    start_time: float | None = None,
    product: str = "shoal",
) -> str:
    """Render a `stats_document` as nsqd's human-readable /stats (the default format).

    Args:
        document: what `stats_document` returned.
        now: the current time, for the uptime and each client's connected time.
        start_time: the exact start time for the uptime; the document's whole
            seconds when None.
        product: the name on the first line (nsqd writes ``nsqd v1.3.0 ...``).
    """
    start = float(document["start_time"]) if start_time is None else start_time
    started = datetime.datetime.fromtimestamp(int(start), tz=datetime.UTC)
    lines = [
        f"{product} v{document['version']}",
        f"start_time {started.strftime('%Y-%m-%dT%H:%M:%SZ')}",
        f"uptime {format_go_duration(max(now - start, 0.0))}",
        "",
        f"Health: {document['health']}",
    ]
    memory = document.get("memory")
    if memory is not None:
        lines += ["", "Memory:"]
        lines += [f"   {key:<25}\t{int(memory.get(key, 0))}" for key in MEMORY_KEYS]
    topics = document.get("topics") or []
    if not topics:
        lines += ["", "Topics: None"]
    else:
        lines += ["", "Topics:"]
    for index, topic in enumerate(topics):
        prefix = "*P " if topic["paused"] else "   "
        if index:
            lines.append("")
        lines += [
            f"{prefix}[{topic['topic_name']:<15}] depth: {topic['depth']:<5d} "
            f"be-depth: {topic['backend_depth']:<5d} msgs: {topic['message_count']:<8d} "
            f"e2e%: {_latency_text(topic['e2e_processing_latency'])}",
        ]
        for channel in topic["channels"]:
            prefix = "   *P " if channel["paused"] else "      "
            lines.append(
                f"{prefix}[{channel['channel_name']:<25}] depth: {channel['depth']:<5d} "
                f"be-depth: {channel['backend_depth']:<5d} "
                f"inflt: {channel['in_flight_count']:<4d} def: {channel['deferred_count']:<4d} "
                f"re-q: {channel['requeue_count']:<5d} timeout: {channel['timeout_count']:<5d} "
                f"msgs: {channel['message_count']:<8d} "
                f"e2e%: {_latency_text(channel['e2e_processing_latency'])}"
            )
            lines += [f"        {_client_line(c, now)}" for c in channel["clients"] or []]
    producers = document.get("producers") or []
    if not producers:
        lines += ["", "Producers: None"]
    else:
        lines += ["", "Producers:"]
        lines += [f"   {_client_line(c, now)}" for c in producers]
    return "\n".join(lines) + "\n"
