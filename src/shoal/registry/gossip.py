"""How the topic registry travels: broadcasts, the digest exchange, whom to sync with and when.

This is the registry's gossip policy, written once. The trio shell
(`shoal.cluster.routing`) and the simulator (`shoal.simulations.topics`)
both drive it, so simulated propagation and heal figures speak for the code
a real node runs. Like the other cores it does no I/O and reads no clock:
the delegate hooks, which the membership engine calls without a time, read
the injected ``clock``; everything else takes ``now``.

Rules:

1. Only this module decides what a registry broadcast or exchange carries,
   and which members a node exchanges with. Drivers move bytes and time
   exchanges; they never choose targets or encode registry data.
2. Hooks are sync and never block, as the engine's delegate contract
   requires; a driver learns that an exchange is wanted through ``wake``.

Theory of operation:

- *Fast path.* A local change is written to the registry and queued as a
  named application broadcast, ``reg:<owner>:<key>``, carrying that one
  entry with watermark 0 (a lone entry says nothing about the entries
  before it). A newer change to the same key replaces an older one still
  queued. Receivers merge it (`notify_message`) and, when it was news, the
  engine re-gossips it (epidemic spread; repeats die out). Nothing rides in
  membership push-pulls.
- *Slow path* (anti-entropy, Scuttlebutt). A node exchanges digests every
  `SYNC_INTERVAL` (jittered 0.8-1.2) with one random live member; at once
  with a member that has just joined or come back (`MemberJoined`; one that
  was only suspected kept receiving broadcasts); and at once with an owner
  whose broadcasts arrived with a gap, because one was missed (gap repair).
  The exchange is three legs on a stream tagged `REGISTRY_TAG`: the
  initiator's digest (`open_exchange`); the responder's delta for it, then
  its own digest (`answer_exchange`); the initiator applies that delta
  (`apply_exchange`) and answers the digest with what the responder lacks
  (`delta_for`), which the responder applies (`apply_exchange`). Only the
  differences travel. After each round of exchanges the node forgets
  old tombstones (`collect`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.membership.events import MemberJoined
from shoal.membership.state import MemberState
from shoal.registry.store import (
    OwnerDelta,
    decode_delta,
    decode_digest,
    encode_delta,
)

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

    from shoal.membership.events import Event
    from shoal.membership.messages import Address
    from shoal.membership.state import Member
    from shoal.registry.store import Entry, Registry

__all__ = [
    "MAX_BROADCAST_KEY",
    "REGISTRY_TAG",
    "SYNC_INTERVAL",
    "RegistryGossip",
    "broadcast_of",
]

#: Stream tag of the registry's digest exchange on the gossip port (on the
#: wire: append only, see `shoal.cluster.transport`).
REGISTRY_TAG = 0x52
#: Seconds between two anti-entropy exchanges started by this node. Changes
#: travel by broadcast and gaps are repaired at once, so this only bounds how
#: long a silently missed last change can go unrepaired; idle cost is one
#: digest exchange per node per interval.
SYNC_INTERVAL = 30.0
#: Jitter of the interval, so nodes started together do not exchange in step.
SYNC_JITTER = (0.8, 1.2)
#: Longest broadcast name; longer ones are cut. The engine refuses names
#: over its ``max_name_length`` (255 by default), and the owner's name plus a
#: topic and channel can exceed that; a cut name only merges two keys' queued
#: broadcasts, and the anti-entropy exchange repairs what that loses.
MAX_BROADCAST_KEY = 200

_LIVE = (MemberState.ALIVE, MemberState.SUSPECT)


def broadcast_of(registry: Registry, entry: Entry) -> tuple[str, bytes]:
    """The broadcast name and payload that spread one of ``registry``'s own entries."""
    delta = OwnerDelta(registry.name, registry.generation, 0, False, [entry])
    key = f"reg:{registry.name}:{entry.key}"
    return key[:MAX_BROADCAST_KEY], encode_delta([delta])


def _ignore_broadcast(name: str, data: bytes) -> None:
    del name, data


def _no_member(name: str) -> Member | None:
    del name
    return None


def _no_wake() -> None:
    pass


class RegistryGossip:
    """One node's registry, its gossip, and its plan of exchanges.

    It is the membership engine's delegate (``local_state``,
    ``merge_remote_state``, ``notify_message``), so it exists before the
    engine; `attach` hands it the engine's side once that exists.

    Args:
        registry: the node's registry, with its own entry.
        clock: the current time, for the delegate hooks, which get none
            (local monotonic seconds on a node, virtual time in the
            simulator).
        wake: called when an exchange is wanted now (a join, a gap); the
            driver then calls `take_targets`.

    Attributes:
        pending: members to exchange with at once, oldest first.
        messages_applied: broadcast messages merged.
        messages_dropped: owner states refused because they carry another
            generation than the one membership admitted for that owner (see
            `attach`).
        exchanges_applied: deltas merged from digest exchanges; above zero,
            this node has caught up with at least one peer's whole view
            (what a returning owner waits for before it serves, so it knows
            the adoptions of its topics).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        clock: Callable[[], float],
        wake: Callable[[], None] = _no_wake,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.wake = wake
        self.pending: list[Address] = []
        self.messages_applied = 0
        self.messages_dropped = 0
        self.exchanges_applied = 0
        self._exchange_listeners: list[Callable[[], None]] = []
        self._identity: Callable[[str], int | None] | None = None
        self._broadcast: Callable[[str, bytes], None] = _ignore_broadcast
        self._member: Callable[[str], Member | None] = _no_member
        self._digest: tuple[int, dict[str, tuple[int, int]], bytes] | None = None
        self._behind: tuple[int, bool] | None = None

    def attach(
        self,
        *,
        broadcast: Callable[[str, bytes], None],
        member: Callable[[str], Member | None],
        identity: Callable[[str], int | None] | None = None,
    ) -> None:
        """Connect the engine: how to queue a broadcast, and its view of a member.

        Until then changes are written to the registry but not broadcast
        (the first exchange carries them), and no gap can be repaired.
        ``identity(owner)`` is the registry generation the member announced
        (in its gossip metadata), None when unknown: state of an owner under
        another generation is a second node using that owner's name, or a
        stale life of it, and is never applied.
        """
        self._broadcast = broadcast
        self._member = member
        self._identity = identity

    def _admitted(self, delta: OwnerDelta) -> bool:
        """Whether ``delta`` belongs to the life of its owner that membership admitted."""
        if self._identity is None:
            return True
        known = self._identity(delta.owner)
        if known is None or known == delta.generation:
            return True
        self.messages_dropped += 1
        return False

    # -- liveness ---------------------------------------------------------------

    def alive(self, owner: str) -> bool:
        """Producers of ``owner`` are listed: this node, or a member alive or suspect."""
        if owner == self.registry.name:
            return True
        member = self._member(owner)
        return member is not None and member.state in _LIVE

    # -- fast path --------------------------------------------------------------

    def send(self, entry: Entry) -> None:
        """Broadcast one of this node's own entries (just written)."""
        self._broadcast(*broadcast_of(self.registry, entry))

    def announce(self) -> None:
        """Broadcast the ``info`` entry, as a starting node does."""
        entry = self.registry.own_entry("info")
        if entry is not None:
            self.send(entry)

    def local_state(self) -> bytes:
        """Nothing rides in membership push-pulls: the digest exchange does the repair."""
        return b""

    def merge_remote_state(self, data: bytes, from_name: str) -> None:
        """Ignore push-pull state (see `local_state`)."""
        del data, from_name

    def notify_message(self, data: bytes) -> bool:
        """Apply a broadcast registry entry; True when it was news (re-gossip it).

        News that arrives ahead of an entry this node missed leaves a gap in
        its owner's versions: the owner is queued for an exchange at once.

        Raises:
            RemoteProtocolError: the message is malformed (the engine counts
                it); nothing was applied.
        """
        now = self.clock()
        changed = False
        for delta in decode_delta(data):
            if self._admitted(delta):
                changed |= self.registry.apply_delta(delta, now)
        self.messages_applied += 1
        if changed:
            self._repair_gaps()
        return changed

    def _repair_gaps(self) -> None:
        woken = False
        for owner in self.registry.behind():
            member = self._member(owner)
            if member is not None and member.state in _LIVE:
                self.pending.append(member.address)
                woken = True
        if woken:
            self.wake()

    # -- when and with whom -----------------------------------------------------

    def on_member_events(self, events: list[Event]) -> None:
        """Queue an exchange with every member that joined or came back.

        A member that was only suspected kept its registry entries and kept
        receiving broadcasts, so its recovery needs no exchange: under heavy
        loss, exchanging on every refuted suspicion cost kilobytes a second.
        """
        woken = False
        for event in events:
            if isinstance(event, MemberJoined):
                self.pending.append(event.member.address)
                woken = True
        if woken:
            self.wake()

    @staticmethod
    def next_interval(rng: random.Random) -> float:
        """Seconds until the next periodic exchange."""
        return SYNC_INTERVAL * rng.uniform(*SYNC_JITTER)

    def take_targets(
        self, rng: random.Random, pick_peer: Callable[[random.Random], Address | None]
    ) -> list[Address]:
        """The members to exchange with in this round, each once, in order.

        The queued ones (joiners, owners with gaps) if any, else one live
        member drawn by ``pick_peer`` (uniformly, with ``rng``).
        """
        targets, self.pending = self.pending, []
        if not targets:
            peer = pick_peer(rng)
            if peer is not None:
                targets = [peer]
        return list(dict.fromkeys(targets))

    def collect(self, now: float) -> None:
        """Forget old tombstones (after each round of exchanges)."""
        self.registry.collect(now)

    # -- the exchange (three messages) ------------------------------------------

    def digest(self) -> tuple[dict[str, tuple[int, int]], bytes]:
        """This node's digest and its encoding, recomputed only after a change."""
        count = self.registry.change_count
        cached = self._digest
        if cached is None or cached[0] != count:
            cached = self._digest = (count, *self.registry.digest_and_encoding())
        return cached[1], cached[2]

    def has_gaps(self) -> bool:
        """Whether some owner's entries are known to be missing (`Registry.behind`)."""
        count = self.registry.change_count
        cached = self._behind
        if cached is None or cached[0] != count:
            cached = self._behind = (count, bool(self.registry.behind()))
        return cached[1]

    def open_exchange(self) -> bytes:
        """Leg 1, initiator to responder: this node's digest."""
        return self.digest()[1]

    def answer_exchange(self, data: bytes) -> tuple[bytes, bytes]:
        """Leg 2, responder to initiator: what the peer lacks, then our digest.

        Raises:
            RemoteProtocolError: ``data`` is not a digest.
        """
        peer_digest = decode_digest(data)
        return encode_delta(self.registry.delta(peer_digest)), self.digest()[1]

    def delta_for(self, digest: bytes) -> bytes:
        """Leg 3, initiator to responder: what the owner of ``digest`` lacks.

        Raises:
            RemoteProtocolError: ``digest`` is not a digest.
        """
        return encode_delta(self.registry.delta(decode_digest(digest)))

    def apply_exchange(self, delta: bytes, now: float) -> None:
        """Merge a delta received in an exchange.

        Raises:
            RemoteProtocolError: ``delta`` is malformed; nothing was applied.
        """
        for part in decode_delta(delta):
            if self._admitted(part):
                self.registry.apply_delta(part, now)
        self.exchanges_applied += 1
        for fn in self._exchange_listeners:
            fn()

    def add_exchange_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` after every delta merged from an exchange."""
        self._exchange_listeners.append(fn)
