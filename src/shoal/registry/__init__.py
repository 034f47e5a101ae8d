"""The gossiped topic registry as a pure core: records, merge, and how they travel.

`store` holds every owner's record and merges them (nsqlookupd's
registration database, replaced); `gossip` is the one policy that spreads
them: broadcasts, the digest exchange, and whom to sync with and when. Like
`shoal.membership` and `shoal.queue`, nothing here opens a socket or reads a
clock.
"""

from shoal.registry.gossip import (
    MAX_BROADCAST_KEY,
    REGISTRY_TAG,
    SYNC_INTERVAL,
    RegistryGossip,
    broadcast_of,
)
from shoal.registry.store import (
    ADOPTION_TTL,
    Adoption,
    Entry,
    NodeInfo,
    OwnerDelta,
    Producer,
    Registry,
    StateImage,
    decode_delta,
    decode_digest,
    encode_delta,
    encode_digest,
)

__all__ = [
    "ADOPTION_TTL",
    "MAX_BROADCAST_KEY",
    "REGISTRY_TAG",
    "SYNC_INTERVAL",
    "Adoption",
    "Entry",
    "NodeInfo",
    "OwnerDelta",
    "Producer",
    "Registry",
    "RegistryGossip",
    "StateImage",
    "broadcast_of",
    "decode_delta",
    "decode_digest",
    "encode_delta",
    "encode_digest",
]
