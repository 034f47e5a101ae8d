"""Serf's agent commands: join, force-leave, monitor, info, keys.

For people coming from Serf or Consul, with Serf's names and output where
shoal has the same thing (reference/membership.md §1.9):

- ``shoal join ADDR...`` asks a node to join through gossip addresses and
  waits until it sees a member there alive.
- ``shoal force-leave NAME`` forgets a failed member now on every live
  member, instead of after the dead retention.
- ``shoal monitor`` prints membership events as they happen
  (``member-join``, ``member-update``, ``member-suspect``,
  ``member-failed``, ``member-leave``, ``member-reap``).
- ``shoal info`` shows the node, its build and its view of the cluster.
- ``shoal keys list|install|use|remove`` rotates the gossip key on every
  live member without a restart.

Cluster-wide operations are a fan-out from here to the HTTP port of every
live member (`shoal.cluster.operator_api`), each member answering for
itself, as Serf's key manager counts one reply per member. A member that
does not answer is named and the command exits 1; the operations are
idempotent, so running the command again finishes the job. ``keys use``
and ``keys remove`` first check every member's keyring and change nothing
unless the change is safe on all: a primary key some member lacks would cut
that member off.

``monitor`` compares ``/members`` snapshots taken every ``--interval``
(half a second by default): a member that flaps faster than that shows as
its net change.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import TYPE_CHECKING, Any

import click
import trio

from shoal.cli.commands import (
    DISPLAY_STATUS,
    REQUEST_TIMEOUT,
    Failure,
    first_answering,
    get,
    get_members,
    json_option,
    node_option,
    print_json,
    run,
    stderr_is_terminal,
    table,
)
from shoal.cli.options import DURATION
from shoal.client.errors import HTTPStatusError, NodeUnavailable
from shoal.client.httpclient import error_message, request
from shoal.errors import ConfigError
from shoal.membership.keyring import parse_key

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from shoal.client.discovery import Member

__all__ = ["AGENT_COMMANDS"]

#: What the node's refusal codes mean, in a sentence.
_REFUSALS = {
    "ENCRYPTION_DISABLED": "gossip encryption is off (start the nodes with --gossip-key)",
    "INVALID_KEY": "the key is not a base64 AES key of 16, 24 or 32 bytes",
    "KEY_NOT_INSTALLED": "the key is not installed",
    "PRIMARY_KEY": "the key is the primary key; use another key first",
    "MEMBER_NOT_FAILED": "the member is alive or suspect; only a failed or left member can go",
    "INVALID_ADDRESS": "not a gossip address that resolves",
}


def _refusal(code: str) -> str:
    return _REFUSALS.get(code, code)


async def _post(address: str, path: str, **kwargs: Any) -> tuple[int, str]:
    with trio.fail_after(REQUEST_TIMEOUT):
        response = await request(address, "POST", path, **kwargs)
    if response.status == 404 and error_message(response) == "NOT_FOUND":
        raise Failure(f"{address} does not serve {path} (not a shoal node, or an older one?)")
    return response.status, error_message(response)


def _live(members: Sequence[Member]) -> list[Member]:
    return sorted((m for m in members if m.status in ("alive", "suspect")), key=lambda m: m.name)


@dataclasses.dataclass(slots=True)
class _FanOut:
    """One answer per live member: what each said, and who could not be asked."""

    answers: dict[str, Any] = dataclasses.field(default_factory=dict)
    unreachable: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def asked(self) -> int:
        return len(self.answers) + len(self.unreachable)


async def _fan_out(members: Sequence[Member], fn: Callable[[Member], Awaitable[Any]]) -> _FanOut:
    """``fn(member)`` on every member at once; failures to reach one are collected."""
    out = _FanOut()

    async def one(member: Member) -> None:
        try:
            out.answers[member.name] = await fn(member)
        except (NodeUnavailable, trio.TooSlowError) as exc:
            out.unreachable[member.name] = str(exc) or "no answer"
        except HTTPStatusError as exc:
            out.unreachable[member.name] = f"{exc.status} {_refusal(exc.message)}"

    async with trio.open_nursery() as nursery:
        for member in members:
            nursery.start_soon(one, member)
    return out


def _report_unreachable(fan: _FanOut, what: str) -> None:
    for name, reason in sorted(fan.unreachable.items()):
        click.echo(f"shoal: {name}: {reason}", err=True)
    if fan.unreachable:
        raise Failure(f"{what} on {len(fan.answers)} of {fan.asked} members; run it again")


# -- join ----------------------------------------------------------------------


async def _join(node: str, addresses: tuple[str, ...], wait: float) -> int:
    resolved: set[str] = set()
    for address in addresses:
        with trio.fail_after(REQUEST_TIMEOUT):
            response = await request(node, "POST", "/join", params={"address": address})
        if response.status != 200:
            raise Failure(f"{address}: {_refusal(error_message(response))}")
        resolved.update(response.json().get("resolved") or [])
    with trio.move_on_after(wait):
        while True:
            members = await get_members(node)
            alive = [m for m in members if m.status == "alive"]
            # The node resolved the addresses; one of them alive means joined.
            if any(m.address in resolved for m in alive):
                return len(alive)
            await trio.sleep(0.2)
    raise Failure(
        f"no member at {', '.join(addresses)} answered within {wait:g}s "
        "(the node keeps trying in the background)"
    )


@click.command("join")
@node_option
@click.option(
    "--wait", type=DURATION, default="10s", show_default=True,
    help="How long to wait for a member at ADDRESS to be seen alive.",
)  # fmt: skip
@click.argument("addresses", nargs=-1, required=True, metavar="ADDRESS...")
def join(nodes: tuple[str, ...], wait: float, addresses: tuple[str, ...]) -> None:
    """Make the node join a cluster through gossip ADDRESSes (like `serf join`).

    ADDRESS is a member's gossip address, host:port (4160 on a default node).
    """
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise click.BadParameter(f"{address!r} is not HOST:PORT", param_hint="ADDRESS")
    alive = run(first_answering, _join, nodes, addresses, wait)
    click.echo(f"joined: {alive} members alive")


# -- force-leave -------------------------------------------------------------------


async def _force_leave(node: str, name: str) -> _FanOut:
    members = await get_members(node)
    target = next((m for m in members if m.name == name), None)
    if target is None:
        raise Failure(f"no member named {name} (it may have been reaped already)")
    if target.status in ("alive", "suspect"):
        raise Failure(
            f"{name} is {target.status}; only a failed member can be forced out "
            "(a live one would come back at once: stop it, or `shoal leave` it)"
        )

    async def forget(member: Member) -> str:
        status, message = await _post(
            member.endpoint.http_address, "/force-leave", params={"name": name}
        )
        if status == 200 or message == "MEMBER_NOT_FOUND":
            return "forgotten"
        raise HTTPStatusError(member.endpoint.http_address, status, message)

    fan = await _fan_out(_live(members), forget)
    _report_unreachable(fan, f"forgot {name}")
    return fan


@click.command("force-leave")
@node_option
@click.argument("name")
def force_leave(nodes: tuple[str, ...], name: str) -> None:
    """Forget the failed member NAME now, on every live member (like `serf force-leave`)."""
    fan = run(first_answering, _force_leave, nodes, name)
    click.echo(f"forgot {name} on {len(fan.answers)} of {fan.asked} members")


# -- monitor -------------------------------------------------------------------------


def member_events(before: dict[str, Member], after: dict[str, Member]) -> list[tuple[str, Member]]:
    """The Serf events that take the view ``before`` to ``after``, by member name."""
    events: list[tuple[str, Member]] = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if new is None:
            assert old is not None
            events.append(("member-reap", old))
            continue
        if old is None or (old.status != new.status and new.status == "alive"):
            if new.status == "alive" or old is None:
                kind = {"alive": "member-join", "suspect": "member-suspect",
                        "dead": "member-failed", "left": "member-leave"}[new.status]  # fmt: skip
                events.append((kind, new))
            continue
        if old.status != new.status:
            kind = {"suspect": "member-suspect", "dead": "member-failed",
                    "left": "member-leave"}.get(new.status, "member-update")  # fmt: skip
            events.append((kind, new))
        elif new.tags != old.tags or new.address != old.address:
            events.append(("member-update", new))
    return events


async def _monitor(node: str, interval: float, count: int | None, as_json: bool) -> None:
    seen = 0
    previous = {m.name: m for m in await get_members(node)}
    if stderr_is_terminal():
        click.echo(f"monitoring {len(previous)} members through {node}; Ctrl-C stops", err=True)
    while count is None or seen < count:
        await trio.sleep(interval)
        current = {m.name: m for m in await get_members(node)}
        for kind, member in member_events(previous, current):
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if as_json:
                print_json({"time": stamp, "event": kind, **member.as_json()})
            else:
                status = DISPLAY_STATUS.get(member.status, member.status)
                click.echo(f"{stamp} {kind:<15} {member.name} {member.address} {status}")
            seen += 1
            if count is not None and seen >= count:
                return
        previous = current


@click.command("monitor")
@node_option
@click.option(
    "--interval", type=DURATION, default="500ms", show_default=True,
    help="How often to read the member list.",
)  # fmt: skip
@click.option(
    "-n", "--count", type=click.IntRange(min=1), default=None, help="Exit after COUNT events."
)
@json_option
def monitor(nodes: tuple[str, ...], interval: float, count: int | None, as_json: bool) -> None:
    """Print membership events as they happen (like `serf monitor`), until Ctrl-C."""
    if interval <= 0:
        raise click.BadParameter("must be positive", param_hint="--interval")
    run(first_answering, _monitor, nodes, interval, count, as_json)


# -- info ---------------------------------------------------------------------------


async def _info(node: str) -> dict[str, Any]:
    info = await get(node, "/info")
    members = await get_members(node)
    try:
        keys = await get(node, "/keys")
    except HTTPStatusError as exc:
        if exc.message != "ENCRYPTION_DISABLED":
            raise
        keys = None
    me = next(
        (
            m
            for m in members
            if m.broadcast_address == info.get("broadcast_address")
            and m.http_port == info.get("http_port")
        ),
        None,
    )
    counts = dict.fromkeys(DISPLAY_STATUS.values(), 0)
    for member in members:
        counts[DISPLAY_STATUS.get(member.status, member.status)] += 1
    return {
        "node": me.as_json() if me is not None else None,
        "version": info.get("version"),
        "hostname": info.get("hostname"),
        "start_time": info.get("start_time"),
        "members": counts,
        "encrypted": keys is not None,
        "keys": len(keys["keys"]) if keys is not None else 0,
    }


@click.command("info")
@node_option
@json_option
def info(nodes: tuple[str, ...], as_json: bool) -> None:
    """Show the node, its version and its view of the cluster (like `serf info`)."""
    data = run(first_answering, _info, nodes)
    if as_json:
        print_json(data)
        return
    me = data["node"] or {}
    started = datetime.datetime.fromtimestamp(data["start_time"] or 0, datetime.UTC)
    rows = [
        ("name", me.get("name", "?")),
        ("version", data["version"]),
        ("hostname", data["hostname"]),
        ("started", started.strftime("%Y-%m-%dT%H:%M:%SZ")),
        ("gossip address", me.get("address", "?")),
        ("tags", ",".join(f"{k}={v}" for k, v in sorted(me.get("tags", {}).items())) or "-"),
        ("members", ", ".join(f"{n} {w}" for w, n in data["members"].items())),
        ("encrypted", f"yes ({data['keys']} keys)" if data["encrypted"] else "no"),
    ]
    click.echo("\n".join(f"{key + ':':<16}{value}" for key, value in rows))


# -- keys ---------------------------------------------------------------------------


def _key_argument(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        parse_key(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return value.strip()


async def _keyrings(node: str) -> tuple[list[Member], _FanOut]:
    members = _live(await get_members(node))

    async def keys_of(member: Member) -> dict[str, Any]:
        with trio.fail_after(REQUEST_TIMEOUT):
            data = await get(member.endpoint.http_address, "/keys")
        return dict(data)

    return members, await _fan_out(members, keys_of)


async def _keys_list(node: str) -> dict[str, Any]:
    members, fan = await _keyrings(node)
    _report_unreachable(fan, "gathered keys")
    held: dict[str, list[str]] = {}
    primary: dict[str, list[str]] = {}
    for name, data in sorted(fan.answers.items()):
        for key in data["keys"]:
            held.setdefault(key, []).append(name)
        primary.setdefault(data["primary"], []).append(name)
    return {
        "members": len(members),
        "keys": [
            {"key": key, "members": names, "primary_on": primary.get(key, [])}
            for key, names in held.items()
        ],
    }


async def _keys_change(node: str, verb: str, key: str) -> _FanOut:
    members, fan = await _keyrings(node)
    _report_unreachable(fan, "gathered keys")
    if verb == "use":
        lacking = sorted(n for n, data in fan.answers.items() if key not in data["keys"])
        if lacking:
            raise Failure(
                f"the key is not installed on {', '.join(lacking)}; "
                "`shoal keys install` it first (nothing changed)"
            )
    if verb == "remove":
        primary_on = sorted(n for n, data in fan.answers.items() if data["primary"] == key)
        if primary_on:
            raise Failure(
                f"the key is the primary key on {', '.join(primary_on)}; "
                "`shoal keys use` another first (nothing changed)"
            )

    async def change(member: Member) -> str:
        address = member.endpoint.http_address
        status, message = await _post(address, f"/keys/{verb}", body=key.encode())
        if status != 200 and not (verb == "remove" and message == "KEY_NOT_INSTALLED"):
            raise HTTPStatusError(address, status, message)
        return "done"

    done = await _fan_out(members, change)
    _report_unreachable(done, f"{verb} done")
    return done


_KEYS_HELP = (
    "Rotate the gossip encryption key on every member, without restarts (like `serf keys`).\n\n"
    "\b\n"  # click: keep the steps' line breaks
    "1. shoal keys install NEW   every member can open NEW, still seals with OLD\n"
    "2. shoal keys use NEW       every member seals with NEW\n"
    "3. shoal keys remove OLD    OLD is gone"
)


@click.group("keys", help=_KEYS_HELP)
def keys() -> None:
    """The ``keys`` group; its help is `_KEYS_HELP`."""


@keys.command("list")
@node_option
@json_option
def keys_list(nodes: tuple[str, ...], as_json: bool) -> None:
    """List every key installed in the cluster and the members that hold it."""
    data = run(first_answering, _keys_list, nodes)
    if as_json:
        print_json(data)
        return
    total = data["members"]
    rows = [
        (entry["key"], f"{len(entry['members'])}/{total}", len(entry["primary_on"]))
        for entry in data["keys"]
    ]
    click.echo(table(("KEY", "MEMBERS", "PRIMARY ON"), rows))


def _key_command(verb: str, help_text: str) -> click.Command:
    @node_option
    @click.argument("key", callback=_key_argument)
    def command(nodes: tuple[str, ...], key: str) -> None:
        fan = run(first_answering, _keys_change, nodes, verb, key)
        click.echo(f"{verb}: done on {len(fan.answers)} of {fan.asked} members")

    return keys.command(verb, help=help_text)(command)


_key_command("install", "Install KEY on every member, as a secondary key (decrypts only).")
_key_command("use", "Make KEY, installed everywhere, the primary key (encrypts) on every member.")
_key_command("remove", "Remove KEY, no longer primary anywhere, from every member.")

#: Every command of this module, for ``cli.add_command``.
AGENT_COMMANDS: list[click.Command] = [join, force_leave, monitor, info, keys]
