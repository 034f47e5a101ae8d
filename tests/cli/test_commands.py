"""Every command's output and error paths, in-process with click's CliRunner."""

from __future__ import annotations

import base64
import json
import socket
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest

from shoal.cli.commands import aggregate, table
from shoal.cluster.http_api import new_router
from shoal.cluster.http_server import Response, Router
from shoal.testing.fake_node import (
    FakeNode,
    http_address,
    member_entry,
    producer_entry,
    serve_in_thread,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from click.testing import Result

    from shoal.testing.process import NodeProcess

    Shoal = Callable[..., Result]

pytestmark = pytest.mark.timeout(60)


def assert_one_line_error(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    if code == 1:
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("shoal: ")
    for fragment in fragments:
        assert fragment in result.stderr


def http_get(address: str, path: str) -> Any:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as reply:
        return json.loads(reply.read())


def topic_stats(node: NodeProcess, topic: str) -> dict[str, Any]:
    stats = http_get(http_address(node), f"/stats?format=json&topic={topic}")
    [entry] = stats["topics"]
    return entry  # type: ignore[no-any-return]


# -- helpers ---------------------------------------------------------------------


def test_table_aligns_columns() -> None:
    assert table(("A", "LONGER"), [("xyz", 1), ("q", 22)]) == "A    LONGER\nxyz  1\nq    22"


def test_aggregate_sums_topics_and_channels_over_nodes() -> None:
    def snapshot(depth: int, inflight: int) -> dict[str, Any]:
        channel = {"channel_name": "c", "depth": depth, "in_flight_count": inflight,
                   "message_count": 5, "client_count": 1}  # fmt: skip
        return {
            "topics": [{"topic_name": "t", "depth": 1, "message_count": 7, "channels": [channel]}]
        }

    rows = aggregate([snapshot(2, 3), snapshot(4, 5)])
    assert list(rows) == [("t", ""), ("t", "c")]
    assert rows[("t", "")].nodes == 2
    assert rows[("t", "")].counters["message_count"] == 14
    assert rows[("t", "")].counters["in_flight_count"] == 8
    assert rows[("t", "c")].counters["depth"] == 6
    assert rows[("t", "c")].counters["client_count"] == 2


# -- members ---------------------------------------------------------------------


@pytest.fixture
def members_fake(fake: FakeNode) -> FakeNode:
    fake.call(
        setattr, fake, "members", [
            member_entry("node-2", "127.0.0.1", 4160, 4161, status="suspect", incarnation=4,
                         tags={"role": "web"}),
            member_entry("node-1", "127.0.0.1", 4150, 4151, topics=["orders", "clicks"],
                         tags={"role": "db", "dc": "east"}),
            member_entry("node-3", "127.0.0.1", 4170, 4171, status="left"),
            member_entry("node-4", "127.0.0.1", 4180, 4181, status="dead",
                         tags={"role": "web-canary"}),
        ],
    )  # fmt: skip
    return fake


def test_members_prints_a_table_sorted_by_name(shoal: Shoal, members_fake: FakeNode) -> None:
    result = shoal("members", "--node", members_fake.address)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESS", "STATUS", "INCARNATION", "TOPICS", "TAGS"]
    assert lines[1].split() == [
        "node-1", "127.0.0.1:4160", "alive", "1", "orders,clicks", "dc=east,role=db"
    ]  # fmt: skip
    assert lines[2].split() == ["node-2", "127.0.0.1:4160", "suspect", "4", "-", "role=web"]
    assert lines[3].split()[:3] == ["node-3", "127.0.0.1:4160", "left"]
    # Serf's word for a member SWIM declared dead.
    assert lines[4].split()[:3] == ["node-4", "127.0.0.1:4160", "failed"]
    assert result.stderr == ""


def test_members_filters_by_status(shoal: Shoal, members_fake: FakeNode) -> None:
    result = shoal(
        "members", "--node", members_fake.address, "--status", "alive", "--status", "left"
    )
    names = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert names == ["node-1", "node-3"]


@pytest.mark.parametrize("word", ["failed", "dead"])
def test_members_status_failed_and_its_alias_dead(
    shoal: Shoal, members_fake: FakeNode, word: str
) -> None:
    result = shoal("members", "--node", members_fake.address, "--status", word)
    names = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert names == ["node-4"]
    # --json keeps /members' own word, so scripts written against it still work.
    result = shoal("members", "--node", members_fake.address, "--status", word, "--json")
    assert [m["status"] for m in json.loads(result.stdout)["members"]] == ["dead"]


def test_members_filters_by_tag_regex_in_full(shoal: Shoal, members_fake: FakeNode) -> None:
    def names(*args: str) -> list[str]:
        result = shoal("members", "--node", members_fake.address, *args)
        assert result.exit_code == 0, result.stderr
        return [line.split()[0] for line in result.stdout.splitlines()[1:]]

    assert names("--tag", "role=web") == ["node-2"]
    assert names("--tag", "role=web.*") == ["node-2", "node-4"]
    assert names("--tag", "role=web.*", "--status", "alive", "--status", "suspect") == ["node-2"]
    assert names("--tag", "role=db", "--tag", "dc=east") == ["node-1"]
    assert names("--tag", "dc=.*") == ["node-1"]
    assert_one_line_error(shoal("members", "--tag", "role"), 2, "KEY=VALUE")
    assert_one_line_error(shoal("members", "--tag", "role=("), 2, "not a pattern")


def test_members_detailed_prints_every_field(shoal: Shoal, members_fake: FakeNode) -> None:
    result = shoal("members", "--node", members_fake.address, "--detailed", "--tag", "dc=east")
    assert result.exit_code == 0, result.stderr
    fields = dict(line.split(":", 1) for line in result.stdout.splitlines())
    fields = {k: v.strip() for k, v in fields.items()}
    assert fields["name"] == "node-1"
    assert fields["status"] == "alive"
    assert fields["tcp address"] == "127.0.0.1:4150"
    assert fields["http address"] == "127.0.0.1:4151"
    assert fields["tags"] == "dc=east,role=db"
    assert fields["topics"] == "orders,clicks"


@pytest.mark.parametrize("spelling", ["http://{}", "http://{}/", "HTTP://{}", " {} "])
def test_node_accepts_http_urls(shoal: Shoal, members_fake: FakeNode, spelling: str) -> None:
    result = shoal("members", "--node", spelling.format(members_fake.address))
    assert result.exit_code == 0, result.stderr
    assert "node-1" in result.stdout


def test_node_refuses_https(shoal: Shoal) -> None:
    assert_one_line_error(shoal("members", "--node", "https://127.0.0.1:4151"), 2, "plain HTTP")


def test_several_nodes_fall_back_in_order(
    shoal: Shoal, members_fake: FakeNode, closed_port: int
) -> None:
    dead = f"127.0.0.1:{closed_port}"
    for args in (
        ("--node", dead, "--node", members_fake.address),
        ("--node", f"{dead},http://{members_fake.address}"),
    ):
        result = shoal("members", *args)
        assert result.exit_code == 0, result.stderr
        assert "node-1" in result.stdout
        # The skipped node is named, with the reason, on one line.
        assert result.stderr.splitlines() == [
            f"shoal: cannot reach {dead}: Connection refused; trying {members_fake.address}"
        ]
    result = shoal("members", env={"SHOAL_NODE": f"{dead} {members_fake.address}"})
    assert result.exit_code == 0, result.stderr
    # None answers: the last failure, one line, exit 1.
    result = shoal("members", "--node", dead, "--node", dead.replace(str(closed_port), "1"))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "shoal: cannot reach 127.0.0.1:1: Connection refused"


def test_leave_takes_one_node(shoal: Shoal) -> None:
    assert_one_line_error(shoal("leave", "--node", "a:1", "--node", "b:1"), 2, "one --node")


def test_members_json(shoal: Shoal, members_fake: FakeNode) -> None:
    result = shoal("members", "--node", members_fake.address, "--json", "--status", "suspect")
    data = json.loads(result.stdout)
    assert [m["name"] for m in data["members"]] == ["node-2"]
    assert data["members"][0]["incarnation"] == 4
    assert set(data["members"][0]) >= {
        "name",
        "address",
        "status",
        "incarnation",
        "topics",
        "tcp_port",
    }


def test_members_reads_the_node_from_the_environment(shoal: Shoal, members_fake: FakeNode) -> None:
    result = shoal("members", env={"SHOAL_NODE": members_fake.address})
    assert result.exit_code == 0
    assert "node-1" in result.stdout


def test_members_of_an_unreachable_node_is_one_line_and_exit_1(
    shoal: Shoal, closed_port: int
) -> None:
    result = shoal("members", "--node", f"127.0.0.1:{closed_port}")
    assert_one_line_error(result, 1, "cannot reach", "refused")
    assert result.stdout == ""


def test_members_of_a_node_without_membership(shoal: Shoal) -> None:
    class Bare(FakeNode):
        """A node API with no /members (an nsqd, say)."""

        @property
        def router(self) -> Router:
            router = new_router()
            router.add("GET", "/ping", lambda r: Response.text("OK"))
            return router

    bare = Bare()
    with serve_in_thread(bare):
        result = shoal("members", "--node", bare.address)
    assert_one_line_error(result, 1, "does not serve /members")


@pytest.mark.parametrize("address", ["host:abc", "host:99999", ":4151", "[::1"])
def test_a_bad_node_address_is_a_usage_error(shoal: Shoal, address: str) -> None:
    result = shoal("members", "--node", address)
    assert_one_line_error(result, 2, "--node")


def test_a_bad_status_is_a_usage_error(shoal: Shoal) -> None:
    assert_one_line_error(shoal("members", "--status", "zombie"), 2, "zombie")


# -- topics and lookup -------------------------------------------------------------


@pytest.fixture
def topics_fake(fake: FakeNode) -> FakeNode:
    producers = [
        producer_entry("127.0.0.1", 4150, 4151, "h1"),
        producer_entry("127.0.0.1", 4160, 4161, "h2"),
    ]
    fake.call(fake.set_topic, "orders", producers, ["audit", "billing"])
    fake.call(fake.set_topic, "idle", [], [])
    return fake


def test_topics_lists_producers_and_channels(shoal: Shoal, topics_fake: FakeNode) -> None:
    result = shoal("topics", "--node", topics_fake.address)
    assert result.exit_code == 0, result.stderr
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["TOPIC", "PRODUCERS", "CHANNELS", "REPLICAS", "LAG"],
        ["idle", "0", "-", "-", "-"],
        ["orders", "2", "audit,billing", "-", "-"],
    ]


def test_topics_json(shoal: Shoal, topics_fake: FakeNode) -> None:
    data = json.loads(shoal("topics", "--node", topics_fake.address, "--json").stdout)
    assert data["topics"][1] == {
        "topic": "orders",
        "producers": ["127.0.0.1:4150", "127.0.0.1:4160"],
        "channels": ["audit", "billing"],
        "replication": {},
    }


def test_lookup_shows_channels_and_producers(shoal: Shoal, topics_fake: FakeNode) -> None:
    result = shoal("lookup", "orders", "--node", topics_fake.address)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "channels: audit, billing"
    assert lines[1].split() == [
        "HOSTNAME", "TCP", "ADDRESS", "HTTP", "PORT", "VERSION", "REPLICAS", "LAG"
    ]  # fmt: skip
    assert lines[2].split()[:3] == ["h1", "127.0.0.1:4150", "4151"]
    assert lines[3].split()[:3] == ["h2", "127.0.0.1:4160", "4161"]
    assert lines[2].split()[-2:] == ["-", "-"]


def test_lookup_json_is_the_node_reply(shoal: Shoal, topics_fake: FakeNode) -> None:
    data = json.loads(shoal("lookup", "orders", "--node", topics_fake.address, "--json").stdout)
    assert data["channels"] == ["audit", "billing"]
    assert len(data["producers"]) == 2
    assert "version" in data


def free_port() -> int:
    """A loopback port nothing listens on (connecting is refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def replicated_fake(fake: FakeNode) -> FakeNode:
    """``orders`` replicated by two owners: the fake (whose /stats has the lag) and a silent one."""
    port = int(fake.address.rpartition(":")[2])
    answering = producer_entry("127.0.0.1", 4150, port, "h1") | {
        "replication_factor": 2,
        "replicas": ["n2"],
    }
    silent = producer_entry("127.0.0.1", 4160, free_port(), "h2") | {
        "replication_factor": 3,
        "replicas": ["n1", "n3"],
    }
    fake.call(fake.set_topic, "orders", [answering, silent], ["work"])
    fake.call(fake.set_topic, "plain", [producer_entry("127.0.0.1", 4150, port, "h1")], [])
    fake.stats["replication"] = {"owned": {"orders": {"factor": 2, "lag": {"n2": 7}}}}
    return fake


def test_topics_show_replicas_and_the_largest_known_lag(
    shoal: Shoal, replicated_fake: FakeNode
) -> None:
    result = shoal("topics", "--node", replicated_fake.address)
    assert result.exit_code == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    # One owner did not answer: the topic's lag is unknown rather than understated.
    assert rows[1] == ["orders", "2", "work", "n1,n2,n3", "?"]
    assert rows[2] == ["plain", "1", "-", "-", "-"]
    data = json.loads(shoal("topics", "--node", replicated_fake.address, "--json").stdout)
    assert data["topics"][0]["replication"] == {
        "127.0.0.1:4150": {"factor": 2, "replicas": ["n2"], "lag": {"n2": 7}},
        "127.0.0.1:4160": {"factor": 3, "replicas": ["n1", "n3"], "lag": None},
    }


def test_lookup_shows_each_producers_replicas_and_lag(
    shoal: Shoal, replicated_fake: FakeNode
) -> None:
    result = shoal("lookup", "orders", "--node", replicated_fake.address)
    assert result.exit_code == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines[2][0] == "h1"
    assert lines[2][-2:] == ["n2", "n2=7"]
    assert lines[3][0] == "h2"
    assert lines[3][-2:] == ["n1,n3", "?"]


def test_lookup_of_an_unknown_topic_fails(shoal: Shoal, topics_fake: FakeNode) -> None:
    assert_one_line_error(
        shoal("lookup", "nope", "--node", topics_fake.address), 1, "topic nope not found"
    )


def test_lookup_of_an_invalid_name_is_a_usage_error(shoal: Shoal) -> None:
    assert_one_line_error(shoal("lookup", "no good"), 2, "not a valid topic name")


# -- stats ---------------------------------------------------------------------------


def stats_reply(message_count: int, depth: int) -> dict[str, Any]:
    channel = {"channel_name": "c", "depth": depth, "backend_depth": 0, "in_flight_count": 1,
               "deferred_count": 0, "message_count": message_count, "requeue_count": 2,
               "timeout_count": 0, "client_count": 1}  # fmt: skip
    return {"version": "x", "health": "OK", "start_time": 0, "producers": [], "topics": [
        {"topic_name": "t", "depth": 0, "backend_depth": 0, "message_count": message_count,
         "paused": False, "channels": [channel]},
        {"topic_name": "u", "depth": 3, "backend_depth": 0, "message_count": 3,
         "paused": False, "channels": []},
    ]}  # fmt: skip


def test_stats_of_one_node(shoal: Shoal, fake: FakeNode) -> None:
    fake.call(setattr, fake, "stats", stats_reply(10, 4))
    result = shoal("stats", "--node", fake.address)
    assert result.exit_code == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["TOPIC", "CHANNEL", "NODES", "DEPTH", "IN-FLIGHT", "DEFERRED", "REQUEUED",
                       "TIMED-OUT", "MESSAGES", "CLIENTS"]  # fmt: skip
    assert rows[1] == ["t", "-", "1", "0", "1", "0", "2", "0", "10", "1"]
    assert rows[2] == ["t", "c", "1", "4", "1", "0", "2", "0", "10", "1"]
    assert rows[3][:4] == ["u", "-", "1", "3"]


def test_stats_filters_by_topic_and_channel(shoal: Shoal, fake: FakeNode) -> None:
    fake.call(setattr, fake, "stats", stats_reply(10, 4))
    data = json.loads(
        shoal("stats", "--node", fake.address, "--topic", "t", "--channel", "c", "--json").stdout
    )
    assert [t["topic_name"] for t in data["topics"]] == ["t"]
    assert [c["channel_name"] for c in data["topics"][0]["channels"]] == ["c"]


def test_stats_all_sums_every_live_member(shoal: Shoal, fake: FakeNode) -> None:
    other = FakeNode()
    other.stats = stats_reply(5, 1)
    with serve_in_thread(other):
        fake_port = int(fake.address.rpartition(":")[2])
        other_port = int(other.address.rpartition(":")[2])
        fake.call(setattr, fake, "stats", stats_reply(10, 4))
        fake.call(setattr, fake, "members", [
            member_entry("a", "127.0.0.1", 1, fake_port),
            member_entry("b", "127.0.0.1", 2, other_port),
            member_entry("gone", "127.0.0.1", 3, 1, status="dead"),
        ])  # fmt: skip
        result = shoal("stats", "--node", fake.address, "--all", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["nodes"] == ["a", "b"]
    [t, u] = data["topics"]
    assert (t["nodes"], t["message_count"]) == (2, 15)
    assert (t["channels"][0]["depth"], t["channels"][0]["in_flight_count"]) == (5, 2)
    assert (u["nodes"], u["depth"]) == (2, 6)


def test_stats_all_skips_a_member_that_does_not_answer(
    shoal: Shoal, fake: FakeNode, closed_port: int
) -> None:
    fake_port = int(fake.address.rpartition(":")[2])
    fake.call(setattr, fake, "stats", stats_reply(10, 4))
    fake.call(setattr, fake, "members", [
        member_entry("a", "127.0.0.1", 1, fake_port),
        member_entry("b", "127.0.0.1", 2, closed_port),
    ])  # fmt: skip
    result = shoal("stats", "--node", fake.address, "--all", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["nodes"] == ["a"]
    assert "skipping b" in result.stderr


def test_stats_interval_prints_rates(shoal: Shoal, fake: FakeNode) -> None:
    fake.call(setattr, fake, "stats", stats_reply(10, 4))
    result = shoal("stats", "--node", fake.address, "--interval", "50ms", "--count", "2")
    assert result.exit_code == 0, result.stderr
    tables = result.stdout.strip().split("\n\n")
    assert len(tables) == 2
    assert "MSG/S" not in tables[0]
    assert tables[1].splitlines()[0].split()[-1] == "MSG/S"
    assert tables[1].splitlines()[1].split()[-1] == "0.0"  # nothing new was published


def test_stats_of_an_unreachable_node(shoal: Shoal, closed_port: int) -> None:
    assert_one_line_error(shoal("stats", "--node", f"127.0.0.1:{closed_port}"), 1, "cannot reach")


def test_stats_refuses_a_bad_interval_and_names(shoal: Shoal) -> None:
    assert_one_line_error(shoal("stats", "--interval", "0"), 2, "--interval")
    assert_one_line_error(shoal("stats", "--topic", "a b"), 2, "--topic")
    assert_one_line_error(shoal("stats", "--channel", "a b"), 2, "--channel")


# -- pub and tail against a real node ------------------------------------------------------


@pytest.mark.integration
def test_pub_publishes_each_argument(shoal: Shoal, node: NodeProcess) -> None:
    result = shoal("pub", "--node", http_address(node), "cli_args", "one", "two", "three")
    assert result.exit_code == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")  # quiet when not on a terminal
    assert topic_stats(node, "cli_args")["message_count"] == 3


@pytest.mark.integration
def test_pub_publishes_stdin_lines(shoal: Shoal, node: NodeProcess) -> None:
    lines = b"".join(b"line %d\r\n" % i for i in range(1000)) + b"\n\nlast-without-newline"
    result = shoal("pub", "--node", http_address(node), "cli_stdin", input=lines)
    assert result.exit_code == 0, result.stderr
    assert topic_stats(node, "cli_stdin")["message_count"] == 1001


@pytest.mark.integration
def test_pub_and_tail_round_trip(shoal: Shoal, node: NodeProcess) -> None:
    address = http_address(node)
    assert (
        shoal(
            "pub", "--node", address, "cli_tail", "--strategy", "round-robin", "a", "b", "c"
        ).exit_code
        == 0
    )
    result = shoal("tail", "--node", address, "cli_tail", "-n", "3")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["a", "b", "c"]


@pytest.mark.integration
def test_tail_on_a_named_channel_leaves_the_rest(shoal: Shoal, node: NodeProcess) -> None:
    address = http_address(node)
    shoal("pub", "--node", address, "cli_chan", "1", "2", "3")
    first = shoal("tail", "--node", address, "cli_chan", "--channel", "keep", "-n", "1")
    assert first.stdout.splitlines() == ["1"]
    second = shoal("tail", "--node", address, "cli_chan", "--channel", "keep", "-n", "2")
    assert sorted(second.stdout.splitlines()) == ["2", "3"]  # a requeue may reorder


@pytest.mark.integration
def test_pub_defer_holds_messages_back(shoal: Shoal, node: NodeProcess) -> None:
    address = http_address(node)
    request = urllib.request.Request(
        f"http://{address}/topic/create?topic=cli_defer", method="POST"
    )
    urllib.request.urlopen(request, timeout=10).close()
    request = urllib.request.Request(
        f"http://{address}/channel/create?topic=cli_defer&channel=c", method="POST"
    )
    urllib.request.urlopen(request, timeout=10).close()
    assert shoal("pub", "--node", address, "--defer", "1h", "cli_defer", "later").exit_code == 0
    [channel] = topic_stats(node, "cli_defer")["channels"]
    assert channel["deferred_count"] == 1


def test_pub_refuses_bad_input_as_usage_errors(shoal: Shoal) -> None:
    assert_one_line_error(shoal("pub", "bad topic", "x"), 2, "not a valid topic name")
    assert_one_line_error(shoal("pub", "t", ""), 2, "must not be empty")
    assert_one_line_error(shoal("pub", "--weight", "a=1", "t", "x"), 2, "--strategy weighted")
    assert_one_line_error(
        shoal("pub", "--strategy", "weighted", "--weight", "a", "t", "x"), 2, "NAME=WEIGHT"
    )
    assert_one_line_error(shoal("pub", "--strategy", "fastest", "t", "x"), 2, "fastest")


def test_pub_to_an_unreachable_node(shoal: Shoal, closed_port: int) -> None:
    result = shoal("pub", "--node", f"127.0.0.1:{closed_port}", "t", "x")
    assert_one_line_error(result, 1, "refused")


def test_tail_from_an_unreachable_node(shoal: Shoal, closed_port: int) -> None:
    assert_one_line_error(
        shoal("tail", "--node", f"127.0.0.1:{closed_port}", "t", "-n", "1"), 1, "refused"
    )


def test_tail_refuses_bad_names(shoal: Shoal) -> None:
    assert_one_line_error(shoal("tail", "t", "--channel", "no good"), 2, "--channel")
    assert_one_line_error(shoal("tail", "no good"), 2, "not a valid topic name")
    assert_one_line_error(shoal("tail", "t", "-n", "0"), 2, "-n")


# -- keygen and leave ------------------------------------------------------------------------


def test_keygen_prints_a_fresh_32_byte_key(shoal: Shoal) -> None:
    first = shoal("keygen")
    second = shoal("keygen")
    assert first.exit_code == 0
    assert len(base64.b64decode(first.stdout.strip(), validate=True)) == 32
    assert first.stdout != second.stdout


def test_leave_asks_the_node(shoal: Shoal, fake: FakeNode) -> None:
    result = shoal("leave", "--node", fake.address, "--no-wait")
    assert result.exit_code == 0, result.stderr
    assert fake.leaves == 1


def test_leave_reports_a_node_that_does_not_exit(shoal: Shoal, fake: FakeNode) -> None:
    result = shoal("leave", "--node", fake.address, "--timeout", "300ms")
    assert_one_line_error(result, 1, "still answers")


def test_leave_of_an_unreachable_node(shoal: Shoal, closed_port: int) -> None:
    assert_one_line_error(shoal("leave", "--node", f"127.0.0.1:{closed_port}"), 1, "cannot reach")


# -- cluster up (its success path runs as real processes in test_end_to_end) -----------------


def test_cluster_up_refuses_bad_sizes(shoal: Shoal) -> None:
    assert_one_line_error(shoal("cluster", "up", "--nodes", "0"), 2, "--nodes")
    assert_one_line_error(
        shoal("cluster", "up", "--nodes", "10", "--base-port", "65530"), 2, "--base-port"
    )


@pytest.mark.integration
def test_cluster_up_reports_a_node_that_cannot_bind(shoal: Shoal, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = shoal(
            "cluster", "up", "--nodes", "2", "--base-port", str(port), "--data-dir", str(tmp_path)
        )
    assert_one_line_error(result, 1, "a exited", f"127.0.0.1:{port}", "--tcp-address")
    assert result.stdout == ""
