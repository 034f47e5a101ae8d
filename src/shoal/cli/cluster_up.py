"""``shoal cluster up``: a local cluster of node processes in one command.

The nodes follow the README's "cluster by hand" plan, so what one reads
there works against a cluster started here: node ``i`` (1-based) is named
by the ``i``-th letter (``a``, ``b``, ``c``...), runs as ``python -m shoal
node`` on loopback with its data under ``DATA_DIR/<name>`` and its log in
``DATA_DIR/<name>.log``. Node ``a`` starts first; the others seed from its
gossip address. With a base port ``P`` node ``i`` listens on
``P + 1000(i-1)`` (TCP), ``+1`` (HTTP), ``+10`` (gossip, UDP and TCP) and
``+11`` (lookup HTTP): the default ``P = 4150`` gives 4150/4151/4160/4161,
then 5150/5151/5160/5161, then 6150..., so node ``a`` sits on nsqd's usual
ports and the other commands find it without ``--node``. No port of the
plan is nsqadmin's (4171) or in the 4170s at all. ``P = 0`` lets the kernel
pick.

Resource handling:
    The children run in their own sessions, so a terminal's Ctrl-C reaches
    only this process, which then stops every node once and cleanly
    (SIGTERM: leave the cluster, flush queues), killing any that has not
    exited after `STOP_TIMEOUT`. The same happens when start-up fails or
    this process is cancelled. Only a ``cluster up`` killed outright
    (SIGKILL) leaves its nodes running; ``kill`` their PIDs from the table.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import trio

from shoal.client.discovery import fetch_members
from shoal.client.errors import HTTPStatusError, NodeUnavailable
from shoal.errors import ShoalError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = [
    "INTERRUPTED",
    "MAX_NODES",
    "PORT_STRIDE",
    "STOP_TIMEOUT",
    "ClusterError",
    "ClusterSpec",
    "LocalNode",
    "node_name",
    "run_cluster",
]

#: Seconds a node gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 20.0
#: Seconds a node gets to bind its listeners.
READY_TIMEOUT = 20.0
#: Exit code after Ctrl-C: 128 + SIGINT, as shells report it.
INTERRUPTED = 130
#: Ports between one node and the next (the README's 4150, 5150, 6150...).
PORT_STRIDE = 1000
#: Most nodes ``cluster up`` starts: one per letter.
MAX_NODES = 26


class ClusterError(ShoalError):
    """The local cluster could not be started."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSpec:
    """What to start.

    Attributes:
        nodes: how many node processes.
        data_dir: the folder holding every node's data and log.
        base_port: first port of the fixed layout, or 0 for free ports.
        gossip_key: base64 gossip key shared by every node, or None.
        gossip_profile: membership timing preset (``local`` suits loopback).
        log_level: the nodes' ``--log-level``.
        converge_timeout: seconds to wait until node 1 sees every node alive.
    """

    nodes: int
    data_dir: Path
    base_port: int = 4150
    gossip_key: str | None = None
    gossip_profile: str = "local"
    log_level: str = "info"
    converge_timeout: float = 30.0

    def ports(self, index: int) -> tuple[int, int, int, int]:
        """TCP, HTTP, gossip and lookup HTTP ports of node ``index`` (1-based)."""
        if self.base_port == 0:
            return 0, 0, 0, 0
        first = self.base_port + PORT_STRIDE * (index - 1)
        return first, first + 1, first + 10, first + 11


def node_name(index: int) -> str:
    """The name of node ``index`` (1-based): ``a``, ``b``, ... ``z``."""
    if not 1 <= index <= MAX_NODES:
        raise ValueError(f"node index {index} is outside 1..{MAX_NODES}")
    return chr(ord("a") + index - 1)


@dataclasses.dataclass(slots=True, kw_only=True)
class LocalNode:
    """One started node process.

    Attributes:
        name: ``a``, ``b``, ... (see `node_name`).
        process: the child process.
        data_path: its ``--data-path``.
        log_path: where its stdout and stderr go.
        ready_file: its ``--ready-file``.
        addresses: the bound addresses from the ready file (``tcp``,
            ``http``, ``gossip``, ``lookup_http``).
    """

    name: str
    process: trio.Process
    data_path: Path
    log_path: Path
    ready_file: Path
    addresses: dict[str, str] = dataclasses.field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        """Name, pid, addresses and paths."""
        return {
            "name": self.name,
            "pid": self.process.pid,
            "tcp": self.addresses.get("tcp"),
            "http": self.addresses.get("http"),
            "gossip": self.addresses.get("gossip"),
            "lookup_http": self.addresses.get("lookup_http"),
            "data_path": str(self.data_path),
            "log": str(self.log_path),
        }

    def last_log_line(self) -> str:
        """The last non-empty line the node logged (why it failed, usually)."""
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""


async def _start_node(spec: ClusterSpec, index: int, seed: str | None) -> LocalNode:
    name = node_name(index)
    data_path = spec.data_dir / name
    data_path.mkdir(parents=True, exist_ok=True)
    ready_file = spec.data_dir / f"{name}.ready.json"
    ready_file.unlink(missing_ok=True)
    log_path = spec.data_dir / f"{name}.log"
    tcp, http, gossip, lookup = spec.ports(index)
    command = [
        sys.executable, "-m", "shoal", "node",
        "--node-name", name,
        "--node-id", str(index),
        "--tcp-address", f"127.0.0.1:{tcp}",
        "--http-address", f"127.0.0.1:{http}",
        "--gossip-address", f"127.0.0.1:{gossip}",
        "--lookup-http-address", f"127.0.0.1:{lookup}",
        "--broadcast-address", "127.0.0.1",
        "--data-path", str(data_path),
        "--ready-file", str(ready_file),
        "--gossip-profile", spec.gossip_profile,
        "--log-level", spec.log_level,
    ]  # fmt: skip
    if seed is not None:
        command += ["--seed", seed]
    if spec.gossip_key is not None:
        command += ["--gossip-key", spec.gossip_key]
    with log_path.open("wb") as log:
        process = await trio.lowlevel.open_process(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    return LocalNode(
        name=name, process=process, data_path=data_path, log_path=log_path, ready_file=ready_file
    )


async def _wait_ready(node: LocalNode) -> None:
    with trio.move_on_after(READY_TIMEOUT):
        while True:
            if node.process.poll() is not None:
                raise ClusterError(
                    f"{node.name} exited with {node.process.returncode}: {node.last_log_line()}"
                )
            try:
                node.addresses = json.loads(node.ready_file.read_text())
            except (OSError, ValueError):
                await trio.sleep(0.02)
                continue
            return
    raise ClusterError(f"{node.name} did not start within {READY_TIMEOUT:g}s; see {node.log_path}")


async def _wait_converged(
    nodes: list[LocalNode], converge_timeout: float, progress: Callable[[str], None]
) -> None:
    address = nodes[0].addresses["http"]
    alive = 0
    with trio.move_on_after(converge_timeout):
        while True:
            for node in nodes:
                if node.process.poll() is not None:
                    raise ClusterError(
                        f"{node.name} exited with {node.process.returncode}: {node.last_log_line()}"
                    )
            try:
                with trio.fail_after(5):
                    members = await fetch_members(address)
            except (NodeUnavailable, HTTPStatusError, trio.TooSlowError):
                members = []
            alive = sum(m.status == "alive" for m in members)
            progress(f"waiting for the members to find each other: {alive}/{len(nodes)} alive")
            if alive == len(nodes):
                return
            await trio.sleep(0.1)
    raise ClusterError(f"only {alive} of {len(nodes)} nodes joined within {converge_timeout:g}s")


async def stop_nodes(nodes: list[LocalNode]) -> None:
    """SIGTERM every running node, wait for them, kill those that linger."""
    for node in nodes:
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
    with trio.move_on_after(STOP_TIMEOUT):
        for node in nodes:
            await node.process.wait()
    for node in nodes:
        if node.process.poll() is None:
            node.process.kill()
            await node.process.wait()


async def run_cluster(
    spec: ClusterSpec,
    *,
    on_ready: Callable[[list[LocalNode]], None],
    progress: Callable[[str], None],
    notice: Callable[[str], None],
) -> int:
    """Start the cluster, report it, and run until a signal or every node exits.

    Args:
        spec: what to start.
        on_ready: called once every node is alive in node 1's member list.
        progress: called with start-up progress (shown on a terminal only).
        notice: called with things worth a line on stderr (a node exited).

    Returns:
        The exit code: `INTERRUPTED` (130) after SIGINT (Ctrl-C); 0 after
        SIGTERM, or when every node exited with 0 (for example each was
        asked to leave); 1 otherwise.

    Raises:
        ClusterError: a node failed to start or the members did not converge;
            every started node has been stopped.
    """
    spec.data_dir.mkdir(parents=True, exist_ok=True)
    nodes: list[LocalNode] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            async with trio.open_nursery() as nursery:
                stop = trio.Event()

                received: list[int] = []

                async def wait_for_signal() -> None:
                    async for signum in signals:
                        received.append(signum)
                        stop.set()
                        return

                nursery.start_soon(wait_for_signal)
                with trio.CancelScope() as startup:
                    nursery.start_soon(_cancel_on, stop, startup)
                    for index in range(1, spec.nodes + 1):
                        progress(f"starting node {node_name(index)} ({index} of {spec.nodes})")
                        seed = nodes[0].addresses["gossip"] if nodes else None
                        nodes.append(await _start_node(spec, index, seed))
                        await _wait_ready(nodes[-1])
                    await _wait_converged(nodes, spec.converge_timeout, progress)
                    on_ready(nodes)
                    codes = await _supervise(nodes, stop, notice)
                    nursery.cancel_scope.cancel()
                    if codes is None:
                        return _signal_code(received)
                    return 0 if not any(codes) else 1
                nursery.cancel_scope.cancel()
                return _signal_code(received)  # interrupted during start-up
        finally:
            with trio.CancelScope(shield=True):
                await stop_nodes(nodes)


def _signal_code(received: list[int]) -> int:
    """130 after Ctrl-C (SIGINT), as a shell reports it; 0 after SIGTERM (asked to stop)."""
    return INTERRUPTED if received and received[0] == signal.SIGINT else 0


async def _cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _supervise(
    nodes: list[LocalNode], stop: trio.Event, notice: Callable[[str], None]
) -> list[int] | None:
    """Wait for ``stop`` (returns None) or for every node to exit (returns their codes)."""
    codes: dict[str, int] = {}
    all_exited = trio.Event()

    async def watch(node: LocalNode) -> None:
        code = await node.process.wait()
        codes[node.name] = code
        notice(f"{node.name} exited with {code}" + ("" if code == 0 else f"; see {node.log_path}"))
        if len(codes) == len(nodes):
            all_exited.set()

    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(watch, node)
        nursery.start_soon(_set_when, stop, all_exited)
        await all_exited.wait()
        nursery.cancel_scope.cancel()
    if stop.is_set():
        return None
    return [codes[n.name] for n in nodes]


async def _set_when(source: trio.Event, target: trio.Event) -> None:
    await source.wait()
    target.set()
