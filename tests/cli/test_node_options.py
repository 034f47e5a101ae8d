"""``shoal node`` options are generated from the config dataclasses' fields."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import pytest
import trio
from click.testing import CliRunner

from shoal.cli.main import cli, default_node_id
from shoal.cli.options import option_fields, parse_membership_setting
from shoal.config import NodeConfig
from shoal.membership.config import MembershipConfig
from shoal.queue.config import QueueConfig
from shoal.queue.diskqueue import DiskQueueConfig

if TYPE_CHECKING:
    from pathlib import Path


def node_config(monkeypatch: pytest.MonkeyPatch, *args: str) -> NodeConfig:
    """Run ``shoal node ARGS`` up to the point where it would start, and return its config."""
    captured: dict[str, Any] = {}

    def fake_run(fn: object, node: Any) -> None:
        captured["config"] = node.config

    monkeypatch.setattr(trio, "run", fake_run)
    result = CliRunner().invoke(cli, ["node", *args])
    assert result.exit_code == 0, result.output
    config = captured["config"]
    assert isinstance(config, NodeConfig)
    return config


def test_node_defaults_are_the_config_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    config = node_config(monkeypatch, "--broadcast-address", "example")
    assert config.queue == QueueConfig(node_id=default_node_id())
    assert config.disk == DiskQueueConfig()
    assert config.membership == MembershipConfig.lan()
    # The TLS options build one TLSConfig by hand (nsqd spells "not required" "false").
    assert not config.tls.enabled
    assert not config.tls.tcp_required
    assert not config.tls.http_required
    assert config == NodeConfig(broadcast_address="example", queue=config.queue, tls=config.tls)


def test_every_setting_field_is_a_node_flag() -> None:
    result = CliRunner().invoke(cli, ["node", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for cls in (NodeConfig, QueueConfig, DiskQueueConfig):
        for field in option_fields(cls):
            flag = "--" + field.metadata.get("flag", field.name.replace("_", "-"))
            assert flag in result.output, flag


def test_gossip_set_overrides_a_membership_field(monkeypatch: pytest.MonkeyPatch) -> None:
    config = node_config(
        monkeypatch,
        "--gossip-profile",
        "local",
        "--gossip-set",
        "dead_retention=2m",
        "--gossip-set",
        "awareness_max_multiplier=4",
    )
    expected = dataclasses.replace(
        MembershipConfig.local(), dead_retention=120.0, awareness_max_multiplier=4
    )
    assert config.membership == expected


def test_gossip_set_unknown_field_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["node", "--gossip-set", "colour=blue"])
    assert result.exit_code == 2
    assert "no membership setting named 'colour'" in result.output


def test_gossip_set_value_of_the_wrong_type_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["node", "--gossip-set", "dead_retention=soon"])
    assert result.exit_code == 2
    assert "dead_retention must be a number or a duration" in result.output


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return repr(value)


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(MembershipConfig)])
def test_every_membership_field_can_be_set_on_a_node(field: str) -> None:
    # What `shoal simulate --set` accepts, `shoal node --gossip-set` parses the same way.
    value = getattr(MembershipConfig.wan(), field)
    assert parse_membership_setting(f"{field}={_as_text(value)}", "--gossip-set") == (
        field,
        value,
    )


def test_ready_file_naming_a_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["node", "--ready-file", str(tmp_path)])
    assert result.exit_code == 2
    assert "is a directory" in result.output
