"""Serf's agent commands against real node processes: keys, join, monitor, force-leave, info.

The module runs one encrypted three-node cluster on loopback. The keys test
rotates its gossip key with ``shoal keys`` while the same three processes
keep running, then proves the cluster seals with the new key only: a fourth
node holding nothing but the new key joins it (through ``shoal join``), and
is then killed, seen failed by ``shoal monitor`` and forgotten everywhere
by ``shoal force-leave``.
"""

from __future__ import annotations

import base64
import json
import os
import pty
import select
import subprocess
import time
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from shoal.cli.agent import member_events
from shoal.cli.main import cli
from shoal.client.discovery import Member
from shoal.client.testing import LOCAL_GOSSIP_ARGS, http_address, wait_for_members
from shoal.testing.process import NodeProcess

if TYPE_CHECKING:
    from collections.abc import Iterator

    from click.testing import Result

pytestmark = [pytest.mark.timeout(120), pytest.mark.integration, pytest.mark.slow]

OLD = base64.b64encode(b"o" * 32).decode()
NEW = base64.b64encode(b"n" * 32).decode()
STRAY = base64.b64encode(b"s" * 32).decode()


def shoal(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"SHOAL_NODE": None}, catch_exceptions=False)


def ok(*args: str) -> str:
    result = shoal(*args)
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def one_line_failure(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("shoal: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[NodeProcess]]:
    with NodeProcess(*LOCAL_GOSSIP_ARGS, "--node-name", "a", "--gossip-key", OLD,
                     "--tag", "role=web", "--tag", "dc=east") as first:  # fmt: skip
        seed = str(first.addresses["gossip"])
        with (
            NodeProcess(*LOCAL_GOSSIP_ARGS, "--node-name", "b", "--gossip-key", OLD,
                        "--seed", seed, "--tag", "role=db") as second,
            NodeProcess(*LOCAL_GOSSIP_ARGS, "--node-name", "c", "--gossip-key", OLD,
                        "--seed", seed) as third,
        ):  # fmt: skip
            nodes = [first, second, third]
            for node in nodes:
                wait_for_members(http_address(node), 3)
            yield nodes
            for node in nodes:
                assert "Traceback" not in node.stderr, node.stderr


def keyring_table(node: NodeProcess) -> dict[str, Any]:
    data = json.loads(ok("keys", "list", "--json", "--node", http_address(node)))
    return {
        entry["key"]: (len(entry["members"]), len(entry["primary_on"])) for entry in data["keys"]
    }


def test_keys_rotate_on_a_live_cluster_without_restarts(cluster: list[NodeProcess]) -> None:
    a = http_address(cluster[0])
    pids = [node.proc.pid for node in cluster if node.proc is not None]
    assert keyring_table(cluster[1]) == {OLD: (3, 3)}

    # `use` before `install`: refused everywhere, nothing changed.
    one_line_failure(shoal("keys", "use", NEW, "--node", a), "not installed on a, b, c")
    assert keyring_table(cluster[0]) == {OLD: (3, 3)}

    assert ok("keys", "install", NEW, "--node", a).strip() == "install: done on 3 of 3 members"
    assert keyring_table(cluster[2]) == {OLD: (3, 3), NEW: (3, 0)}
    one_line_failure(shoal("keys", "remove", OLD, "--node", a), "primary key on a, b, c")

    assert ok("keys", "use", NEW, "--node", a).strip() == "use: done on 3 of 3 members"
    assert keyring_table(cluster[0]) == {OLD: (3, 0), NEW: (3, 3)}

    assert ok("keys", "remove", OLD, "--node", a).strip() == "remove: done on 3 of 3 members"
    assert keyring_table(cluster[1]) == {NEW: (3, 3)}
    # The same processes all along, all still alive to one another.
    assert [node.proc.pid for node in cluster if node.proc is not None] == pids
    assert all(node.proc is not None and node.proc.poll() is None for node in cluster)
    for node in cluster:
        wait_for_members(http_address(node), 3, timeout=10)

    table = ok("keys", "list", "--node", a).splitlines()
    assert table[0].split() == ["KEY", "MEMBERS", "PRIMARY", "ON"]
    assert table[1].split() == [NEW, "3/3", "3"]


def test_bad_keys_are_usage_errors(cluster: list[NodeProcess]) -> None:
    result = shoal("keys", "install", "not-a-key", "--node", http_address(cluster[0]))
    assert result.exit_code == 2
    assert "base64" in result.stderr


def test_members_show_tags_and_filter_on_them(cluster: list[NodeProcess]) -> None:
    out = ok("members", "--tag", "role=web|db", "--node", http_address(cluster[2]))
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["a", "b"]
    assert "dc=east,role=web" in out
    detailed = ok("members", "--detailed", "--tag", "role=db", "--node", http_address(cluster[0]))
    assert "tags:           role=db" in detailed


def test_info_names_the_node_and_its_cluster(cluster: list[NodeProcess]) -> None:
    data = json.loads(ok("info", "--json", "--node", http_address(cluster[1])))
    assert data["node"]["name"] == "b"
    assert data["node"]["tags"] == {"role": "db"}
    assert data["members"]["alive"] == 3
    assert data["encrypted"] is True
    text = ok("info", "--node", http_address(cluster[1]))
    assert "name:           b" in text


def test_a_node_joins_fails_and_is_forced_out(
    cluster: list[NodeProcess], shoal_argv: list[str]
) -> None:
    """A fourth node with only the cluster's primary key joins, is killed and forgotten.

    Run after the rotation, it holds only the new key: the cluster seals with it.
    """
    [primary] = [key for key, (_, primary_on) in keyring_table(cluster[0]).items() if primary_on]
    a = http_address(cluster[0])
    with NodeProcess(*LOCAL_GOSSIP_ARGS, "--node-name", "d", "--gossip-key", primary) as d:
        # d starts alone; `shoal join` asks it to join through a's gossip address.
        out = ok("join", str(cluster[0].addresses["gossip"]), "--node", http_address(d))
        assert out.strip().startswith("joined: ")
        wait_for_members(a, 4)

        # stderr on a terminal: the monitor says "monitoring N members" once
        # its first snapshot is taken, and only then is d killed.
        controller, terminal = pty.openpty()
        monitor = subprocess.Popen(
            [*shoal_argv, "monitor", "--json", "-n", "1", "--interval", "100ms",
             "--node", a],
            stdout=subprocess.PIPE, stderr=terminal,
        )  # fmt: skip
        os.close(terminal)
        try:
            note = b""
            deadline = time.monotonic() + 30
            while b"monitoring 4 members" not in note:
                assert time.monotonic() < deadline, note
                ready, _, _ = select.select([controller], [], [], 1.0)
                if ready:
                    note += os.read(controller, 1024)
            d.kill()
            out_bytes, _ = monitor.communicate(timeout=60)
        finally:
            if monitor.poll() is None:
                monitor.kill()
                monitor.communicate()
            os.close(controller)
        err = note
        assert monitor.returncode == 0, err
        [event] = [json.loads(line) for line in out_bytes.splitlines()]
        assert (event["event"], event["name"]) in {("member-suspect", "d"), ("member-failed", "d")}

    # A live member cannot be forced out; a failed one can, everywhere at once.
    one_line_failure(shoal("force-leave", "b", "--node", a), "b is alive")
    deadline = time.monotonic() + 30
    while members(a).get("d") != "dead":
        assert time.monotonic() < deadline, members(a)
        time.sleep(0.1)
    assert ok("force-leave", "d", "--node", a).strip() == "forgot d on 3 of 3 members"
    for node in cluster:
        assert "d" not in members(http_address(node))
    one_line_failure(shoal("force-leave", "d", "--node", a), "no member named d")


def members(address: str) -> dict[str, str]:
    result = json.loads(ok("members", "--json", "--node", address))
    return {m["name"]: m["status"] for m in result["members"]}


def _member(name: str, status: str, **changes: Any) -> Member:
    values: dict[str, Any] = {"name": name, "address": "127.0.0.1:1", "status": status,
                              "incarnation": 1, "broadcast_address": "127.0.0.1",
                              "tcp_port": 1, "http_port": 2, "lookup_http_port": 3,
                              "topics": ()} | changes  # fmt: skip
    return Member(**values)


def test_member_events_name_each_transition_as_serf_does() -> None:
    before = {
        "a": _member("a", "alive"),
        "b": _member("b", "alive"),
        "c": _member("c", "suspect"),
        "d": _member("d", "dead"),
        "e": _member("e", "alive"),
        "f": _member("f", "alive"),
    }
    after = {
        "a": _member("a", "alive"),  # no change
        "b": _member("b", "dead"),
        "c": _member("c", "alive"),  # refuted
        "e": _member("e", "left"),
        "f": _member("f", "alive", tags={"role": "x"}),
        "g": _member("g", "alive"),
    }
    assert [(kind, m.name) for kind, m in member_events(before, after)] == [
        ("member-failed", "b"),
        ("member-join", "c"),
        ("member-reap", "d"),
        ("member-leave", "e"),
        ("member-update", "f"),
        ("member-join", "g"),
    ]
