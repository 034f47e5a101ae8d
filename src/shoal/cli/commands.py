"""The operator's commands: members, topics, lookup, stats, pub, tail, keygen, leave, cluster.

Each command talks to one node's HTTP API (``--node HOST:PORT``, default
``$SHOAL_NODE`` or ``127.0.0.1:4151``): every node answers for the whole
cluster, so any node will do. ``--node`` also takes ``http://host:port``,
as NSQ users write nsqd addresses, and several nodes (repeated, or
separated by commas or spaces), tried in order until one answers. Commands
whose output is data take ``--json``. Serf's agent commands (join,
force-leave, monitor, info, keys) live in `shoal.cli.agent`.

Conventions, for scripts as much as for people:

- Output is data on stdout; progress and notes go to stderr, and only when
  stderr is a terminal, so a pipe sees nothing but the data.
- Errors are one line on stderr, ``shoal: <what went wrong>``, with exit code
  1 for failures at run time (an unreachable node, a refused request) and 2
  for usage errors (click's own). Never a traceback.
- Ctrl-C ends any command cleanly: ``shoal: interrupted`` on stderr and
  exit code 130, as a shell reports a command ended by SIGINT (``pub``
  first publishes what it has read).

The main group registers `COMMANDS` with ``cli.add_command``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import random
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import trio

from shoal.cli.cluster_up import (
    INTERRUPTED,
    MAX_NODES,
    PORT_STRIDE,
    ClusterSpec,
    LocalNode,
    run_cluster,
)
from shoal.cli.failures import describe_os_error, fail, interrupted, leaf
from shoal.cli.options import DURATION
from shoal.client.consumer import ConsumerConfig, open_consumer
from shoal.client.discovery import LookupResult, Member, fetch_lookup, fetch_members
from shoal.client.errors import HTTPStatusError, NodeUnavailable
from shoal.client.httpclient import error_message, format_address, get_json, parse_address, request
from shoal.client.producer import ProducerConfig, open_producer
from shoal.client.strategies import STRATEGY_NAMES
from shoal.errors import ShoalError
from shoal.queue.names import is_valid_channel_name, is_valid_topic_name

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence

    from shoal.client.producer import Producer

__all__ = [
    "COMMANDS",
    "cluster",
    "keygen",
    "leave",
    "lookup",
    "members",
    "pub",
    "run",
    "stats",
    "tail",
    "topics",
]

T = TypeVar("T")

#: The node asked when neither ``--node`` nor ``$SHOAL_NODE`` is given.
DEFAULT_NODE = "127.0.0.1:4151"
#: Seconds one HTTP request from a command may take.
REQUEST_TIMEOUT = 10.0
#: Messages per MPUB when publishing stdin, and their byte budget.
PUB_BATCH = 200
PUB_BATCH_BYTES = 1 << 20
# Seconds between progress updates on a terminal.
_PROGRESS_INTERVAL = 0.25


# -- shared plumbing ------------------------------------------------------------


class Failure(ShoalError):
    """A command failed in a way worth one line on stderr."""


class AddressType(click.ParamType[str, Any]):
    """``host:port`` (the port defaults to 4151), checked at parse time.

    ``http://host:port/`` is accepted too, as NSQ users write nsqd
    addresses; ``https`` is refused since nodes serve plain HTTP.
    """

    name = "host:port"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """Return the address normalised to ``host:port``."""
        text = str(value).strip()
        if text.lower().startswith("https://"):
            self.fail(f"{text!r}: nodes serve plain HTTP, not https", param, ctx)
        if text.lower().startswith("http://"):
            text = text[len("http://") :]
        text = text.rstrip("/")
        try:
            host, port = parse_address(text, 4151)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return format_address(host, port)


ADDRESS = AddressType()


def _split_nodes(ctx: click.Context, param: click.Parameter, value: Any) -> tuple[str, ...]:
    """Every ``--node``, each possibly a comma-separated list, in order."""
    values = value if isinstance(value, tuple | list) else (value,)
    nodes: list[str] = []
    for item in values:
        for part in str(item).replace(",", " ").split():
            address = ADDRESS.convert(part, param, ctx)
            if address not in nodes:
                nodes.append(address)
    return tuple(nodes) or (DEFAULT_NODE,)


def topic_argument(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Refuse an invalid topic name as a usage error."""
    if not is_valid_topic_name(value):
        raise click.BadParameter(f"{value!r} is not a valid topic name", ctx, param)
    return value


def node_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--node HOST:PORT`` (repeatable), defaulting to ``$SHOAL_NODE`` then 127.0.0.1:4151.

    The command gets ``nodes``, a tuple in the order given; with several,
    a node that does not answer is skipped for the next (`first_answering`).
    """
    return click.option(
        "--node",
        "nodes",
        multiple=True,
        envvar="SHOAL_NODE",
        default=(DEFAULT_NODE,),
        show_default=True,
        show_envvar=True,
        metavar="HOST:PORT",
        callback=_split_nodes,
        help="HTTP address of any node of the cluster (http://host:port works too); "
        "repeat or separate with commas to fall back on the next when one does not answer.",
    )(fn)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: print JSON instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        fn
    )


class _StderrHandler(logging.Handler):
    """Client warnings (a failed node, a retried lookup) as ``shoal: ...`` lines."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"shoal: {record.getMessage()}", err=True)


def _show_client_warnings() -> None:
    logger = logging.getLogger("shoal.client")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler(logging.WARNING))
        logger.propagate = False
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


def run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``fn(*args)`` under trio, turning failures into one line and exit 1.

    Ctrl-C (KeyboardInterrupt) prints ``shoal: interrupted`` and exits 130,
    as a shell reports a command ended by SIGINT.
    """
    _show_client_warnings()
    try:
        return trio.run(fn, *args)
    except BaseException as raised:  # the CLI boundary sorts every failure
        exc = leaf(raised)
        if isinstance(exc, KeyboardInterrupt):
            interrupted()
        if isinstance(exc, SystemExit):
            raise exc from None
        if isinstance(exc, BrokenPipeError):
            _silence_stdout()
            sys.exit(0)
        if isinstance(exc, OSError):
            fail(describe_os_error(exc))
        if isinstance(exc, ShoalError):
            fail(str(exc))
        if isinstance(exc, trio.TooSlowError):
            fail(f"no answer within {REQUEST_TIMEOUT:g}s")
        raise


def _silence_stdout() -> None:
    # The reader went away (``shoal tail | head``): point stdout at /dev/null
    # so the interpreter's final flush does not print a second error.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def stderr_is_terminal() -> bool:
    """True when progress lines would reach a person."""
    return sys.stderr.isatty()


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, with a header row."""
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def print_json(data: Any) -> None:
    """One JSON document on one line."""
    click.echo(json.dumps(data, separators=(",", ":"), sort_keys=False))


async def first_answering(fn: Callable[..., Awaitable[T]], nodes: Sequence[str], *args: Any) -> T:
    """``await fn(node, *args)`` on the first of ``nodes`` that answers.

    A node that cannot be reached or does not answer in time is noted on
    stderr and the next one is tried; a node that answers with an error is
    not skipped (another node would give the same answer).

    Raises:
        NodeUnavailable: or trio.TooSlowError: the last node's failure,
            when none answered.
    """
    for position, node in enumerate(nodes):
        try:
            return await fn(node, *args)
        except (NodeUnavailable, trio.TooSlowError) as exc:
            if position + 1 == len(nodes):
                raise
            reason = str(exc) or f"{node}: no answer within {REQUEST_TIMEOUT:g}s"
            click.echo(f"shoal: {reason}; trying {nodes[position + 1]}", err=True)
    raise AssertionError("unreachable: nodes is never empty")


async def get(node: str, path: str, params: dict[str, str | int | float] | None = None) -> Any:
    """GET JSON from ``node`` within `REQUEST_TIMEOUT`."""
    with trio.fail_after(REQUEST_TIMEOUT):
        return await get_json(node, path, params)


async def get_members(node: str) -> list[Member]:
    """``/members`` from ``node``, with a clear error for a node without membership."""
    try:
        with trio.fail_after(REQUEST_TIMEOUT):
            return await fetch_members(node)
    except HTTPStatusError as exc:
        if exc.status == 404:
            raise Failure(f"{node} does not serve /members (not a shoal node?)") from None
        raise


# -- members ---------------------------------------------------------------------


#: Statuses as Serf names them: a member SWIM declared dead is ``failed``.
DISPLAY_STATUS = {"alive": "alive", "suspect": "suspect", "dead": "failed", "left": "left"}
#: What ``--status`` accepts: Serf's names, and ``dead`` (what /members and
#: ``--json`` say) as an alias of ``failed``.
STATUS_FILTERS = {"alive": "alive", "suspect": "suspect", "failed": "dead", "dead": "dead",
                  "left": "left"}  # fmt: skip


def _tag_filter(values: tuple[str, ...]) -> list[tuple[str, re.Pattern[str]]]:
    """``KEY=REGEX`` pairs of ``members --tag``, as ``serf members -tag`` takes them."""
    filters = []
    for value in values:
        key, sep, pattern = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="--tag")
        try:
            filters.append((key, re.compile(pattern)))
        except re.error as exc:
            message = f"{pattern!r} is not a pattern: {exc}"
            raise click.BadParameter(message, param_hint="--tag") from None
    return filters


def _tags_text(tags: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items())) or "-"


def _detailed(member: Member) -> str:
    lines = [
        ("name", member.name),
        ("status", DISPLAY_STATUS.get(member.status, member.status)),
        ("gossip address", member.address),
        ("incarnation", member.incarnation),
        ("tcp address", format_address(member.broadcast_address, member.tcp_port)),
        ("http address", member.endpoint.http_address),
        ("lookup address", format_address(member.broadcast_address, member.lookup_http_port)),
        ("tags", _tags_text(member.tags)),
        ("topics", ",".join(member.topics) or "-"),
    ]
    return "\n".join(f"{key + ':':<16}{value}" for key, value in lines)


@click.command("members")
@node_option
@click.option(
    "--status",
    type=click.Choice(list(STATUS_FILTERS)),
    multiple=True,
    help="Only members with this status (repeatable; dead is an alias of failed).",
)
@click.option(
    "--tag",
    "tag_values",
    multiple=True,
    metavar="KEY=REGEX",
    help="Only members whose tag KEY matches REGEX in full (repeatable: all must match).",
)
@click.option("--detailed", is_flag=True, help="Every field of every member, one block each.")
@json_option
def members(
    nodes: tuple[str, ...],
    status: tuple[str, ...],
    tag_values: tuple[str, ...],
    detailed: bool,
    as_json: bool,
) -> None:
    """List the cluster's members, as the node sees them (like `serf members`).

    A member SWIM declared dead shows as failed, as Serf names it; --json
    keeps /members' own word, dead, so scripts written against it still work.
    """
    wanted = {STATUS_FILTERS[s] for s in status}
    tag_filters = _tag_filter(tag_values)
    found = run(first_answering, get_members, nodes)
    selected = sorted(
        (
            m
            for m in found
            if (not wanted or m.status in wanted)
            and all(
                key in m.tags and pattern.fullmatch(m.tags[key]) for key, pattern in tag_filters
            )
        ),
        key=lambda m: m.name,
    )
    if as_json:
        print_json({"members": [m.as_json() for m in selected]})
        return
    if detailed:
        click.echo("\n\n".join(_detailed(m) for m in selected))
        return
    rows = [
        (m.name, m.address, DISPLAY_STATUS.get(m.status, m.status), m.incarnation,
         ",".join(m.topics) or "-", _tags_text(m.tags))
        for m in selected
    ]  # fmt: skip
    click.echo(table(("NAME", "ADDRESS", "STATUS", "INCARNATION", "TOPICS", "TAGS"), rows))


# -- topics and lookup --------------------------------------------------------------


def _producer_http(producer: dict[str, Any]) -> str:
    return format_address(
        str(producer.get("broadcast_address", "")), int(producer.get("http_port", 0))
    )


def _is_replicated(producer: dict[str, Any]) -> bool:
    factor = producer.get("replication_factor")
    return isinstance(factor, int) and factor > 1


async def _owner_lags(producers: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each replicating producer's ``/stats`` ``replication.owned``: the lag only owners know.

    A producer that does not answer is left out (its lag shows as unknown).
    """
    addresses = sorted({_producer_http(p) for p in producers if _is_replicated(p)})
    owned: dict[str, dict[str, Any]] = {}

    async def one(address: str) -> None:
        try:
            data = await get(address, "/stats", {"format": "json", "include_clients": "false"})
        except (NodeUnavailable, HTTPStatusError, trio.TooSlowError):
            return
        replication = data.get("replication") if isinstance(data, dict) else None
        topics = replication.get("owned") if isinstance(replication, dict) else None
        if isinstance(topics, dict):
            owned[address] = topics

    async with trio.open_nursery() as nursery:
        for address in addresses:
            nursery.start_soon(one, address)
    return owned


def _replication(
    topic: str, producer: dict[str, Any], owned: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """A producer's replication of ``topic``: factor, replicas, lag (None: unreplicated)."""
    if not _is_replicated(producer):
        return None
    entry = owned.get(_producer_http(producer), {}).get(topic)
    lag = entry.get("lag") if isinstance(entry, dict) else None
    replicas = producer.get("replicas")
    return {
        "factor": producer["replication_factor"],
        "replicas": [str(r) for r in replicas] if isinstance(replicas, list) else [],
        "lag": {str(k): v for k, v in lag.items()} if isinstance(lag, dict) else None,
    }


def _lag_text(replication: dict[str, Any] | None) -> str:
    """Records not yet acknowledged by the slowest replica; ``?`` when the owner did not say."""
    if replication is None:
        return "-"
    lag = replication["lag"]
    if lag is None:
        return "?"
    return str(max(lag.values(), default=0))


async def _lookup_all(node: str) -> list[dict[str, Any]]:
    data = await get(node, "/topics")
    names = sorted(data.get("topics") or []) if isinstance(data, dict) else []
    found: dict[str, LookupResult | None] = {}

    async def one(topic: str) -> None:
        with trio.fail_after(REQUEST_TIMEOUT):
            found[topic] = await fetch_lookup(node, topic)

    async with trio.open_nursery() as nursery:
        for topic in names:
            nursery.start_soon(one, topic)
    owned = await _owner_lags(p for r in found.values() if r for p in r.raw_producers)
    results = []
    for topic in names:
        result = found[topic]
        replication = {}
        for raw, endpoint in zip(
            result.raw_producers if result else (), result.producers if result else (), strict=False
        ):
            entry = _replication(topic, raw, owned)
            if entry is not None:
                replication[endpoint.tcp_address] = entry
        results.append(
            {
                "topic": topic,
                "producers": [p.tcp_address for p in result.producers] if result else [],
                "channels": sorted(result.channels) if result else [],
                "replication": replication,
            }
        )
    return results


def _topic_replicas_text(entry: dict[str, Any]) -> tuple[str, str]:
    """The REPLICAS and LAG cells of a topic: its producers' replicas, the largest lag."""
    replication = list(entry["replication"].values())
    if not replication:
        return "-", "-"
    replicas = sorted({r for item in replication for r in item["replicas"]})
    lags = [_lag_text(item) for item in replication]
    known = [int(lag) for lag in lags if lag.isdigit()]
    lag = "?" if len(known) < len(lags) else str(max(known))
    return ",".join(replicas) or "-", lag


@click.command("topics")
@node_option
@json_option
def topics(nodes: tuple[str, ...], as_json: bool) -> None:
    """List every topic in the cluster: producers, channels, replicas and replication lag.

    LAG is the most records a replica of the topic has not yet acknowledged,
    as each owner reports it in its /stats (? when an owner did not answer).
    """
    found = run(first_answering, _lookup_all, nodes)
    if as_json:
        print_json({"topics": found})
        return
    rows = [
        (t["topic"], len(t["producers"]), ",".join(t["channels"]) or "-", *_topic_replicas_text(t))
        for t in found
    ]
    click.echo(table(("TOPIC", "PRODUCERS", "CHANNELS", "REPLICAS", "LAG"), rows))


async def _lookup_one(node: str, topic: str) -> tuple[Any, dict[str, dict[str, Any]]]:
    try:
        data = await get(node, "/lookup", {"topic": topic})
    except HTTPStatusError as exc:
        if exc.status == 404 and exc.message == "TOPIC_NOT_FOUND":
            raise Failure(f"topic {topic} not found in the cluster") from None
        raise
    producers = data.get("producers") if isinstance(data, dict) else None
    return data, await _owner_lags(producers if isinstance(producers, list) else [])


@click.command("lookup")
@node_option
@json_option
@click.argument("topic", callback=topic_argument)
def lookup(nodes: tuple[str, ...], as_json: bool, topic: str) -> None:
    """Show the nodes that produce TOPIC, its channels, replicas and replication lag.

    The reply is nsqlookupd's /lookup; a replicated topic's producers also
    name their replicas, and LAG (records a replica has not yet
    acknowledged, per replica) comes from each owner's /stats.
    """
    data, owned = run(first_answering, _lookup_one, nodes, topic)
    if as_json:
        print_json(data)
        return
    channels = sorted(data.get("channels") or [])
    click.echo(f"channels: {', '.join(channels) or '-'}")
    rows = []
    for p in sorted(data.get("producers") or [], key=lambda p: str(p.get("hostname"))):
        replication = _replication(topic, p, owned)
        if replication is None:
            replicas = lag = "-"
        else:
            replicas = ",".join(replication["replicas"]) or "-"
            lag = (
                ",".join(f"{r}={n}" for r, n in sorted(replication["lag"].items())) or "-"
                if replication["lag"] is not None
                else "?"
            )
        rows.append(
            (
                p.get("hostname", ""),
                format_address(str(p.get("broadcast_address", "")), int(p.get("tcp_port", 0))),
                p.get("http_port", ""),
                p.get("version", ""),
                replicas,
                lag,
            )
        )
    click.echo(table(("HOSTNAME", "TCP ADDRESS", "HTTP PORT", "VERSION", "REPLICAS", "LAG"), rows))


# -- stats -------------------------------------------------------------------------

_COUNTERS = (
    "depth",
    "in_flight_count",
    "deferred_count",
    "requeue_count",
    "timeout_count",
    "message_count",
    "client_count",
)


@dataclasses.dataclass(slots=True)
class _Row:
    topic: str
    channel: str
    nodes: int = 0
    counters: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(_COUNTERS, 0)
    )


def aggregate(snapshots: Sequence[dict[str, Any]]) -> dict[tuple[str, str], _Row]:
    """Sum ``/stats`` replies of several nodes per (topic, channel).

    A topic row (channel ``""``) carries the topic's depth and message count
    and the sums of its channels' in-flight, deferred, requeue, timeout and
    client counts; ``nodes`` counts the nodes holding it.
    """
    rows: dict[tuple[str, str], _Row] = {}
    for snapshot in snapshots:
        for topic in snapshot.get("topics") or []:
            name = str(topic.get("topic_name", ""))
            row = rows.setdefault((name, ""), _Row(name, ""))
            row.nodes += 1
            row.counters["depth"] += int(topic.get("depth", 0))
            row.counters["message_count"] += int(topic.get("message_count", 0))
            for channel in topic.get("channels") or []:
                cname = str(channel.get("channel_name", ""))
                crow = rows.setdefault((name, cname), _Row(name, cname))
                crow.nodes += 1
                for key in _COUNTERS:
                    value = int(channel.get(key, 0))
                    crow.counters[key] += value
                    if key not in ("depth", "message_count"):
                        row.counters[key] += value
    return dict(sorted(rows.items()))


async def _collect_stats(
    node: str, topic: str | None, channel: str | None, everywhere: bool
) -> tuple[list[str], list[dict[str, Any]]]:
    params: dict[str, str | int | float] = {"format": "json", "include_clients": "false"}
    if topic:
        params["topic"] = topic
    if channel:
        params["channel"] = channel
    if not everywhere:
        return [node], [await get(node, "/stats", params)]
    alive = [m for m in await get_members(node) if m.status == "alive"]
    snapshots: dict[str, dict[str, Any]] = {}

    async def one(member: Member) -> None:
        address = member.endpoint.http_address
        try:
            snapshots[member.name] = await get(address, "/stats", params)
        except (NodeUnavailable, HTTPStatusError, trio.TooSlowError) as exc:
            reason = str(exc) or "no answer"
            click.echo(f"shoal: skipping {member.name}: {reason}", err=True)

    async with trio.open_nursery() as nursery:
        for member in alive:
            nursery.start_soon(one, member)
    if not snapshots:
        raise Failure("no member answered /stats")
    names = sorted(snapshots)
    return names, [snapshots[n] for n in names]


def _stats_json(nodes: list[str], rows: dict[tuple[str, str], _Row]) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for (topic, channel), row in rows.items():
        entry = {"nodes": row.nodes, **row.counters}
        if not channel:
            out.append({"topic_name": topic, **entry, "channels": []})
        else:
            out[-1]["channels"].append({"channel_name": channel, **entry})
    return {"nodes": nodes, "topics": out}


def _stats_table(
    rows: dict[tuple[str, str], _Row], previous: dict[tuple[str, str], _Row] | None, elapsed: float
) -> str:
    headers = ["TOPIC", "CHANNEL", "NODES", "DEPTH", "IN-FLIGHT", "DEFERRED", "REQUEUED"]
    headers += ["TIMED-OUT", "MESSAGES", "CLIENTS"]
    if previous is not None:
        headers.append("MSG/S")
    lines = []
    for key, row in rows.items():
        c = row.counters
        line: list[object] = [row.topic, row.channel or "-", row.nodes, c["depth"]]
        line += [c["in_flight_count"], c["deferred_count"], c["requeue_count"]]
        line += [c["timeout_count"], c["message_count"], c["client_count"]]
        if previous is not None:
            before = previous.get(key)
            delta = c["message_count"] - (before.counters["message_count"] if before else 0)
            line.append(f"{max(0, delta) / elapsed:.1f}" if elapsed > 0 else "-")
        lines.append(line)
    return table(headers, lines)


async def _stats_loop(
    nodes: tuple[str, ...],
    topic: str | None,
    channel: str | None,
    everywhere: bool,
    interval: float | None,
    count: int | None,
    as_json: bool,
) -> None:
    rounds = count if count is not None else (1 if interval is None else math.inf)
    previous: dict[tuple[str, str], _Row] | None = None
    last = 0.0
    done = 0
    while done < rounds:
        if done:
            await trio.sleep_until(last + (interval or 0.0))
        now = trio.current_time()
        names, snapshots = await first_answering(_collect_stats, nodes, topic, channel, everywhere)
        rows = aggregate(snapshots)
        if as_json:
            print_json(_stats_json(names, rows))
        else:
            if done:
                click.echo()
            click.echo(_stats_table(rows, previous, now - last))
        previous, last = rows, now
        done += 1


@click.command("stats")
@node_option
@click.option("--topic", default=None, help="Only this topic.")
@click.option("--channel", default=None, help="Only this channel (of every listed topic).")
@click.option(
    "--all", "everywhere", is_flag=True, help="Every live member, summed (like nsq_stat)."
)
@click.option("--interval", type=DURATION, default=None, help="Refresh this often (e.g. 2s).")
@click.option(
    "--count", type=click.IntRange(min=1), default=None, help="Stop after this many refreshes."
)
@json_option
def stats(
    nodes: tuple[str, ...],
    topic: str | None,
    channel: str | None,
    everywhere: bool,
    interval: float | None,
    count: int | None,
    as_json: bool,
) -> None:
    """Show topic and channel counters of one node, or of every member with --all."""
    if topic is not None and not is_valid_topic_name(topic):
        raise click.BadParameter(f"{topic!r} is not a valid topic name", param_hint="--topic")
    if channel is not None and not is_valid_channel_name(channel):
        raise click.BadParameter(f"{channel!r} is not a valid channel name", param_hint="--channel")
    if interval is not None and interval <= 0:
        raise click.BadParameter("must be positive", param_hint="--interval")
    run(_stats_loop, nodes, topic, channel, everywhere, interval, count, as_json)


# -- pub ---------------------------------------------------------------------------


class _Progress:
    """``published N messages`` rewritten in place on a terminal, nothing otherwise."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.count = 0
        self.enabled = stderr_is_terminal()
        self._shown_at = -math.inf

    def add(self, count: int) -> None:
        self.count += count
        now = trio.current_time()
        if self.enabled and now - self._shown_at >= _PROGRESS_INTERVAL:
            self._shown_at = now
            click.echo(f"\rpublished {self.count} messages to {self.topic}", err=True, nl=False)

    def finish(self) -> None:
        if self.enabled:
            click.echo(f"\rpublished {self.count} messages to {self.topic}", err=True)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _PubSettings:
    topic: str
    key: str | None
    defer: float
    rate: float | None
    delimiter: bytes
    spread: bool


class _Splitter:
    """Cuts a byte stream into messages at a delimiter; empty messages are skipped."""

    def __init__(self, delimiter: bytes) -> None:
        self.delimiter = delimiter
        self.rest = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        parts = (self.rest + chunk).split(self.delimiter)
        self.rest = parts.pop()
        return [body for body in (self._clean(p) for p in parts) if body]

    def finish(self) -> list[bytes]:
        last, self.rest = self._clean(self.rest), b""
        return [last] if last else []

    def _clean(self, part: bytes) -> bytes:
        # A CRLF file split at newlines leaves a \r on every message.
        return part.removesuffix(b"\r") if self.delimiter == b"\n" else part


async def _read_stdin(
    send: trio.MemorySendChannel[list[bytes]], splitter: _Splitter, stop: trio.CancelScope
) -> None:
    """Send stdin's messages as they arrive: each read returns what is buffered now.

    ``stop`` (Ctrl-C) ends the reading; what was already read, the partial
    last message included, is still sent. The thread blocked in ``read``
    is abandoned, as nothing can interrupt it.
    """
    stream = sys.stdin.buffer
    read = getattr(stream, "read1", None) or stream.read
    async with send:
        with stop:
            while True:
                chunk = await trio.to_thread.run_sync(read, 65536, abandon_on_cancel=True)
                if not chunk:
                    break
                bodies = splitter.feed(chunk)
                if bodies:
                    await send.send(bodies)
        bodies = splitter.finish()
        if bodies:
            await send.send(bodies)


async def _publish_batch(
    producer: Producer, settings: _PubSettings, bodies: list[bytes], progress: _Progress
) -> None:
    """Publish ``bodies`` spread message by message over the producer's nodes.

    One MPUB per node and round: with n nodes the batch is dealt into n
    interleaved parts, each an MPUB the strategy sends to its next node, so
    round-robin spreads messages, not batches, without one request per
    message.
    """
    if settings.defer > 0:
        for body in bodies:
            await producer.publish(settings.topic, body, key=settings.key, defer=settings.defer)
            progress.add(1)
        return
    ways = max(1, min(len(bodies), producer.statistics().nodes)) if settings.spread else 1
    for start in range(ways):
        part = bodies[start::ways]
        for offset in range(0, len(part), PUB_BATCH):
            chunk = part[offset : offset + PUB_BATCH]
            if len(chunk) == 1:
                await producer.publish(settings.topic, chunk[0], key=settings.key)
            else:
                await producer.mpublish(settings.topic, chunk, key=settings.key)
            progress.add(len(chunk))


async def _publish_stream(
    producer: Producer,
    settings: _PubSettings,
    receive: trio.MemoryReceiveChannel[list[bytes]],
    progress: _Progress,
) -> None:
    """Publish what the reader sends: everything buffered so far, at once.

    With ``--rate`` messages go one at a time on a fixed schedule instead.
    """
    started = trio.current_time()
    async with receive:
        async for first in receive:
            bodies = list(first)
            while len(bodies) < PUB_BATCH * 8:
                try:
                    bodies.extend(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if settings.rate is None:
                await _publish_batch(producer, settings, bodies, progress)
                continue
            for body in bodies:
                await trio.sleep_until(started + progress.count / settings.rate)
                await _publish_batch(producer, settings, [body], progress)


async def _pub(
    nodes: tuple[str, ...],
    settings: _PubSettings,
    messages: tuple[str, ...],
    strategy: str,
    weights: dict[str, float],
) -> tuple[int, bool]:
    """Publish, and return the count and whether Ctrl-C ended the input."""
    config = ProducerConfig(discover=strategy != "node", request_timeout=REQUEST_TIMEOUT)
    progress = _Progress(settings.topic)
    interrupted_by_user = False
    async with open_producer(
        list(nodes),
        strategy="round-robin" if strategy == "node" else strategy,
        weights=weights or None,
        config=config,
    ) as producer:
        send, receive = trio.open_memory_channel[list[bytes]](16)
        stop = trio.CancelScope()
        with trio.open_signal_receiver(signal.SIGINT) as signals:

            async def on_ctrl_c() -> None:
                nonlocal interrupted_by_user
                async for _ in signals:
                    interrupted_by_user = True
                    stop.cancel()  # stop reading; what was read is still published
                    return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(on_ctrl_c)
                if messages:
                    async with send:
                        await send.send([m.encode() for m in messages])
                else:
                    nursery.start_soon(_read_stdin, send, _Splitter(settings.delimiter), stop)
                await _publish_stream(producer, settings, receive, progress)
                nursery.cancel_scope.cancel()
    progress.finish()
    return progress.count, interrupted_by_user


def _weights(values: tuple[str, ...]) -> dict[str, float]:
    weights: dict[str, float] = {}
    for value in values:
        name, sep, number = value.rpartition("=")
        try:
            weight = float(number)
        except ValueError:
            weight = -1.0
        if not sep or not name or not math.isfinite(weight) or weight < 0:
            raise click.BadParameter(f"{value!r} is not NAME=WEIGHT", param_hint="--weight")
        weights[name] = weight
    return weights


def _delimiter(ctx: click.Context, param: click.Parameter, value: str) -> bytes:
    r"""``--delimiter``: a string with the escapes ``\n``, ``\t``, ``\0``, ``\r``."""
    text = value
    for escape, char in (("\\n", "\n"), ("\\t", "\t"), ("\\0", "\0"), ("\\r", "\r")):
        text = text.replace(escape, char)
    if not text:
        raise click.BadParameter("must not be empty", ctx, param)
    return text.encode()


@click.command("pub")
@node_option
@click.option("--defer", type=DURATION, default=0.0, help="Deliver after this delay (DPUB).")
@click.option(
    "--strategy",
    type=click.Choice(["node", *STRATEGY_NAMES]),
    default="node",
    show_default=True,
    help="'node' publishes to the --node addresses only; the others spread over every "
    "live member, message by message.",
)
@click.option("--key", default=None, help="What consistent-hash hashes (default: the topic).")
@click.option(
    "--weight", "weight_values", multiple=True, metavar="NAME=WEIGHT",
    help="Weight of a member for --strategy weighted (repeatable; others weigh 1).",
)  # fmt: skip
@click.option(
    "--delimiter", default="\\n", show_default=True, callback=_delimiter,
    help="What separates messages on stdin (\\n, \\t, \\0 and \\r are understood).",
)  # fmt: skip
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), default=None,
    help="Publish at most this many messages a second.",
)  # fmt: skip
@click.argument("topic", callback=topic_argument)
@click.argument("messages", nargs=-1)
def pub(
    nodes: tuple[str, ...],
    defer: float,
    strategy: str,
    key: str | None,
    weight_values: tuple[str, ...],
    delimiter: bytes,
    rate: float | None,
    topic: str,
    messages: tuple[str, ...],
) -> None:
    """Publish MESSAGES to TOPIC, or stdin's lines as they are read.

    Each line is published as soon as it is read (lines that arrive
    together go as one MPUB per node); Ctrl-C stops reading, publishes what
    was read, and exits 130. On a terminal a summary goes to stderr.
    """
    if defer < 0:
        raise click.BadParameter("must not be negative", param_hint="--defer")
    if any(not m for m in messages):
        raise click.BadParameter("a message must not be empty", param_hint="MESSAGES")
    weights = _weights(weight_values)
    if weights and strategy != "weighted":
        raise click.BadParameter("needs --strategy weighted", param_hint="--weight")
    settings = _PubSettings(
        topic=topic,
        key=key,
        defer=defer,
        rate=rate,
        delimiter=delimiter,
        spread=strategy != "consistent-hash",
    )
    _, was_interrupted = run(_pub, nodes, settings, messages, strategy, weights)
    if was_interrupted:
        interrupted()


# -- tail --------------------------------------------------------------------------


async def _tail(
    nodes: tuple[str, ...], topic: str, channel: str, count: int | None, max_in_flight: int
) -> None:
    out = sys.stdout.buffer
    if count is not None:
        max_in_flight = min(max_in_flight, count)
    config = ConsumerConfig(max_in_flight=max_in_flight, request_timeout=REQUEST_TIMEOUT)
    seen = 0
    async with open_consumer(topic, channel, nodes=list(nodes), config=config) as consumer:
        async for msg in consumer:
            out.write(msg.body + b"\n")
            out.flush()
            await msg.fin()
            seen += 1
            if count is not None and seen >= count:
                break


@click.command("tail")
@node_option
@click.option(
    "--channel", default=None, help="Channel to consume [default: a new ephemeral channel]."
)
@click.option(
    "-n", "--count", type=click.IntRange(min=1), default=None, help="Exit after COUNT messages."
)
@click.option(
    "--max-in-flight", type=click.IntRange(min=1), default=200, show_default=True,
    help="Messages fetched ahead of printing.",
)  # fmt: skip
@click.argument("topic", callback=topic_argument)
def tail(
    nodes: tuple[str, ...], channel: str | None, count: int | None, max_in_flight: int, topic: str
) -> None:
    """Print the bodies of TOPIC's messages from every producer, one per line."""
    if channel is None:
        channel = f"tail{random.randrange(1_000_000)}#ephemeral"
    elif not is_valid_channel_name(channel):
        raise click.BadParameter(f"{channel!r} is not a valid channel name", param_hint="--channel")
    run(_tail, nodes, topic, channel, count, max_in_flight)


# -- keygen, leave -----------------------------------------------------------------


def generate_key() -> str:
    """A new base64 AES-256 gossip key."""
    try:
        from shoal.membership.keyring import generate_key as keyring_generate_key
    except ImportError:  # pragma: no cover - the keyring ships with shoal
        return base64.b64encode(os.urandom(32)).decode()
    return keyring_generate_key()


@click.command("keygen")
def keygen() -> None:
    """Print a new gossip encryption key (base64, 32 bytes) for --gossip-key."""
    click.echo(generate_key())


async def _leave(node: str, wait: bool, exit_timeout: float) -> None:
    with trio.fail_after(REQUEST_TIMEOUT):
        response = await request(node, "POST", "/leave")
    if response.status != 200:
        raise Failure(f"{node} refused to leave: {response.status} {error_message(response)}")
    if not wait:
        return
    with trio.move_on_after(exit_timeout):
        while True:
            try:
                with trio.fail_after(REQUEST_TIMEOUT):
                    await request(node, "GET", "/ping")
            except NodeUnavailable:
                return  # the node has exited
            await trio.sleep(0.1)
    raise Failure(f"{node} still answers {exit_timeout:g}s after leaving")


@click.command("leave")
@node_option
@click.option(
    "--wait/--no-wait", default=True, show_default=True,
    help="Wait until the node has left and stopped answering.",
)  # fmt: skip
@click.option(
    "--timeout", type=DURATION, default="30s", show_default=True, help="Longest wait for the exit."
)
def leave(nodes: tuple[str, ...], wait: bool, timeout: float) -> None:
    """Ask the node to leave the cluster gracefully and exit."""
    if len(nodes) > 1:
        raise click.BadParameter("leave asks one node; give one --node", param_hint="--node")
    node = nodes[0]
    run(_leave, node, wait, timeout)
    if stderr_is_terminal():
        click.echo(f"{node} left the cluster" if wait else f"{node} is leaving", err=True)


# -- cluster up --------------------------------------------------------------------


@click.group("cluster")
def cluster() -> None:
    """Run a local cluster for development."""


def _print_cluster(nodes: list[LocalNode], data_dir: Path, as_json: bool) -> None:
    if as_json:
        print_json({"data_dir": str(data_dir), "nodes": [n.as_json() for n in nodes]})
    else:
        rows = [
            (
                n.name, n.addresses.get("tcp"), n.addresses.get("http"),
                n.addresses.get("gossip"), n.addresses.get("lookup_http"), n.process.pid,
            )
            for n in nodes
        ]  # fmt: skip
        click.echo(table(("NAME", "TCP", "HTTP", "GOSSIP", "LOOKUP-HTTP", "PID"), rows))
    # Scripts read the table as soon as it is printed.
    sys.stdout.flush()
    if stderr_is_terminal():
        click.echo(f"data and logs under {data_dir}; press Ctrl-C to stop", err=True)


@cluster.command("up")
@click.option(
    "-n", "--nodes", "count", type=click.IntRange(1, MAX_NODES), default=3, show_default=True,
    help="How many nodes to start (named a, b, c...).",
)  # fmt: skip
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path),
    default=Path("shoal-cluster"), show_default=True,
    help="Folder for every node's data and log.",
)  # fmt: skip
@click.option(
    "--base-port", type=click.IntRange(0, 65000), default=4150, show_default=True,
    help="Node i listens on BASE+1000(i-1) (TCP), +1 (HTTP), +10 (gossip), +11 (lookup), "
    "as the README's cluster by hand; 0 picks free ports.",
)  # fmt: skip
@click.option("--gossip-key", default=None, help="Base64 gossip key for every node.")
@click.option(
    "--gossip-profile", type=click.Choice(["lan", "wan", "local"]), default="local",
    show_default=True, help="Membership timing preset.",
)  # fmt: skip
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warn", "error"]), default="info",
    show_default=True, help="The nodes' log level.",
)  # fmt: skip
@click.option(
    "--timeout", type=DURATION, default="30s", show_default=True,
    help="Longest wait for every node to join.",
)  # fmt: skip
@json_option
def up(
    count: int,
    data_dir: Path,
    base_port: int,
    gossip_key: str | None,
    gossip_profile: str,
    log_level: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Start a local cluster of N nodes on loopback and run it until Ctrl-C."""
    if base_port and base_port + PORT_STRIDE * (count - 1) + 11 > 65535:
        raise click.BadParameter("too high for that many nodes", param_hint="--base-port")
    spec = ClusterSpec(
        nodes=count,
        data_dir=data_dir.absolute(),
        base_port=base_port,
        gossip_key=gossip_key,
        gossip_profile=gossip_profile,
        log_level=log_level,
        converge_timeout=timeout,
    )
    terminal = stderr_is_terminal()

    def progress(line: str) -> None:
        if terminal:
            click.echo(f"\r\033[K{line}", err=True, nl=False)

    def on_ready(nodes: list[LocalNode]) -> None:
        if terminal:
            click.echo("\r\033[K", err=True, nl=False)
        _print_cluster(nodes, spec.data_dir, as_json)

    def notice(line: str) -> None:
        click.echo(f"shoal: {line}", err=True)

    code = run(
        functools.partial(run_cluster, on_ready=on_ready, progress=progress, notice=notice), spec
    )
    if code == INTERRUPTED:
        interrupted()
    sys.exit(code)


#: Every command of this module, for ``cli.add_command``.
COMMANDS: list[click.Command] = [
    members,
    topics,
    lookup,
    stats,
    pub,
    tail,
    keygen,
    leave,
    cluster,
]
