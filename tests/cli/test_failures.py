"""Every way a newcomer's command can go wrong ends in one line naming the culprit.

Each case runs the real ``shoal`` command in a new process and checks the
three things a user sees: the exit code (1 for failures, 130 for Ctrl-C),
stderr being exactly one ``shoal: ...`` line, and that line naming the
address, path or file at fault with the cause. No traceback, ever.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from shoal.client.testing import http_address

if TYPE_CHECKING:
    from shoal.testing.process import NodeProcess

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

FREE = ("--http-address", "127.0.0.1:0", "--gossip-address", "127.0.0.1:0",
        "--lookup-http-address", "127.0.0.1:0", "--tcp-address", "127.0.0.1:0")  # fmt: skip
#: TEST-NET-1 (RFC 5737): never an address of this host.
FOREIGN = "192.0.2.1"


def run_shoal(shoal_argv: list[str], *args: str, user: int | None = None) -> tuple[int, str]:
    prefix: list[str] = []
    if user is not None:
        prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    result = subprocess.run(
        [*prefix, *shoal_argv, *args], capture_output=True, timeout=30, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return result.returncode, result.stderr.decode()


def assert_one_line(code: int, stderr: str, expected_code: int, *fragments: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if "INFO:" not in line]
    assert code == expected_code, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("shoal: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def node_args(data: Path, *changes: str) -> list[str]:
    """``node`` with free ports, then ``changes`` (later flags win)."""
    return ["node", "--data-path", str(data), *FREE, *changes]


def test_port_in_use_names_the_address_and_the_flag(shoal_argv: list[str], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        code, stderr = run_shoal(shoal_argv, *node_args(tmp_path / "d", "--http-address", address))
    assert_one_line(code, stderr, 1, address, "--http-address", "already in use")


@pytest.mark.parametrize("flag", ["--tcp-address", "--lookup-http-address", "--gossip-address"])
def test_an_address_not_on_this_host(shoal_argv: list[str], tmp_path: Path, flag: str) -> None:
    code, stderr = run_shoal(shoal_argv, *node_args(tmp_path / "d", flag, f"{FOREIGN}:0"))
    line = assert_one_line(code, stderr, 1, f"{FOREIGN}:0", "assign requested address")
    if flag != "--gossip-address":
        assert flag in line
    else:
        assert "gossip address" in line


def test_a_data_path_that_is_a_file(shoal_argv: list[str], tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("not a folder")
    code, stderr = run_shoal(shoal_argv, *node_args(file))
    assert_one_line(code, stderr, 1, str(file), "exists and is not a directory")
    code, stderr = run_shoal(shoal_argv, *node_args(file / "below"))
    assert_one_line(code, stderr, 1, str(file / "below"), "Not a directory")


@pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("setpriv") is None,
    reason="as root, needs setpriv to run the node as an ordinary user",
)
def test_an_unwritable_data_path(shoal_argv: list[str]) -> None:
    # Root ignores permissions: as root the node runs as nobody, in a folder
    # nobody can reach (pytest's own temporary folders are private to root).
    user = 65534 if os.geteuid() == 0 else None
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        locked = Path(folder) / "locked"
        locked.mkdir(mode=0o555)
        locked.chmod(0o555)
        try:
            code, stderr = run_shoal(shoal_argv, *node_args(locked / "data"), user=user)
            assert_one_line(code, stderr, 1, str(locked / "data"), "Permission denied")
            code, stderr = run_shoal(shoal_argv, *node_args(locked), user=user)
            assert_one_line(code, stderr, 1, str(locked), "Permission denied")
        finally:
            locked.chmod(0o755)


def test_ctrl_c_while_still_importing_is_interrupted_130(
    shoal_argv: list[str], tmp_path: Path
) -> None:
    # -X importtime reports each import as it completes. click is first
    # imported by the command line's modules, under the entry point's guard:
    # once it is in, the heavy imports (trio, cryptography...) are under way.
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "shoal", *node_args(tmp_path / "d")],
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        lines: list[bytes] = []
        for line in proc.stderr:
            lines.append(line)
            if line.split(b"|")[-1].strip() == b"click":
                proc.send_signal(signal.SIGINT)
                break
        lines.append(proc.stderr.read())
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    stderr = b"".join(lines).decode()
    shown = "\n".join(line for line in stderr.splitlines() if not line.startswith("import time:"))
    assert_one_line(code, shown, 130, "shoal: interrupted")


@pytest.mark.integration
def test_ctrl_c_ends_tail_with_interrupted_130(shoal_argv: list[str], node: NodeProcess) -> None:
    create = f"http://{http_address(node)}/topic/create?topic=failures_tail"
    urllib.request.urlopen(urllib.request.Request(create, method="POST"), timeout=10).close()
    proc = subprocess.Popen(
        [*shoal_argv, "tail", "failures_tail", "--node", http_address(node)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not subscribed(node, "failures_tail"):  # then Ctrl-C lands mid-command
            assert proc.poll() is None, "tail exited"
            assert time.monotonic() < deadline, "tail never subscribed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert_one_line(proc.returncode, stderr.decode(), 130, "shoal: interrupted")


def subscribed(node: NodeProcess, topic: str) -> bool:
    url = f"http://{http_address(node)}/stats?format=json&topic={topic}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        topics = json.loads(reply.read())["topics"] or []
    return any(c["client_count"] > 0 for t in topics for c in t["channels"] or [])


@pytest.mark.parametrize(
    ("target", "fragment"),
    [("out.xyz", "cannot draw a xyz"), ("missing/out.png", "does not exist")],
)
def test_plot_is_checked_before_the_run(
    shoal_argv: list[str], tmp_path: Path, target: str, fragment: str
) -> None:
    path = str(tmp_path / target)
    # A run that would take minutes: the check must come first.
    code, stderr = run_shoal(
        shoal_argv, "simulate", "loss", "--nodes", "500", "--duration", "1h", "--plot", path
    )
    assert_one_line(code, stderr, 1, path, fragment)


def run_on_terminal(argv: list[str]) -> tuple[int, bytes, bytes]:
    """Run with stderr on a pseudo-terminal; return the code, stdout and what the terminal saw."""
    controller, terminal = pty.openpty()
    try:
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=terminal) as proc:
            os.close(terminal)
            seen = b""
            while True:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            stdout = proc.stdout.read() if proc.stdout else b""
            return proc.wait(30), stdout, seen
    finally:
        os.close(controller)


def test_simulations_show_progress_on_a_terminal_only(shoal_argv: list[str]) -> None:
    args = [*shoal_argv, "simulate", "loss", "--nodes", "5", "--rates", "0,5%", "--duration", "60s"]
    code, stdout, terminal = run_on_terminal(args)
    assert code == 0, terminal
    assert b"simulating" in terminal
    assert b"run 1/2" in terminal
    assert b"run 2/2" in terminal
    assert b"60s of 60s virtual" in terminal
    assert b"invariants" in stdout
    # --json: figures only, nothing on the terminal.
    code, stdout, terminal = run_on_terminal([*args, "--json"])
    assert code == 0
    assert terminal == b""
    # Not a terminal: nothing on stderr.
    result = subprocess.run(args, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0
    assert result.stderr == b""
