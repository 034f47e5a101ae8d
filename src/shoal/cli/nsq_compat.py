"""``shoal nsqd`` and ``shoal nsqlookupd``: nsqd's and nsqlookupd's command lines.

Deployments start nsqd and nsqlookupd from systemd units, compose files and
manifests, and client libraries' test suites start them too, with Go-style
flags. These two commands accept exactly the flags of nsqd and nsqlookupd
v1.3.0 (plus a few later ones), parsed as Go's ``flag`` package parses
them, and translate them into a ``shoal node`` command line:

- every spelling works: ``-f v``, ``-f=v``, ``--f v``, ``--f=v``; boolean
  flags take ``-f`` or ``-f=false`` (never a separate value), and parsing
  stops at the first argument that is not a flag, or after ``--``;
- an unknown flag is refused as Go refuses it: ``flag provided but not
  defined: -name`` and exit status 2;
- ``-config FILE`` reads nsqd's TOML file (flag names with underscores);
  flags on the command line win;
- ``--lookupd-tcp-address`` becomes a gossip seed: an nsqlookupd here is a
  member without a broker whose gossip port is nsqlookupd's TCP port, so an
  nsqd pointed at its lookupds joins their cluster;
- flags that mean nothing here (worker pools, log prefix, ...) are
  accepted and named in one warning line on stderr.

The defaults are nsqd's: TCP 4150, HTTP 4151, HTTPS 4152 (only with a
certificate), the data in the working directory; nsqlookupd's: TCP (gossip)
4160, HTTP (the lookup API) 4161. An nsqd's own gossip and lookup listeners
take free ports on the TCP address's host, since nsqd has neither.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import tomllib

import click

from shoal import __version__

__all__ = ["NSQD_FLAGS", "NSQLOOKUPD_FLAGS", "Flag", "GoFlagError", "nsqd", "nsqlookupd"]


def version_line() -> str:
    """``shoal vX.Y.Z (built w/pythonA.B.C)``, the layout of ``nsqd --version``."""
    return f"shoal v{__version__} (built w/python{platform.python_version()})"


def print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """Click callback for ``--version``: print `version_line` and exit."""
    if not value or ctx.resilient_parsing:
        return
    click.echo(version_line())
    ctx.exit()


@dataclasses.dataclass(frozen=True, slots=True)
class Flag:
    """One Go flag.

    Attributes:
        boolean: takes no separate value (``-f`` means true).
        repeated: may be given several times; values accumulate.
        node: the ``shoal node`` option it becomes; None for flags with no
            meaning here (named in the warning) or handled specially.
    """

    boolean: bool = False
    repeated: bool = False
    node: str | None = None


def _same(*names: str) -> dict[str, Flag]:
    return {name: Flag(node=f"--{name}") for name in names}


_IGNORED = Flag()
_IGNORED_BOOL = Flag(boolean=True)

#: nsqd v1.3.0's flags (``apps/nsqd/options.go``) and a few later ones.
NSQD_FLAGS: dict[str, Flag] = {
    "version": Flag(boolean=True),
    "config": Flag(),
    "log-level": Flag(node="--log-level"),
    "log-prefix": _IGNORED,
    "verbose": _IGNORED_BOOL,
    "node-id": Flag(node="--node-id"),
    "worker-id": _IGNORED_BOOL,
    **_same(
        "https-address",
        "http-address",
        "tcp-address",
        "broadcast-address",
        "data-path",
        "mem-queue-size",
        "max-bytes-per-file",
        "sync-every",
        "sync-timeout",
        "msg-timeout",
        "max-msg-timeout",
        "max-msg-size",
        "max-req-timeout",
        "max-body-size",
        "max-heartbeat-interval",
        "max-rdy-count",
        "max-output-buffer-size",
        "max-output-buffer-timeout",
        "min-output-buffer-timeout",
        "output-buffer-timeout",
        "max-channel-consumers",
        "e2e-processing-latency-window-time",
        "tls-cert",
        "tls-key",
        "tls-client-auth-policy",
        "tls-root-ca-file",
        "tls-min-version",
        "max-deflate-level",
    ),
    "auth-http-address": Flag(repeated=True, node="--auth-http-address"),
    "auth-http-request-method": _IGNORED,
    "auth-fail-closed": _IGNORED_BOOL,
    "auth-fail-default-ttl": _IGNORED,
    "auth-fail-default-identity": _IGNORED,
    "auth-fail-default-identity-url": _IGNORED,
    "lookupd-tcp-address": Flag(repeated=True, node="--seed"),
    "broadcast-tcp-port": _IGNORED,
    "broadcast-http-port": _IGNORED,
    "http-client-connect-timeout": _IGNORED,
    "http-client-request-timeout": _IGNORED,
    "queue-scan-worker-pool-max": _IGNORED,
    "queue-scan-selection-count": _IGNORED,
    **_same("statsd-address", "statsd-interval", "statsd-prefix", "statsd-udp-packet-size"),
    "statsd-mem-stats": _IGNORED_BOOL,
    "statsd-exclude-ephemeral": _IGNORED_BOOL,
    "e2e-processing-latency-percentile": Flag(repeated=True),
    "tls-required": Flag(boolean=True),
    "deflate": Flag(boolean=True),
    "snappy": Flag(boolean=True),
    "topology-region": _IGNORED,
    "topology-zone": _IGNORED,
}

#: nsqlookupd v1.3.0's flags (``apps/nsqlookupd/options.go``).
NSQLOOKUPD_FLAGS: dict[str, Flag] = {
    "version": Flag(boolean=True),
    "config": Flag(),
    "log-level": Flag(node="--log-level"),
    "log-prefix": _IGNORED,
    "verbose": _IGNORED_BOOL,
    "tcp-address": Flag(node="--gossip-address"),
    "http-address": Flag(node="--lookup-http-address"),
    "broadcast-address": Flag(node="--broadcast-address"),
    "inactive-producer-timeout": _IGNORED,
    "tombstone-lifetime": Flag(node="--tombstone-lifetime"),
}


class GoFlagError(Exception):
    """The command line is not one Go's ``flag`` package would accept."""


class HelpRequested(Exception):
    """``-h`` or ``-help`` was given."""


def parse_go_flags(
    args: list[str], flags: dict[str, Flag]
) -> tuple[dict[str, list[str]], list[str]]:
    """Parse ``args`` as Go's ``flag.FlagSet.Parse`` does.

    Returns:
        The values given per flag name (in order; booleans as "true" or
        "false"), and the arguments left after the flags.

    Raises:
        GoFlagError: an unknown flag, a missing value, or a bad boolean,
            worded as Go words it.
    """
    given: dict[str, list[str]] = {}
    rest = list(args)
    while rest:
        arg = rest[0]
        if len(arg) < 2 or arg[0] != "-":
            break
        dashes = 2 if arg[1] == "-" else 1
        if dashes == 2 and len(arg) == 2:  # "--" ends the flags
            rest.pop(0)
            break
        body = arg[dashes:]
        if not body or body[0] == "-" or body[0] == "=":
            raise GoFlagError(f"bad flag syntax: {arg}")
        rest.pop(0)
        name, has_value, value = body.partition("=")
        if name in ("h", "help") and name not in flags:
            raise HelpRequested
        flag = flags.get(name)
        if flag is None:
            raise GoFlagError(f"flag provided but not defined: -{name}")
        if flag.boolean:
            if not has_value:
                value = "true"
            elif value.lower() not in _GO_BOOLS:
                raise GoFlagError(f'invalid boolean value "{value}" for -{name}: parse error')
        elif not has_value:
            if not rest:
                raise GoFlagError(f"flag needs an argument: -{name}")
            value = rest.pop(0)
        given.setdefault(name, []).append(value)
    return given, rest


_GO_BOOLS = {"1", "t", "true", "0", "f", "false"}
# Flags with no `Flag.node` that are handled, not ignored.
_SPECIAL = frozenset(
    {"version", "config", "tls-required", "deflate", "snappy", "e2e-processing-latency-percentile"}
)


def _go_bool(text: str) -> bool:
    return text.lower() in ("1", "t", "true")


def _config_file(path: str, flags: dict[str, Flag]) -> dict[str, list[str]]:
    """Nsqd's TOML config file as flag values (keys are flag names with underscores).

    Raises:
        GoFlagError: the file cannot be read or names an unknown option.
    """
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise GoFlagError(f"failed to load config file {path} - {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise GoFlagError(f"failed to load config file {path} - {exc}") from None
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        name = key.replace("_", "-")
        if name not in flags or name in ("config", "version"):
            raise GoFlagError(f"unknown option {key!r} in config file {path}")
        items = value if isinstance(value, list) else [value]
        out[name] = [str(item).lower() if isinstance(item, bool) else str(item) for item in items]
    return out


def _host(address: str) -> str:
    host = address.rpartition(":")[0]
    return host or "0.0.0.0"


def nsqd_node_args(given: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """Translate nsqd's flag values into ``shoal node`` arguments.

    Returns:
        The arguments, and the flags given that have no meaning here.
    """
    args: list[str] = []
    ignored: list[str] = []
    for name, values in given.items():
        flag = NSQD_FLAGS[name]
        if name == "tls-required":
            value = values[-1].lower()
            if value != "tcp-https":
                value = "true" if _go_bool(value) else "false"
            args += ["--tls-required", value]
        elif name in ("deflate", "snappy"):
            args.append(f"--{name}" if _go_bool(values[-1]) else f"--no-{name}")
        elif name == "e2e-processing-latency-percentile":
            for value in values:
                for part in value.split(","):
                    args += ["--e2e-processing-latency-percentile", part.strip()]
        elif name == "https-address" and "tls-cert" not in given:
            ignored.append("-https-address")  # nsqd serves HTTPS only with a certificate
        elif name == "log-level":
            args += ["--log-level", values[-1].lower()]
        elif flag.node is None:
            if name not in _SPECIAL:
                ignored.append(f"-{name}")
        elif flag.repeated:
            for value in values:
                args += [flag.node, value]
        else:
            args += [flag.node, values[-1]]
    tcp = given.get("tcp-address", ["0.0.0.0:4150"])[-1]
    if "tcp-address" not in given:
        args += ["--tcp-address", tcp]
    if "http-address" not in given:
        args += ["--http-address", "0.0.0.0:4151"]
    if "https-address" not in given and "tls-cert" in given:
        args += ["--https-address", "0.0.0.0:4152"]
    if "data-path" not in given:
        args += ["--data-path", "."]
    # nsqd has no gossip or lookup port: take free ones on the TCP host.
    args += ["--gossip-address", f"{_host(tcp)}:0", "--lookup-http-address", f"{_host(tcp)}:0"]
    return args, ignored


def nsqlookupd_node_args(given: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """Translate nsqlookupd's flag values into ``shoal node`` arguments."""
    args = ["--no-broker", "--data-path", ""]
    ignored: list[str] = []
    for name, values in given.items():
        flag = NSQLOOKUPD_FLAGS[name]
        if flag.node is None:
            if name not in _SPECIAL:
                ignored.append(f"-{name}")
            continue
        args += [flag.node, values[-1]]
    if "tcp-address" not in given:
        args += ["--gossip-address", "0.0.0.0:4160"]
    if "http-address" not in given:
        args += ["--lookup-http-address", "0.0.0.0:4161"]
    return args, ignored


def _run(program: str, args: list[str], flags: dict[str, Flag]) -> None:
    from shoal.cli.main import node_command

    try:
        given, _rest = parse_go_flags(args, flags)
        if "config" in given:
            from_file = _config_file(given["config"][-1], flags)
            given = {**from_file, **given}
    except HelpRequested:
        click.echo(f"Usage of {program} (shoal {program}):", err=True)
        for name, flag in flags.items():
            meaning = "ignored" if flag.node is None and name not in _SPECIAL else ""
            click.echo(f"  -{name}{'' if flag.boolean else ' value'}  {meaning}".rstrip(), err=True)
        return
    except GoFlagError as exc:
        click.echo(str(exc), err=True)
        click.echo(f"Run 'shoal {program} -h' for the flags (those of {program} v1.3.0).", err=True)
        sys.exit(2)
    if "version" in given and _go_bool(given["version"][-1]):
        click.echo(version_line())
        return
    translate = nsqd_node_args if program == "nsqd" else nsqlookupd_node_args
    node_args, ignored = translate(given)
    if ignored:
        click.echo(
            f"shoal {program}: ignoring flags with no meaning in shoal: {' '.join(ignored)}",
            err=True,
        )
    node_command.main(args=node_args, prog_name=f"shoal {program}", standalone_mode=True)


_RAW = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


@click.command("nsqd", context_settings=_RAW, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def nsqd(args: tuple[str, ...]) -> None:
    """Run a node from nsqd's flags (Go spelling), as a drop-in for nsqd."""
    _run("nsqd", list(args), NSQD_FLAGS)


@click.command("nsqlookupd", context_settings=_RAW, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def nsqlookupd(args: tuple[str, ...]) -> None:
    """Run a member without a broker from nsqlookupd's flags, as a drop-in for nsqlookupd."""
    _run("nsqlookupd", list(args), NSQLOOKUPD_FLAGS)
