"""A crashed process on a live host: refused probes take it out of every view and lookup.

Real ``shoal node`` processes on loopback, lan profile (the one whose
Lifeguard timing would otherwise take about 6 s). Each test asserts the
mechanism (the death came from refusal evidence, the long-poll woke on it)
and records the time as a property; the bounds on time only guard against
hangs. bench/membership.py prints the same figures.
"""

from __future__ import annotations

import signal
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest

from shoal.testing.process import NodeProcess, ProcessCluster, get_json, members, name_of, statuses
from shoal.testing.waiting import wait_for
from shoal.testing.wire import NsqConnection

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Lifeguard's shortest suspicion at five members in the lan profile is 4 s
#: and the longest 24 s: a death sooner than this came from refusals.
LIFEGUARD_MIN = 4.0


eventually = partial(wait_for, limit=30.0, interval=0.02)


def producers(node: NodeProcess, topic: str) -> list[int]:
    body = get_json(node.lookup_http, f"/lookup?topic={topic}")
    return [p["tcp_port"] for p in body.get("producers", [])]


@pytest.mark.parametrize("n", [5, 20])
def test_sigkill_is_dead_everywhere_and_gone_from_every_lookup_by_refusals(
    cluster: ProcessCluster, n: int, record_property: Callable[[str, object], None]
) -> None:
    nodes = cluster.form(n)
    victim, others = nodes[-1], nodes[:-1]
    with NsqConnection(victim.tcp) as conn:
        conn.pub("orders", b"x")
    eventually(lambda: all(producers(x, "orders") == [victim.tcp[1]] for x in others))
    name = name_of(victim)
    watcher = others[0]
    version = get_json(watcher.lookup_http, "/lookup?topic=orders")["version"]
    woke: list[Any] = []
    poll = threading.Thread(
        target=lambda: woke.append(
            get_json(watcher.lookup_http, f"/lookup?topic=orders&wait=30&version={version}")
        )
    )
    poll.start()
    time.sleep(0.2)  # the long-poll is parked

    victim.kill()
    killed = time.monotonic()
    dead_at: dict[int, float] = {}
    gone_at: dict[int, float] = {}

    def everywhere() -> bool:
        for i, x in enumerate(others):
            if i not in dead_at and statuses(x)[name] == "dead":
                dead_at[i] = time.monotonic() - killed
            if i not in gone_at and producers(x, "orders") == []:
                gone_at[i] = time.monotonic() - killed
        return len(dead_at) == len(gone_at) == len(others)

    eventually(everywhere, limit=60)
    poll.join(40)
    record_property("sigkill_to_dead_everywhere_s", round(max(dead_at.values()), 3))
    record_property("sigkill_to_lookup_empty_everywhere_s", round(max(gone_at.values()), 3))
    # The mechanism: the victim's watchers saw their watch streams close
    # (the kernel closed the dead process's connections), and deaths were
    # declared on that refusal evidence, not by a timeout ...
    stats = [get_json(x.http, "/members")["statistics"] for x in others]
    assert sum(s["watch"]["closures"] for s in stats) >= 1
    assert sum(s["engine"]["watch_closures"] for s in stats) >= 1
    assert sum(s["engine"]["refusal_deaths"] for s in stats) >= 1
    # ... every survivor watches and is watched (the ring covers everyone) ...
    assert all(s["watch"]["established"] >= 1 for s in stats)
    # ... and the long-poll woke on the death with the producer gone, well
    # before its 30 s wait ran out.
    (reply,) = woke
    assert reply["producers"] == []
    assert max(dead_at.values()) < LIFEGUARD_MIN * 2  # a guard against hangs only


def test_sigstopped_node_is_not_declared_dead(cluster: ProcessCluster) -> None:
    nodes = cluster.form(5)
    stopped, others = nodes[-1], nodes[:-1]
    name = name_of(stopped)
    stopped.signal(signal.SIGSTOP)
    try:
        # Its sockets stay open, so nothing refuses: silence keeps Lifeguard's
        # timing, which a 3 s stall does not outlast.
        until = time.monotonic() + 3.0
        while time.monotonic() < until:
            assert all(statuses(x)[name] != "dead" for x in others)
            time.sleep(0.1)
    finally:
        stopped.signal(signal.SIGCONT)
    eventually(lambda: all(statuses(x)[name] == "alive" for x in others))
    assert all(statuses(x)[name] != "dead" for x in others)
    stats = [get_json(x.http, "/members")["statistics"] for x in others]
    assert sum(s["engine"]["refusal_deaths"] for s in stats) == 0
    # A stalled process keeps its connections open: no watch stream closed.
    assert sum(s["watch"]["closures"] for s in stats) == 0
    assert sum(s["watch"]["established"] for s in stats) >= 1


def test_node_restarted_on_its_address_is_alive_everywhere_again(
    cluster: ProcessCluster, record_property: Callable[[str, object], None]
) -> None:
    nodes = cluster.form(5)
    victim, others = nodes[-1], nodes[:-1]
    name = name_of(victim)
    gossip = victim.gossip
    before = next(m for m in members(others[0]) if m["name"] == name)["incarnation"]
    victim.kill()
    eventually(lambda: all(statuses(x)[name] == "dead" for x in others))
    restarted_at = time.monotonic()
    cluster.start("--gossip-address", gossip, data=f"n{len(nodes) - 1}", seed=others[0])
    took = eventually(lambda: all(statuses(x)[name] == "alive" for x in others))
    record_property("restart_to_alive_everywhere_s", round(time.monotonic() - restarted_at, 3))
    after = next(m for m in members(others[0]) if m["name"] == name)["incarnation"]
    assert after > before
    assert took < 20.0  # a guard against hangs only
