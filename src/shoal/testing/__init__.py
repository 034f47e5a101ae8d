"""Public test doubles: in-memory networks with fault hooks, and a virtual-time cluster.

`MemoryNetwork` and `Cluster` drive membership engines directly; `MemoryNet`
and `MemoryTransport` stand in for the gossip port under a real driver;
`eventually` and `wait_for` wait for conditions without fixed sleeps. Modules
with heavier dependencies are imported by path: `shoal.testing.fake_node`
(a scripted node HTTP API for client code), `shoal.testing.process` (real
node processes), `shoal.testing.wire` (a synchronous NSQ client),
`shoal.testing.http` (an in-memory HTTP client and request builder),
`shoal.testing.netns` (network namespaces) and `shoal.testing.strategies`
(Hypothesis strategies).
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
from shoal.testing.waiting import eventually, wait_for

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
    "wait_for",
]
