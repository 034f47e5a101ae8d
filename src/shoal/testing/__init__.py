"""Public test doubles: an in-memory network with a fault hook, and a virtual-time cluster."""

from shoal.testing.network import (
    Cluster,
    Endpoint,
    MemoryNetwork,
    NetworkStatistics,
    RouteHook,
    Transmission,
)

__all__ = [
    "Cluster",
    "Endpoint",
    "MemoryNetwork",
    "NetworkStatistics",
    "RouteHook",
    "Transmission",
]
