"""Watchers that tell whether a node stays healthy while it is fed hostile input.

Fault-injection tests and benchmarks run these in background threads around
a real ``shoal node`` process (`shoal.testing.process.NodeProcess`):

* `Canary` publishes one message every ``interval`` over one NSQ TCP
  connection and consumes it on another, recording each round trip; a round
  that errs or takes longer than ``timeout`` is a failure.
* `PingProbe` asks ``GET /ping`` on a fresh HTTP connection every
  ``interval`` (fresh, so it also meets the connection cap) and records the
  latency of each answer.
* `MemberWatch` polls a *peer's* ``/members`` and records every time it held
  the watched node as anything but alive: a suspicion lasts seconds, so a
  100 ms poll does not miss one.

Tests assert on what these saw (no failure, never suspect), not on times:
the latencies are figures to report, measured on shared machines.
"""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from shoal.testing.wire import NsqConnection

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Canary", "MemberWatch", "PingProbe", "http_json"]


def http_json(address: tuple[str, int], path: str, *, timeout: float = 5.0) -> Any:
    """GET ``path`` and decode its JSON body."""
    conn = http.client.HTTPConnection(address[0], address[1], timeout=timeout)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


class _Watcher:
    """A loop in a daemon thread, run every ``interval`` until `stop`."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.rounds = 0
        self.failures: list[str] = []
        self.latencies: list[float] = []

    @property
    def worst(self) -> float:
        """The longest latency recorded (0 before any)."""
        return max(self.latencies, default=0.0)

    @property
    def p99(self) -> float:
        """The 99th percentile latency, nearest rank (0 before any)."""
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]

    def start(self) -> None:
        """Start the loop (`setup` first, in the caller's thread)."""
        self.setup()
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and wait for it (bounded by one round's timeout)."""
        self._stopping.set()
        self._thread.join(timeout=30)
        self.teardown()

    def setup(self) -> None:
        """Open what the rounds need."""

    def teardown(self) -> None:
        """Close what `setup` opened."""

    def round(self) -> float:
        """One check; returns its latency or raises on failure."""
        raise NotImplementedError

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stopping.is_set():
            try:
                self.latencies.append(self.round())
            except Exception as exc:  # any failure is recorded, the loop goes on
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self.rounds += 1
            next_at += self.interval
            self._stopping.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> _Watcher:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Canary(_Watcher):
    """Publish and consume one message per round on a node's NSQ TCP port.

    Args:
        address: the node's NSQ TCP address.
        interval: seconds between rounds.
        timeout: a round taking longer fails (and the connections are
            reopened for the next).
    """

    def __init__(
        self, address: tuple[str, int], *, interval: float = 0.1, timeout: float = 5.0
    ) -> None:
        super().__init__(interval)
        self.address = address
        self.timeout = timeout
        self.topic = f"canary{uuid.uuid4().hex[:8]}"
        self._pub: NsqConnection | None = None
        self._sub: NsqConnection | None = None

    def setup(self) -> None:
        """Connect the publisher and the subscriber."""
        self._pub = NsqConnection(self.address, timeout=self.timeout)
        self._pub.pub(self.topic, b"warm-up")
        self._sub = NsqConnection(self.address, timeout=self.timeout)
        self._sub.sub(self.topic, "canary")
        self._sub.rdy(1)
        message = self._sub.read_message()
        self._sub.fin(message.id)

    def teardown(self) -> None:
        """Close both connections."""
        for conn in (self._pub, self._sub):
            if conn is not None:
                conn.close()

    def round(self) -> float:
        """Publish a fresh body and wait for it on the subscription."""
        pub, sub = self._pub, self._sub
        assert pub is not None
        assert sub is not None
        body = uuid.uuid4().bytes
        started = time.monotonic()
        try:
            pub.pub(self.topic, body)
            message = sub.read_message()
            sub.fin(message.id)
        except Exception:
            self.teardown()
            self.setup()
            raise
        if message.body != body:
            raise AssertionError(f"canary got {message.body!r}, sent {body!r}")
        return time.monotonic() - started


class PingProbe(_Watcher):
    """``GET /ping`` on a fresh connection per round."""

    def __init__(
        self, address: tuple[str, int], *, interval: float = 0.05, timeout: float = 10.0
    ) -> None:
        super().__init__(interval)
        self.address = address
        self.timeout = timeout

    def round(self) -> float:
        """One ``/ping``; anything but ``200 OK`` fails."""
        started = time.monotonic()
        conn = http.client.HTTPConnection(self.address[0], self.address[1], timeout=self.timeout)
        try:
            conn.request("GET", "/ping")
            reply = conn.getresponse()
            body = reply.read()
        finally:
            conn.close()
        if reply.status != 200 or body != b"OK":
            raise AssertionError(f"/ping answered {reply.status} {body!r}")
        return time.monotonic() - started


class MemberWatch(_Watcher):
    """Poll a peer's view of one member; record every state but alive.

    Args:
        peer_http: the peer's nsqd HTTP address.
        name: the member watched.
    """

    def __init__(self, peer_http: tuple[str, int], name: str, *, interval: float = 0.1) -> None:
        super().__init__(interval)
        self.peer_http = peer_http
        self.name = name
        self.states: list[str] = []

    def round(self) -> float:
        """Read the peer's ``/members`` once."""
        started = time.monotonic()
        members = http_json(self.peer_http, "/members")["members"]
        status = next((m["status"] for m in members if m["name"] == self.name), "absent")
        if status != "alive":
            self.states.append(status)
        return time.monotonic() - started
