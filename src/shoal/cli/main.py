"""The ``shoal`` command: builds a config from flags and runs it under trio.

No logic lives here beyond turning flags into config objects, running the
node, and turning failures into one line on stderr with a non-zero exit
(1 for runtime failures, 2 for usage), never a traceback.
"""

from __future__ import annotations

import dataclasses
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
from shoal.cli.options import config_options, option_fields, parse_membership_setting
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
@config_options(NodeConfig, QueueConfig, DiskQueueConfig)
@click.option(
    "--gossip-profile",
    type=click.Choice(["lan", "wan", "local"]),
    default="lan",
    show_default=True,
    help="Membership timing preset.",
)
@click.option(
    "--gossip-set",
    "gossip_set",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Override a membership setting of the preset (repeatable), as "
    "'shoal simulate --set' does, e.g. --gossip-set dead_retention=2m.",
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


def _take(cls: type[Any], options: dict[str, Any]) -> dict[str, Any]:
    """Pop the options generated from ``cls``'s fields, keyed by field name."""
    values: dict[str, Any] = {}
    for field in option_fields(cls):
        param = field.metadata.get("param", field.name)
        if param not in options:
            continue
        value = options.pop(param)
        if value is None and field.metadata.get("optional"):
            continue  # unset: the config's own default applies
        values[field.name] = tuple(value) if isinstance(value, list | tuple) else value
    return values


_PRESETS = {
    "lan": MembershipConfig.lan,
    "wan": MembershipConfig.wan,
    "local": MembershipConfig.local,
}


def build_node_config(options: dict[str, Any]) -> NodeConfig:
    """Turn the ``node`` command's options into a `NodeConfig`.

    Raises:
        ConfigError: an option is out of range or inconsistent with another.
        click.BadParameter: a ``--gossip-set`` is malformed.
    """
    queue_values = _take(QueueConfig, options)
    queue_values.setdefault("node_id", default_node_id())
    queue = QueueConfig(**queue_values)
    disk = DiskQueueConfig(**_take(DiskQueueConfig, options), max_msg_size=queue.max_msg_size)
    membership = _PRESETS[options.pop("gossip_profile")]()
    overrides = dict(
        parse_membership_setting(text, "--gossip-set") for text in options.pop("gossip_set", ())
    )
    if overrides:
        membership = dataclasses.replace(membership, **overrides)
    # TLS settings build one TLSConfig; they default when absent, so callers
    # that build the options by hand need not know them.
    tls = TLSConfig(
        cert=options.pop("tls_cert", None),
        key=options.pop("tls_key", None),
        root_ca_file=options.pop("tls_root_ca_file", None),
        client_auth_policy=options.pop("tls_client_auth_policy", None) or "",
        required=options.pop("tls_required", "false"),
        min_version=options.pop("tls_min_version", "tls1.0"),
    )
    node_values = _take(NodeConfig, options)
    node_values["gossip_keys"] = tuple(parse_key(text) for text in node_values["gossip_keys"])
    node_values["tags"] = tuple(_parse_tag(text) for text in node_values.get("tags", ()))
    if "data_path" in node_values:
        # An empty data path keeps nothing on disk (a member without a broker).
        node_values["data_path"] = node_values["data_path"] or None
    if options:
        raise ConfigError(f"unknown settings: {', '.join(sorted(options))}")
    return NodeConfig(queue=queue, disk=disk, membership=membership, tls=tls, **node_values)


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
