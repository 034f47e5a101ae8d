"""Push the node's figures to statsd, as nsqd's ``--statsd-address`` does.

The figures are `NodeCollector`'s, the ones ``/metrics`` serves, so the two
never disagree and nothing is counted twice. Every ``statsd_interval`` the
collector is read once; gauges are sent as gauges (``|g``) and counters as
their increase since the previous push (``|c``), which is what nsqd sends.
Lines are packed into datagrams of at most ``statsd_udp_packet_size`` bytes
(nsqd's default, 508, fits any path's MTU).

Names follow nsqd's layout under the prefix: ``topic.<topic>.depth``,
``topic.<topic>.channel.<channel>.in_flight``; figures nsqd has no name for
keep ours without ``shoal_`` (``members.alive``, ``gossip_dropped.decrypt``).
In the prefix, ``%s`` is the node's ``<broadcast address>_<http port>`` with
dots and colons made underscores (nsqd's default prefix is ``nsq.%s``).

`StatsdFormatter` is pure (families in, lines out); `run_statsd` is the
trio loop around it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from shoal.cluster.metrics import SnapshotCollector
from shoal.config import parse_address

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client.metrics_core import Metric

    from shoal.cluster.metrics import MetricsSnapshot, NodeCollector

__all__ = ["StatsdFormatter", "pack_lines", "run_statsd", "statsd_prefix"]

log = logging.getLogger("shoal.statsd")


def statsd_prefix(template: str, broadcast_address: str, http_port: int) -> str:
    """Expand ``%s`` as nsqd does and end the prefix with a dot (empty stays empty)."""
    host_key = f"{broadcast_address}_{http_port}".replace(".", "_").replace(":", "_")
    prefix = template.replace("%s", host_key)
    return prefix if not prefix or prefix.endswith(".") else prefix + "."


def _stat_name(name: str, labels: dict[str, str]) -> str:
    base = name.removeprefix("shoal_").removesuffix("_total")
    labels = dict(labels)
    topic = labels.pop("topic", None)
    channel = labels.pop("channel", None)
    parts: list[str] = []
    if topic is not None and channel is not None:
        parts = ["topic", topic, "channel", channel, base.removeprefix("channel_")]
    elif topic is not None:
        parts = ["topic", topic, base.removeprefix("topic_")]
    else:
        parts = [base]
    parts += [value.replace(".", "_") for _key, value in sorted(labels.items())]
    return ".".join(parts)


class StatsdFormatter:
    """Turns metric families into statsd lines; remembers counters between pushes.

    Args:
        prefix: prepended to every name (see `statsd_prefix`).
    """

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._last: dict[str, float] = {}

    def lines(self, families: Iterable[Metric]) -> list[str]:
        """One line per sample: gauges as they are, counters as their increase."""
        out = []
        seen: dict[str, float] = {}
        for family in families:
            for sample in family.samples:
                name = self._prefix + _stat_name(sample.name, dict(sample.labels))
                if family.type == "counter":
                    seen[name] = sample.value
                    # A counter that went down belongs to a recreated topic or
                    # channel: its whole value is new.
                    last = self._last.get(name, 0.0)
                    delta = sample.value - last if sample.value >= last else sample.value
                    out.append(f"{name}:{int(delta)}|c")
                else:
                    out.append(f"{name}:{_number(sample.value)}|g")
        self._last = seen
        return out


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def pack_lines(lines: Iterable[str], packet_size: int) -> list[bytes]:
    """Join lines with newlines into datagrams of at most ``packet_size`` bytes.

    A single line longer than ``packet_size`` goes alone (statsd servers
    accept it; truncating it would corrupt it).
    """
    packets: list[bytes] = []
    current = b""
    for line in lines:
        data = line.encode()
        if current and len(current) + 1 + len(data) > packet_size:
            packets.append(current)
            current = b""
        current = current + b"\n" + data if current else data
    if current:
        packets.append(current)
    return packets


def _render(formatter: StatsdFormatter, snapshot: MetricsSnapshot) -> list[str]:
    return formatter.lines(SnapshotCollector(snapshot).collect())


async def run_statsd(
    address: str,
    collector: NodeCollector,
    *,
    prefix: str,
    interval: float,
    packet_size: int,
) -> None:
    """Push ``collector``'s figures to ``address`` every ``interval`` seconds, forever.

    A statsd server that is down or unresolvable costs a warning, once until
    pushes succeed again; the node carries on.
    """
    host, port = parse_address(address, what="statsd-address")
    formatter = StatsdFormatter(prefix)
    failing = False
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
        while True:
            await trio.sleep(interval)
            # Read on the loop, render in a thread, as /metrics does.
            snapshot = collector.snapshot()
            lines = await trio.to_thread.run_sync(_render, formatter, snapshot)
            packets = pack_lines(lines, packet_size)
            try:
                resolved = await trio.socket.getaddrinfo(host, port, family=trio.socket.AF_INET)
                target = resolved[0][4]
                for packet in packets:
                    await sock.sendto(packet, target)
            except OSError as exc:
                if not failing:
                    log.warning("STATSD: cannot send to %s: %s", address, exc)
                failing = True
                continue
            if failing:
                log.info("STATSD: sending to %s again", address)
            failing = False
