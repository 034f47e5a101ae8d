"""``shoal nsqd`` and ``shoal nsqlookupd``: Go flag spellings, translation, and real processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import TYPE_CHECKING, Any

import nsq
import pytest
import trustme
from click.testing import CliRunner

from shoal.cli.main import cli
from shoal.cli.nsq_compat import (
    NSQD_FLAGS,
    NSQLOOKUPD_FLAGS,
    GoFlagError,
    nsqd_node_args,
    nsqlookupd_node_args,
    parse_go_flags,
    version_line,
)

if TYPE_CHECKING:
    from pathlib import Path

#: What client libraries' harnesses look for in nsqd's and nsqlookupd's stderr.
LISTENING = re.compile(r"(?P<protocol>[A-Z]+): listening on (?P<address>[0-9.]+):(?P<port>[0-9]+)")


@pytest.mark.parametrize(
    "spelling",
    [
        ["-tcp-address", "1.2.3.4:5"],
        ["-tcp-address=1.2.3.4:5"],
        ["--tcp-address", "1.2.3.4:5"],
        ["--tcp-address=1.2.3.4:5"],
    ],
)
def test_every_go_spelling_of_a_flag_is_accepted(spelling: list[str]) -> None:
    given, rest = parse_go_flags([*spelling, "positional"], NSQD_FLAGS)
    assert given == {"tcp-address": ["1.2.3.4:5"]}
    assert rest == ["positional"]


def test_boolean_flags_take_no_separate_value() -> None:
    given, rest = parse_go_flags(["-snappy", "--deflate=false", "-tls-required"], NSQD_FLAGS)
    assert given == {"snappy": ["true"], "deflate": ["false"], "tls-required": ["true"]}
    given, rest = parse_go_flags(["-snappy", "false", "-deflate"], NSQD_FLAGS)
    assert given == {"snappy": ["true"]}
    assert rest == ["false", "-deflate"]  # as Go: parsing stops at the first non-flag


def test_repeated_flags_accumulate_and_become_seeds() -> None:
    given, _ = parse_go_flags(
        ["-lookupd-tcp-address=10.0.0.1:4160", "--lookupd-tcp-address", "10.0.0.2:4160"],
        NSQD_FLAGS,
    )
    args, ignored = nsqd_node_args(given)
    assert args[:4] == ["--seed", "10.0.0.1:4160", "--seed", "10.0.0.2:4160"]
    assert ignored == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-no-such-flag=1"], "flag provided but not defined: -no-such-flag"),
        (["--tcp-adress", "x"], "flag provided but not defined: -tcp-adress"),
        (["-tcp-address"], "flag needs an argument: -tcp-address"),
        (["-snappy=maybe"], 'invalid boolean value "maybe" for -snappy: parse error'),
        (["---x"], "bad flag syntax: ---x"),
    ],
)
def test_bad_flags_are_refused_as_go_refuses_them(args: list[str], message: str) -> None:
    with pytest.raises(GoFlagError, match=re.escape(message)):
        parse_go_flags(args, NSQD_FLAGS)


def test_unknown_flag_exits_2_with_gos_line() -> None:
    result = CliRunner().invoke(cli, ["nsqd", "-tcp-address=127.0.0.1:0", "-colour=blue"])
    assert result.exit_code == 2
    assert result.output.splitlines()[0] == "flag provided but not defined: -colour"
    assert "Traceback" not in result.output


def test_nsqd_defaults_are_nsqds_and_meaningless_flags_are_named() -> None:
    given, _ = parse_go_flags(
        ["-statsd-address=127.0.0.1:8125", "-statsd-mem-stats", "-verbose", "-max-rdy-count=10",
         "-tls-cert=c"],
        NSQD_FLAGS,
    )  # fmt: skip
    args, ignored = nsqd_node_args(given)
    assert ignored == ["-statsd-mem-stats", "-verbose"]
    pairs = dict(zip(args[::2], args[1::2], strict=False))
    assert pairs["--statsd-address"] == "127.0.0.1:8125"
    assert pairs["--max-rdy-count"] == "10"
    assert pairs["--tcp-address"] == "0.0.0.0:4150"
    assert pairs["--http-address"] == "0.0.0.0:4151"
    assert pairs["--https-address"] == "0.0.0.0:4152"
    assert pairs["--data-path"] == "."


def test_nsqlookupd_flags_map_to_a_member_without_a_broker() -> None:
    given, _ = parse_go_flags(
        ["-inactive-producer-timeout=1m", "-tombstone-lifetime", "10s"], NSQLOOKUPD_FLAGS
    )
    args, ignored = nsqlookupd_node_args(given)
    assert ignored == ["-inactive-producer-timeout"]
    assert "--no-broker" in args
    pairs = dict(zip(args[1::2], args[2::2], strict=False))
    assert pairs["--gossip-address"] == "0.0.0.0:4160"
    assert pairs["--lookup-http-address"] == "0.0.0.0:4161"
    assert pairs["--tombstone-lifetime"] == "10s"


def test_version_in_nsqds_layout() -> None:
    assert re.fullmatch(r"shoal v\d+\.\d+\.\d+ \(built w/python\d+\.\d+\.\d+\)", version_line())
    for args in (["node", "--version"], ["nsqd", "--version"], ["nsqlookupd", "-version"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0
        assert result.output == version_line() + "\n"


def test_nsqd_config_file_is_read_and_flags_win(tmp_path: Path) -> None:
    path = tmp_path / "nsqd.cfg"
    path.write_text('max_rdy_count = 7\nmsg_timeout = "30s"\nlog_prefix = "x"\n')
    given, _ = parse_go_flags([f"-config={path}", "-msg-timeout=45s"], NSQD_FLAGS)
    from shoal.cli.nsq_compat import _config_file

    merged = {**_config_file(str(path), NSQD_FLAGS), **given}
    args, ignored = nsqd_node_args(merged)
    pairs = dict(zip(args[::2], args[1::2], strict=False))
    assert pairs["--max-rdy-count"] == "7"
    assert pairs["--msg-timeout"] == "45s"
    assert ignored == ["-log-prefix"]


# -- real processes -------------------------------------------------------------


class Proc:
    """A ``shoal nsqd`` or ``shoal nsqlookupd`` process and the ports its stderr names."""

    def __init__(self, args: list[str], log: Path, cwd: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shoal", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=cwd,
            )

    @property
    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def ports(self, wanted: set[str]) -> dict[str, tuple[str, int]]:
        """Wait until every protocol in ``wanted`` is logged; every such line is parsed."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found: dict[str, tuple[str, int]] = {}
            for line in self.stderr.splitlines():
                if "listening on" not in line:
                    continue
                match = LISTENING.search(line)
                assert match is not None, line
                assert match["protocol"] not in found, f"{match['protocol']} logged twice"
                found[match["protocol"]] = (match["address"], int(match["port"]))
            if set(found) >= wanted:
                return found
            assert self.proc.poll() is None, self.stderr
            time.sleep(0.05)
        raise AssertionError(f"listeners not logged:\n{self.stderr}")

    def terminate(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.mark.integration
@pytest.mark.slow
def test_nsqd_and_nsqlookupd_drop_in(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))

    lookupd = Proc(
        ["nsqlookupd", "-tcp-address=127.0.0.1:0", "-http-address=127.0.0.1:0"],
        tmp_path / "lookupd.log",
        tmp_path,
    )
    nsqd = None
    try:
        lookupd_ports = lookupd.ports({"TCP", "HTTP"})
        assert set(lookupd_ports) == {"TCP", "HTTP"}
        lookupd_tcp = "{}:{}".format(*lookupd_ports["TCP"])
        data = tmp_path / "nsqd-data"
        data.mkdir()
        nsqd = Proc(
            [
                "nsqd",
                "-tcp-address=127.0.0.1:0",
                "-http-address=127.0.0.1:0",
                "-https-address=127.0.0.1:0",
                f"-tls-cert={cert_path}",
                f"-tls-key={key_path}",
                "--lookupd-tcp-address",
                lookupd_tcp,
                "-queue-scan-worker-pool-max=4",
                "-broadcast-address=127.0.0.1",
            ],
            tmp_path / "nsqd.log",
            data,
        )
        nsqd_ports = nsqd.ports({"TCP", "HTTP", "HTTPS"})
        assert set(nsqd_ports) == {"TCP", "HTTP", "HTTPS"}
        assert len({port for _, port in nsqd_ports.values()}) == 3
        assert "ignoring flags with no meaning in shoal: -queue-scan-worker-pool-max" in nsqd.stderr
        # nsqd keeps its data in the working directory, as nsqd does.
        assert any(data.iterdir())

        topic = f"t{uuid.uuid4().hex[:10]}"
        host, port = nsqd_ports["HTTP"]
        request = urllib.request.Request(
            f"http://{host}:{port}/pub?topic={topic}", data=b"found through lookupd"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.read() == b"OK"

        lookup_http = "http://{}:{}".format(*lookupd_ports["HTTP"])
        received: list[bytes] = []

        async def scenario() -> None:
            got = asyncio.Event()

            def handle(message: Any) -> bool:
                received.append(message.body)
                got.set()
                return True

            reader = nsq.Reader(
                topic=topic,
                channel="c",
                message_handler=handle,
                lookupd_http_addresses=[lookup_http],
                lookupd_poll_interval=1,
            )
            try:
                await asyncio.wait_for(got.wait(), 30)
            finally:
                reader.close()

        asyncio.run(scenario())
        assert received == [b"found through lookupd"]

        # The lookupd member is never a producer.
        with urllib.request.urlopen(f"{lookup_http}/nodes", timeout=5) as response:
            nodes: dict[str, Any] = json.loads(response.read())
        assert [p["tcp_port"] for p in nodes["producers"]] == [nsqd_ports["TCP"][1]]
    finally:
        codes = [proc.terminate() for proc in (nsqd, lookupd) if proc is not None]
    # Both honour SIGTERM: a clean exit with status 0.
    assert codes == [0, 0]
    for proc in (nsqd, lookupd):
        assert "Traceback" not in proc.stderr, proc.stderr
        assert "exiting" in proc.stderr
    assert os.path.exists(tmp_path / "nsqd-data")


def test_tls_misconfiguration_is_one_line_and_a_nonzero_exit(tmp_path: Path) -> None:
    missing = ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(tmp_path / "nope.key")]
    result = CliRunner().invoke(cli, ["node", *missing, "--data-path", ""])
    assert result.exit_code == 1
    assert result.output.startswith("shoal: cannot start node: cannot load TLS files")
    result = CliRunner().invoke(cli, ["node", "--tls-required", "true"])
    assert result.exit_code == 2
    assert "tls-required needs tls-cert and tls-key" in result.output
    assert "Traceback" not in result.output


def test_https_address_without_a_certificate_is_ignored_as_nsqd_ignores_it() -> None:
    given, _ = parse_go_flags(["-https-address=127.0.0.1:0", "-log-level=WARN"], NSQD_FLAGS)
    args, ignored = nsqd_node_args(given)
    assert "--https-address" not in args
    assert ignored == ["-https-address"]
    assert args[args.index("--log-level") + 1] == "warn"
