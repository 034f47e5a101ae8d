"""The nsqlookupd HTTP API (docs/nsq.md §3), answered from gossip by every node, and ``/members``.

Clients configured with lookupd addresses (pynsq, go-nsq, gnsq, nsqjs,
nsqadmin) can name any node's lookup port. Shapes, status codes and headers
are nsqlookupd v1.3.0's: raw JSON (no envelope), ``X-NSQ-Content-Type: nsq;
version=1.0``, ``{"message": CODE}`` errors, arrays never null, 404
``TOPIC_NOT_FOUND`` only for a topic no node has ever registered, and
``/nodes`` entries with ``topics`` and the parallel ``tombstones`` array
nsqadmin indexes into (docs/nsq.md §0 traps 1-5).

Writes (``/topic/create``, ``/topic/delete``, ``/channel/create``,
``/channel/delete``, ``/topic/tombstone``) are recorded in this node's own
registry entry and gossiped, so they take effect on every node, where a
real nsqlookupd keeps them to itself.

One extension: ``/lookup?topic=T&wait=SECONDS&version=V`` long-polls until
the producer set of ``T`` differs from the one ``V`` named (or the wait
ends), and every ``/lookup`` reply carries ``version``, an opaque string
naming its producer set. Clients that do not send ``wait`` see nsqlookupd's
behaviour (the extra key is ignored by every NSQ client).

A producer of a replicated topic carries three more keys, which NSQ
clients ignore as well: ``replication_factor``, ``replicas`` (the members
holding copies, in the order that decides who adopts) and, in the answer of
the owner itself, ``replication_lag`` (records each replica has not yet
acknowledged). A topic of factor 1 is answered exactly as nsqlookupd does.
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from shoal import __version__
from shoal.cluster.http_server import Request, Response, Router
from shoal.config import TAG_PREFIX
from shoal.queue.names import is_valid_channel_name, is_valid_topic_name

if TYPE_CHECKING:
    from collections.abc import Callable

    from shoal.cluster.membership_driver import MembershipDriver
    from shoal.cluster.routing import TopicRouting
    from shoal.registry.store import Producer

__all__ = ["MAX_WAIT", "LookupAPI", "MembersAPI", "format_address"]

log = logging.getLogger("shoal.node")

#: Longest long-poll a client may ask for, in seconds.
MAX_WAIT = 60.0


def format_address(sockname: Any) -> str:
    """``host:port`` for a socket name, with IPv6 hosts in brackets."""
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class LookupAPI:
    """nsqlookupd's endpoints over a node's `TopicRouting`.

    Args:
        routing: the gossiped registry with liveness.
        tombstone_lifetime: how long ``/topic/tombstone`` hides a producer.
        remote_address: the ``remote_address`` to report for a producer
            (nsqlookupd reports the nsqd's connection; we report its gossip
            address).
    """

    def __init__(
        self,
        routing: TopicRouting,
        *,
        tombstone_lifetime: float = 45.0,
        remote_address: Any = None,
    ) -> None:
        self.routing = routing
        self.tombstone_lifetime = tombstone_lifetime
        self._remote_address = remote_address or (lambda producer: "")
        self._changed = trio.Event()
        routing.registry.add_listener(self.notify_change)

    def notify_change(self) -> None:
        """Wake long polls: the registry or membership changed."""
        self._changed.set()
        self._changed = trio.Event()

    def add_read_routes(self, router: Router) -> None:
        """The read endpoints, also served on the node's HTTP port."""
        router.add("GET", "/lookup", self.lookup)
        router.add("GET", "/topics", self.topics)
        router.add("GET", "/channels", self.channels)
        router.add("GET", "/nodes", self.nodes)

    def add_routes(self, router: Router) -> None:
        """Every nsqlookupd endpoint, for the lookup port."""
        self.add_read_routes(router)
        router.add("GET", "/ping", self.ping)
        router.add("GET", "/info", self.info)
        router.add("GET", "/debug", self.debug)
        router.add("POST", "/topic/create", self.topic_create)
        router.add("POST", "/topic/delete", self.topic_delete)
        router.add("POST", "/channel/create", self.channel_create)
        router.add("POST", "/channel/delete", self.channel_delete)
        router.add("POST", "/topic/tombstone", self.topic_tombstone)

    # -- views ------------------------------------------------------------------

    def _producer(self, producer: Producer) -> dict[str, Any]:
        info = producer.info
        return {
            "remote_address": self._remote_address(producer),
            "hostname": info.hostname,
            "broadcast_address": info.broadcast_address,
            "tcp_port": info.tcp_port,
            "http_port": info.http_port,
            "version": info.version,
        }

    def _brokers(self) -> list[str]:
        """The live members with a broker: the candidates of replica placement."""
        registry = self.routing.registry
        out = []
        for owner in registry.owners():
            info = registry.info(owner)
            if info is not None and info.tcp_port and self.routing.alive(owner):
                out.append(owner)
        return out

    def _replication(self, topic: str, producer: Producer, brokers: list[str]) -> dict[str, Any]:
        """The replication fields of a producer of a replicated ``topic`` (added to nsqlookupd's).

        ``replicas`` comes from the factor the producer gossips with the
        topic and the placement it runs itself, over this node's view of the
        live brokers; ``replication_lag`` (records each replica has not
        acknowledged) only the owner knows, so it is present when this node
        is that producer, and the owner's ``/stats`` has it otherwise.
        """
        factor = self.routing.registry.factor(producer.node, topic)
        if factor <= 1:
            return {}  # an unreplicated topic keeps nsqlookupd's shape exactly
        # Imported by the first lookup of a replicated topic, not at start-up.
        from shoal.replication.placement import replicas

        fields: dict[str, Any] = {
            "replication_factor": factor,
            "replicas": list(replicas(producer.node, topic, brokers, factor)),
        }
        if producer.node == self.routing.registry.name:
            lag = self.routing.lag_of(topic)
            if lag is not None:
                fields["replication_lag"] = lag
        return fields

    def _lookup(self, topic: str) -> tuple[list[str], list[Producer]] | None:
        return self.routing.registry.lookup(topic, self.routing.alive, wall=self.routing.wall())

    @staticmethod
    def _version(result: tuple[list[str], list[Producer]] | None) -> str:
        if result is None:
            return "0"
        names = ",".join(sorted(f"{p.node}@{p.http_id}" for p in result[1]))
        return hashlib.blake2s(names.encode(), digest_size=8).hexdigest()

    # -- endpoints --------------------------------------------------------------

    def ping(self, request: Request) -> Response:
        """GET /ping: plain ``OK``."""
        return Response.text("OK")

    def info(self, request: Request) -> Response:
        """GET /info: the version."""
        return Response.json({"version": __version__})

    async def lookup(self, request: Request) -> Response:
        """GET /lookup?topic=T[&wait=S&version=V]: channels and live producers of T."""
        topic = request.arg("topic")
        if topic is None:
            return Response.error(400, "MISSING_ARG_TOPIC")
        wait_text = request.arg("wait")
        result = self._lookup(topic)
        if wait_text is not None:
            try:
                wait = float(wait_text)
            except ValueError:
                return Response.error(400, "INVALID_ARG_WAIT")
            if not math.isfinite(wait) or wait < 0:
                return Response.error(400, "INVALID_ARG_WAIT")
            seen = request.arg("version")
            with trio.move_on_after(min(wait, MAX_WAIT)):
                while seen is not None and self._version(result) == seen:
                    await self._changed.wait()
                    result = self._lookup(topic)
        if result is None:
            return Response.error(404, "TOPIC_NOT_FOUND")
        channels, producers = result
        brokers = self._brokers()
        return Response.json(
            {
                "channels": channels,
                # A member without a broker (shoal nsqlookupd) is no producer.
                "producers": [
                    self._producer(p) | self._replication(topic, p, brokers)
                    for p in producers
                    if p.info.tcp_port
                ],
                "version": self._version(result),
            }
        )

    def topics(self, request: Request) -> Response:
        """GET /topics: every topic key in the cluster."""
        return Response.json({"topics": self.routing.registry.topics(self.routing.alive)})

    def channels(self, request: Request) -> Response:
        """GET /channels?topic=T: every channel key of T ([] when unknown)."""
        topic = request.arg("topic")
        if topic is None:
            return Response.error(400, "MISSING_ARG_TOPIC")
        return Response.json(
            {"channels": self.routing.registry.channels(topic, self.routing.alive)}
        )

    def nodes(self, request: Request) -> Response:
        """GET /nodes: every live node with its topics and parallel tombstone flags."""
        producers = []
        for producer, topics, tombstones in self.routing.registry.nodes(
            self.routing.alive, wall=self.routing.wall()
        ):
            if not producer.info.tcp_port:
                continue  # a member without a broker (shoal nsqlookupd)
            entry = self._producer(producer)
            entry["tombstones"] = tombstones
            entry["topics"] = topics
            producers.append(entry)
        return Response.json({"producers": producers})

    def debug(self, request: Request) -> Response:
        """GET /debug: the registrations, keyed as nsqlookupd's ``category:key:subkey``."""
        out: dict[str, list[dict[str, Any]]] = {}
        registry = self.routing.registry
        alive = self.routing.alive
        now = self.routing.wall()
        for producer, topics, tombstones in registry.nodes(alive, wall=now):
            record = {"id": producer.node, **self._producer(producer)}
            out.setdefault("client::", []).append(record)
            for topic, tombstoned in zip(topics, tombstones, strict=True):
                out.setdefault(f"topic:{topic}:", []).append({**record, "tombstoned": tombstoned})
                for channel in registry.channels(topic, alive):
                    out.setdefault(f"channel:{topic}:{channel}", []).append(record)
        return Response.json(out)

    def _topic_arg(self, request: Request) -> str | Response:
        topic = request.arg("topic")
        if topic is None:
            return Response.error(400, "MISSING_ARG_TOPIC")
        if not is_valid_topic_name(topic):
            return Response.error(400, "INVALID_ARG_TOPIC")
        return topic

    def _channel_arg(self, request: Request) -> str | Response:
        channel = request.arg("channel")
        if channel is None:
            return Response.error(400, "MISSING_ARG_CHANNEL")
        if not is_valid_channel_name(channel):
            return Response.error(400, "INVALID_ARG_CHANNEL")
        return channel

    def topic_create(self, request: Request) -> Response:
        """POST /topic/create?topic=T: register T cluster-wide, with no producer."""
        topic = self._topic_arg(request)
        if isinstance(topic, Response):
            return topic
        self.routing.register(topic, None)
        return Response.text(b"")

    def topic_delete(self, request: Request) -> Response:
        """POST /topic/delete?topic=T: drop T's registrations everywhere (200 even if absent)."""
        topic = request.arg("topic")
        if topic is None:
            return Response.error(400, "MISSING_ARG_TOPIC")
        self.routing.order_delete(topic, None)
        return Response.text(b"")

    def channel_create(self, request: Request) -> Response:
        """POST /channel/create?topic=T&channel=C: register T and C cluster-wide."""
        topic = self._topic_arg(request)
        if isinstance(topic, Response):
            return topic
        channel = self._channel_arg(request)
        if isinstance(channel, Response):
            return channel
        self.routing.register(topic, channel)
        return Response.text(b"")

    def channel_delete(self, request: Request) -> Response:
        """POST /channel/delete?topic=T&channel=C: 404 CHANNEL_NOT_FOUND when unknown."""
        topic = self._topic_arg(request)
        if isinstance(topic, Response):
            return topic
        channel = self._channel_arg(request)
        if isinstance(channel, Response):
            return channel
        if channel not in self.routing.registry.channels(topic, self.routing.alive):
            return Response.error(404, "CHANNEL_NOT_FOUND")
        self.routing.order_delete(topic, channel)
        return Response.text(b"")

    def topic_tombstone(self, request: Request) -> Response:
        """POST /topic/tombstone?topic=T&node=H:P: hide that producer of T for a while."""
        topic = request.arg("topic")
        if topic is None:
            return Response.error(400, "MISSING_ARG_TOPIC")
        node = request.arg("node")
        if node is None:
            return Response.error(400, "MISSING_ARG_NODE")
        self.routing.tombstone(topic, node, self.tombstone_lifetime)
        return Response.text(b"")


def _plain(value: Any) -> Any:
    """A statistics snapshot as JSON-ready data (structs, mappings, enums)."""
    if isinstance(value, msgspec.Struct):
        return {name: _plain(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


class MembersAPI:
    """The cluster's own endpoints on a node's HTTP port: ``/members`` and ``/leave``.

    Args:
        driver: the membership view.
        routing: each member's topics.
        leave: start this node's graceful leave and exit (``Node.shutdown``).
    """

    def __init__(
        self, driver: MembershipDriver, routing: TopicRouting, *, leave: Callable[[], None]
    ) -> None:
        self.driver = driver
        self.routing = routing
        self._leave = leave

    def add_routes(self, router: Router) -> None:
        """Serve ``GET /members`` and ``POST /leave`` from ``router``."""
        router.add("GET", "/members", self.members)
        router.add("POST", "/leave", self.leave)

    def statistics(self) -> dict[str, Any]:
        """The driver's and engine's counters, and the registry's, as JSON-ready data."""
        out: dict[str, Any] = _plain(self.driver.statistics())
        out["registry_messages_applied"] = self.routing.messages_applied
        return out

    def members(self, request: Request) -> Response:
        """GET /members: the membership view, with each member's topics."""
        status = request.arg("status")
        topics_by_owner: dict[str, list[str]] = {}
        for producer, topics, _flags in self.routing.registry.nodes(
            lambda _owner: True, wall=self.routing.wall()
        ):
            topics_by_owner[producer.node] = topics
        members = []
        wall, now = self.routing.wall(), trio.current_time()
        for member in sorted(self.driver.members(), key=lambda m: m.name):
            if status and member.state.value != status:
                continue
            meta = member.meta
            members.append(
                {
                    "name": member.name,
                    "address": format_address(member.address),
                    "status": member.state.value,
                    "incarnation": member.incarnation,
                    "broadcast_address": meta.get("b", ""),
                    "tcp_port": _int(meta.get("t")),
                    "http_port": _int(meta.get("h")),
                    "lookup_http_port": _int(meta.get("l")),
                    "topics": topics_by_owner.get(member.name, []),
                    "tags": {
                        k.removeprefix(TAG_PREFIX): v
                        for k, v in sorted(meta.items())
                        if k.startswith(TAG_PREFIX)
                    },
                    # Wall time of the last status change, for the cluster page.
                    "since": round(wall - (now - member.state_changed_at), 3),
                }
            )
        return Response.json({"members": members, "statistics": self.statistics()})

    def leave(self, request: Request) -> Response:
        """POST /leave: leave the cluster gracefully, then exit."""
        log.info("leave requested over HTTP by %s", request.remote)
        self._leave()
        return Response.text("OK")
