"""What a client learns from a node's HTTP API: members, producers, ports.

A node answers for the whole cluster: ``/members`` lists every member the
gossip layer knows with its ports and status, and ``/lookup?topic=T`` lists
the live producers of ``T`` (nsqlookupd's shape plus an opaque ``version``
naming the producer set, which ``wait`` and ``version`` long-poll on). This
module turns those replies into small frozen values and checks their shape,
so a malformed reply is one `NodeUnavailable`, never a ``KeyError`` deep in
a producer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from shoal.client.errors import HTTPStatusError, NodeUnavailable
from shoal.client.httpclient import format_address, get_json, parse_address

__all__ = [
    "MEMBER_STATUSES",
    "NOT_FOUND_VERSION",
    "Endpoint",
    "LookupResult",
    "Member",
    "fetch_endpoint",
    "fetch_lookup",
    "fetch_members",
]

#: Member statuses as ``/members`` spells them, in the order tables list them.
MEMBER_STATUSES = ("alive", "suspect", "dead", "left")
#: The version a node reports for a topic nobody has registered: long-polling
#: on it waits until the topic appears.
NOT_FOUND_VERSION = "0"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """A node as a client dials it.

    Attributes:
        name: the node's name in the cluster (or its TCP address when only
            that is known); strategies hash and weigh by it.
        host: the address to dial (the node's ``broadcast_address``).
        tcp_port: the NSQ TCP port.
        http_port: the HTTP API port.
        tcp_address: ``host:tcp_port``, derived.
    """

    name: str
    host: str
    tcp_port: int
    http_port: int
    # Made once: every publish looks its connection up by it.
    tcp_address: str = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tcp_address", format_address(self.host, self.tcp_port))

    @property
    def http_address(self) -> str:
        """``host:http_port``."""
        return format_address(self.host, self.http_port)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """One entry of ``/members``.

    Attributes:
        name: the member's node name.
        address: its gossip address, ``ip:port``.
        status: ``alive``, ``suspect``, ``dead`` or ``left``.
        incarnation: SWIM incarnation number.
        broadcast_address: the address clients dial.
        tcp_port: NSQ TCP port.
        http_port: nsqd HTTP API port.
        lookup_http_port: nsqlookupd-compatible HTTP port.
        topics: the topics the member holds.
        tags: its ``--tag`` values (empty from nodes that predate tags).
    """

    name: str
    address: str
    status: str
    incarnation: int
    broadcast_address: str
    tcp_port: int
    http_port: int
    lookup_http_port: int
    topics: tuple[str, ...]
    tags: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def endpoint(self) -> Endpoint:
        """Where a client dials this member."""
        return Endpoint(
            name=self.name,
            host=self.broadcast_address,
            tcp_port=self.tcp_port,
            http_port=self.http_port,
        )

    def as_json(self) -> dict[str, Any]:
        """The member in ``/members``' shape."""
        data = dataclasses.asdict(self)
        data["topics"] = list(self.topics)
        return data


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LookupResult:
    """A ``/lookup`` reply.

    Attributes:
        channels: every channel of the topic in the cluster.
        producers: the live nodes holding the topic.
        version: names the producer set; None from a server without
            long-poll support (plain nsqlookupd).
        raw_producers: the producer objects as the node sent them.
    """

    channels: tuple[str, ...]
    producers: tuple[Endpoint, ...]
    version: str | None
    raw_producers: tuple[dict[str, Any], ...] = ()


def _field(data: dict[str, Any], key: str, kind: type, address: str, what: str) -> Any:
    value = data.get(key)
    # bool is an int subclass; a port or an incarnation is never a bool.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise NodeUnavailable(address, f"malformed {what}: {key!r} is {value!r}")
    return value


def _member(item: Any, address: str) -> Member:
    if not isinstance(item, dict):
        raise NodeUnavailable(address, "malformed /members entry")
    topics = item.get("topics") or []
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        raise NodeUnavailable(address, "malformed /members entry: topics")
    return Member(
        name=_field(item, "name", str, address, "/members entry"),
        address=_field(item, "address", str, address, "/members entry"),
        status=_field(item, "status", str, address, "/members entry"),
        incarnation=_field(item, "incarnation", int, address, "/members entry"),
        broadcast_address=_field(item, "broadcast_address", str, address, "/members entry"),
        tcp_port=_field(item, "tcp_port", int, address, "/members entry"),
        http_port=_field(item, "http_port", int, address, "/members entry"),
        lookup_http_port=item.get("lookup_http_port") or 0,
        topics=tuple(topics),
        tags=_tags(item.get("tags"), address),
    )


def _tags(value: Any, address: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise NodeUnavailable(address, "malformed /members entry: tags")
    return dict(value)


async def fetch_members(address: str) -> list[Member]:
    """GET ``/members`` from the node at ``address`` (its HTTP port).

    Raises:
        NodeUnavailable: unreachable, or the reply is not ``/members``' shape.
        HTTPStatusError: the node refused (for example a node without
            membership answers 404).
    """
    data = await get_json(address, "/members")
    if not isinstance(data, dict) or not isinstance(data.get("members"), list):
        raise NodeUnavailable(address, "malformed /members reply")
    return [_member(item, address) for item in data["members"]]


def _producer(item: Any, address: str) -> Endpoint:
    if not isinstance(item, dict):
        raise NodeUnavailable(address, "malformed /lookup producer")
    host = _field(item, "broadcast_address", str, address, "/lookup producer")
    tcp_port = _field(item, "tcp_port", int, address, "/lookup producer")
    return Endpoint(
        name=format_address(host, tcp_port),
        host=host,
        tcp_port=tcp_port,
        http_port=_field(item, "http_port", int, address, "/lookup producer"),
    )


async def fetch_lookup(
    address: str, topic: str, *, wait: float | None = None, version: str | None = None
) -> LookupResult | None:
    """GET ``/lookup?topic=`` from ``address``, long-polling when asked.

    Args:
        address: a node's HTTP (or lookup HTTP) address.
        topic: the topic to look up.
        wait: seconds the node may hold the request until the producer set
            differs from ``version``; None asks for an immediate answer.
        version: the version of the producer set the caller already knows.

    Returns:
        The channels and producers, or None when no node holds the topic
        (404 ``TOPIC_NOT_FOUND``).

    Raises:
        NodeUnavailable: unreachable, or the reply is not ``/lookup``'s shape.
        HTTPStatusError: any other refusal.
    """
    params: dict[str, str | int | float] = {"topic": topic}
    if wait is not None:
        params["wait"] = f"{wait:g}"
        if version is not None:
            params["version"] = version
    try:
        data = await get_json(address, "/lookup", params)
    except HTTPStatusError as exc:
        if exc.status == 404 and exc.message == "TOPIC_NOT_FOUND":
            return None
        raise
    if not isinstance(data, dict):
        raise NodeUnavailable(address, "malformed /lookup reply")
    producers = data.get("producers") or []
    channels = data.get("channels") or []
    if not isinstance(producers, list) or not isinstance(channels, list):
        raise NodeUnavailable(address, "malformed /lookup reply")
    version_value = data.get("version")
    return LookupResult(
        channels=tuple(str(c) for c in channels),
        producers=tuple(_producer(p, address) for p in producers),
        version=str(version_value) if version_value is not None else None,
        raw_producers=tuple(p for p in producers if isinstance(p, dict)),
    )


async def fetch_endpoint(address: str) -> Endpoint:
    """Where to dial the node whose HTTP API is at ``address`` (from ``/info``).

    The host is the one in ``address`` (the caller reached it that way); the
    TCP port comes from ``/info``.

    Raises:
        NodeUnavailable: unreachable, or ``/info`` lacks ``tcp_port``.
        HTTPStatusError: the node refused.
    """
    host, http_port = parse_address(address)
    data = await get_json(address, "/info")
    if not isinstance(data, dict):
        raise NodeUnavailable(address, "malformed /info reply")
    tcp_port = _field(data, "tcp_port", int, address, "/info reply")
    return Endpoint(
        name=format_address(host, tcp_port), host=host, tcp_port=tcp_port, http_port=http_port
    )
