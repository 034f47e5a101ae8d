"""Real ``shoal node`` processes for integration tests and benchmarks.

`NodeProcess` starts ``python -m shoal node`` on loopback with port 0
everywhere, waits for its ready file, and exposes the bound addresses. Its
stderr goes to a file so a test can assert that the node never printed a
traceback, whatever it was sent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.testing.waiting import wait_for

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "NodeProcess",
    "ProcessCluster",
    "get_json",
    "members",
    "name_of",
    "split_address",
    "statuses",
]

#: How long a node may take to bind its listeners before a test gives up.
START_TIMEOUT = 20.0


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` into its parts."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class NodeProcess:
    """A ``shoal node`` child process bound to 127.0.0.1 with port 0.

    Args:
        *args: extra ``shoal node`` flags.
        workdir: where the ready file and the stderr log go (a temporary
            directory when omitted); also the default ``--data-path`` parent.
        env: extra environment variables.

    Resource handling:
        Use it as a context manager: on exit the process is killed if it is
        still running and its temporary directory removed.
    """

    def __init__(
        self, *args: str, workdir: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="shoal-node-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self.args = list(args)
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.addresses: dict[str, str | None] = {}
        self.ready_file = workdir / f"ready-{os.getpid()}-{id(self)}.json"
        self.stderr_path = workdir / f"stderr-{os.getpid()}-{id(self)}.log"

    def start(self) -> NodeProcess:
        """Start the process and wait until every listener is bound.

        Raises:
            RuntimeError: the process exited or did not get ready in time; the
                message carries its stderr.
        """
        self.start_nowait()
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                self.addresses = json.loads(self.ready_file.read_text())
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"shoal node exited with {self.proc.returncode}:\n{self.stderr}")
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"shoal node did not get ready in {START_TIMEOUT}s:\n{self.stderr}")

    def start_nowait(self) -> None:
        """Exec the process and return at once (`ready_file` appears once it listens)."""
        self.ready_file.unlink(missing_ok=True)
        command = [
            sys.executable, "-m", "shoal", "node",
            "--tcp-address", "127.0.0.1:0",
            "--http-address", "127.0.0.1:0",
            "--gossip-address", "127.0.0.1:0",
            "--lookup-http-address", "127.0.0.1:0",
            "--broadcast-address", "127.0.0.1",
            "--ready-file", str(self.ready_file),
            *([] if "--data-path" in self.args else ["--data-path", str(self.workdir / "data")]),
            *self.args,
        ]  # fmt: skip
        env = {**os.environ, **self.env}
        with self.stderr_path.open("ab") as stderr:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, env=env
            )

    @property
    def tcp(self) -> tuple[str, int]:
        """The NSQ TCP listener."""
        return self._address("tcp")

    @property
    def http(self) -> tuple[str, int]:
        """The nsqd HTTP listener."""
        return self._address("http")

    @property
    def gossip(self) -> str:
        """The gossip address as ``host:port``, what ``--seed`` takes."""
        host, port = self._address("gossip")
        return f"{host}:{port}"

    @property
    def lookup_http(self) -> tuple[str, int]:
        """The nsqlookupd HTTP listener."""
        return self._address("lookup_http")

    def _address(self, key: str) -> tuple[str, int]:
        address = self.addresses.get(key)
        if not address:
            raise RuntimeError(f"node has no {key} listener")
        return split_address(address)

    @property
    def stderr(self) -> str:
        """Everything the node wrote to stderr so far."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float = 20.0) -> int:
        """Wait for the process to exit and return its exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM the process and return its exit code."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the process, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
        if self._tmp is not None:
            self._tmp.cleanup()


def get_json(address: tuple[str, int], path: str, timeout: float = 40.0) -> Any:
    """GET ``path`` and decode its JSON body, that of an error reply included.

    An error reply is returned rather than raised: tests look at what the
    node said (``{"message": ...}``), as NSQ clients do.
    """
    host, port = address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as reply:
            return json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as err:
        return json.loads(err.read() or b"null")


def members(node: NodeProcess) -> list[dict[str, Any]]:
    """The node's ``/members`` list."""
    body = get_json(node.http, "/members")
    return list(body["members"])


def statuses(node: NodeProcess) -> dict[str, str]:
    """Member name -> status, as ``node`` sees them."""
    return {m["name"]: m["status"] for m in members(node)}


def name_of(node: NodeProcess) -> str:
    """The member name ``node`` goes by (found by its TCP port in its own view)."""
    port = node.tcp[1]
    return str(next(m["name"] for m in members(node) if m["tcp_port"] == port))


class ProcessCluster:
    """Real nodes under one directory, each started with ``common`` flags.

    Node ``i`` keeps its data in ``root / f"n{i}"`` unless told otherwise, so
    a test restarts a node on its data path by naming it.

    Resource handling:
        `close` kills every node it started and asserts none printed a
        traceback; a fixture calls it in ``finally``.
    """

    def __init__(self, root: Path, *common: str) -> None:
        self.root = root
        self.common = common
        self.nodes: list[NodeProcess] = []

    def start(
        self, *extra: str, data: str | None = None, seed: NodeProcess | None = None
    ) -> NodeProcess:
        """Start a node (joining through ``seed`` when given) and wait until it listens."""
        data = data or f"n{len(self.nodes)}"
        args = [*self.common, "--data-path", str(self.root / data), *extra]
        if seed is not None:
            args += ["--seed", seed.gossip]
        node = NodeProcess(*args, workdir=self.root).start()
        self.nodes.append(node)
        return node

    def form(self, n: int, *extra: str, limit: float = 60.0) -> list[NodeProcess]:
        """Start ``n`` nodes through the first and wait until each sees all alive."""
        first = self.start(*extra)
        nodes = [first] + [self.start(*extra, seed=first) for _ in range(1, n)]
        wait_for(lambda: all(list(statuses(x).values()).count("alive") == n for x in nodes), limit)
        return nodes

    def close(self) -> None:
        """Kill every node; none may have printed a traceback."""
        for node in self.nodes:
            node.kill()
        for node in self.nodes:
            assert "Traceback" not in node.stderr, node.stderr
