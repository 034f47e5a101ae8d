"""A trio-native producer and a lookup-aware consumer.

Publish over the whole cluster, failing over when a node dies::

    async with open_producer("127.0.0.1:4151", strategy="round-robin") as producer:
        await producer.publish("events", b"hello")

Consume from every node that holds a topic, with a handler::

    consumer = Consumer("events", "archive", handle, nodes="127.0.0.1:4151")
    await consumer.run()

or as an async iterator::

    async with open_consumer("events", "archive", nodes="127.0.0.1:4151") as messages:
        async for msg in messages:
            print(msg.body)

Addresses are nodes' HTTP ports (``host:port``); producers and consumers
learn TCP ports and the other nodes from them.
"""

from shoal.client.connection import (
    Connection,
    ConnectionConfig,
    ConnectionStatistics,
    Message,
    open_connection,
)
from shoal.client.consumer import (
    Consumer,
    ConsumerConfig,
    ConsumerStatistics,
    Handler,
    open_consumer,
)
from shoal.client.discovery import (
    Endpoint,
    LookupResult,
    Member,
    fetch_endpoint,
    fetch_lookup,
    fetch_members,
)
from shoal.client.errors import (
    ConnectionClosed,
    HTTPStatusError,
    NodeUnavailable,
    NoNodesAvailable,
    NSQError,
)
from shoal.client.producer import Producer, ProducerConfig, ProducerStatistics, open_producer
from shoal.client.strategies import (
    STRATEGY_NAMES,
    ConsistentHash,
    RandomOrder,
    RoundRobin,
    Strategy,
    Weighted,
    make_strategy,
)

__all__ = [
    "STRATEGY_NAMES",
    "Connection",
    "ConnectionClosed",
    "ConnectionConfig",
    "ConnectionStatistics",
    "ConsistentHash",
    "Consumer",
    "ConsumerConfig",
    "ConsumerStatistics",
    "Endpoint",
    "HTTPStatusError",
    "Handler",
    "LookupResult",
    "Member",
    "Message",
    "NSQError",
    "NoNodesAvailable",
    "NodeUnavailable",
    "Producer",
    "ProducerConfig",
    "ProducerStatistics",
    "RandomOrder",
    "RoundRobin",
    "Strategy",
    "Weighted",
    "fetch_endpoint",
    "fetch_lookup",
    "fetch_members",
    "make_strategy",
    "open_connection",
    "open_consumer",
    "open_producer",
]
