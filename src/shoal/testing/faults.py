"""Two real nodes, a victim and a peer, watched while the victim is attacked.

The harness of the fault-injection tests (``tests/faults``).

Every fault test feeds one hostile or heavy input to the *victim* while

* a `Canary` publishes and consumes on it every 100 ms,
* a `PingProbe` asks its ``/ping`` every 50 ms on fresh connections, and
* a `MemberWatch` polls the *peer's* view of it every 100 ms;

then asserts the mechanisms: the canary and the probe never failed, the peer
never held the victim as anything but alive, and the victim logged neither a
traceback nor an internal error. Latencies are printed (``-s``) as figures,
never asserted: these machines are shared.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import resource
import time
from typing import TYPE_CHECKING

from shoal.testing.canary import Canary, MemberWatch, PingProbe, http_json
from shoal.testing.process import NodeProcess

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "KEY",
    "Pair",
    "Watched",
    "check_logs",
    "member_status",
    "membership_stats",
    "rss_bytes",
    "running_pair",
    "wait_for",
    "watched",
]

KEY = base64.b64encode(bytes(range(32))).decode()
#: Enough descriptors for 1,100 keep-alive connections and the node's own.
_FILES = 4096


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = _FILES if hard == resource.RLIM_INFINITY else min(_FILES, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def wait_for(predicate: Callable[[], bool], *, timeout: float = 20.0) -> None:
    """Poll ``predicate`` every 50 ms until it holds (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition never held")


def member_status(node: NodeProcess, name: str) -> str:
    """The state ``node`` holds ``name`` in (``"absent"`` when unknown)."""
    members = http_json(node.http, "/members")["members"]
    return next((m["status"] for m in members if m["name"] == name), "absent")


def membership_stats(node: NodeProcess) -> dict[str, object]:
    """The gossip counters ``/members`` reports (driver, and engine under ``"engine"``)."""
    stats: dict[str, object] = http_json(node.http, "/members")["statistics"]
    return stats


def rss_bytes(node: NodeProcess) -> int:
    """The node process's resident set size, from ``/proc``."""
    assert node.proc is not None
    with open(f"/proc/{node.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@dataclasses.dataclass
class Pair:
    """A victim node and a peer that joined it."""

    victim: NodeProcess
    peer: NodeProcess
    victim_name: str
    peer_name: str
    #: False once a test killed the victim on purpose.
    victim_running: bool = True


@dataclasses.dataclass
class Watched:
    """The watchers running around one hostile input."""

    canary: Canary
    ping: PingProbe
    watch: MemberWatch

    def report(self, label: str) -> str:
        """Print (and return) the figures seen so far under ``label``."""
        canary, ping = self.canary, self.ping
        line = (
            f"{label}: canary {canary.rounds} rounds, p99 {canary.p99 * 1e3:.0f} ms, "
            f"worst {canary.worst * 1e3:.0f} ms; /ping {ping.rounds} rounds, "
            f"p99 {ping.p99 * 1e3:.0f} ms, worst {ping.worst * 1e3:.0f} ms"
        )
        print(line)
        return line


@contextlib.contextmanager
def running_pair(*, keyed: bool = False, victim_flags: tuple[str, ...] = ()) -> Iterator[Pair]:
    """Run a victim and a peer joined to it; both are killed on exit."""
    _raise_file_limit()
    flags = ("--gossip-key", KEY) if keyed else ()
    with (
        NodeProcess("--node-name", "victim", *flags, *victim_flags) as victim,
        NodeProcess("--node-name", "peer", "--seed", victim.gossip, *flags) as peer,
    ):
        wait_for(
            lambda: (
                member_status(peer, "victim") == "alive"
                and member_status(victim, "peer") == "alive"
            )
        )
        yield Pair(victim, peer, "victim", "peer")


def check_logs(node: NodeProcess, *, running: bool = True) -> None:
    """Assert ``node`` still runs and never logged a traceback or an internal error."""
    assert node.proc is not None
    if running:
        assert node.proc.poll() is None, f"node died:\n{node.stderr}"
    assert "Traceback" not in node.stderr, node.stderr
    assert "internal error" not in node.stderr, node.stderr


@contextlib.contextmanager
def watched(pair: Pair) -> Iterator[Watched]:
    """Run the canary, the probe and the peer's watch around the block, then check them."""
    canary = Canary(pair.victim.tcp)
    ping = PingProbe(pair.victim.http)
    watch = MemberWatch(pair.peer.http, pair.victim_name)
    for watcher in (canary, ping, watch):
        watcher.start()
    seen = Watched(canary, ping, watch)
    try:
        yield seen
        time.sleep(0.3)  # a few more rounds after the input
    finally:
        for watcher in (canary, ping, watch):
            watcher.stop()
    assert canary.failures == [], canary.failures
    assert ping.failures == [], ping.failures
    assert watch.failures == [], watch.failures
    assert watch.states == [], f"the peer held the victim as {watch.states}"
    assert canary.rounds > 0
    assert ping.rounds > 0
