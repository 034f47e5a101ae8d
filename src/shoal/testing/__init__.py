"""Public test doubles: in-memory networks with fault hooks, and a virtual-time cluster.

`MemoryNetwork` and `Cluster` drive membership engines directly; `MemoryNet`
and `MemoryTransport` stand in for the gossip port under a real driver.
"""

from shoal.testing.network import (
    Cluster,
    Endpoint,
    MemoryNetwork,
    NetworkStatistics,
    RouteHook,
    Transmission,
)
from shoal.testing.transport import MemoryNet, MemoryTransport
from shoal.testing.waiting import eventually

__all__ = [
    "Cluster",
    "Endpoint",
    "MemoryNet",
    "MemoryNetwork",
    "MemoryTransport",
    "NetworkStatistics",
    "RouteHook",
    "Transmission",
    "eventually",
]
