"""Topic placement from gossip: the trio shell around the registry's gossip core.

`TopicRouting` keeps this node's entry in the gossiped registry in step
with its broker, and runs the registry's anti-entropy loop over the gossip
port. What a broadcast or an exchange carries, and whom to exchange with
and when (periodic, joiners, gaps), is decided by
`shoal.registry.gossip.RegistryGossip`, the policy the simulator drives too;
this module only feeds it broker events and membership events, times the
loop, and moves the exchange's messages over a stream. It also answers the
questions the lookup API asks, with liveness taken from membership:
producers on alive or suspect members only.

Broker listeners and the membership event listener are sync and never
block: they only write the registry, queue broadcasts and wake the loop.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import trio

from shoal import __version__
from shoal.cluster.membership_driver import MembershipDriver
from shoal.cluster.transport import StreamError
from shoal.config import TAG_PREFIX, parse_address
from shoal.errors import RemoteProtocolError
from shoal.membership.keyring import Keyring
from shoal.membership.state import MemberState
from shoal.queue.broker import (
    ChannelCreated,
    ChannelDeleted,
    TopicCreated,
    TopicDeleted,
)
from shoal.queue.names import is_ephemeral
from shoal.registry import REGISTRY_TAG, NodeInfo, Registry, RegistryGossip

if TYPE_CHECKING:
    from collections.abc import Callable

    from shoal.config import NodeConfig
    from shoal.membership.events import Event
    from shoal.membership.messages import Address
    from shoal.queue.broker import Broker, BrokerEvent
    from shoal.registry.store import Entry

__all__ = ["MessageStream", "TopicRouting", "node_gossip"]

log = logging.getLogger("shoal.routing")

_LIVE = (MemberState.ALIVE, MemberState.SUSPECT)


class MessageStream(Protocol):
    """A message-framed, possibly encrypted stream (the gossip port's streams)."""

    async def send_message(self, data: bytes) -> None:
        """Send one message."""
        ...

    async def receive_message(self) -> bytes:
        """Receive one whole message."""
        ...


class TopicRouting:
    """This node's view of who holds which topics, and the loop that keeps it whole.

    Args:
        gossip: the registry and its gossip policy (the engine's delegate).
        broker: this node's topics and channels; its events feed the registry.
        wall: wall-clock seconds (registry stamps, tombstone expiry).
        monotonic: local monotonic seconds (tombstone collection).
    """

    def __init__(
        self,
        gossip: RegistryGossip,
        broker: Broker,
        *,
        wall: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self.gossip = gossip
        self.broker = broker
        self._wall = wall
        self._monotonic = monotonic
        self._wake = trio.Event()
        #: The replication factor of a topic of this node's broker, gossiped
        #: with the topic; set by the replication service (1 until then).
        self.factor_of: Callable[[str], int] = _unreplicated
        #: Records each replica of one of this node's topics has not
        #: acknowledged (None when the topic is not replicated here); set
        #: by the replication service, read by ``/lookup``.
        self.lag_of: Callable[[str], dict[str, int] | None] = _no_lag
        gossip.wake = self._wake.set
        gossip.announce()
        for topic in broker.topics.values():
            self._publish_topic(topic.name)
        broker.add_listener(self.on_broker_event)

    @property
    def registry(self) -> Registry:
        """The gossiped state, with this node's own entry."""
        return self.gossip.registry

    @property
    def messages_applied(self) -> int:
        """Registry broadcasts merged."""
        return self.gossip.messages_applied

    @property
    def messages_dropped(self) -> int:
        """Registry states refused as another generation of their owner."""
        return self.gossip.messages_dropped

    def wall(self) -> float:
        """Wall-clock seconds, as the registry's stamps use them."""
        return self._wall()

    # -- liveness ---------------------------------------------------------------

    def alive(self, owner: str) -> bool:
        """Producers of ``owner`` are listed (always true of this node)."""
        return self.gossip.alive(owner)

    # -- broker to registry -----------------------------------------------------

    def on_broker_event(self, event: BrokerEvent) -> None:
        """Mirror topic and channel changes into this node's registry entry."""
        if isinstance(event, TopicCreated | ChannelCreated | ChannelDeleted):
            self._publish_topic(event.topic)
        elif isinstance(event, TopicDeleted):
            entry = self.registry.remove_topic(event.topic, self._monotonic())
            if entry is not None:
                self._send(entry)

    def _publish_topic(self, name: str) -> None:
        topic = self.broker.get_topic(name)
        if topic is None or topic.deleted:
            return
        entry = self.registry.set_topic(
            name,
            topic.channels.keys(),
            wall=self._wall(),
            now=self._monotonic(),
            factor=self.factor_of(name),
        )
        self._send(entry)

    def republish_replicated(self) -> None:
        """Announce the replicated topics again, now that `factor_of` knows their factor."""
        for name in list(self.broker.topics):
            if self.factor_of(name) > 1:
                self._publish_topic(name)

    def known_channels(self, topic: str) -> list[str]:
        """Non-ephemeral channels the cluster knows for ``topic`` (pre-created locally)."""
        return [c for c in self.registry.channels(topic, self.alive) if not is_ephemeral(c)]

    # -- lookup-API writes, gossiped cluster-wide --------------------------------

    def register(self, topic: str, channel: str | None) -> None:
        """``/topic/create`` or ``/channel/create`` through the lookup API."""
        self._send(self.registry.register(topic, channel, wall=self._wall(), now=self._monotonic()))

    def order_delete(self, topic: str, channel: str | None) -> None:
        """``/topic/delete`` or ``/channel/delete`` through the lookup API."""
        self._send(
            self.registry.order_delete(topic, channel, wall=self._wall(), now=self._monotonic())
        )

    def tombstone(self, topic: str, http_id: str, lifetime: float) -> None:
        """``/topic/tombstone``: hide producer ``http_id`` of ``topic`` for ``lifetime`` s."""
        until = self._wall() + lifetime
        self._send(self.registry.tombstone(topic, http_id, until=until, now=self._monotonic()))

    def _send(self, entry: Entry) -> None:
        self.gossip.send(entry)

    @classmethod
    def start(
        cls,
        nursery: trio.Nursery,
        driver: MembershipDriver,
        gossip: RegistryGossip,
        broker: Broker,
        *,
        wall: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> TopicRouting:
        """Connect ``gossip`` (already the engine's delegate) to a serving ``driver``.

        The gossip core broadcasts through the driver and takes liveness
        from it; the driver's member events feed it; the driver answers
        `REGISTRY_TAG` streams with `answer_exchange`; and the anti-entropy
        loop (`run`) starts in ``nursery``. This is how a node wires its
        registry, and how tests wire it over an in-memory transport.
        """

        def identity(owner: str) -> int | None:
            member = driver.member(owner)
            text = member.meta.get("g") if member is not None else None
            return int(text) if text is not None and text.isdigit() else None

        gossip.attach(broadcast=driver.broadcast_app, member=driver.member, identity=identity)
        routing = cls(gossip, broker, wall=wall, monotonic=monotonic)
        driver.add_stream_handler(REGISTRY_TAG, routing.answer_exchange)
        driver.add_listener(routing.on_member_event)
        nursery.start_soon(partial(routing.run, driver, stream_timeout=driver.stream_timeout))
        return routing

    # -- membership to registry -------------------------------------------------

    def on_member_event(self, event: Event) -> None:
        """Let the gossip policy queue exchanges with joiners (a driver listener)."""
        self.gossip.on_member_events([event])

    # -- anti-entropy -----------------------------------------------------------

    async def sync_exchange(self, stream: MessageStream) -> None:
        """Initiate a digest exchange over ``stream``.

        Raises:
            RemoteProtocolError: the peer sent malformed data; what arrived
                before it was applied.
        """
        gossip = self.gossip
        await stream.send_message(gossip.open_exchange())
        gossip.apply_exchange(await stream.receive_message(), self._monotonic())
        await stream.send_message(gossip.delta_for(await stream.receive_message()))

    async def answer_exchange(self, stream: MessageStream, peer: Any = None) -> None:
        """Answer a digest exchange another node started (the `REGISTRY_TAG` handler).

        Raises:
            RemoteProtocolError: the peer sent malformed data.
        """
        del peer
        delta, digest = self.gossip.answer_exchange(await stream.receive_message())
        await stream.send_message(delta)
        await stream.send_message(digest)
        self.gossip.apply_exchange(await stream.receive_message(), self._monotonic())

    async def run(
        self,
        driver: MembershipDriver,
        *,
        stream_timeout: float,
        rng: random.Random | None = None,
    ) -> None:
        """The anti-entropy loop: exchanges when the gossip policy asks, and now and then.

        Exchanges run one after another, each bounded by ``stream_timeout``
        (the membership setting); a failed one is logged at debug level and the
        loop goes on. Runs until cancelled.
        """
        rng = rng or random.Random()

        def pick_peer(rng: random.Random) -> Address | None:
            peers = [
                m.address for m in driver.members() if m.state in _LIVE and m.name != driver.name
            ]
            return rng.choice(peers) if peers else None

        gossip = self.gossip
        while True:
            with trio.move_on_after(gossip.next_interval(rng)):
                await self._wake.wait()
            self._wake = trio.Event()
            gossip.wake = self._wake.set
            for address in gossip.take_targets(rng, pick_peer):
                await self._sync_with(driver, address, stream_timeout)
            gossip.collect(self._monotonic())

    async def _sync_with(
        self, driver: MembershipDriver, address: Address, stream_timeout: float
    ) -> None:
        try:
            with trio.move_on_after(stream_timeout):
                async with driver.open_stream(address, REGISTRY_TAG) as stream:
                    await self.sync_exchange(stream)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                trio.EndOfChannel, StreamError, RemoteProtocolError) as exc:  # fmt: skip
            log.debug("registry sync with %s failed: %r", address, exc)


def _unreplicated(topic: str) -> int:
    del topic
    return 1


def _no_lag(topic: str) -> dict[str, int] | None:
    del topic
    return None


def _numeric(address: str | None) -> str | None:
    """Resolve the host of ``host:port`` to an IP (peers dial what we advertise)."""
    if address is None:
        return None
    host, port = parse_address(address)
    try:
        host = socket.gethostbyname(host)
    except OSError:
        return address
    return f"{host}:{port}"


def node_gossip(
    config: NodeConfig, *, name: str, tcp_port: int, http_port: int, lookup_port: int
) -> tuple[MembershipDriver, RegistryGossip]:
    """A node's membership driver, with its registry's gossip as the engine's delegate.

    The registry exists before the driver, so the engine talks to it
    directly; `TopicRouting.start` connects the rest once the driver serves.
    The member's metadata announces the node's ports: ``b`` (broadcast
    address), ``t`` (TCP), ``h`` (HTTP) and ``l`` (lookup HTTP), ``g``, the
    registry generation of this life, and the member tags under `TAG_PREFIX`.
    """
    gossip_host, gossip_port = parse_address(config.gossip_address)
    advertise = None
    if gossip_host in ("0.0.0.0", "::", ""):
        advertise = f"{config.broadcast_address}:{gossip_port}" if gossip_port else None
    info = NodeInfo(
        broadcast_address=config.broadcast_address,
        hostname=socket.gethostname(),
        tcp_port=tcp_port,
        http_port=http_port,
        version=__version__,
    )
    # The registry generation rides in the member's metadata (``g``): it ties
    # this life of the name to its address, so no other node's registry state
    # is ever taken for ours (`RegistryGossip.attach`).
    generation = time.time_ns()
    registry = Registry(name, generation=generation, info=info, now=time.monotonic())
    gossip = RegistryGossip(registry, clock=time.monotonic)
    driver = MembershipDriver(
        config.membership,
        name=name,
        bind=config.gossip_address,
        advertise=_numeric(advertise),
        meta={
            "b": config.broadcast_address,
            "t": str(tcp_port),
            "h": str(http_port),
            "l": str(lookup_port),
            "g": str(generation),
            **{TAG_PREFIX + key: value for key, value in config.tags},
        },
        keyring=Keyring(config.gossip_keys) if config.gossip_keys else None,
        delegate=gossip,
    )
    return driver, gossip
