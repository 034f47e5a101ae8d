"""The operator's commands: members, topics, lookup, stats, pub, tail, keygen, leave, cluster.

Each command talks to one node's HTTP API (``--node HOST:PORT``, default
``$SHOAL_NODE`` or ``127.0.0.1:4151``): every node answers for the whole
cluster, so any node will do. Commands whose output is data take ``--json``.

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
from shoal.client.discovery import MEMBER_STATUSES, Member, fetch_lookup, fetch_members
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
    """``host:port`` (the port defaults to 4151), checked at parse time."""

    name = "host:port"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """Return the address normalised to ``host:port``."""
        try:
            host, port = parse_address(str(value), 4151)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return format_address(host, port)


ADDRESS = AddressType()


def topic_argument(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Refuse an invalid topic name as a usage error."""
    if not is_valid_topic_name(value):
        raise click.BadParameter(f"{value!r} is not a valid topic name", ctx, param)
    return value


def node_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--node HOST:PORT``, defaulting to ``$SHOAL_NODE`` then 127.0.0.1:4151."""
    return click.option(
        "--node",
        type=ADDRESS,
        envvar="SHOAL_NODE",
        default=DEFAULT_NODE,
        show_default=True,
        show_envvar=True,
        help="HTTP address of any node of the cluster.",
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


@click.command("members")
@node_option
@click.option(
    "--status",
    type=click.Choice(MEMBER_STATUSES),
    multiple=True,
    help="Only members with this status (repeatable).",
)
@json_option
def members(node: str, status: tuple[str, ...], as_json: bool) -> None:
    """List the cluster's members, as the node sees them (like `serf members`)."""
    found = run(get_members, node)
    selected = sorted((m for m in found if not status or m.status in status), key=lambda m: m.name)
    if as_json:
        print_json({"members": [m.as_json() for m in selected]})
        return
    rows = [
        (m.name, m.address, m.status, m.incarnation, ",".join(m.topics) or "-") for m in selected
    ]
    click.echo(table(("NAME", "ADDRESS", "STATUS", "INCARNATION", "TOPICS"), rows))


# -- topics and lookup --------------------------------------------------------------


async def _lookup_all(node: str) -> list[dict[str, Any]]:
    data = await get(node, "/topics")
    names = sorted(data.get("topics") or []) if isinstance(data, dict) else []
    results: dict[str, dict[str, Any]] = {}

    async def one(topic: str) -> None:
        with trio.fail_after(REQUEST_TIMEOUT):
            found = await fetch_lookup(node, topic)
        results[topic] = {
            "topic": topic,
            "producers": [p.tcp_address for p in found.producers] if found else [],
            "channels": sorted(found.channels) if found else [],
        }

    async with trio.open_nursery() as nursery:
        for topic in names:
            nursery.start_soon(one, topic)
    return [results[t] for t in names]


@click.command("topics")
@node_option
@json_option
def topics(node: str, as_json: bool) -> None:
    """List every topic in the cluster with its producers and channels."""
    found = run(_lookup_all, node)
    if as_json:
        print_json({"topics": found})
        return
    rows = [(t["topic"], len(t["producers"]), ",".join(t["channels"]) or "-") for t in found]
    click.echo(table(("TOPIC", "PRODUCERS", "CHANNELS"), rows))


async def _lookup_one(node: str, topic: str) -> Any:
    try:
        return await get(node, "/lookup", {"topic": topic})
    except HTTPStatusError as exc:
        if exc.status == 404 and exc.message == "TOPIC_NOT_FOUND":
            raise Failure(f"topic {topic} not found in the cluster") from None
        raise


@click.command("lookup")
@node_option
@json_option
@click.argument("topic", callback=topic_argument)
def lookup(node: str, as_json: bool, topic: str) -> None:
    """Show the nodes that produce TOPIC and its channels (nsqlookupd's /lookup)."""
    data = run(_lookup_one, node, topic)
    if as_json:
        print_json(data)
        return
    channels = sorted(data.get("channels") or [])
    click.echo(f"channels: {', '.join(channels) or '-'}")
    rows = [
        (
            p.get("hostname", ""),
            format_address(str(p.get("broadcast_address", "")), int(p.get("tcp_port", 0))),
            p.get("http_port", ""),
            p.get("version", ""),
        )
        for p in sorted(data.get("producers") or [], key=lambda p: str(p.get("hostname")))
    ]
    click.echo(table(("HOSTNAME", "TCP ADDRESS", "HTTP PORT", "VERSION"), rows))


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
    node: str,
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
        names, snapshots = await _collect_stats(node, topic, channel, everywhere)
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
    node: str,
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
    run(_stats_loop, node, topic, channel, everywhere, interval, count, as_json)


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


async def _read_chunks(stream: Any) -> Any:
    read = getattr(stream, "read1", None) or stream.read
    while True:
        chunk = await trio.to_thread.run_sync(read, 65536)
        if not chunk:
            return
        yield chunk


async def _publish_stdin(
    producer: Producer, topic: str, key: str | None, defer: float, progress: _Progress
) -> None:
    stdin = sys.stdin.buffer
    batch: list[bytes] = []
    size = 0
    rest = b""

    async def flush() -> None:
        nonlocal batch, size
        if not batch:
            return
        if defer > 0:
            for body in batch:
                await producer.publish(topic, body, key=key, defer=defer)
        elif len(batch) == 1:
            await producer.publish(topic, batch[0], key=key)
        else:
            await producer.mpublish(topic, batch, key=key)
        progress.add(len(batch))
        batch, size = [], 0

    async for chunk in _read_chunks(stdin):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            body = line.removesuffix(b"\r")
            if not body:
                continue
            if size + len(body) > PUB_BATCH_BYTES:
                await flush()
            batch.append(body)
            size += len(body)
            if len(batch) >= PUB_BATCH:
                await flush()
    last = rest.removesuffix(b"\r")
    if last:
        batch.append(last)
    await flush()


async def _pub(
    node: str,
    topic: str,
    messages: tuple[str, ...],
    defer: float,
    strategy: str,
    key: str | None,
    weights: dict[str, float],
) -> int:
    config = ProducerConfig(discover=strategy != "node", request_timeout=REQUEST_TIMEOUT)
    progress = _Progress(topic)
    async with open_producer(
        node,
        strategy="round-robin" if strategy == "node" else strategy,
        weights=weights or None,
        config=config,
    ) as producer:
        if messages:
            for message in messages:
                await producer.publish(topic, message.encode(), key=key, defer=defer)
                progress.add(1)
        else:
            await _publish_stdin(producer, topic, key, defer, progress)
    progress.finish()
    return progress.count


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


@click.command("pub")
@node_option
@click.option("--defer", type=DURATION, default=0.0, help="Deliver after this delay (DPUB).")
@click.option(
    "--strategy",
    type=click.Choice(["node", *STRATEGY_NAMES]),
    default="node",
    show_default=True,
    help="'node' publishes to --node only; the others spread over every live member.",
)
@click.option("--key", default=None, help="What consistent-hash hashes (default: the topic).")
@click.option(
    "--weight", "weight_values", multiple=True, metavar="NAME=WEIGHT",
    help="Weight of a member for --strategy weighted (repeatable; others weigh 1).",
)  # fmt: skip
@click.argument("topic", callback=topic_argument)
@click.argument("messages", nargs=-1)
def pub(
    node: str,
    defer: float,
    strategy: str,
    key: str | None,
    weight_values: tuple[str, ...],
    topic: str,
    messages: tuple[str, ...],
) -> None:
    """Publish MESSAGES to TOPIC, or each line of stdin when none are given."""
    if defer < 0:
        raise click.BadParameter("must not be negative", param_hint="--defer")
    if any(not m for m in messages):
        raise click.BadParameter("a message must not be empty", param_hint="MESSAGES")
    weights = _weights(weight_values)
    if weights and strategy != "weighted":
        raise click.BadParameter("needs --strategy weighted", param_hint="--weight")
    run(_pub, node, topic, messages, defer, strategy, key, weights)


# -- tail --------------------------------------------------------------------------


async def _tail(node: str, topic: str, channel: str, count: int | None, max_in_flight: int) -> None:
    out = sys.stdout.buffer
    if count is not None:
        max_in_flight = min(max_in_flight, count)
    config = ConsumerConfig(max_in_flight=max_in_flight, request_timeout=REQUEST_TIMEOUT)
    seen = 0
    async with open_consumer(topic, channel, nodes=node, config=config) as consumer:
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
def tail(node: str, channel: str | None, count: int | None, max_in_flight: int, topic: str) -> None:
    """Print the bodies of TOPIC's messages from every producer, one per line."""
    if channel is None:
        channel = f"tail{random.randrange(1_000_000)}#ephemeral"
    elif not is_valid_channel_name(channel):
        raise click.BadParameter(f"{channel!r} is not a valid channel name", param_hint="--channel")
    run(_tail, node, topic, channel, count, max_in_flight)


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
def leave(node: str, wait: bool, timeout: float) -> None:
    """Ask the node to leave the cluster gracefully and exit."""
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
