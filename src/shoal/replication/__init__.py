"""Replicated topics as pure cores: placement, the owner's quorum, the replica's store.

`placement` says which members hold copies of a topic and who adopts it
when its owner dies; `quorum` tracks the replicas' acknowledgements so the
owner answers a publish only once enough copies exist; `records` are what
the owner tells its replicas and `codec` their wire format; `owner` numbers,
mirrors and sends them, pipelined, with snapshots for replicas that fell
behind; `replica` is what a replica holds of a topic: every message still
owed to some channel. None does I/O or reads a clock. `docs/replication.md`
is the contract they implement.
"""

from shoal.replication.owner import OwnerTopic
from shoal.replication.placement import adopter, rank, replicas, weight
from shoal.replication.quorum import Quorum, QuorumStatistics
from shoal.replication.records import Snapshot
from shoal.replication.replica import OwedMessage, ReplicaTopic, receive

__all__ = [
    "OwedMessage",
    "OwnerTopic",
    "Quorum",
    "QuorumStatistics",
    "ReplicaTopic",
    "Snapshot",
    "adopter",
    "rank",
    "receive",
    "replicas",
    "weight",
]
