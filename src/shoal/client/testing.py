"""A fake node HTTP API, for testing code built on the client.

`FakeNode` serves the read side of a node's HTTP API (``/members``,
``/lookup`` with its long poll, ``/topics``, ``/channels``, ``/nodes``,
``/stats``, ``/info``, ``/ping``) and ``POST /leave`` from plain data that a
test sets, so producers, consumers and the command line can be driven
through membership changes that would take real nodes seconds of gossip.
Real message traffic still goes to real nodes: list their ports as
members and producers.

Serve it inside trio with ``await nursery.start(fake.serve)``, or from
synchronous code (click's ``CliRunner``) with `serve_in_thread`; then change
it from that thread through `FakeNode.call`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import threading
import time
import urllib.request
from typing import TYPE_CHECKING, Any

import trio

from shoal import __version__
from shoal.cluster.http_api import new_router
from shoal.cluster.http_server import Request, Response, Router, serve_http
from shoal.testing.process import NodeProcess

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

__all__ = [
    "LOCAL_GOSSIP_ARGS",
    "FakeNode",
    "http_address",
    "member_entry",
    "producer_entry",
    "running_cluster",
    "serve_in_thread",
    "wait_for_members",
]

#: ``shoal node`` flags for a node that shares loopback with others: every
#: port picked by the kernel and the fast membership timings.
LOCAL_GOSSIP_ARGS = (
    "--gossip-address", "127.0.0.1:0",
    "--lookup-http-address", "127.0.0.1:0",
    "--gossip-profile", "local",
)  # fmt: skip


def http_address(node: NodeProcess) -> str:
    """``host:port`` of a node process's HTTP API."""
    host, port = node.http
    return f"{host}:{port}"


def wait_for_members(address: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Poll ``/members`` at ``address`` until ``count`` members are alive.

    Raises:
        TimeoutError: they were not, within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    members: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://{address}/members", timeout=5) as reply:
            members = json.loads(reply.read())["members"]
        if sum(m["status"] == "alive" for m in members) == count:
            return members
        time.sleep(0.05)
    raise TimeoutError(f"{address} sees {members} after {timeout}s, not {count} alive")


@contextlib.contextmanager
def running_cluster(size: int, *args: str) -> Iterator[list[NodeProcess]]:
    """Start ``size`` nodes on loopback, seeded by the first, until all see all.

    Args:
        size: how many nodes.
        *args: extra ``shoal node`` flags for every node.

    Yields:
        The node processes, ``node-1`` first.

    Resource handling:
        Every process is killed and its directory removed on exit.
    """
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(NodeProcess(*LOCAL_GOSSIP_ARGS, "--node-name", "node-1", *args))
        seed = str(first.addresses["gossip"])
        nodes = [first]
        for index in range(2, size + 1):
            name = f"node-{index}"
            node = NodeProcess(*LOCAL_GOSSIP_ARGS, "--node-name", name, "--seed", seed, *args)
            nodes.append(stack.enter_context(node))
        for node in nodes:
            wait_for_members(http_address(node), size)
        yield nodes


def producer_entry(host: str, tcp_port: int, http_port: int, hostname: str = "") -> dict[str, Any]:
    """A ``/lookup`` producer object for a node at these ports."""
    return {
        "remote_address": f"{host}:{tcp_port}",
        "hostname": hostname or f"{host}-{tcp_port}",
        "broadcast_address": host,
        "tcp_port": tcp_port,
        "http_port": http_port,
        "version": __version__,
    }


def member_entry(
    name: str,
    host: str,
    tcp_port: int,
    http_port: int,
    *,
    status: str = "alive",
    incarnation: int = 1,
    gossip_port: int = 4160,
    lookup_http_port: int = 4161,
    topics: Iterable[str] = (),
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ``/members`` entry for a node at these ports."""
    return {
        "tags": dict(tags or {}),
        "name": name,
        "address": f"{host}:{gossip_port}",
        "status": status,
        "incarnation": incarnation,
        "broadcast_address": host,
        "tcp_port": tcp_port,
        "http_port": http_port,
        "lookup_http_port": lookup_http_port,
        "topics": list(topics),
    }


class FakeNode:
    """A node's cluster-wide HTTP API answered from test data.

    Attributes:
        members: ``/members`` entries (see `member_entry`).
        topics: topic -> ``{"channels": [...], "producers": [...]}``.
        stats: the ``/stats?format=json`` reply before filtering.
        info: the ``/info`` reply.
        requests: ``METHOD path`` of every request served, in order.
        lookups: the query arguments of every ``/lookup``, in order.
        leaves: how many ``POST /leave`` it answered.
        address: ``host:port`` once serving.
    """

    def __init__(self) -> None:
        self.members: list[dict[str, Any]] = []
        self.topics: dict[str, dict[str, list[Any]]] = {}
        self.stats: dict[str, Any] = {
            "version": __version__,
            "health": "OK",
            "start_time": 0,
            "topics": [],
            "producers": [],
        }
        self.info: dict[str, Any] = {"version": __version__, "tcp_port": 4150, "http_port": 4151}
        self.requests: list[str] = []
        self.lookups: list[dict[str, str]] = []
        self.leaves = 0
        self.address = ""
        self._changed = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None

    # -- changing state ----------------------------------------------------------

    def set_topic(
        self,
        topic: str,
        producers: Iterable[dict[str, Any]],
        channels: Iterable[str] = (),
    ) -> None:
        """Set a topic's producers and channels and wake long polls."""
        self.topics[topic] = {"channels": list(channels), "producers": list(producers)}
        self.notify()

    def remove_topic(self, topic: str) -> None:
        """Forget a topic (``/lookup`` answers 404 again) and wake long polls."""
        self.topics.pop(topic, None)
        self.notify()

    def notify(self) -> None:
        """Wake every long poll to re-check its topic."""
        self._changed.set()
        self._changed = trio.Event()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the serving thread (`serve_in_thread`)."""
        if self._token is None:
            return fn(*args)
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def version(self, topic: str) -> str:
        """The opaque version of a topic's producer set (``"0"`` if unknown)."""
        entry = self.topics.get(topic)
        if entry is None:
            return "0"
        names = sorted(f"{p['broadcast_address']}:{p['tcp_port']}" for p in entry["producers"])
        return hashlib.blake2s(",".join(names).encode(), digest_size=8).hexdigest()

    # -- serving ---------------------------------------------------------------------

    @property
    def router(self) -> Router:
        """The route table."""
        router = new_router()
        router.add("GET", "/ping", lambda r: Response.text("OK"))
        router.add("GET", "/info", lambda r: Response.json(self.info))
        router.add("GET", "/members", self._members)
        router.add("GET", "/lookup", self._lookup)
        router.add("GET", "/topics", lambda r: Response.json({"topics": sorted(self.topics)}))
        router.add("GET", "/channels", self._channels)
        router.add("GET", "/nodes", self._nodes)
        router.add("GET", "/stats", self._stats)
        router.add("POST", "/leave", self._leave)
        return router

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve on 127.0.0.1 with a free port until cancelled; starts with the address."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        host, port = listeners[0].socket.getsockname()[:2]
        self.address = f"{host}:{port}"
        self._token = trio.lowlevel.current_trio_token()
        router = self.router
        original = router.match

        def recording_match(method: str, path: str) -> Any:
            self.requests.append(f"{method} {path}")
            return original(method, path)

        router.match = recording_match  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_http, listeners, router)
            task_status.started(self.address)

    def _members(self, request: Request) -> Response:
        return Response.json({"members": copy.deepcopy(self.members), "statistics": {}})

    async def _lookup(self, request: Request) -> Response:
        self.lookups.append({key: values[0] for key, values in request.query.items()})
        topic = request.arg("topic")
        if topic is None:
            return Response.error(400, "MISSING_ARG_TOPIC")
        wait = request.arg("wait")
        seen = request.arg("version")
        if wait is not None and seen is not None:
            with trio.move_on_after(float(wait)):
                while self.version(topic) == seen:
                    await self._changed.wait()
        entry = self.topics.get(topic)
        if entry is None:
            return Response.error(404, "TOPIC_NOT_FOUND")
        return Response.json({**copy.deepcopy(entry), "version": self.version(topic)})

    def _channels(self, request: Request) -> Response:
        entry = self.topics.get(request.arg("topic") or "")
        return Response.json({"channels": list(entry["channels"]) if entry else []})

    def _nodes(self, request: Request) -> Response:
        producers = []
        for member in self.members:
            topics = [t for t, e in self.topics.items() if any(
                p["tcp_port"] == member["tcp_port"] for p in e["producers"]
            )]  # fmt: skip
            producers.append(
                {
                    **producer_entry(
                        member["broadcast_address"], member["tcp_port"], member["http_port"]
                    ),
                    "topics": topics,
                    "tombstones": [False] * len(topics),
                }
            )
        return Response.json({"producers": producers})

    def _stats(self, request: Request) -> Response:
        stats = copy.deepcopy(self.stats)
        topic = request.arg("topic")
        channel = request.arg("channel")
        if topic is not None:
            stats["topics"] = [t for t in stats["topics"] if t["topic_name"] == topic] or None
        if channel is not None and stats["topics"]:
            for entry in stats["topics"]:
                entry["channels"] = [c for c in entry["channels"] if c["channel_name"] == channel]
        return Response.json(stats)

    def _leave(self, request: Request) -> Response:
        self.leaves += 1
        return Response.text("OK")


@contextlib.contextmanager
def serve_in_thread(fake: FakeNode) -> Iterator[str]:
    """Serve ``fake`` from a background thread; yields its address.

    Resource handling:
        The server stops and the thread is joined when the block exits.
    """
    started = threading.Event()
    stop: list[Callable[[], None]] = []

    async def main() -> None:
        with trio.CancelScope() as scope:
            token = trio.lowlevel.current_trio_token()
            stop.append(lambda: token.run_sync_soon(scope.cancel))
            async with trio.open_nursery() as nursery:
                await nursery.start(fake.serve)
                started.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the fake node did not start")
    try:
        yield fake.address
    finally:
        stop[0]()
        thread.join(10)
        fake._token = None
