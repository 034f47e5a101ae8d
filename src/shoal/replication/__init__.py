"""Replicated topics as pure cores: placement, and the owner's quorum.

`placement` says which members hold copies of a topic and who adopts it
when its owner dies; `quorum` tracks the replicas' acknowledgements so the
owner answers a publish only once enough copies exist. Neither does I/O or
reads a clock.
"""

from shoal.replication.placement import adopter, rank, replicas, weight
from shoal.replication.quorum import Quorum, QuorumStatistics

__all__ = ["Quorum", "QuorumStatistics", "adopter", "rank", "replicas", "weight"]
