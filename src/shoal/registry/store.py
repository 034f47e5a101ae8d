"""The gossiped topic registry: who holds which topics and channels.

This replaces nsqlookupd's registration database (docs/nsq.md §3.2). It is pure
logic (no I/O, no clock: callers pass ``now``), driven by the broker on this
node and by gossip from the others.

Theory of operation (Scuttlebutt, as chitchat does it):

- Every node owns one *state*: a map of keys to values, each entry stamped
  with the version at which it was last written. Only the owner writes its
  state; every write takes the next version. A state also carries a
  *generation* (the owner's start time), so a restarted node, whose versions
  start again from 1, replaces what others remember of its previous life.
- Gossip moves *entries*. An entry is applied when its version is newer than
  the stored one for that key, so duplicated and reordered gossip is
  harmless, and merges commute.
- Each node also tracks, per owner, the highest version up to which it has
  seen every entry (the *watermark*). A digest maps owner to
  (generation, watermark); given a peer's digest, `delta` returns exactly
  the entries the peer lacks. Push-pull exchanges digests and deltas, so it
  sends what changed, not the whole table.
- Deleting a key writes a tombstone (value None) at a new version; tombstones
  older than `TOMBSTONE_GC` are dropped, and a peer whose watermark is below
  the oldest dropped version gets the owner's whole state with a reset flag.

Keys (all strings, values CBOR-friendly):

- ``info``: the owner's addresses as a producer (broadcast address, host
  name, TCP and HTTP ports, version string).
- ``t:<topic>``: the owner's broker holds the topic; value ``{"c": [channels],
  "at": ns}``, where ``at`` is the wall time of the last change, plus
  ``"f": factor`` when the topic is replicated (factor above 1), so every
  node can compute its replicas with the owner's own placement
  (`shoal.replication.placement`) from its membership view.
- ``k:<topic>``: a topic (and channels) registered through the owner's
  lookup API without a producer (``/topic/create``, ``/channel/create``).
- ``d:<topic>`` and ``d:<topic>/<channel>``: a delete ordered through the
  owner's lookup API at wall time ``at``; it hides every registration of
  that key written before ``at``, cluster-wide.
- ``x:<topic>@<host:http_port>``: a producer tombstone (``/topic/tombstone``)
  hiding that producer of that topic until the value's wall time.
- ``a:<topic>@<owner>``: the owner's messages of that topic this node
  adopted after the owner was declared dead; value ``{"r": [[lo, hi,
  count, at], ...]}``, one range of message IDs per adoption, newest last
  (`Adoption`). Only the adopter writes it; it drops ranges older than
  `ADOPTION_TTL` (`expire_adoptions`) and keeps at most
  `MAX_ADOPTION_RANGES`, so the state stays bounded.

A simulator holds a thousand registries in one process, each with a state
of every owner; `Registry.image` and `Registry.install` let them share one
read-only state per owner, copied by a registry only when it changes it
(copy on write). A real node never shares: its states are its own.

Views (`lookup`, `topics`, `channels`, `nodes`) are computed over these
states, with liveness given by the caller: producers on dead or left members
are hidden, while their non-ephemeral keys remain, as nsqlookupd's do.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, TypeGuard

import cbor2
import msgspec

from shoal.errors import RemoteProtocolError
from shoal.queue.names import is_ephemeral

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = [
    "ADOPTION_TTL",
    "MAX_ADOPTION_RANGES",
    "Adoption",
    "Entry",
    "NodeInfo",
    "OwnerDelta",
    "Producer",
    "Registry",
    "StateImage",
    "decode_delta",
    "decode_digest",
    "encode_delta",
    "encode_digest",
]

#: Tombstones older than this (seconds) are forgotten.
TOMBSTONE_GC = 3600.0
#: Bytes of one encoded delta or digest we accept from a peer.
MAX_ENCODED = 32 * 1024 * 1024
#: Entries and owners per message we accept from a peer.
MAX_ENTRIES = 1_000_000
#: Longest entry key we accept from a peer (``t:`` plus a 64-character topic
#: and channel fits with room to spare).
MAX_KEY = 256
#: Seconds an adoption stays announced. An owner that returns later than
#: this with its disk delivers what was adopted again (duplicates, never a
#: loss); within it, it drops them.
ADOPTION_TTL = 24 * 3600.0
#: Adoption ranges kept per (topic, owner) by one adopter, newest last: a
#: topic adopted again before the older range expired keeps both.
MAX_ADOPTION_RANGES = 16
#: Length of a message ID (16 lowercase hex digits, docs/nsq.md).
_ID_LENGTH = 16


class NodeInfo(msgspec.Struct, frozen=True, kw_only=True):
    """How clients reach a node's broker (the producer fields of docs/nsq.md §3.1)."""

    broadcast_address: str
    hostname: str
    tcp_port: int
    http_port: int
    version: str

    def to_wire(self) -> dict[str, Any]:
        """The ``info`` value."""
        return {
            "b": self.broadcast_address,
            "h": self.hostname,
            "t": self.tcp_port,
            "p": self.http_port,
            "v": self.version,
        }

    @classmethod
    def from_wire(cls, value: Any) -> NodeInfo:
        """Parse an ``info`` value.

        Raises:
            RemoteProtocolError: the value is not a well-formed info map.
        """
        if not isinstance(value, dict):
            raise RemoteProtocolError("malformed node info")
        fields = value.get("b"), value.get("h"), value.get("t"), value.get("p"), value.get("v")
        address, hostname, tcp_port, http_port, version = fields
        if not (
            isinstance(address, str)
            and isinstance(hostname, str)
            and isinstance(version, str)
            and _is_port(tcp_port)
            and _is_port(http_port)
        ):
            raise RemoteProtocolError("malformed node info")
        return cls(
            broadcast_address=address,
            hostname=hostname,
            tcp_port=tcp_port,
            http_port=http_port,
            version=version,
        )


def _is_port(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535


class Producer(msgspec.Struct, frozen=True):
    """One node holding a topic, as /lookup and /nodes describe it."""

    node: str
    info: NodeInfo

    @property
    def http_id(self) -> str:
        """``broadcast_address:http_port``, the ``node`` of /topic/tombstone."""
        return f"{self.info.broadcast_address}:{self.info.http_port}"


class Adoption(msgspec.Struct, frozen=True, kw_only=True):
    """One adoption of a dead owner's topic, as the adopter announced it.

    The adopter took every message it held of the owner's topic: a prefix
    of the owner's records of one life, minus what it knew was finished.
    The owner's IDs of one topic increase in publish order within a life,
    and are time-ordered across lives, so every message of that owner and
    topic whose ID lies in ``[lo, hi]`` was either adopted or already
    finished: the owner may drop all of them and deliver none again. IDs
    compare as bytes (fixed-width lowercase hex).

    Attributes:
        adopter: the member that adopted.
        owner: the member whose messages were adopted.
        topic: the topic name.
        lo: the lowest adopted message ID.
        hi: the highest adopted message ID.
        count: how many messages were adopted.
        at: wall time of the adoption, nanoseconds.
    """

    adopter: str
    owner: str
    topic: str
    lo: bytes
    hi: bytes
    count: int
    at: int

    def covers(self, msg_id: bytes) -> bool:
        """Whether the owner's message ``msg_id`` was adopted (or finished) in this adoption."""
        return self.lo <= msg_id <= self.hi


def _adoption_key(topic: str, owner: str) -> str:
    return f"a:{topic}@{owner}"


def _is_id(value: object) -> TypeGuard[bytes]:
    return isinstance(value, bytes) and len(value) == _ID_LENGTH


def _ranges(value: Any) -> list[list[Any]]:
    """The well-formed ``[lo, hi, count, at]`` ranges of an ``a:`` value (others ignored)."""
    if not isinstance(value, dict) or not isinstance(value.get("r"), list):
        return []
    return [
        item
        for item in value["r"]
        if isinstance(item, list)
        and len(item) == 4
        and _is_id(item[0])
        and _is_id(item[1])
        and item[0] <= item[1]
        and _is_int(item[2])
        and _is_int(item[3])
    ]


class Entry(msgspec.Struct, frozen=True):
    """One key of one owner's state at one version."""

    key: str
    value: Any
    version: int


class OwnerDelta(msgspec.Struct, frozen=True):
    """What one owner's state has that a peer lacks.

    Attributes:
        owner: whose state.
        generation: the owner's generation these entries belong to.
        watermark: the sender holds every entry of this owner up to here.
        reset: ``entries`` are the owner's whole state (the peer knew an older
            generation, or is below the sender's GC floor).
        entries: sorted by version.
    """

    owner: str
    generation: int
    watermark: int
    reset: bool
    entries: list[Entry]


class _Slot(msgspec.Struct, eq=False):
    # Never changed once stored (a newer write stores a new slot), so the
    # slots of a shared state may be shared by its private copies too.
    value: Any
    version: int
    written_at: float  # local time the tombstone was stored, for GC


class _State(msgspec.Struct, eq=False):
    generation: int
    entries: dict[str, _Slot] = msgspec.field(default_factory=dict)
    watermark: int = 0
    # Versions seen above the watermark (gaps below them still missing);
    # None when there are none, as nearly always: an empty set costs 216
    # bytes, and a node holds a state per owner in the cluster.
    pending: set[int] | None = None
    # Highest version of a tombstone we have dropped; peers below it need a reset.
    gc_floor: int = 0
    # Held by several registries at once (see `StateImage`): read only; a
    # registry about to change it first takes a private copy (`Registry._own_copy`).
    shared: bool = False
    # (generation, watermark) as last put in a digest, and its encoded digest
    # item (owner, then [generation, watermark]): one tuple per state, not one
    # per digest, shared by every registry sharing the state; a digest is
    # encoded by joining the items, not item by item.
    item: tuple[tuple[int, int], bytes] | None = None

    def digest_item(self, owner: str) -> tuple[tuple[int, int], bytes]:
        item = self.item
        if item is None or item[0][1] != self.watermark:
            mark = (self.generation, self.watermark)
            item = self.item = (mark, cbor2.dumps(owner) + cbor2.dumps(list(mark)))
        return item

    def copy(self, *, shared: bool) -> _State:
        pending = set(self.pending) if self.pending else None
        return _State(
            self.generation, dict(self.entries), self.watermark, pending, self.gc_floor, shared
        )


class StateImage(msgspec.Struct, frozen=True):
    """One owner's whole state, frozen, to be installed into many registries at once.

    A simulator holds a registry per node, and each of them a state of every
    owner: about 450 bytes for each (node, owner) pair when each is a copy.
    Registries that install the same image share one read-only state until
    one of them changes it (copy on write), so a warm cluster of n nodes
    costs n states instead of n^2. A real node has no use for it.
    """

    owner: str
    state: _State
    #: The state holds a tombstone / an adoption entry (what `install` notes).
    graves: bool
    adoptions: bool


class Registry:
    """Every node's topic state, as this node knows it.

    Args:
        name: this node's member name (owner key of its own state).
        generation: increases across restarts of the same name; the node's
            start time in nanoseconds is the natural choice.
        info: this node's producer addresses.
        now: local time (seconds) of creation.
    """

    def __init__(self, name: str, *, generation: int, info: NodeInfo, now: float) -> None:
        self.name = name
        self._states: dict[str, _State] = {name: _State(generation)}
        self._own = self._states[name]
        self._version = 0
        #: Bumped on every applied change; views cache against it.
        self.change_count = 0
        #: Bumped on every change to an adoption (``a:``) entry of any state.
        self.adoption_changes = 0
        self._listeners: list[Callable[[], None]] = []
        # Owners whose states may hold a tombstone: `collect` looks at these
        # only, not at every state (a superset; collect prunes it).
        self._graves: set[str] = set()
        self._write("info", info.to_wire(), now)

    @property
    def generation(self) -> int:
        """This node's generation (its start time), the first half of its versions."""
        return self._own.generation

    # -- local writes -----------------------------------------------------------

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` after every change to any state (for long polls)."""
        self._listeners.append(fn)

    def _changed(self) -> None:
        self.change_count += 1
        for fn in self._listeners:
            fn()

    def _write(self, key: str, value: Any, now: float) -> Entry:
        self._version += 1
        if key.startswith("a:"):
            self.adoption_changes += 1
        self._own.entries[key] = _Slot(value, self._version, now)
        if value is None:
            self._graves.add(self.name)
        self._own.watermark = self._version
        self._changed()
        return Entry(key, value, self._version)

    def own_entry(self, key: str) -> Entry | None:
        """This node's current entry for ``key``, if any."""
        slot = self._own.entries.get(key)
        return None if slot is None else Entry(key, slot.value, slot.version)

    def set_info(self, info: NodeInfo, now: float) -> Entry:
        """Record this node's (possibly changed) producer addresses."""
        return self._write("info", info.to_wire(), now)

    def set_topic(
        self, topic: str, channels: Iterable[str], *, wall: float, now: float, factor: int = 1
    ) -> Entry:
        """This node's broker holds ``topic`` with ``channels``, replicated ``factor`` times."""
        value: dict[str, Any] = {"c": sorted(channels), "at": int(wall * 1e9)}
        if factor > 1:
            value["f"] = factor
        return self._write(f"t:{topic}", value, now)

    def remove_topic(self, topic: str, now: float) -> Entry | None:
        """This node's broker no longer holds ``topic``."""
        slot = self._own.entries.get(f"t:{topic}")
        if slot is None or slot.value is None:
            return None
        return self._write(f"t:{topic}", None, now)

    def register(self, topic: str, channel: str | None, *, wall: float, now: float) -> Entry:
        """Register a topic (and channel) key through the lookup API, with no producer."""
        key = f"k:{topic}"
        slot = self._own.entries.get(key)
        channels = set(slot.value["c"]) if slot is not None and slot.value is not None else set()
        if channel is not None:
            channels.add(channel)
        return self._write(key, {"c": sorted(channels), "at": int(wall * 1e9)}, now)

    def order_delete(self, topic: str, channel: str | None, *, wall: float, now: float) -> Entry:
        """Delete a topic or channel key cluster-wide (lookup API ``/topic/delete``...).

        Every registration of it written at or before ``wall`` is hidden on every node.
        """
        key = f"d:{topic}" if channel is None else f"d:{topic}/{channel}"
        return self._write(key, int(wall * 1e9), now)

    def tombstone(self, topic: str, http_id: str, *, until: float, now: float) -> Entry:
        """Hide producer ``http_id`` of ``topic`` from /lookup until wall time ``until``."""
        return self._write(f"x:{topic}@{http_id}", int(until * 1e9), now)

    def adopt(
        self, topic: str, owner: str, lo: bytes, hi: bytes, count: int, *, wall: float, now: float
    ) -> Entry:
        """Announce that this node adopted ``owner``'s messages of ``topic`` with IDs in [lo, hi].

        The range joins those still announced for the pair (the oldest go
        beyond `MAX_ADOPTION_RANGES`).
        """
        key = _adoption_key(topic, owner)
        slot = self._own.entries.get(key)
        ranges = _ranges(slot.value) if slot is not None else []
        ranges.append([lo, hi, count, int(wall * 1e9)])
        return self._write(key, {"r": ranges[-MAX_ADOPTION_RANGES:]}, now)

    def expire_adoptions(self, *, wall: float, now: float) -> list[Entry]:
        """Drop this node's adoption ranges older than `ADOPTION_TTL`; the entries written."""
        floor = int((wall - ADOPTION_TTL) * 1e9)
        out = []
        for key, slot in list(self._own.entries.items()):
            if not key.startswith("a:") or slot.value is None:
                continue
            ranges = _ranges(slot.value)
            kept = [item for item in ranges if item[3] > floor]
            if len(kept) == len(ranges) and ranges:
                continue
            out.append(self._write(key, {"r": kept} if kept else None, now))
        return out

    # -- shared states (simulator) -------------------------------------------------

    def image(self) -> StateImage:
        """This node's own state as it is now, frozen for `install` elsewhere."""
        state = self._own.copy(shared=True)
        slots = state.entries.items()
        return StateImage(
            self.name,
            state,
            graves=any(s.value is None for s in state.entries.values()),
            adoptions=any(k.startswith("a:") for k, s in slots if s.value is not None),
        )

    def install(self, images: Iterable[StateImage]) -> None:
        """Hold the imaged states of owners this registry does not know yet, shared.

        What a registry then holds is what merging each owner's whole state
        (`apply_delta` of ``delta({})``) would leave, but nothing is copied until
        this registry changes one of them. Images of this node itself, or
        of owners already known, are ignored.
        """
        states = self._states
        changed = False
        for image in images:
            owner = image.owner
            if owner == self.name or owner in states:
                continue
            states[owner] = image.state
            changed = True
            if image.graves:
                self._graves.add(owner)
            if image.adoptions:
                self.adoption_changes += 1
        if changed:
            self._changed()

    def _own_copy(self, owner: str, st: _State) -> _State:
        """A private copy of a shared state, in its place (copy on write)."""
        copy = st.copy(shared=False)
        self._states[owner] = copy
        return copy

    @staticmethod
    def _news(st: _State, entries: list[Entry]) -> bool:
        """Whether merging ``entries`` (same generation, no reset) would change ``st``."""
        held = st.entries
        for entry in entries:
            slot = held.get(entry.key)
            if slot is None or entry.version > slot.version or entry.version > st.watermark:
                return True
        return False

    # -- gossip -----------------------------------------------------------------

    def digest(self) -> dict[str, tuple[int, int]]:
        """Owner -> (generation, watermark): what this node has seen."""
        return self.digest_and_encoding()[0]

    def digest_and_encoding(self) -> tuple[dict[str, tuple[int, int]], bytes]:
        """`digest` and its `encode_digest`, in one walk over the states' cached items."""
        marks = {}
        parts = []
        for name, st in self._states.items():
            item = st.item
            if item is None or item[0][1] != st.watermark:
                item = st.digest_item(name)
            marks[name] = item[0]
            parts.append(item[1])
        return marks, _map_header(len(parts)) + b"".join(parts)

    def delta(self, peer_digest: Mapping[str, tuple[int, int]]) -> list[OwnerDelta]:
        """The entries a peer with ``peer_digest`` lacks, one `OwnerDelta` per owner with news."""
        out = []
        for name, st in self._states.items():
            known = peer_digest.get(name)
            if known is not None and known[0] > st.generation:
                continue
            reset = known is None or known[0] < st.generation or known[1] < st.gc_floor
            floor = 0 if reset or known is None else known[1]
            entries = sorted(
                (Entry(k, s.value, s.version) for k, s in st.entries.items() if s.version > floor),
                key=lambda e: e.version,
            )
            if entries or reset or (known is not None and known[1] < st.watermark):
                out.append(OwnerDelta(name, st.generation, st.watermark, reset, entries))
        return out

    def apply_delta(self, delta: OwnerDelta, now: float) -> bool:
        """Merge what a peer's `delta` sent: entries, then the peer's watermark.

        The peer sent every entry it holds above our watermark (or all of
        them, with ``reset``), so afterwards we hold everything up to its
        watermark too.
        """
        changed = self.apply(delta.owner, delta.generation, delta.reset, delta.entries, now)
        st = self._states.get(delta.owner)
        if (
            st is not None
            and st is not self._own
            and st.generation == delta.generation
            and delta.watermark > st.watermark
        ):
            if st.shared:
                st = self._own_copy(delta.owner, st)
            st.watermark = delta.watermark
            if st.pending:
                st.pending = {v for v in st.pending if v > st.watermark} or None
            self._advance(st)
        return changed

    @staticmethod
    def _advance(st: _State) -> None:
        pending = st.pending
        if not pending:
            return  # the usual case: versions arrive in order
        while st.watermark + 1 in pending:
            st.watermark += 1
            pending.discard(st.watermark)
        st.pending = {v for v in pending if v > st.watermark} or None

    def apply(
        self, owner: str, generation: int, reset: bool, entries: Iterable[Entry], now: float
    ) -> bool:
        """Merge entries of ``owner``'s state; idempotent and order-independent.

        With ``reset``, ``entries`` are the owner's whole state: keys they lack
        were deleted and collected, and our watermark restarts from zero.

        Returns:
            True when anything changed.
        """
        if owner == self.name:
            # Nobody else writes our state; news of an older life of ours is stale.
            return False
        entries = list(entries)
        st = self._states.get(owner)
        if st is None or generation > st.generation:
            if st is not None and any(k.startswith("a:") for k in st.entries):
                self.adoption_changes += 1
            st = _State(generation)
            self._states[owner] = st
            changed = True
        elif generation < st.generation:
            return False
        else:
            changed = False
            if st.shared:
                if not reset and not self._news(st, entries):
                    return False  # duplicate gossip: keep sharing
                st = self._own_copy(owner, st)
        if reset:
            keep = {e.key for e in entries}
            for key in [k for k in st.entries if k not in keep]:
                del st.entries[key]
                changed = True
                if key.startswith("a:"):
                    self.adoption_changes += 1
            st.watermark = 0
            st.pending = None
        held = st.entries
        for entry in entries:
            version = entry.version
            slot = held.get(entry.key)
            if slot is None or version > slot.version:
                held[entry.key] = _Slot(entry.value, version, now)
                changed = True
                if entry.value is None:
                    self._graves.add(owner)
                if entry.key.startswith("a:"):
                    self.adoption_changes += 1
            if version == st.watermark + 1 and not st.pending:
                st.watermark = version  # in order, as nearly always: no set work
            elif version > st.watermark:
                if st.pending is None:
                    st.pending = set()
                st.pending.add(version)
        self._advance(st)
        if changed:
            self._changed()
        return changed

    def snapshot(self) -> dict[str, tuple[int, dict[str, tuple[Any, int]]]]:
        """Everything held, as plain data: owner -> (generation, key -> (value, version))."""
        return {
            name: (st.generation, {k: (s.value, s.version) for k, s in st.entries.items()})
            for name, st in self._states.items()
        }

    def behind(self) -> list[str]:
        """Owners for which some entries are known to be missing (a gap below news)."""
        return [name for name, st in self._states.items() if st.pending]

    def forget(self, owner: str) -> None:
        """Drop everything known of ``owner`` (a member gone for good)."""
        st = self._states.pop(owner, None) if owner != self.name else None
        if st is not None:
            if any(k.startswith("a:") for k in st.entries):
                self.adoption_changes += 1
            self._changed()

    def collect(self, now: float) -> None:
        """Drop tombstones older than `TOMBSTONE_GC`.

        Only states that may hold a tombstone are looked at: a node runs this
        after every round of exchanges, and most states never hold one.
        """
        graves = self._graves
        for owner in list(graves):
            st = self._states.get(owner)
            if st is None:
                graves.discard(owner)
                continue
            tombstones = [(k, s) for k, s in st.entries.items() if s.value is None]
            dead = [k for k, s in tombstones if now - s.written_at > TOMBSTONE_GC]
            if len(dead) == len(tombstones):
                graves.discard(owner)
            if not dead:
                continue
            if st.shared:
                st = self._own_copy(owner, st)
            for key in dead:
                st.gc_floor = max(st.gc_floor, st.entries.pop(key).version)

    # -- views ------------------------------------------------------------------

    def owners(self) -> list[str]:
        """Every owner with a state, this node first."""
        return [self.name, *sorted(n for n in self._states if n != self.name)]

    def info(self, owner: str) -> NodeInfo | None:
        """The producer addresses of ``owner``, if known."""
        st = self._states.get(owner)
        slot = st.entries.get("info") if st is not None else None
        if slot is None or slot.value is None:
            return None
        try:
            return NodeInfo.from_wire(slot.value)
        except RemoteProtocolError:
            return None

    def _deletions(self) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        topics: dict[str, int] = {}
        channels: dict[tuple[str, str], int] = {}
        for st in self._states.values():
            for key, slot in st.entries.items():
                if not key.startswith("d:") or not isinstance(slot.value, int):
                    continue
                name = key[2:]
                topic, sep, channel = name.partition("/")
                if sep:
                    channels[(topic, channel)] = max(channels.get((topic, channel), 0), slot.value)
                else:
                    topics[topic] = max(topics.get(topic, 0), slot.value)
        return topics, channels

    def _registrations(self) -> Iterable[tuple[str, str, str, list[str], int]]:
        """(owner, kind "t" or "k", topic, channels, at) for every live registration."""
        for owner, st in self._states.items():
            for key, slot in st.entries.items():
                if key[:2] not in ("t:", "k:") or not isinstance(slot.value, dict):
                    continue
                value = slot.value
                channels = value.get("c")
                at = value.get("at")
                if not isinstance(channels, list) or not isinstance(at, int):
                    continue
                yield owner, key[0], key[2:], [c for c in channels if isinstance(c, str)], at

    def _view(self, alive: Callable[[str], bool]) -> dict[str, tuple[set[str], set[str]]]:
        """Topic -> (channels, producing owners), after deletions and liveness."""
        del_topics, del_channels = self._deletions()
        view: dict[str, tuple[set[str], set[str]]] = {}
        for owner, kind, topic, channels, at in self._registrations():
            if at <= del_topics.get(topic, -1):
                continue
            producing = kind == "t" and alive(owner)
            if kind == "t" and not producing and is_ephemeral(topic):
                # An ephemeral key vanishes with its last producer (docs/nsq.md §3.2).
                continue
            chans, producers = view.setdefault(topic, (set(), set()))
            for channel in channels:
                if at <= del_channels.get((topic, channel), -1):
                    continue
                if is_ephemeral(channel) and not producing:
                    continue
                chans.add(channel)
            if producing:
                producers.add(owner)
        return view

    def _tombstoned(self, now_wall: float) -> set[tuple[str, str]]:
        out = set()
        stamp = int(now_wall * 1e9)
        for st in self._states.values():
            for key, slot in st.entries.items():
                if key.startswith("x:") and isinstance(slot.value, int) and slot.value > stamp:
                    topic, _, http_id = key[2:].rpartition("@")
                    out.add((topic, http_id))
        return out

    def lookup(
        self, topic: str, alive: Callable[[str], bool], *, wall: float
    ) -> tuple[list[str], list[Producer]] | None:
        """Channels and live producers of ``topic``; None when no node knows the topic."""
        entry = self._view(alive).get(topic)
        if entry is None:
            return None
        channels, owners = entry
        tombstoned = self._tombstoned(wall)
        producers = []
        for owner in sorted(owners):
            info = self.info(owner)
            if info is None:
                continue
            producer = Producer(owner, info)
            if (topic, producer.http_id) not in tombstoned:
                producers.append(producer)
        return sorted(channels), producers

    def topics(self, alive: Callable[[str], bool]) -> list[str]:
        """Every topic key in the cluster (with or without producers)."""
        return sorted(self._view(alive))

    def channels(self, topic: str, alive: Callable[[str], bool]) -> list[str]:
        """Every channel key of ``topic`` ([] for an unknown topic)."""
        entry = self._view(alive).get(topic)
        return sorted(entry[0]) if entry is not None else []

    def nodes(
        self, alive: Callable[[str], bool], *, wall: float
    ) -> list[tuple[Producer, list[str], list[bool]]]:
        """Live producers with their topics and the parallel tombstone flags (/nodes)."""
        view = self._view(alive)
        tombstoned = self._tombstoned(wall)
        by_owner: dict[str, list[str]] = {}
        for topic, (_chans, owners) in view.items():
            for owner in owners:
                by_owner.setdefault(owner, []).append(topic)
        out = []
        for owner in self.owners():
            if not alive(owner):
                continue
            info = self.info(owner)
            if info is None:
                continue
            producer = Producer(owner, info)
            topics = sorted(by_owner.get(owner, []))
            out.append((producer, topics, [(t, producer.http_id) in tombstoned for t in topics]))
        return out

    def factor(self, owner: str, topic: str) -> int:
        """The replication factor ``owner`` announced for its ``topic`` (1 when none)."""
        st = self._states.get(owner)
        slot = st.entries.get(f"t:{topic}") if st is not None else None
        value = slot.value if slot is not None else None
        factor = value.get("f") if isinstance(value, dict) else None
        return factor if isinstance(factor, int) and _is_int(factor) and factor >= 1 else 1

    def adoptions(self, owner: str | None = None) -> list[Adoption]:
        """Every announced adoption (of ``owner``'s topics only, when given), whoever adopted."""
        out = []
        for adopter, st in self._states.items():
            for key, slot in st.entries.items():
                if not key.startswith("a:") or slot.value is None:
                    continue
                topic, _, named = key[2:].partition("@")
                if owner is not None and named != owner:
                    continue
                out += [
                    Adoption(
                        adopter=adopter,
                        owner=named,
                        topic=topic,
                        lo=item[0],
                        hi=item[1],
                        count=item[2],
                        at=item[3],
                    )
                    for item in _ranges(slot.value)
                ]
        return out

    def producer_set(
        self, topic: str, alive: Callable[[str], bool], *, wall: float
    ) -> frozenset[str]:
        """The owners /lookup would list for ``topic`` (for change detection)."""
        result = self.lookup(topic, alive, wall=wall)
        return frozenset(p.node for p in result[1]) if result is not None else frozenset()


# -- wire ------------------------------------------------------------------------


def encode_digest(digest: Mapping[str, tuple[int, int]]) -> bytes:
    """CBOR of a digest: ``{owner: [generation, watermark]}``."""
    return cbor2.dumps({k: [g, w] for k, (g, w) in digest.items()})


def _map_header(length: int) -> bytes:
    """The head of a CBOR map of ``length`` items, as cbor2 writes it (RFC 8949 §3)."""
    if length < 24:
        return bytes([0xA0 + length])
    for head, size in ((0xB8, 1), (0xB9, 2), (0xBA, 4)):
        if length < 1 << (8 * size):
            return bytes([head]) + length.to_bytes(size, "big")
    return b"\xbb" + length.to_bytes(8, "big")


def encode_delta(parts: Iterable[OwnerDelta]) -> bytes:
    """CBOR of deltas: ``[[owner, generation, watermark, reset, [[key, value, version]]]]``."""
    return cbor2.dumps(
        [
            [
                d.owner,
                d.generation,
                d.watermark,
                d.reset,
                [[e.key, e.value, e.version] for e in d.entries],
            ]
            for d in parts
        ]
    )


def _load(data: bytes) -> Any:
    if len(data) > MAX_ENCODED:
        raise RemoteProtocolError(f"registry message of {len(data)} bytes is over the limit")
    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(fp).decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise RemoteProtocolError(f"malformed registry message: {exc}") from None
    if fp.tell() != len(data):
        raise RemoteProtocolError("trailing bytes after a registry message")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def decode_digest(data: bytes) -> dict[str, tuple[int, int]]:
    """Parse `encode_digest` output.

    Raises:
        RemoteProtocolError: malformed, oversized or of the wrong shape.
    """
    value = _load(data)
    if not isinstance(value, dict) or len(value) > MAX_ENTRIES:
        raise RemoteProtocolError("registry digest is not a map")
    out = {}
    for owner, pair in value.items():
        if (
            not isinstance(owner, str)
            or not isinstance(pair, list)
            or len(pair) != 2
            or not all(_is_int(x) for x in pair)
        ):
            raise RemoteProtocolError("malformed registry digest entry")
        out[owner] = (pair[0], pair[1])
    return out


def decode_delta(data: bytes) -> list[OwnerDelta]:
    """Parse `encode_delta` output.

    Raises:
        RemoteProtocolError: malformed, oversized or of the wrong shape.
    """
    value = _load(data)
    if not isinstance(value, list) or len(value) > MAX_ENTRIES:
        raise RemoteProtocolError("registry delta is not a list")
    out = []
    total = 0
    for part in value:
        if not isinstance(part, list) or len(part) != 5:
            raise RemoteProtocolError("malformed registry delta part")
        owner, generation, watermark, reset, raw = part
        if (
            not isinstance(owner, str)
            or not _is_int(generation)
            or not _is_int(watermark)
            or not isinstance(reset, bool)
            or not isinstance(raw, list)
        ):
            raise RemoteProtocolError("malformed registry delta part")
        entries = []
        for item in raw:
            if (
                not isinstance(item, list)
                or len(item) != 3
                or not isinstance(item[0], str)
                or len(item[0]) > MAX_KEY
                or not _is_int(item[2])
                or item[2] == 0
            ):
                raise RemoteProtocolError("malformed registry entry")
            entries.append(Entry(item[0], item[1], item[2]))
        total += len(entries)
        if total > MAX_ENTRIES:
            raise RemoteProtocolError("registry delta has too many entries")
        out.append(OwnerDelta(owner, generation, watermark, reset, entries))
    return out
