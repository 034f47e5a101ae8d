"""`NodeConfig`: everything one ``shoal node`` process is started with.

It composes the package configs (`QueueConfig` for the data plane) with the
node's own settings: where it listens, what it advertises and where it keeps
its data. Every field maps 1:1 to a ``shoal node`` flag.
"""

from __future__ import annotations

import dataclasses
import socket

from shoal.cluster.tls import TLSConfig
from shoal.errors import ConfigError
from shoal.fields import setting
from shoal.membership.config import MembershipConfig
from shoal.queue.config import QueueConfig
from shoal.queue.diskqueue import DiskQueueConfig

__all__ = [
    "FACTORS_FILE",
    "MAX_REPLICATION_FACTOR",
    "REPLICAS_DIRECTORY",
    "REPLICATION_TAG",
    "TAG_PREFIX",
    "NodeConfig",
    "parse_address",
]

#: Membership metadata keys starting with this are member tags; the node's
#: own keys (``b``, ``t``, ``h``, ``l``: addresses and ports) never do.
TAG_PREFIX = "#"

#: Most copies a topic may ask for: the placement ranks every member for
#: each topic, and more copies than this buys nothing but write traffic.
MAX_REPLICATION_FACTOR = 9

#: Stream tag of the replication stream on the gossip port. Here, not in
#: `shoal.cluster.replication`, so that a node routes the tag without
#: importing the service it loads only on a replicated topic's first need.
REPLICATION_TAG = 0x72
#: Under the data path: the topics' own replication factors, and the
#: directory of the copies this node holds as a replica. A node that finds
#: either (or a factor above 1) starts replication with itself.
FACTORS_FILE = "replication.json"
REPLICAS_DIRECTORY = "replicas"


def parse_address(text: str, *, what: str = "address") -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too); an empty host means every interface.

    Raises:
        ConfigError: the text is not ``host:port`` with a port in 0..65535.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ConfigError(f"{what} {text!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{what} {text!r} has no numeric port") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what} {text!r} has a port outside 0..65535")
    return (host or "0.0.0.0", port)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """Configuration of one node.

    Attributes:
        tcp_address: NSQ TCP protocol listener, ``host:port``; port 0 picks one.
        http_address: nsqd HTTP API listener (also serves the lookup read
            endpoints and ``/members``).
        gossip_address: membership gossip, UDP and TCP on the same port.
        lookup_http_address: the nsqlookupd HTTP API listener.
        seeds: gossip addresses (``host:port``) of members to join through; a
            name resolving to several addresses counts as several. Seeds
            that are not current members are retried for ever.
        node_name: this node's member name; defaults to the name stored in
            the data path, or on first start ``<broadcast address>:<tcp
            port>``, which is then stored: a restarted node is the same member.
        gossip_keys: AES keys (16, 24 or 32 bytes); the first encrypts, all
            decrypt. Empty means plaintext gossip.
        tags: Serf-style member tags (``--tag role=web``), gossiped with the
            membership metadata under keys starting with `TAG_PREFIX`, shown
            and filterable in ``shoal members``.
        tombstone_lifetime: how long ``/topic/tombstone`` hides a producer.
        membership: the SWIM timings (the ``lan`` preset by default).
        broadcast_address: the host name other nodes and clients should dial;
            defaults to this machine's host name, as nsqd's does.
        data_path: where queues and metadata live (created if missing); None
            keeps everything in memory, overflow included, and nothing
            survives a restart.
        ready_file: once every listener is bound, their addresses are written
            here as JSON, for harnesses started with port 0.
        queue: the data plane's limits and defaults.
        https_address: the nsqd HTTP API over TLS (needs ``tls.cert``);
            None serves no HTTPS.
        tls: certificate, client certificate policy and TLS requirements,
            for the IDENTIFY ``tls_v1`` upgrade and the HTTPS listener.
        auth_http_addresses: nsqd auth servers (``host:port`` or an
            ``http://`` URL); any makes AUTH required before PUB and SUB.
        replication_factor: copies of each message of a topic, the owner's
            included (``docs/replication.md``); 1 is NSQ's behaviour.
        min_replicas: replica acknowledgements a publish needs; None means
            every replica (factor - 1).
        replication_timeout: seconds a publish waits for them before it fails.
        broker: serve NSQ clients (TCP and the nsqd HTTP API). False runs a
            member that only gossips and answers the nsqlookupd HTTP API
            (``shoal nsqlookupd``); it is never listed as a producer.
        disk: segment size and fsync policy of the disk queues. With
            ``sync_every`` 1 the node runs durable: every message of a
            non-ephemeral queue is on disk, fsynced, before its ``OK``
            (memory queues are bypassed), so a SIGKILL loses no
            acknowledged message that was not in flight.
        statsd_address: ``host:port`` of a statsd server to push the
            ``/metrics`` figures to (UDP); None pushes nothing.
        statsd_prefix: prefix of every statsd name; ``%s`` becomes
            ``<broadcast address>_<http port>`` (nsqd's default).
        statsd_interval: seconds between two pushes.
        statsd_udp_packet_size: largest statsd datagram, bytes.
    """

    tcp_address: str = setting(
        "0.0.0.0:4150", help="<addr>:<port> to listen on for TCP clients (port 0 picks one)."
    )
    http_address: str = setting("0.0.0.0:4151", help="<addr>:<port> to listen on for HTTP clients.")
    gossip_address: str = setting(
        "0.0.0.0:4160", help="<addr>:<port> for membership gossip, UDP and TCP."
    )
    lookup_http_address: str = setting(
        "0.0.0.0:4161", help="<addr>:<port> for the nsqlookupd HTTP API."
    )
    seeds: tuple[str, ...] = setting(
        (),
        help="Gossip address of a member to join through (repeatable).",
        flag="seed",
        metavar="HOST:PORT",
    )
    node_name: str | None = setting(
        None, help="Member name [default: <broadcast-address>:<tcp port>]."
    )
    gossip_keys: tuple[bytes, ...] = setting(
        (),
        help="AES key for gossip (repeatable: the first encrypts, all decrypt).",
        flag="gossip-key",
        metavar="BASE64",
    )
    tags: tuple[tuple[str, str], ...] = setting(
        (),
        help="Member tag, gossiped and shown by `shoal members` (repeatable, like serf -tag).",
        flag="tag",
        metavar="KEY=VALUE",
    )
    tombstone_lifetime: float = setting(45.0, help="How long /topic/tombstone hides a producer.")
    membership: MembershipConfig = dataclasses.field(default_factory=MembershipConfig.lan)
    broadcast_address: str = setting(
        default_factory=socket.gethostname,
        help="Address advertised to clients and peers [default: host name].",
        optional=True,
    )
    data_path: str | None = setting(
        "shoal-data", help="Directory for disk queues and metadata (created if missing)."
    )
    ready_file: str | None = setting(
        None, help="Write the bound addresses here as JSON once listening.", file=True
    )
    queue: QueueConfig = dataclasses.field(default_factory=QueueConfig)
    disk: DiskQueueConfig = dataclasses.field(default_factory=DiskQueueConfig)
    statsd_address: str | None = setting(
        None,
        help="UDP address of a statsd server to push the /metrics figures to.",
        metavar="HOST:PORT",
    )
    statsd_prefix: str = setting(
        "nsq.%s", help="Prefix of statsd names; %s is <broadcast-address>_<http port>."
    )
    statsd_interval: float = setting(60.0, help="Time between two statsd pushes.")
    statsd_udp_packet_size: int = setting(508, help="Largest statsd datagram in bytes.", minimum=64)
    https_address: str | None = setting(
        None, help="<addr>:<port> to serve the HTTP API over TLS (needs --tls-cert)."
    )
    tls: TLSConfig = dataclasses.field(default_factory=TLSConfig)
    auth_http_addresses: tuple[str, ...] = setting(
        (),
        help="nsqd auth server to ask about AUTH secrets (repeatable; makes AUTH required).",
        flag="auth-http-address",
        metavar="HOST:PORT",
    )
    broker: bool = setting(
        True, help="Serve NSQ clients; --no-broker only gossips and answers the lookup API."
    )
    replication_factor: int = setting(
        1,
        help="Copies of each message of a topic, the owner's included; 1 = no replication.",
        minimum=1,
        maximum=MAX_REPLICATION_FACTOR,
    )
    min_replicas: int | None = setting(
        None,
        help="Replica acknowledgements a publish needs [default: replication factor - 1].",
        minimum=0,
    )
    replication_timeout: float = setting(
        5.0, help="How long a publish waits for its replicas before it fails."
    )

    @property
    def required_replicas(self) -> int:
        """Replica acknowledgements a publish of a topic at ``replication_factor`` needs."""
        return self.replicas_required(self.replication_factor)

    def replicas_required(self, factor: int) -> int:
        """Replica acknowledgements a publish needs at ``factor`` copies."""
        wanted = max(factor - 1, 0)
        return wanted if self.min_replicas is None else min(self.min_replicas, wanted)

    @property
    def durable(self) -> bool:
        """Every acknowledged message is fsynced to disk before the ``OK``."""
        return self.data_path is not None and self.disk.sync_every == 1

    def __post_init__(self) -> None:
        parse_address(self.tcp_address, what="tcp-address")
        parse_address(self.http_address, what="http-address")
        parse_address(self.gossip_address, what="gossip-address")
        parse_address(self.lookup_http_address, what="lookup-http-address")
        if self.https_address is not None:
            parse_address(self.https_address, what="https-address")
            if not self.tls.enabled:
                raise ConfigError("https-address needs tls-cert and tls-key")
        for seed in self.seeds:
            parse_address(seed, what="seed")
        for key, _value in self.tags:
            if not key or "=" in key:
                raise ConfigError(f"tag {key!r} needs a non-empty name without '='")
        if self.tombstone_lifetime <= 0:
            raise ConfigError("tombstone-lifetime must be positive")
        if not 1 <= self.replication_factor <= MAX_REPLICATION_FACTOR:
            raise ConfigError(f"replication-factor must be in 1..{MAX_REPLICATION_FACTOR}")
        if self.min_replicas is not None and self.min_replicas < 0:
            raise ConfigError("min-replicas must not be negative")
        if self.replication_timeout <= 0:
            raise ConfigError("replication-timeout must be positive")
        if not self.broadcast_address:
            raise ConfigError("broadcast-address must not be empty")
        if self.statsd_address is not None:
            parse_address(self.statsd_address, what="statsd-address")
        if self.statsd_interval <= 0:
            raise ConfigError("statsd-interval must be positive")
