"""Replication settings and the refusals an operator or a client sees."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from shoal.cli.main import cli
from shoal.config import NodeConfig
from shoal.errors import ConfigError
from shoal.queue.backend import memory_backend_factory
from shoal.queue.config import QueueConfig
from shoal.queue.topic import Topic
from shoal.testing.process import NodeProcess
from shoal.testing.wire import NsqConnection


def test_required_replicas_follow_factor_and_min_replicas() -> None:
    assert NodeConfig().required_replicas == 0
    assert NodeConfig(replication_factor=3).required_replicas == 2
    assert NodeConfig(replication_factor=3, min_replicas=1).required_replicas == 1
    assert NodeConfig(replication_factor=2, min_replicas=5).required_replicas == 1
    assert NodeConfig(min_replicas=1).replicas_required(3) == 1


@pytest.mark.parametrize(
    ("fields", "culprit"),
    [
        ({"replication_factor": 0}, "replication-factor"),
        ({"replication_factor": 10}, "replication-factor"),
        ({"min_replicas": -1}, "min-replicas"),
        ({"replication_timeout": 0.0}, "replication-timeout"),
    ],
)
def test_bad_replication_settings_name_the_culprit(fields: dict[str, Any], culprit: str) -> None:
    with pytest.raises(ConfigError, match=culprit):
        NodeConfig(**fields)


def test_cli_refuses_a_factor_out_of_range_in_one_line() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["node", "--replication-factor", "0"])
    assert result.exit_code != 0
    assert "--replication-factor" in result.output
    assert "Traceback" not in result.output


def test_put_published_places_given_ids_in_the_named_channels_only() -> None:
    topic = Topic("t", QueueConfig(), memory_backend_factory)
    a, _ = topic.get_or_create_channel("a", 0.0)
    b, _ = topic.get_or_create_channel("b", 0.0)
    ids = topic.new_ids(5, 2)
    topic.put_published(ids, (b"x", b"y"), 5, 1.0, 0.0, ("a", "gone"))
    assert a.depth == 2
    assert b.depth == 0
    assert topic.message_count == 2
    topic.put_published(topic.new_ids(6, 1), (b"z",), 6, 1.0, 0.0, None)
    assert topic.depth == 1  # held in the backlog for a later pump
    assert topic.fanout_names() == ("a", "b")
    topic.pause()
    assert topic.fanout_names() is None


def post(address: tuple[str, int], path: str, body: bytes = b"") -> tuple[int, bytes]:
    host, port = address
    request = urllib.request.Request(f"http://{host}:{port}{path}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.mark.integration
@pytest.mark.slow
def test_a_lone_owner_refuses_publishes_it_cannot_replicate_and_delivers_none(
    tmp_path: Any,
) -> None:
    args = ("--replication-factor", "2", "--replication-timeout", "300ms")
    with NodeProcess(*args, workdir=tmp_path) as node:
        with NsqConnection(node.tcp) as conn:
            conn.send_raw(b"PUB lonely\n" + (5).to_bytes(4, "big") + b"hello")
            error = conn.read_error()
            assert error == b"E_PUB_FAILED PUB failed not enough replicas"
            # Not fatal: the connection still answers.
            conn.sub("lonely", "c")
        status, body = post(node.http, "/pub?topic=lonely", b"world")
        assert status == 503
        assert json.loads(body)["message"] == "NOT_ENOUGH_REPLICAS"
        status, body = post(node.http, "/topic/create?topic=x&replication_factor=11")
        assert (status, json.loads(body)["message"]) == (400, "INVALID_REPLICATION_FACTOR")
        host, port = node.http
        with urllib.request.urlopen(f"http://{host}:{port}/stats?format=json") as reply:
            stats = json.loads(reply.read())
        replication = stats["replication"]
        assert replication["failed_publishes"] == 2
        assert (
            replication["owned"]["lonely"]["committed"]
            <= replication["owned"]["lonely"]["appended"]
        )
        (topic,) = [t for t in stats["topics"] if t["topic_name"] == "lonely"]
        assert topic["message_count"] == 0  # nothing refused was ever placed


@pytest.mark.integration
@pytest.mark.slow
def test_min_replicas_zero_accepts_publishes_without_replicas(tmp_path: Any) -> None:
    args = ("--replication-factor", "2", "--min-replicas", "0")
    with NodeProcess(*args, workdir=tmp_path) as node, NsqConnection(node.tcp) as conn:
        conn.mpub("alone", [b"a", b"b"])
        conn.sub("alone", "c")
        conn.rdy(10)
        assert {conn.read_message().body, conn.read_message().body} == {b"a", b"b"}
