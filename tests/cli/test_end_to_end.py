"""The commands as real processes against a cluster started by ``shoal cluster up``.

One ``cluster up --nodes 3`` runs for the module; the tests publish on one
node and tail through another, read members and stats, make a node leave,
and finally stop the cluster with Ctrl-C (SIGINT) and check that every node
process is gone.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

#: Seconds any one command may take.
COMMAND_TIMEOUT = 60.0


class Cluster:
    """A running ``shoal cluster up`` and what it printed."""

    def __init__(self, proc: subprocess.Popen[bytes], info: dict[str, Any], stderr: Path) -> None:
        self.proc = proc
        self.info = info
        self.stderr_path = stderr

    def http(self, index: int) -> str:
        return str(self.info["nodes"][index]["http"])

    @property
    def pids(self) -> list[int]:
        return [int(n["pid"]) for n in self.info["nodes"]]

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(60)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0 until reaped; it has exited all the same.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def read_line(proc: subprocess.Popen[bytes], limit: float) -> bytes:
    assert proc.stdout is not None
    deadline = time.monotonic() + limit
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or proc.poll() is not None:
            break
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
    return line


@pytest.fixture(scope="module")
def cluster(shoal_argv: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("cluster")
    stderr = folder / "cluster-up.stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [*shoal_argv, "cluster", "up", "--nodes", "3", "--base-port", "0",
             "--data-dir", str(folder / "data"), "--json"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip
    assert proc.stdout is not None
    with proc.stdout:
        line = read_line(proc, 90)
        if not line:
            proc.kill()
            proc.wait()
            pytest.fail(f"cluster up printed nothing:\n{stderr.read_text()}")
        running = Cluster(proc, json.loads(line), stderr)
        try:
            yield running
        finally:
            running.stop()
            for pid in running.pids:
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)


def shoal(argv: list[str], *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*argv, *args], input=stdin, capture_output=True, timeout=COMMAND_TIMEOUT, check=False
    )


def members(argv: list[str], node: str) -> dict[str, str]:
    result = shoal(argv, "members", "--json", "--node", node)
    assert result.returncode == 0, result.stderr
    return {m["name"]: m["status"] for m in json.loads(result.stdout)["members"]}


def test_cluster_up_prints_every_node_and_they_converged(
    shoal_argv: list[str], cluster: Cluster
) -> None:
    names = [n["name"] for n in cluster.info["nodes"]]
    assert names == ["a", "b", "c"]
    assert all(n["tcp"] and n["gossip"] and n["lookup_http"] for n in cluster.info["nodes"])
    for index in range(3):
        assert members(shoal_argv, cluster.http(index)) == dict.fromkeys(names, "alive")


def test_pub_on_one_node_and_tail_through_another(shoal_argv: list[str], cluster: Cluster) -> None:
    published = shoal(shoal_argv, "pub", "--node", cluster.http(0), "e2e", "one", "two", "three")
    assert (published.returncode, published.stdout, published.stderr) == (0, b"", b"")
    tailed = shoal(shoal_argv, "tail", "--node", cluster.http(1), "e2e", "-n", "3")
    assert tailed.returncode == 0, tailed.stderr
    assert tailed.stdout.splitlines() == [b"one", b"two", b"three"]


def test_a_large_stdin_is_published_quietly_when_piped(
    shoal_argv: list[str], cluster: Cluster
) -> None:
    lines = b"".join(b"message %d\n" % i for i in range(5000))
    published = shoal(shoal_argv, "pub", "--node", cluster.http(2), "e2e_bulk", stdin=lines)
    assert (published.returncode, published.stderr) == (0, b"")
    tailed = shoal(shoal_argv, "tail", "--node", cluster.http(0), "e2e_bulk", "-n", "5000")
    assert tailed.returncode == 0, tailed.stderr
    assert sorted(tailed.stdout.splitlines()) == sorted(lines.splitlines())


def test_round_robin_spreads_messages_not_batches(shoal_argv: list[str], cluster: Cluster) -> None:
    lines = b"".join(b"rr %d\n" % i for i in range(30))
    published = shoal(shoal_argv, "pub", "--strategy", "round-robin", "--node", cluster.http(0),
                      "e2e_rr", stdin=lines)  # fmt: skip
    assert published.returncode == 0, published.stderr
    result = shoal(shoal_argv, "stats", "--all", "--json", "--node", cluster.http(1),
                   "--topic", "e2e_rr")  # fmt: skip
    assert result.returncode == 0, result.stderr
    [topic] = json.loads(result.stdout)["topics"]
    # All 30 lines arrive in one read: still one third on each of the 3 nodes.
    assert (topic["nodes"], topic["message_count"]) == (3, 30)
    for index in range(3):
        one = shoal(shoal_argv, "stats", "--json", "--node", cluster.http(index),
                    "--topic", "e2e_rr")  # fmt: skip
        [mine] = json.loads(one.stdout)["topics"]
        assert mine["message_count"] == 10


def test_stats_all_adds_up_every_member(shoal_argv: list[str], cluster: Cluster) -> None:
    for index in range(3):
        shoal(shoal_argv, "pub", "--node", cluster.http(index), "e2e_stats", f"from-{index}")
    result = shoal(shoal_argv, "stats", "--all", "--json", "--node", cluster.http(0),
                   "--topic", "e2e_stats")  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["nodes"] == ["a", "b", "c"]
    [topic] = data["topics"]
    assert (topic["nodes"], topic["message_count"]) == (3, 3)


def test_an_unreachable_node_is_one_line_on_stderr(shoal_argv: list[str], cluster: Cluster) -> None:
    result = shoal(shoal_argv, "members", "--node", "127.0.0.1:1")
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode().splitlines() == [
        "shoal: cannot reach 127.0.0.1:1: Connection refused"
    ]


def test_leave_then_ctrl_c_stops_everything(shoal_argv: list[str], cluster: Cluster) -> None:
    left = shoal(shoal_argv, "leave", "--node", cluster.http(2))
    assert left.returncode == 0, left.stderr
    deadline = time.monotonic() + 30
    while pid_alive(cluster.pids[2]):  # it stopped answering; it exits next
        assert time.monotonic() < deadline, "c never exited"
        time.sleep(0.05)
    while members(shoal_argv, cluster.http(0))["c"] != "left":
        assert time.monotonic() < deadline, "c never showed as left"
        time.sleep(0.2)
    # cluster up keeps the other nodes running and notes the exit.
    assert cluster.proc.poll() is None
    assert "c exited with 0" in cluster.stderr
    # Ctrl-C: every node stopped, "interrupted" and 130, as a shell reports SIGINT.
    assert cluster.stop() == 130
    assert cluster.stderr.strip().splitlines()[-1] == "shoal: interrupted"
    assert not any(pid_alive(pid) for pid in cluster.pids)
    assert "Traceback" not in cluster.stderr
