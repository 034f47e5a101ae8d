"""``shoal node`` and ``shoal --version`` from the command line: flags, config file, errors."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from shoal import __version__
from shoal.cli.main import build_node_config, cli
from shoal.cli.options import parse_duration

if TYPE_CHECKING:
    from pathlib import Path


def test_version_prints_the_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"shoal {__version__}"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("60s", 60.0), ("15m", 900.0), ("1h30m", 5400.0), ("2.5", 2.5), ("0", 0.0)],
)
def test_parse_duration_reads_go_durations_and_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "10x", "5 s"])
def test_parse_duration_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_node_flag_out_of_range_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["node", "--node-id", "5000"])
    assert result.exit_code == 2
    assert "node-id" in result.output
    assert "Traceback" not in result.output


def test_node_bad_duration_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["node", "--msg-timeout", "soon"])
    assert result.exit_code == 2
    assert "is not a duration" in result.output


def test_node_inconsistent_limits_are_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["node", "--msg-timeout", "20m"])
    assert result.exit_code == 2
    assert "msg-timeout must not exceed max-msg-timeout" in result.output


def test_node_bad_address_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["node", "--tcp-address", "nowhere"])
    assert result.exit_code == 2
    assert "tcp-address" in result.output


def test_node_bad_gossip_key_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["node", "--gossip-key", "not base64!"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_config_file_sets_values_and_flags_override_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[node]\nmsg-timeout = "30s"\nmem-queue-size = 7\nseed = ["10.0.0.1:4160"]\n')
    captured = {}

    def fake_run(*args: object) -> None:
        captured["node"] = args[1]

    import trio

    original = trio.run
    trio.run = fake_run  # type: ignore[assignment]
    try:
        result = CliRunner().invoke(
            cli,
            ["node", "--config", str(path), "--mem-queue-size", "9", "--data-path", str(tmp_path)],
        )
    finally:
        trio.run = original
    assert result.exit_code == 0, result.output
    config = captured["node"].config  # type: ignore[attr-defined]
    assert config.queue.msg_timeout == 30.0
    assert config.queue.mem_queue_size == 9
    assert config.seeds == ("10.0.0.1:4160",)


def test_config_file_with_unknown_setting_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("colour = 'blue'\n")
    result = CliRunner().invoke(cli, ["node", "--config", str(path)])
    assert result.exit_code == 2
    assert "unknown setting 'colour'" in result.output


def test_config_file_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("this is = = not toml\n")
    result = CliRunner().invoke(cli, ["node", "--config", str(path)])
    assert result.exit_code == 2
    assert "not valid TOML" in result.output


def test_build_node_config_applies_durable_mode_flags() -> None:
    config = build_node_config(
        {
            "node_id": 3, "mem_queue_size": 10, "msg_timeout": 60.0, "max_msg_timeout": 900.0,
            "max_req_timeout": 3600.0, "max_rdy_count": 2500, "max_msg_size": 1024,
            "max_body_size": 4096, "max_heartbeat_interval": 60.0, "max_output_buffer_size": 65536,
            "output_buffer_timeout": 0.25, "min_output_buffer_timeout": 0.025,
            "max_output_buffer_timeout": 30.0, "max_channel_consumers": 0, "max_deflate_level": 6,
            "sync_every": 1, "sync_timeout": 2.0, "max_bytes_per_file": 1 << 20,
            "broadcast_address": "example", "gossip_profile": "local", "gossip_keys": (),
            "seeds": (), "tcp_address": "127.0.0.1:0", "http_address": "127.0.0.1:0",
            "gossip_address": "127.0.0.1:0", "lookup_http_address": "127.0.0.1:0",
            "node_name": None, "tombstone_lifetime": 45.0, "data_path": "d", "ready_file": None,
            "e2e_percentiles": (0.99,), "e2e_processing_latency_window_time": 600.0,
        }
    )  # fmt: skip
    assert config.durable
    assert config.disk.max_msg_size == 1024


def test_node_that_cannot_bind_exits_1_with_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "shoal", "node", "--tcp-address", f"127.0.0.1:{port}",
             "--http-address", "127.0.0.1:0", "--gossip-address", "127.0.0.1:0",
             "--lookup-http-address", "127.0.0.1:0", "--data-path", str(tmp_path / "d")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("shoal: cannot start node:")


def test_second_node_on_the_same_data_path_exits_1(tmp_path: Path) -> None:
    from shoal.testing.process import NodeProcess

    data = str(tmp_path / "shared")
    with NodeProcess("--data-path", data):
        proc = subprocess.run(
            [sys.executable, "-m", "shoal", "node", "--tcp-address", "127.0.0.1:0",
             "--http-address", "127.0.0.1:0", "--gossip-address", "127.0.0.1:0",
             "--lookup-http-address", "127.0.0.1:0", "--data-path", data],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "in use" in proc.stderr
