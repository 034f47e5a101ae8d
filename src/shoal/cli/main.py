"""The ``shoal`` command: builds a config from flags and runs it under trio.

No logic lives here beyond turning flags into config objects, running the
node, and turning failures into one line on stderr with a non-zero exit
(1 for runtime failures, 2 for usage), never a traceback.
"""

from __future__ import annotations

import hashlib
import signal
import socket
import sys
import zlib
from typing import Any

import click
import trio

from shoal import __version__
from shoal.cli.failures import describe_os_error, fail, interrupted, leaf
from shoal.cli.lazy import LazyGroup
from shoal.cli.logs import LOG_FORMATS, setup_logging
from shoal.cli.options import DURATION
from shoal.cluster.node import Node
from shoal.cluster.tls import TLSConfig
from shoal.config import NodeConfig
from shoal.errors import ConfigError, ShoalError
from shoal.membership.config import MembershipConfig
from shoal.membership.keyring import parse_key
from shoal.queue.config import QueueConfig
from shoal.queue.diskqueue import DiskQueueConfig

__all__ = ["main"]


def default_node_id() -> int:
    """Return nsqd's default node ID: crc32(md5(hostname)) mod 1024."""
    digest = hashlib.md5(socket.gethostname().encode(), usedforsecurity=False).digest()
    return zlib.crc32(digest) % 1024


#: Commands imported only when they run (see `shoal.cli.lazy`).
_CLIENT_COMMANDS = ("cluster", "keygen", "leave", "lookup", "members", "pub", "stats", "tail")
_LAZY = {
    **{name: f"shoal.cli.commands:{name}" for name in (*_CLIENT_COMMANDS, "topics")},
    "simulate": "shoal.cli.simulate:simulate",
    "nsqd": "shoal.cli.nsq_compat:nsqd",
    "nsqlookupd": "shoal.cli.nsq_compat:nsqlookupd",
    # Serf's agent commands.
    **{
        name: f"shoal.cli.agent:{name.replace('-', '_')}"
        for name in ("join", "force-leave", "monitor", "info", "keys")
    },
}


@click.group(
    cls=LazyGroup,
    lazy=_LAZY,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(
    __version__, "--version", "-V", prog_name="shoal", message="%(prog)s %(version)s"
)
def cli() -> None:
    """shoal: an NSQ-compatible message broker whose nodes find each other by gossip."""


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``--version`` in nsqd's layout; the module that knows it is imported only then."""
    if not value or ctx.resilient_parsing:
        return
    from shoal.cli.nsq_compat import print_version

    print_version(ctx, param, value)


def _load_config_file(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Read a TOML file into the command's defaults, so flags given too override it.

    Keys are the flag names without dashes (``tcp-address`` or
    ``tcp_address``), at the top level or under a ``[node]`` table.
    """
    if value is None:
        return
    import tomllib  # only here: a node started without a file skips its import

    try:
        with open(value, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise click.BadParameter(f"cannot read {value}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(f"{value} is not valid TOML: {exc}") from None
    section = data.get("node", data)
    if not isinstance(section, dict):
        raise click.BadParameter(f"{value}: [node] must be a table")
    known = {p.name for p in ctx.command.params if p.name and p.name != "config"}
    defaults = {}
    for key, item in section.items():
        name = key.replace("-", "_")
        # Repeatable flags keep their singular names in files (seed, gossip-key).
        name = {"seed": "seeds", "gossip_key": "gossip_keys", "tag": "tags"}.get(name, name)
        if name not in known:
            raise click.BadParameter(f"{value}: unknown setting {key!r}")
        defaults[name] = [str(v) for v in item] if isinstance(item, list) else item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


@cli.command("node")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    callback=_load_config_file,
    is_eager=True,
    expose_value=False,
    help="TOML file of settings (flag names as keys); flags given too override it.",
)
@click.option(
    "--tcp-address",
    default="0.0.0.0:4150",
    show_default=True,
    help="<addr>:<port> to listen on for TCP clients (port 0 picks one).",
)
@click.option(
    "--http-address",
    default="0.0.0.0:4151",
    show_default=True,
    help="<addr>:<port> to listen on for HTTP clients.",
)
@click.option(
    "--gossip-address",
    default="0.0.0.0:4160",
    show_default=True,
    help="<addr>:<port> for membership gossip, UDP and TCP.",
)
@click.option(
    "--lookup-http-address",
    default="0.0.0.0:4161",
    show_default=True,
    help="<addr>:<port> for the nsqlookupd HTTP API.",
)
@click.option(
    "--seed",
    "seeds",
    multiple=True,
    metavar="HOST:PORT",
    help="Gossip address of a member to join through (repeatable).",
)
@click.option(
    "--node-name", default=None, help="Member name [default: <broadcast-address>:<tcp port>]."
)
@click.option(
    "--gossip-key",
    "gossip_keys",
    multiple=True,
    metavar="BASE64",
    help="AES key for gossip (repeatable: the first encrypts, all decrypt).",
)
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="KEY=VALUE",
    help="Member tag, gossiped and shown by `shoal members` (repeatable, like serf -tag).",
)
@click.option(
    "--gossip-profile",
    type=click.Choice(["lan", "wan", "local"]),
    default="lan",
    show_default=True,
    help="Membership timing preset.",
)
@click.option(
    "--tombstone-lifetime",
    type=DURATION,
    default="45s",
    show_default=True,
    help="How long /topic/tombstone hides a producer.",
)
@click.option(
    "--replication-factor",
    type=click.IntRange(min=1, max=9),
    default=1,
    show_default=True,
    help="Copies of each message of a topic, the owner's included; 1 = no replication.",
)
@click.option(
    "--min-replicas",
    type=click.IntRange(min=0),
    default=None,
    help="Replica acknowledgements a publish needs [default: replication factor - 1].",
)
@click.option(
    "--replication-timeout",
    type=DURATION,
    default="5s",
    show_default=True,
    help="How long a publish waits for its replicas before it fails.",
)
@click.option(
    "--broadcast-address",
    default=None,
    help="Address advertised to clients and peers [default: host name].",
)
@click.option(
    "--data-path",
    default="./shoal-data",
    show_default=True,
    help="Directory for disk queues and metadata (created if missing).",
)
@click.option(
    "--sync-every",
    type=click.IntRange(min=1),
    default=2500,
    show_default=True,
    help="Fsync a disk queue after this many writes and reads; 1 = durable mode.",
)
@click.option(
    "--sync-timeout",
    type=DURATION,
    default="2s",
    show_default=True,
    help="Fsync disk queues with unsynced activity at least this often.",
)
@click.option(
    "--max-bytes-per-file",
    type=click.IntRange(min=1),
    default=104857600,
    show_default=True,
    help="Size at which a disk queue starts a new segment file.",
)
@click.option(
    "--ready-file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write the bound addresses here as JSON once listening.",
)
@click.option(
    "--node-id",
    type=click.IntRange(0, 1023),
    default=None,
    help="Unique part of message IDs, 0..1023 [default: hash of host name].",
)
@click.option(
    "--mem-queue-size",
    type=click.IntRange(min=0),
    default=10000,
    show_default=True,
    help="Messages kept in memory per topic and per channel.",
)
@click.option(
    "--msg-timeout",
    type=DURATION,
    default="60s",
    show_default=True,
    help="Default time to wait before an unanswered message is requeued.",
)
@click.option(
    "--max-msg-timeout",
    type=DURATION,
    default="15m",
    show_default=True,
    help="Longest message timeout a client may ask for.",
)
@click.option(
    "--max-req-timeout",
    type=DURATION,
    default="1h",
    show_default=True,
    help="Longest REQ delay, and longest DPUB defer.",
)
@click.option(
    "--max-rdy-count",
    type=click.IntRange(min=1),
    default=2500,
    show_default=True,
    help="Largest RDY a client may send.",
)
@click.option(
    "--max-msg-size",
    type=click.IntRange(min=1),
    default=1048576,
    show_default=True,
    help="Largest message body in bytes.",
)
@click.option(
    "--max-body-size",
    type=click.IntRange(min=1),
    default=5242880,
    show_default=True,
    help="Largest IDENTIFY, AUTH or MPUB body in bytes.",
)
@click.option(
    "--max-heartbeat-interval",
    type=DURATION,
    default="60s",
    show_default=True,
    help="Longest heartbeat interval a client may ask for.",
)
@click.option(
    "--max-output-buffer-size",
    type=click.IntRange(min=64),
    default=65536,
    show_default=True,
    help="Largest output buffer a client may ask for.",
)
@click.option(
    "--output-buffer-timeout",
    type=DURATION,
    default="250ms",
    show_default=True,
    help="Default flush interval of a client's output buffer.",
)
@click.option(
    "--min-output-buffer-timeout",
    type=DURATION,
    default="25ms",
    show_default=True,
    help="Shortest output buffer timeout a client may ask for.",
)
@click.option(
    "--max-output-buffer-timeout",
    type=DURATION,
    default="30s",
    show_default=True,
    help="Longest output buffer timeout a client may ask for.",
)
@click.option(
    "--max-channel-consumers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Connections allowed per channel (0 = unlimited).",
)
@click.option(
    "--max-deflate-level",
    type=click.IntRange(1, 9),
    default=6,
    show_default=True,
    help="Highest deflate level reported to clients.",
)
@click.option(
    "--deflate/--no-deflate",
    default=True,
    show_default=True,
    help="Offer raw deflate compression after IDENTIFY.",
)
@click.option(
    "--snappy/--no-snappy",
    default=True,
    show_default=True,
    help="Offer snappy compression after IDENTIFY.",
)
@click.option(
    "--https-address",
    default=None,
    help="<addr>:<port> to serve the HTTP API over TLS (needs --tls-cert).",
)
@click.option("--tls-cert", default=None, help="PEM certificate for TLS (TCP upgrade and HTTPS).")
@click.option("--tls-key", default=None, help="PEM private key of --tls-cert.")
@click.option(
    "--tls-root-ca-file", default=None, help="PEM CAs that client certificates must chain to."
)
@click.option(
    "--tls-client-auth-policy",
    type=click.Choice(["require", "require-verify"]),
    default=None,
    help="Ask TLS clients for a certificate (implies --tls-required).",
)
@click.option(
    "--tls-required",
    type=click.Choice(["false", "true", "tcp-https"]),
    default="false",
    show_default=True,
    help="Refuse plain TCP commands (and plain HTTP, unless tcp-https).",
)
@click.option(
    "--tls-min-version",
    type=click.Choice(["ssl3.0", "tls1.0", "tls1.1", "tls1.2", "tls1.3"]),
    default="tls1.0",
    show_default=True,
    help="Lowest TLS version accepted.",
)
@click.option(
    "--auth-http-address",
    "auth_http_addresses",
    multiple=True,
    metavar="HOST:PORT",
    help="nsqd auth server to ask about AUTH secrets (repeatable; makes AUTH required).",
)
@click.option(
    "--e2e-processing-latency-percentile",
    "e2e_percentiles",
    type=float,
    multiple=True,
    help="Quantile of publish-to-FIN latency for /stats (repeatable, e.g. 0.99).",
)
@click.option(
    "--e2e-processing-latency-window-time",
    type=DURATION,
    default="10m",
    show_default=True,
    help="How far back those quantiles look.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warn", "error", "fatal"]),
    default="info",
    show_default=True,
    help="Lowest level of log lines written.",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="nsq",
    show_default=True,
    help="nsq: nsqd's line layout; json: one JSON object per line, for log shippers.",
)
@click.option(
    "--statsd-address",
    default=None,
    metavar="HOST:PORT",
    help="UDP address of a statsd server to push the /metrics figures to.",
)
@click.option(
    "--statsd-prefix",
    default="nsq.%s",
    show_default=True,
    help="Prefix of statsd names; %s is <broadcast-address>_<http port>.",
)
@click.option(
    "--statsd-interval",
    type=DURATION,
    default="60s",
    show_default=True,
    help="Time between two statsd pushes.",
)
@click.option(
    "--statsd-udp-packet-size",
    type=click.IntRange(min=64),
    default=508,
    show_default=True,
    help="Largest statsd datagram in bytes.",
)
@click.option(
    "--broker/--no-broker",
    default=True,
    show_default=True,
    help="Serve NSQ clients; --no-broker only gossips and answers the lookup API.",
)
@click.option(
    "--version",
    is_flag=True,
    callback=_print_version,
    is_eager=True,
    expose_value=False,
    help="Print the version in nsqd's layout and exit.",
)
def node_command(**options: Any) -> None:
    """Run a node: NSQ TCP protocol V2 and the HTTP APIs, with embedded defaults."""
    setup_logging(options.pop("log_level"), options.pop("log_format"))
    try:
        config = build_node_config(options)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        node = Node(config)
    except ConfigError as exc:
        click.echo(f"shoal: cannot start node: {exc}", err=True)
        sys.exit(1)
    try:
        trio.run(_run_until_signalled, node)
    except BaseException as raised:  # the CLI boundary sorts every failure
        error = leaf(raised)
        if isinstance(error, KeyboardInterrupt):
            interrupted()  # Ctrl-C before the node's own signal handler was installed
        if isinstance(error, OSError):
            fail(f"cannot start node: {describe_os_error(error)}")
        if isinstance(error, ShoalError):
            fail(f"cannot start node: {error}")
        raise


def build_node_config(options: dict[str, Any]) -> NodeConfig:
    """Turn the ``node`` command's options into a `NodeConfig`.

    Raises:
        ConfigError: an option is out of range or inconsistent with another.
    """
    node_id = options.pop("node_id")
    queue = QueueConfig(
        node_id=default_node_id() if node_id is None else node_id,
        mem_queue_size=options.pop("mem_queue_size"),
        msg_timeout=options.pop("msg_timeout"),
        max_msg_timeout=options.pop("max_msg_timeout"),
        max_req_timeout=options.pop("max_req_timeout"),
        max_rdy_count=options.pop("max_rdy_count"),
        max_msg_size=options.pop("max_msg_size"),
        max_body_size=options.pop("max_body_size"),
        max_heartbeat_interval=options.pop("max_heartbeat_interval"),
        max_output_buffer_size=options.pop("max_output_buffer_size"),
        output_buffer_timeout=options.pop("output_buffer_timeout"),
        min_output_buffer_timeout=options.pop("min_output_buffer_timeout"),
        max_output_buffer_timeout=options.pop("max_output_buffer_timeout"),
        max_channel_consumers=options.pop("max_channel_consumers"),
        max_deflate_level=options.pop("max_deflate_level"),
        deflate=options.pop("deflate", True),
        snappy=options.pop("snappy", True),
        e2e_processing_latency_percentiles=tuple(options.pop("e2e_percentiles")),
        e2e_processing_latency_window_time=options.pop("e2e_processing_latency_window_time"),
    )
    disk = DiskQueueConfig(
        sync_every=options.pop("sync_every"),
        sync_timeout=options.pop("sync_timeout"),
        max_bytes_per_file=options.pop("max_bytes_per_file"),
        max_msg_size=queue.max_msg_size,
    )
    broadcast = options.pop("broadcast_address") or socket.gethostname()
    profile = options.pop("gossip_profile")
    membership = {"lan": MembershipConfig.lan, "wan": MembershipConfig.wan,
                  "local": MembershipConfig.local}[profile]()  # fmt: skip
    keys = tuple(parse_key(text) for text in options.pop("gossip_keys"))
    tags = tuple(_parse_tag(text) for text in options.pop("tags", ()))
    # The TLS, compression and auth options default when absent, so callers
    # that build the options by hand need not know them.
    tls = TLSConfig(
        cert=options.pop("tls_cert", None),
        key=options.pop("tls_key", None),
        root_ca_file=options.pop("tls_root_ca_file", None),
        client_auth_policy=options.pop("tls_client_auth_policy", None) or "",
        required=options.pop("tls_required", "false"),
        min_version=options.pop("tls_min_version", "tls1.0"),
    )
    return NodeConfig(
        queue=queue,
        disk=disk,
        membership=membership,
        gossip_keys=keys,
        tags=tags,
        broadcast_address=broadcast,
        seeds=tuple(options.pop("seeds")),
        tls=tls,
        auth_http_addresses=tuple(options.pop("auth_http_addresses", ())),
        # An empty data path keeps nothing on disk (a member without a broker).
        data_path=options.pop("data_path") or None,
        **options,
    )


def _parse_tag(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` of ``--tag``.

    Raises:
        ConfigError: there is no ``=`` or no key.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--tag {text!r} is not KEY=VALUE")
    return key.strip(), value.strip()


async def _run_until_signalled(node: Node) -> None:
    """Run ``node`` until SIGINT or SIGTERM, then shut it down cleanly.

    A second signal skips the graceful leave; the queues are still flushed.
    """
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as node_scope:

            async def watch_signals(*, task_status: trio.TaskStatus[None]) -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    task_status.started()
                    count = 0
                    async for _ in signals:
                        count += 1
                        if count == 1:
                            node.shutdown()
                        else:
                            node_scope.cancel()

            await nursery.start(watch_signals)
            await node.run()
        nursery.cancel_scope.cancel()


def main() -> None:
    """Entry point of the ``shoal`` console script.

    click turns a Ctrl-C inside a command into ``Aborted!`` and exit 1;
    ``standalone_mode=False`` hands it to us instead, so every command ends
    the same way: ``shoal: interrupted``, exit 130.
    """
    try:
        code = cli.main(prog_name="shoal", standalone_mode=False)
    except KeyboardInterrupt:
        interrupted()
    except click.exceptions.Abort:
        interrupted()
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
