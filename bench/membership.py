"""Membership figures with real node processes, lan profile (issue: SWIM with Lifeguard).

    python bench/membership.py loopback --nodes 5
    python bench/membership.py loopback --nodes 20
    python bench/membership.py startup --runs 10
    python bench/membership.py netns

``loopback`` starts N nodes on 127.0.0.1 seeded by the first and prints:
time until every node sees N alive; time from SIGKILL of one node until
every other node lists it dead; time from SIGTERM until every other node
lists it left; gossip bytes per second per node and CPU per node while idle
(``/proc/<pid>/stat`` over ``--idle`` seconds).

``startup`` times one node from exec to answering ``/ping`` and to being
listed alive by the seed it joins through (median and max of ``--runs``).
It first byte-compiles the shoal package, as ``pip install`` does, so the
node is timed as installed: an editable install run with
``PYTHONDONTWRITEBYTECODE`` set would otherwise compile every module from
source at each start (``--no-compile`` times that case instead).

``netns`` runs 5 nodes in their own network namespaces (root only), splits
2 from 3 until each side marks the other dead, restores the links and
prints the time from restore to a full view on every node.
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import shoal
from shoal.testing.process import NodeProcess
from shoal.testing.progress import StatusLine

POLL = 0.05

#: On a terminal only: stdout is the figures.
status = StatusLine("bench/membership.py")


def members(node: NodeProcess) -> dict[str, Any]:
    host, port = node.http
    with urllib.request.urlopen(f"http://{host}:{port}/members", timeout=10) as reply:
        body: dict[str, Any] = json.loads(reply.read())
    return body


def view(node: NodeProcess) -> dict[str, str]:
    return {m["name"]: m["status"] for m in members(node)["members"]}


def wait(condition: Any, limit: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit:
            raise SystemExit(f"gave up after {limit}s")
        time.sleep(POLL)
    return time.monotonic() - started


def gossip_bytes(node: NodeProcess) -> int:
    stats = members(node)["statistics"]
    udp = int(stats["bytes_sent"]) + int(stats["bytes_received"])
    return udp + int(stats["stream_bytes_sent"]) + int(stats["stream_bytes_received"])


def loopback(n: int, idle: float) -> None:
    root = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    nodes: list[NodeProcess] = []
    try:
        status.show(f"starting {n} nodes")
        first = NodeProcess("--data-path", str(root / "n0"), workdir=root).start()
        nodes.append(first)
        started = time.monotonic()
        for i in range(1, n):
            node = NodeProcess(
                "--data-path", str(root / f"n{i}"), "--seed", first.gossip, workdir=root
            )
            nodes.append(node.start())
        launched = time.monotonic() - started
        converge = wait(lambda: all(list(view(x).values()).count("alive") == n for x in nodes), 60)
        status.say(
            f"N={n}: all {n} processes started in {launched:.1f}s; every node sees {n} alive "
            f"{converge:.2f}s after the last start"
        )

        before = [gossip_bytes(x) for x in nodes]
        cpu_before = [cpu_seconds(pid(x)) for x in nodes]
        idle_started = time.monotonic()
        status.show(f"measuring {idle:.0f}s of idle gossip and CPU")
        time.sleep(idle)
        cpu_after = [cpu_seconds(pid(x)) for x in nodes]
        idle_took = time.monotonic() - idle_started
        after = [gossip_bytes(x) for x in nodes]
        per_node = sum(b - a for a, b in zip(before, after, strict=True)) / n / idle
        shares = sorted(
            100 * (b - a) / idle_took for a, b in zip(cpu_before, cpu_after, strict=True)
        )
        status.say(
            f"N={n}: idle CPU per node over {idle_took:.0f}s (/proc/<pid>/stat): "
            f"median {shares[len(shares) // 2]:.2f}%, max {shares[-1]:.2f}%"
        )
        status.say(f"N={n}: idle gossip {per_node:.0f} bytes/s per node "
              "(in + out: UDP packets, membership and registry streams)")  # fmt: skip

        victim = nodes[-1]
        victim_name = next(
            m["name"] for m in members(victim)["members"] if m["tcp_port"] == victim.tcp[1]
        )
        others = nodes[:-1]
        status.show("SIGKILL of one node: waiting for every view to list it dead")
        victim.kill()
        killed = time.monotonic()
        per_observer: list[float] = []
        pending = list(others)
        while pending:
            for x in list(pending):
                if view(x).get(victim_name) == "dead":
                    per_observer.append(time.monotonic() - killed)
                    pending.remove(x)
            if time.monotonic() - killed > 120:
                raise SystemExit("crash not detected in 120s")
            time.sleep(POLL)
        status.say(
            f"N={n}: SIGKILL to dead: first observer {min(per_observer):.2f}s, "
            f"every observer {max(per_observer):.2f}s"
        )
        stats = [members(x)["statistics"] for x in others]
        status.say(
            f"N={n}: evidence: {sum(s['watch']['closures'] for s in stats)} watch streams "
            f"closed, {sum(s['engine']['refusals'] for s in stats)} probes refused, "
            f"{sum(s['engine']['refusal_deaths'] for s in stats)} deaths declared on it"
        )

        leaver = others[-1]
        leaver_name = next(
            m["name"] for m in members(leaver)["members"] if m["tcp_port"] == leaver.tcp[1]
        )
        rest = others[:-1]
        status.show("SIGTERM to another: waiting for every view to list it left")
        leaver.signal(signal.SIGTERM)
        left_at = time.monotonic()
        took = wait(lambda: all(view(x).get(leaver_name) == "left" for x in rest), 60)
        status.say(f"N={n}: SIGTERM to left in every view: {took:.2f}s")
        false_deaths = sum(
            1
            for x in rest
            for name, status in view(x).items()
            if status == "dead" and name != victim_name
        )
        status.say(f"N={n}: healthy members seen dead anywhere: {false_deaths}")
        del left_at
    finally:
        for x in nodes:
            x.kill()


def ping(address: tuple[str, int]) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/ping", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_precise(pid: int) -> float:
    """On-CPU seconds of every thread of ``pid`` so far, to the microsecond.

    ``/proc/<pid>/task/*/sched`` (``se.sum_exec_runtime``, in ms) where the
    kernel exposes it; else `cpu_seconds`, in clock ticks (10 ms).
    """
    total = 0.0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for line in (task / "sched").read_text().splitlines():
                if line.startswith("se.sum_exec_runtime"):
                    total += float(line.split(":")[1]) / 1000
    except OSError:
        return cpu_seconds(pid)
    return total or cpu_seconds(pid)


def floor_cpu(runs: int) -> float:
    """Median CPU of a Python that only imports trio, click and h11 (not shoal's to cut)."""
    spent = []
    for _ in range(runs):
        child = subprocess.Popen([sys.executable, "-c", "import trio, click, h11"])
        _pid, status_code, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status_code)
        if child.returncode:
            raise SystemExit("python -c 'import trio, click, h11' failed")
        spent.append(usage.ru_utime + usage.ru_stime)
    spent.sort()
    return spent[len(spent) // 2]


def pid(node: NodeProcess) -> int:
    assert node.proc is not None
    return node.proc.pid


def compile_package() -> str:
    """Byte-compile shoal's modules as ``pip install`` does; say what was done."""
    package = Path(shoal.__file__).parent
    sources = list(package.rglob("*.py"))
    # Writes __pycache__ even when PYTHONDONTWRITEBYTECODE is set (that only
    # stops the import system from writing); fresh files are left alone.
    if not compileall.compile_dir(package, quiet=1):
        raise SystemExit(f"byte-compiling {package} failed")
    return f"bytecode of all {len(sources)} shoal modules compiled before timing (as pip does)"


def startup(runs: int, *, compile_first: bool = True) -> None:
    """Exec -> /ping answers, and exec -> the seed lists the node alive."""
    if compile_first:
        status.say(f"start-up: {compile_package()}")
    else:
        status.say(
            "start-up: package not byte-compiled first (--no-compile): a module "
            "without a fresh .pyc is compiled from source at every start"
        )
    root = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    seed = NodeProcess("--data-path", str(root / "seed"), workdir=root).start()
    to_ping: list[float] = []
    to_joined: list[float] = []
    cpu: list[float] = []
    try:
        for i in range(runs):
            status.show(f"start-up run {i + 1} of {runs}")
            # A name of its own: the default (address and TCP port) would be
            # an earlier run's if the kernel handed out the same port again,
            # and the seed would hold that name until its old self is dead.
            node = NodeProcess(
                "--data-path", str(root / f"n{i}"), "--seed", seed.gossip,
                "--node-name", f"startup-{i}", workdir=root,
            )  # fmt: skip
            ready = node.ready_file
            started = time.monotonic()
            node.start_nowait()
            while not ready.exists():
                if time.monotonic() - started > 20:
                    raise SystemExit(f"no ready file in 20 s:\n{node.stderr}")
                time.sleep(0.001)
            node.addresses = json.loads(ready.read_text())
            while not ping(node.http):
                time.sleep(0.001)
            to_ping.append(time.monotonic() - started)
            assert node.proc is not None
            cpu.append(cpu_precise(node.proc.pid))
            port = node.tcp[1]
            wait(
                lambda port=port: any(
                    m["tcp_port"] == port and m["status"] == "alive"
                    for m in members(seed)["members"]
                ),
                20,
            )
            to_joined.append(time.monotonic() - started)
            node.kill()
    finally:
        seed.kill()
    to_ping.sort()
    to_joined.sort()
    cpu.sort()
    status.show("CPU of a Python importing only trio, click and h11")
    floor = floor_cpu(runs)
    status.say(
        f"start-up over {runs} runs: CPU spent by the node until /ping answers: "
        f"median {cpu[len(cpu) // 2]:.3f}s min {cpu[0]:.3f}s, of which {floor:.3f}s (median) "
        "is Python importing trio, click and h11 alone (wall times below grow with the "
        "machine's load)"
    )
    status.say(
        f"start-up over {runs} runs: exec to /ping median {to_ping[len(to_ping) // 2]:.3f}s "
        f"max {to_ping[-1]:.3f}s; exec to alive in the seed's view median "
        f"{to_joined[len(to_joined) // 2]:.3f}s max {to_joined[-1]:.3f}s"
    )


@dataclasses.dataclass(frozen=True)
class NetnsFigures:
    """One run of the 5-node namespace test, in seconds."""

    split_detected: float  # split start -> each side lists the other dead
    heal: float  # start of the link restore -> all five see five alive
    restore: float  # how long restoring the rules took (part of ``heal``)
    kill_detected: float  # SIGKILL of node4 -> the four others list it dead


def netns_run(split_for: float) -> NetnsFigures:
    """Run the namespace test once: split 2|3, heal, then SIGKILL one node."""
    from shoal.testing.netns import NetnsCluster, NodeInNamespace, available

    reason = available()
    if reason is not None:
        raise SystemExit(f"network namespaces unavailable: {reason}")
    root = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    with NetnsCluster(5) as net:
        nodes: list[NodeInNamespace] = []
        try:
            for i, host in enumerate(net.hosts):
                args = ["--gossip-address", f"{host.address}:4160",
                        "--lookup-http-address", f"{host.address}:4161",
                        "--data-path", str(root / f"n{i}"), "--node-name", f"node{i}"]  # fmt: skip
                if i:
                    args += ["--seed", f"{net.hosts[0].address}:4160"]
                nodes.append(NodeInNamespace(host, *args, workdir=root).start())

            def nview(x: NodeInNamespace) -> dict[str, str]:
                _status, body = x.http_get("/members")
                return {m["name"]: m["status"] for m in json.loads(body)["members"]}

            wait(lambda: all(list(nview(x).values()).count("alive") == 5 for x in nodes), 60)
            net.partition([[0, 1], [2, 3, 4]])
            cut = time.monotonic()
            detected = wait(
                lambda: (
                    all(nview(x)["node2"] == "dead" for x in nodes[:2])
                    and all(nview(x)["node0"] == "dead" for x in nodes[2:])
                ),
                120,
            )
            time.sleep(max(0.0, split_for - (time.monotonic() - cut)))
            # Timed from the start of the restore: heal() rewrites each
            # namespace's rules in turn, and the first side can talk before
            # the last rule is gone.
            restoring = time.monotonic()
            net.heal()
            restored = time.monotonic() - restoring
            wait(lambda: all(list(nview(x).values()).count("alive") == 5 for x in nodes), 120)
            healed = time.monotonic() - restoring
            nodes[4].kill()
            killed = wait(lambda: all(nview(x)["node4"] == "dead" for x in nodes[:4]), 120)
            return NetnsFigures(detected, healed, restored, killed)
        finally:
            for x in nodes:
                x.kill()


def netns(split_for: float) -> None:
    status.show(f"5 nodes in namespaces, a {split_for:.0f}s split, a heal, a kill")
    figures = netns_run(split_for)
    detected = figures.split_detected
    status.say(f"netns N=5: split 2|3, each side marks the other dead after {detected:.2f}s")
    status.say(
        f"netns N=5: link restore to a full view on every node: {figures.heal:.2f}s "
        f"(split lasted {split_for:.0f}s; restoring the rules took {figures.restore:.2f}s)"
    )
    status.say(f"netns N=5: SIGKILL to dead in every view: {figures.kill_detected:.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    lo = sub.add_parser("loopback")
    lo.add_argument("--nodes", type=int, default=5)
    lo.add_argument(
        "--idle", type=float, default=60.0, help="seconds of idle traffic and CPU to measure"
    )
    st = sub.add_parser("startup")
    st.add_argument("--runs", type=int, default=10)
    st.add_argument(
        "--no-compile",
        action="store_true",
        help="time the node without byte-compiling the package first",
    )
    ns = sub.add_parser("netns")
    ns.add_argument("--split-for", type=float, default=30.0, help="seconds the split lasts")
    args = parser.parse_args()
    with status.ticking():
        if args.mode == "loopback":
            loopback(args.nodes, args.idle)
        elif args.mode == "startup":
            startup(args.runs, compile_first=not args.no_compile)
        else:
            netns(args.split_for)


if __name__ == "__main__":
    main()
