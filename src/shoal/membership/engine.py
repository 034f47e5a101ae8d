"""`Membership`: the SWIM + Lifeguard engine, a pure state machine fed bytes and time.

Rules:

1. **No I/O, no clock, no global randomness.** The engine is given bytes with
   their source address and ``now`` (float seconds, any monotonic origin) on
   every call, and a `random.Random` at construction. It hands back packets and
   stream requests to send, events, and the time it next wants `tick`. The trio
   driver and the discrete-event simulator drive it through the same calls.
2. **Peer input never raises.** Malformed, oversized or out-of-place bytes are
   dropped and counted in ``statistics().dropped`` by reason. Only caller
   misuse raises (`LocalProtocolError`).
3. **Every state transition goes through the rules in `shoal.membership.state`**
   (incarnation precedence) and raises one event from `shoal.membership.events`.

Theory of operation (docs/membership.md §1; SWIM; Lifeguard; memberlist
``state.go``):

* *Probing.* Every probe period (``probe_interval * (health + 1)``) the next
  member of a shuffled round-robin list is pinged. Without an ack within the
  probe timeout, ``indirect_checks`` random alive members are sent a
  ``PingReq`` and, if enabled, a ping is also sent over a stream (the TCP
  fallback). Without any ack by the end of the period, the prober suspects the
  target. Pinging a suspect member carries the suspicion along (buddy system).
  Acks lower the health score; failed probes raise it by the nacks that did
  not arrive.
* *Suspicion.* A suspect member is declared dead when its suspicion times out
  (`shoal.membership.suspicion`); independent confirmations shorten the wait.
  The member refutes by announcing ``alive`` with a higher incarnation.
* *Dissemination.* News (alive, suspect, dead) is queued in a transmit-limited
  queue and piggybacked on every packet; while news is queued, every
  ``gossip_interval`` a packet of news goes to ``gossip_nodes`` random members
  (alive, suspect, or recently dead so a wrongly dead member hears and
  refutes).
* *Anti-entropy.* Every (scaled) ``push_pull_interval`` the whole member table
  and the application state are exchanged with one random member over a
  stream. Joining is a push-pull with each seed. Remote records are merged as
  memberlist does: alive as alive, left as leave, suspect or dead as a
  *suspicion* (a push-pull never kills directly).
* *Healing beyond Serf.* Every ``reconnect_interval`` (jittered), each seed
  address that is not a live member is push-pulled, and with probability
  ``dead / alive`` one random dead member (retained, or reaped less than
  ``reconnect_timeout`` ago) is too. Two halves of a partition therefore find
  each other again however long the split lasted. Once they meet, each side's
  refutations and rejoins race through members that may still hold a given
  node dead, so a node that refutes an accusation, or sees three members
  come alive or fall under suspicion within seconds, push-pulls with a random
  member a few probe intervals later to fetch what missed it; a packet from a
  member we hold dead, or a ping from one we reaped, prompts a push-pull with
  that member.
* *Refusals.* When the driver reports that a member's host refused a probe
  (`Membership.probe_refused`: ICMP port unreachable, or a refused TCP
  fallback), the process is gone while its host is up. The prober suspects
  at once and gossips a ``Refused``; every member that hears it pings the
  member itself, and refusals from ``refusal_confirmations`` distinct
  members declare it dead without waiting out the suspicion (memberlist
  ignores this signal). Silence alone keeps Lifeguard's timing.
* *Neighbour watch* (`shoal.membership.watch`). Each member holds a stream to
  its ``watch_successors`` successors on a hashed ring of the live members
  (`Membership.watch_targets`); the driver reports one that closes without a
  goodbye (`Membership.watch_closed`) and it is weighed as a refused probe,
  so a crash is noticed within a round trip instead of at the next probe.
* *Leaving* broadcasts ``dead`` about ourselves with ourselves as source; the
  driver waits for `Membership.leave_complete` (or a timeout) and stops.
* *Reaping.* Dead and left members are kept ``dead_retention`` seconds, then
  forgotten when the probe list next wraps.

The application channel (`MembershipDelegate`, `Membership.broadcast_app`)
lets the gossiped topic registry ride on the same packets and push-pulls; see
`MembershipDelegate` for its contract.

Departures from memberlist, each found by the virtual-time tests to cause
false deaths, slow convergence or wasted work, and each named where it lives:

* a suspicion merged from a push-pull table is attributed to the remote and
  never counts as an independent confirmation (memberlist counts it, which
  collapsed timeouts to the minimum on mere echoes);
* a suspicion at a newer incarnation than the one held restarts the
  suspicion (SWIM's precedence) instead of confirming the stale one;
* the prober tells the suspect at once (buddy system without waiting for the
  next probe, which round-robin may put seconds away), and the suspicion goes
  ahead of the ping so the refutation rides back on the ack;
* a refutation also goes straight back to whoever sent the accusation, and a
  stale accusation re-announces our current incarnation;
* a fresh joiner does not re-gossip the whole table it learned, and instead
  runs up to three catch-up push-pulls right after joining; it also sends
  its own ``alive`` straight to the members it learned (`_announce`, at
  most 32), so they list it at once rather than a gossip round per hop
  later;
* a join refused because the peer holds our name at another address (a
  node restarted elsewhere before its old self was declared dead) is
  retried after ``probe_interval``, doubling up to ``reconnect_interval``
  (`_retry_refused_join`), so the name moves soon after the old self dies;
* the first periodic push-pull is spread over the scaled interval;
* incarnations far beyond the one held are ignored (state rule 5), so no
  forged message can push a member to the top of the range where its
  refutations could no longer win; our own record in a push-pull reply we
  asked for is the exception that lets a restarted member catch up;
* healing (seeds and dead members retried forever / for
  ``reconnect_timeout``) is built in, as Serf does only partly, and the
  catch-up push-pulls after a heal settle it in seconds where memberlist
  waits for the next periodic push-pull.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

import msgspec

from shoal.errors import LocalProtocolError, RemoteProtocolError
from shoal.membership.awareness import Awareness
from shoal.membership.broadcast import (
    QueuedBroadcast,
    TransmitLimitedQueue,
    retransmit_limit,
)
from shoal.membership.codec import (
    MAX_PACKET_MESSAGES,
    PACKET_OVERHEAD,
    PROTOCOL_VERSION,
    STREAM_REPLY_TYPES,
    STREAM_REQUEST_TYPES,
    CodecError,
    CodecLimits,
    decode_packet,
    decode_stream,
    encode_message,
    encode_packet,
    encode_push_pull,
    encode_stream,
    encode_table,
)
from shoal.membership.events import (
    Event,
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MemberReaped,
    MemberRecovered,
    MemberSuspected,
    MemberUpdated,
    NameConflict,
)
from shoal.membership.messages import (
    Ack,
    Address,
    Alive,
    Dead,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Refused,
    Suspect,
    UserMsg,
)
from shoal.membership.state import (
    MAX_INCARNATION,
    Member,
    MemberState,
    address_change_allowed,
    alive_applies,
    dead_applies,
    incarnation_in_reach,
    refute_incarnation,
    self_alive_needs_refute,
    suspect_applies,
)
from shoal.membership.suspicion import Suspicion, suspicion_bounds
from shoal.membership.watch import watch_targets

if TYPE_CHECKING:
    import random

    from shoal.membership.config import MembershipConfig

__all__ = [
    "Membership",
    "MembershipDelegate",
    "MembershipStatistics",
    "push_pull_scale",
]

_ALIVE = MemberState.ALIVE
_SUSPECT = MemberState.SUSPECT
_DEAD = MemberState.DEAD
_LEFT = MemberState.LEFT

#: Shortest time between two push-pulls prompted by packets from the same
#: member held dead (see `Membership._revive`).
REVIVE_SPACING = 5.0

#: A death (not a leave) is gossiped this many times the usual retransmit
#: limit. A death
#: declared on refusal evidence (a refused probe, a closed watch stream) comes
#: within a second, before the suspicion has spread, so the death's own wave
#: is the only one: at the usual limit (8 sends per member up to 99 members)
#: each member misses it with probability about e^-8, and at N=100 one crash
#: in thirty left one member unaware until its own probe came round (20 s,
#: simulated). Twice the limit makes that e^-16 for a few hundred bytes more
#: per death.
DEAD_REPEATS = 2

#: Above this many members the push-pull interval grows (memberlist).
_PUSH_PULL_SCALE_THRESHOLD = 32

#: Sequence numbers wrap at 32 bits (the codec refuses larger ones).
_SEQ_MASK = (1 << 32) - 1

#: Most catch-up push-pulls after a join (see `Membership.join`).
_CATCH_UP_PUSH_PULLS = 3

#: Most members a fresh joiner tells of itself directly (see `_announce`).
_JOIN_ANNOUNCE_MAX = 32

#: Most catch-up push-pulls after a sign of a healed partition, and the
#: shortest time between two such rounds (see `Membership._catch_up_soon`).
_HEAL_CATCH_UPS = 2
HEAL_CATCH_UP_SPACING = 30.0

#: This many members coming alive (new, or back from dead) or falling under
#: suspicion within `_MERGE_WINDOW` seconds means two groups merged (see
#: `_note_upheaval`).
_MERGE_CHANGES = 3
_MERGE_WINDOW = 5.0

#: Most timers `tick` fires in one call; any rest fires on the next call. A
#: guard only: periodic timers always move forward in time.
_MAX_TIMERS_PER_TICK = 100_000


def push_pull_scale(interval: float, n: int) -> float:
    """Return the push-pull period for ``n`` members (memberlist ``pushPullScale``).

    ``interval`` up to 32 members; above, ``interval * (ceil(log2(n) - log2(32)) + 1)``:
    x2 up to 64, x3 up to 128, x6 at 1 000, x10 at 10 000.
    """
    if n <= _PUSH_PULL_SCALE_THRESHOLD:
        return interval
    multiplier = math.ceil(math.log2(n) - math.log2(_PUSH_PULL_SCALE_THRESHOLD)) + 1
    return interval * multiplier


class MembershipDelegate(Protocol):
    """The application channel: hooks the engine calls, synchronously.

    Contract: every method is called from inside an engine call, must return
    quickly and must not call back into the engine (queue work for later
    instead). A hook that finds *remote* bytes malformed raises
    `RemoteProtocolError`; the engine counts it as a drop (``"app_state"`` or
    ``"app_message"``) and carries on. Any other exception is a bug and
    propagates out of the engine call.

    How application data travels:

    * `Membership.broadcast_app(key, data)` queues a named broadcast; a newer
      one with the same key replaces the older one in the queue. It is
      piggybacked on packets like membership news, with
      ``app_budget_share`` of every packet's free space offered to application
      broadcasts first, and sent ``retransmit_mult * ceil(log10(n + 1))`` times.
      Data too large for a packet goes over streams to ``gossip_nodes`` random
      members instead.
    * Receivers get `notify_message`. Like memberlist (and unlike a pure
      epidemic), the engine does not re-gossip application messages on its
      own: return True for news and the engine re-broadcasts it under the same
      key, so news spreads epidemically while repeats die out.
    * Every push-pull carries `local_state` both ways; the other side gets
      `merge_remote_state`. This repairs whatever the broadcasts missed.
    """

    def local_state(self) -> bytes:
        """Return the application state to send in a push-pull."""
        ...

    def merge_remote_state(self, data: bytes, from_name: str) -> None:
        """Merge the application state a push-pull brought from member ``from_name``."""
        ...

    def notify_message(self, data: bytes) -> bool:
        """Receive an application broadcast; return True if it was news to re-gossip."""
        ...


class MembershipStatistics(msgspec.Struct, frozen=True, kw_only=True, eq=False):
    """A snapshot of the engine's counters (all monotonic except the last group).

    Attributes:
        packets_received: datagrams given to `Membership.receive_packet`.
        packets_sent: datagrams handed out by `Membership.packets_to_send`.
        bytes_received: their total size.
        bytes_sent: their total size.
        messages_received: messages decoded from packets and streams.
        streams_received: stream requests given to `Membership.receive_stream`.
        streams_opened: stream requests handed out by `Membership.streams_to_open`.
        stream_replies_received: replies given to `Membership.receive_stream_reply`.
        streams_failed: failures reported through `Membership.stream_failed`.
        stream_bytes_received: bytes of stream requests and replies received.
        stream_bytes_sent: bytes of stream requests and replies produced.
        probes: probes started.
        probe_failures: probes that ended without any ack (the target is then
            suspected).
        indirect_probes: ping-reqs sent to helpers.
        tcp_fallback_probes: pings sent over streams.
        indirect_probes_served: ping-reqs handled for other probers.
        acks_received: acks that matched a waiting probe or relay.
        nacks_received: nacks counted for our probes.
        nacks_sent: nacks sent as a helper.
        suspicions: members this node marked suspect (its own or adopted).
        confirmations: independent suspicion confirmations counted.
        deaths_declared: suspicions of ours that timed out into a death.
        refutations: accusations about ourselves refuted.
        push_pulls: push-pull requests opened (periodic, join, healing).
        push_pulls_served: push-pull requests answered.
        reconnect_attempts: healing push-pulls opened (seeds and dead members).
        gossip_packets: packets sent by the gossip loop.
        broadcasts_queued: membership broadcasts queued.
        app_broadcasts_queued: application broadcasts queued for packets.
        app_stream_broadcasts: application messages sent over streams.
        app_messages_received: application messages received.
        name_conflicts: alive claims for a known name from another address.
        refusals: refused packets and connections reported through
            `Membership.probe_refused`.
        refusal_deaths: members this node declared dead on refusal evidence.
        watch_closures: watch streams that closed without a goodbye
            (`Membership.watch_closed`), each weighed as a refusal.
        dropped: drops by reason; codec reasons (see `CodecError`) plus
            ``"wrong_target"`` (a ping for another name), ``"app_state"`` and
            ``"app_message"`` (refused by the delegate), ``"incarnation_jump"``
            (an incarnation too far beyond the one held; `shoal.membership.state`
            rule 5).
        health_score: current Lifeguard health score (0 is healthy).
        incarnation: our current incarnation.
        alive: members alive, ourselves included while not left.
        suspect: members suspect.
        dead: dead members still retained.
        left: left members still retained (ourselves after `Membership.leave`).
    """

    packets_received: int
    packets_sent: int
    bytes_received: int
    bytes_sent: int
    messages_received: int
    streams_received: int
    streams_opened: int
    stream_replies_received: int
    streams_failed: int
    stream_bytes_received: int
    stream_bytes_sent: int
    probes: int
    probe_failures: int
    indirect_probes: int
    tcp_fallback_probes: int
    indirect_probes_served: int
    acks_received: int
    nacks_received: int
    nacks_sent: int
    suspicions: int
    confirmations: int
    deaths_declared: int
    refutations: int
    push_pulls: int
    push_pulls_served: int
    reconnect_attempts: int
    gossip_packets: int
    broadcasts_queued: int
    app_broadcasts_queued: int
    app_stream_broadcasts: int
    app_messages_received: int
    name_conflicts: int
    refusals: int
    refusal_deaths: int
    watch_closures: int
    dropped: Mapping[str, int]
    health_score: int
    incarnation: int
    alive: int
    suspect: int
    dead: int
    left: int


class _Counters(msgspec.Struct, eq=False):
    packets_received: int = 0
    packets_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    streams_received: int = 0
    streams_opened: int = 0
    stream_replies_received: int = 0
    streams_failed: int = 0
    stream_bytes_received: int = 0
    stream_bytes_sent: int = 0
    probes: int = 0
    probe_failures: int = 0
    indirect_probes: int = 0
    tcp_fallback_probes: int = 0
    indirect_probes_served: int = 0
    acks_received: int = 0
    nacks_received: int = 0
    nacks_sent: int = 0
    suspicions: int = 0
    confirmations: int = 0
    deaths_declared: int = 0
    refutations: int = 0
    push_pulls: int = 0
    push_pulls_served: int = 0
    reconnect_attempts: int = 0
    gossip_packets: int = 0
    broadcasts_queued: int = 0
    app_broadcasts_queued: int = 0
    app_stream_broadcasts: int = 0
    app_messages_received: int = 0
    name_conflicts: int = 0
    refusals: int = 0
    refusal_deaths: int = 0
    watch_closures: int = 0


class _Timer:
    """A heap entry's payload; cancelled timers stay in the heap until popped."""

    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[float], None]) -> None:
        self.callback = callback
        self.cancelled = False


class _Suspected:
    """A running suspicion of one member and what hangs on it.

    Kept apart from `_Node` because few members are suspect at any time while
    a node holds a record for every member: four fields there would cost 32
    bytes per member (hundreds of megabytes across a simulated cluster).
    """

    __slots__ = ("refusals", "suspicion", "timer", "verifying")

    def __init__(self, suspicion: Suspicion) -> None:
        self.suspicion = suspicion
        self.timer: _Timer | None = None
        # Refusal evidence for this suspicion (see Membership._on_refused).
        self.refusals: set[str] | None = None
        self.verifying = False


class _Node:
    """The mutable record of one member (the public face is `Member`).

    Slotted and lean: a node holds one per member, the simulator one per
    member per simulated node.
    """

    __slots__ = (
        "address",
        "incarnation",
        "meta",
        "name",
        "state",
        "state_changed_at",
        "suspected",
    )

    def __init__(
        self,
        name: str,
        address: Address,
        meta: Mapping[str, str],
        incarnation: int,
        state: MemberState,
        now: float,
    ) -> None:
        self.name = name
        self.address = address
        self.meta = meta
        self.incarnation = incarnation
        self.state = state
        self.state_changed_at = now
        self.suspected: _Suspected | None = None

    def snapshot(self) -> Member:
        # A `msgspec.Struct`: built in C, so a snapshot per event costs little.
        return Member(
            name=self.name,
            address=self.address,
            state=self.state,
            incarnation=self.incarnation,
            meta=self.meta,
            state_changed_at=self.state_changed_at,
        )


class _Probe:
    """Our probe in flight: at most one at a time."""

    __slots__ = ("acked", "deadline_timer", "expected_nacks", "nacks", "seq", "target", "timer")

    def __init__(self, target: _Node, seq: int) -> None:
        self.target = target
        self.seq = seq
        self.acked = False
        self.expected_nacks = 0
        self.nacks = 0
        self.timer: _Timer | None = None
        self.deadline_timer: _Timer | None = None


class _Relay:
    """A probe we run on behalf of another member's ping-req."""

    __slots__ = ("origin", "origin_seq", "timer", "want_nack")

    def __init__(self, origin: Address, origin_seq: int, want_nack: bool) -> None:
        self.origin = origin
        self.origin_seq = origin_seq
        self.want_nack = want_nack
        self.timer: _Timer | None = None


def _name_of(node: _Node) -> str:
    return node.name


def _valid_name(value: object, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit


def _valid_bytes(value: object, limit: int) -> bool:
    return isinstance(value, bytes) and len(value) <= limit


def _check_address(address: object, what: str) -> Address:
    if (
        not isinstance(address, tuple)
        or len(address) != 2
        or not isinstance(address[0], str)
        or not address[0]
        or type(address[1]) is not int
        or not 0 <= address[1] <= 65535
    ):
        raise LocalProtocolError(f"{what} must be a (host, port) tuple, got {address!r}")
    return (address[0], address[1])


class Membership:
    """One node's SWIM + Lifeguard membership, as a sans-IO state machine.

    Driving it (the same for a trio driver and a simulator):

    1. Feed inputs: `receive_packet` for each datagram, `receive_stream` for
       each inbound stream request (send back the bytes it returns, if any),
       `receive_stream_reply` / `stream_failed` for streams we opened, and
       `tick` when the clock reaches `next_deadline`.
    2. After **every** input call (and after `join`, `leave`, `update_meta`,
       `broadcast_app`), drain the outputs: `packets_to_send` (datagrams),
       `streams_to_open` (reliable requests: connect, send, read the whole
       reply, feed it to `receive_stream_reply`, or call `stream_failed`), and
       `events`; then re-read `next_deadline`, which an input may have moved
       earlier.

    Times are float seconds on any monotonic clock; ``now`` must not go
    backwards between calls.

    Args:
        config: tuning (`MembershipConfig.lan`, ``wan``, ``local``).
        name: this member's unique name.
        address: the (host, port) other members reach our gossip endpoint at
            (the advertised address; packets and streams share it).
        meta: string tags announced with our ``alive`` (at most
            ``config.meta_max_size`` bytes of UTF-8 keys and values).
        rng: the engine's only source of randomness (probe order, helpers,
            gossip targets, jitter). Seed it for reproducible runs.
        now: the current time.
        incarnation: the incarnation to start from. A node restarting with
            persisted state can pass a higher value; otherwise it refutes its
            old record with a higher incarnation as soon as it hears of it.
        delegate: the application channel, or None.

    Raises:
        LocalProtocolError: an argument is malformed (name, address, meta).
    """

    def __init__(
        self,
        config: MembershipConfig,
        *,
        name: str,
        address: Address,
        meta: Mapping[str, str] | None = None,
        rng: random.Random,
        now: float,
        incarnation: int = 1,
        delegate: MembershipDelegate | None = None,
    ) -> None:
        self._config = config
        self._limits = CodecLimits.from_config(config)
        if not _valid_name(name, config.max_name_length):
            raise LocalProtocolError(f"name must be 1..{config.max_name_length} characters")
        self._name = name
        self._address = _check_address(address, "address")
        if type(incarnation) is not int or not 0 <= incarnation <= MAX_INCARNATION:
            raise LocalProtocolError("incarnation must be an unsigned 64-bit integer")
        self._rng = rng
        self._delegate = delegate
        self._now = now

        self._self = _Node(name, self._address, self._check_meta(meta), incarnation, _ALIVE, now)
        self._nodes: dict[str, _Node] = {name: self._self}
        self._by_address: dict[Address, _Node] = {self._address: self._self}
        self._revive_at: dict[str, float] = {}
        self._probe_list: list[_Node] = []
        self._probe_index = 0
        self._counts: dict[MemberState, int] = dict.fromkeys(MemberState, 0)
        self._counts[_ALIVE] = 1
        self._dead: dict[str, _Node] = {}
        self._remembered: dict[str, tuple[Address, float]] = {}
        self._seeds: list[Address] = []
        # Peers that refused our join because they hold our name at another
        # address: the delay before asking again (see `_retry_refused_join`),
        # and those we will ask again (one timer per peer, whatever the
        # number of refusals).
        self._refused_joins: dict[Address, float] = {}
        self._rejoins_due: set[Address] = set()
        self._leaving = False
        self._table: bytes | None = None  # encoded push-pull records, see _push_pull_bytes
        self._catch_ups_left = 0
        self._catch_up_seed_first = False
        self._catch_up_pending = False
        self._heal_catch_up_at: float | None = None
        self._upheavals: list[float] = []
        # Refusals about members we hold dead, awaiting our own check (see
        # `_check_for_peer`): name -> (incarnation, who asked).
        self._refusal_checks: dict[str, tuple[int, Address]] = {}

        self._broadcasts = TransmitLimitedQueue()
        self._app_broadcasts = TransmitLimitedQueue()
        self._awareness = Awareness(
            config.awareness_max_multiplier, enabled=config.lifeguard_awareness
        )
        self._seq = rng.randrange(_SEQ_MASK + 1)
        self._ack_waiters: dict[int, _Probe | _Relay] = {}
        self._probe: _Probe | None = None

        self._timers: list[tuple[float, int, _Timer]] = []
        self._timer_seq = 0
        self._gossip_timer: _Timer | None = None

        self._packets: list[tuple[Address, bytes]] = []
        self._streams: list[tuple[Address, bytes]] = []
        self._events: list[Event] = []
        self._stats = _Counters()
        self._drops: dict[str, int] = {}

        # Random initial phases, so nodes started together do not probe,
        # push-pull or reconnect in lockstep (memberlist staggers the same way).
        self._schedule(now + rng.uniform(0, config.probe_interval), self._probe_tick)
        self._push_pull_phase: float | None = now
        if config.push_pull_interval > 0:
            self._schedule(now + rng.uniform(0, config.push_pull_interval), self._push_pull_tick)
        self._schedule(now + rng.uniform(0, config.reconnect_interval), self._reconnect_tick)

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        """This member's name."""
        return self._name

    @property
    def address(self) -> Address:
        """This member's advertised address."""
        return self._address

    @property
    def incarnation(self) -> int:
        """Our current incarnation; only we ever raise it."""
        return self._self.incarnation

    @property
    def health_score(self) -> int:
        """The Lifeguard health score: 0 is healthy, higher probes slower."""
        return self._awareness.score

    @property
    def config(self) -> MembershipConfig:
        """The configuration in use."""
        return self._config

    # ------------------------------------------------------------------ inputs

    def receive_packet(self, data: bytes, src: Address, now: float) -> None:
        """Handle one datagram received from ``src``.

        Error handling: a datagram that fails to decode is dropped whole and
        counted under its reason; nothing is raised and no state changes.
        """
        self._now = now
        stats = self._stats
        stats.packets_received += 1
        stats.bytes_received += len(data)
        try:
            messages = decode_packet(data, self._limits)
        except CodecError as exc:
            self._drop(exc.reason)
            return
        stats.messages_received += len(messages)
        for message in messages:
            self._handle_packet_message(message, src, now)
        sender = self._by_address.get(src)
        if sender is not None and sender.state is _DEAD:
            self._revive(sender.name, sender.address, now)

    def receive_stream(self, data: bytes, src: Address, now: float) -> bytes | None:
        """Handle one inbound stream request and return the reply to send back.

        Args:
            data: the whole request as read from the stream.
            src: the peer's address (informational).
            now: the current time.

        Returns:
            The reply bytes to write before closing the stream, or None to close
            it without a reply (an application message, a ping meant for
            another name, or a refused request).

        Error handling: a request that fails to decode is counted under its
        reason and answered with None.
        """
        self._now = now
        stats = self._stats
        stats.streams_received += 1
        stats.stream_bytes_received += len(data)
        try:
            message = decode_stream(data, self._limits, STREAM_REQUEST_TYPES)
        except CodecError as exc:
            self._drop(exc.reason)
            return None
        stats.messages_received += 1
        reply: bytes | None = None
        if isinstance(message, Ping):
            if message.target == self._name:
                reply = encode_stream(Ack(seq=message.seq))
            else:
                self._drop("wrong_target")
        elif isinstance(message, PushPull):
            stats.push_pulls_served += 1
            if not self._refuse_name_claim(message, now):
                # Merge first: a refutation it triggers then rides in our reply.
                self._merge_push_pull(message, now)
            # A refused sender learns from our table that its name is taken.
            reply = self._push_pull_bytes(join=False, reply=True)
        elif isinstance(message, UserMsg):
            self._on_user(message, now)
        if reply is not None:
            stats.stream_bytes_sent += len(reply)
        return reply

    def receive_stream_reply(self, data: bytes, src: Address, now: float) -> None:
        """Handle the reply to a stream request we opened (see `streams_to_open`).

        Error handling: a reply that fails to decode is dropped and counted.
        """
        self._now = now
        stats = self._stats
        stats.stream_replies_received += 1
        stats.stream_bytes_received += len(data)
        try:
            message = decode_stream(data, self._limits, STREAM_REPLY_TYPES)
        except CodecError as exc:
            self._drop(exc.reason)
            return
        stats.messages_received += 1
        if isinstance(message, Ack):
            self._on_ack(message, now)
        elif isinstance(message, PushPull):
            if self._join_refused(message):
                self._retry_refused_join(src, now)
                return
            self._refused_joins.pop(src, None)
            known = (len(self._nodes), self._counts[_ALIVE])
            self._merge_push_pull(message, now, asked=True)
            if known[0] == 1 and len(self._nodes) > 1:
                self._announce(src)
            if self._catch_up_pending:
                self._catch_up_pending = False
                if len(self._nodes) > known[0] or self._counts[_ALIVE] > known[1]:
                    self._schedule_catch_up(now)
                else:
                    self._catch_ups_left = 0  # nothing new: the round is over

    def stream_failed(self, dst: Address, now: float) -> None:
        """Report that a stream we opened to ``dst`` failed or timed out.

        Counted only: probes and joins already recover by their own deadlines
        and the healing loop.
        """
        self._now = now
        self._stats.streams_failed += 1

    def probe_refused(self, address: Address, now: float) -> None:
        """Report that the host at ``address`` refused a packet or a connection of ours.

        The driver calls this for an ICMP port unreachable drawn by a datagram
        (Linux ``IP_RECVERR``) and for a refused TCP connection. The host is
        up and nothing listens on the member's port: its process is gone.
        That is stronger evidence than silence, so the member is suspected at
        once and, when refusals from ``refusal_confirmations`` distinct
        members agree, declared dead (`_on_refused`). A refusal from an
        address no live member holds is counted and ignored.
        """
        self._now = now
        self._stats.refusals += 1
        self._weigh_refusal(address, now)

    def _weigh_refusal(self, address: Address, now: float) -> None:
        if not self._config.refusal_confirmations or self._leaving:
            return
        node = self._by_address.get(address)
        if node is None or node is self._self:
            return
        if not self._is_live(node):
            self._answer_refusal_check(node)
            return
        probe = self._probe
        if probe is not None and probe.target is node:
            # The probe has its answer; our own health is not in question, so
            # it ends without touching the health score.
            self._end_probe(probe)
        refused = Refused(incarnation=node.incarnation, name=node.name, source=self._name)
        self._on_refused(refused, now)

    def watch_closed(self, name: str, address: Address, now: float) -> None:
        """Report that our watch stream to ``name`` at ``address`` closed without a goodbye.

        The kernel of a live host closes a dead process's connections at
        once, so this is a refusal by another route: it is weighed exactly
        as `probe_refused` (suspect at once, gossip the evidence, declared
        dead only once another member's probe is refused too). A report
        about a member that no longer holds that address (it moved, or is
        no longer live) is counted and ignored.
        """
        self._now = now
        self._stats.watch_closures += 1
        node = self._nodes.get(name)
        if node is None or node.address != address or not self._is_live(node):
            return
        self._weigh_refusal(address, now)

    def watch_targets(self) -> list[tuple[str, Address]]:
        """Return the members to hold a watch stream to, as ``(name, address)``.

        Our ``watch_successors`` successors on the ring of live members
        (`shoal.membership.watch`); it changes only when a member joins, dies
        or leaves, so the driver re-dials rarely.
        """
        k = self._config.watch_successors
        if not k or self._leaving:
            return []
        nodes = self._nodes
        live = [name for name, node in nodes.items() if self._is_live(node)]
        return [(name, nodes[name].address) for name in watch_targets(self._name, live, k)]

    def tick(self, now: float) -> None:
        """Fire every timer due at ``now`` (probes, suspicions, gossip, push-pull, healing)."""
        self._now = now
        timers = self._timers
        for _ in range(_MAX_TIMERS_PER_TICK):
            if not timers or timers[0][0] > now:
                return
            _, _, timer = heapq.heappop(timers)
            if timer.cancelled:
                continue
            timer.cancelled = True
            timer.callback(now)

    def join(self, seeds: Iterable[Address], now: float) -> None:
        """Join a cluster by push-pulling with every seed address.

        The seeds are remembered: the healing loop push-pulls any seed that is
        not a live member every ``reconnect_interval``, forever, so a failed
        join is retried and a bootstrap split merges. Our own address is
        skipped.

        Raises:
            LocalProtocolError: a seed is not a (host, port) tuple, or we left.
        """
        self._now = now
        if self._leaving:
            raise LocalProtocolError("cannot join after leaving; create a new engine")
        for seed in seeds:
            address = _check_address(seed, "seed")
            if address == self._address:
                continue
            if address not in self._seeds:
                self._seeds.append(address)
            self._open_push_pull(address, join=True)
        # Members that join alongside us (a whole cluster started at once)
        # reach the seed after our exchange and reach us only by gossip, which
        # may miss us. Catch-up push-pulls with random members shortly after
        # joining find them without waiting a full push-pull interval; they
        # repeat while they still teach us new members (a few times at most).
        self._catch_ups_left = _CATCH_UP_PUSH_PULLS
        self._catch_up_seed_first = True
        self._schedule_catch_up(now)

    def leave(self, now: float) -> None:
        """Leave the cluster gracefully.

        Broadcasts ``dead`` about ourselves with ourselves as source (others
        record ``left``), stops probing, push-pull and healing, and keeps
        answering pings and gossiping until the driver stops. Wait for
        `leave_complete` (bounded by a timeout) before shutting down. Leaving
        twice does nothing.
        """
        self._now = now
        if self._leaving:
            return
        self._leaving = True
        me = self._self
        self._set_state(me, _LEFT, now)
        if self._probe is not None:
            self._end_probe(self._probe)
        self._queue_broadcast(
            me.name, Dead(incarnation=me.incarnation, name=me.name, source=me.name), now
        )

    def leave_complete(self) -> bool:
        """Say whether our leave has been sent as often as a broadcast is.

        True after `leave` once the leave message was piggybacked its
        ``retransmit_mult * ceil(log10(n + 1))`` times, or at once when no
        other member is alive.
        """
        if not self._leaving:
            return False
        return self._name not in self._broadcasts or self._live_count() == 0

    def forget(self, name: str, now: float) -> bool:
        """Reap a dead or left member now and stop trying to reconnect to it.

        Serf's ``force-leave``: an operator knows a failed member is gone for
        good, so it should not linger for ``dead_retention`` nor be retried.
        Only this engine forgets; ``shoal force-leave`` asks every member.
        A `MemberReaped` event follows.

        Returns:
            True if the member was reaped, False if it is not known.

        Raises:
            LocalProtocolError: the member is alive or suspect (it would
                refute at once), or is ourselves.
        """
        self._now = now
        node = self._nodes.get(name)
        if node is None:
            self._remembered.pop(name, None)
            return False
        if node is self._self or not (node.state is _DEAD or node.state is _LEFT):
            raise LocalProtocolError(f"{name} is {node.state.value}, not failed or left")
        if node in self._probe_list:  # or the next reshuffle would reap it twice
            position = self._probe_list.index(node)
            del self._probe_list[position]
            if position < self._probe_index:
                self._probe_index -= 1
        self._reap(node, now)
        self._remembered.pop(name, None)
        return True

    def update_meta(self, meta: Mapping[str, str], now: float) -> None:
        """Announce new metadata under a new incarnation (memberlist ``UpdateNode``).

        Raises:
            LocalProtocolError: the metadata is malformed or too large, or we left.
        """
        self._now = now
        if self._leaving:
            raise LocalProtocolError("cannot update metadata after leaving")
        me = self._self
        me.meta = self._check_meta(meta)
        me.incarnation = refute_incarnation(me.incarnation, me.incarnation)
        self._table = None
        self._queue_self_alive(now)

    def broadcast_app(self, key: str, data: bytes, now: float | None = None) -> None:
        """Queue an application broadcast named ``key``; see `MembershipDelegate`.

        A queued broadcast with the same key is replaced. Data that does not
        fit in one packet goes over streams to ``gossip_nodes`` random members.

        Args:
            key: the broadcast's name (non-empty, at most ``max_name_length``).
            data: the payload (at most ``max_app_message_size`` bytes).
            now: the current time; defaults to the time of the last call.

        Raises:
            LocalProtocolError: the key or data is out of bounds.
        """
        if not _valid_name(key, self._config.max_name_length):
            raise LocalProtocolError("key must be a non-empty string within max_name_length")
        if not _valid_bytes(data, self._config.max_app_message_size):
            raise LocalProtocolError("data must be bytes within max_app_message_size")
        if now is not None:
            self._now = now
        self._queue_app(key, data, self._now)

    # ------------------------------------------------------------------ outputs

    def packets_to_send(self) -> list[tuple[Address, bytes]]:
        """Take the datagrams to send, as (destination, bytes), oldest first."""
        packets = self._packets
        if not packets:
            return []
        self._packets = []
        stats = self._stats
        stats.packets_sent += len(packets)
        stats.bytes_sent += sum(len(p) for _, p in packets)
        return packets

    def streams_to_open(self) -> list[tuple[Address, bytes]]:
        """Take the stream requests to make, as (destination, request bytes).

        For each: connect, write the request, read the reply until the peer
        closes (at most ``max_stream_size`` bytes, within ``stream_timeout``)
        and pass a non-empty reply to `receive_stream_reply`; on any failure
        call `stream_failed`. An empty reply needs no call.
        """
        streams = self._streams
        if not streams:
            return []
        self._streams = []
        stats = self._stats
        stats.streams_opened += len(streams)
        stats.stream_bytes_sent += sum(len(s) for _, s in streams)
        return streams

    def events(self) -> list[Event]:
        """Take the events raised since the last call, in order."""
        events = self._events
        if not events:
            return []
        self._events = []
        return events

    def next_deadline(self) -> float:
        """Return when `tick` should next be called (may already be past)."""
        timers = self._timers
        while timers[0][2].cancelled:
            heapq.heappop(timers)
        return timers[0][0]

    # ------------------------------------------------------------------ queries

    def members(self) -> list[Member]:
        """Return every member we hold (ourselves included), dead and left ones too."""
        return [node.snapshot() for node in self._nodes.values()]

    def member(self, name: str) -> Member | None:
        """Return the member called ``name``, or None if we do not hold it."""
        node = self._nodes.get(name)
        return None if node is None else node.snapshot()

    def statistics(self) -> MembershipStatistics:
        """Return a snapshot of the counters."""
        counts = self._counts
        return MembershipStatistics(
            **msgspec.structs.asdict(self._stats),
            dropped=dict(self._drops),
            health_score=self._awareness.score,
            incarnation=self._self.incarnation,
            alive=counts[_ALIVE],
            suspect=counts[_SUSPECT],
            dead=counts[_DEAD],
            left=counts[_LEFT],
        )

    # ------------------------------------------------------------------ timers

    def _schedule(self, deadline: float, callback: Callable[[float], None]) -> _Timer:
        timer = _Timer(callback)
        self._timer_seq += 1
        heapq.heappush(self._timers, (deadline, self._timer_seq, timer))
        return timer

    # ------------------------------------------------------------------ sending

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & _SEQ_MASK
        return self._seq

    def _live_count(self) -> int:
        counts = self._counts
        return counts[_ALIVE] + counts[_SUSPECT]

    def _send(self, address: Address, messages: list[Message]) -> None:
        """Queue one packet with ``messages`` first, topped up with broadcasts."""
        parts = [encode_message(m) for m in messages]
        extra = self._piggyback(sum(len(p) for p in parts), len(parts), gossip=False)
        # A queued broadcast identical to a message already in the packet
        # (a refutation sent on purpose) is counted as sent, not repeated.
        parts += [p for p in extra if p not in parts]
        self._packets.append((address, encode_packet(parts)))

    def _piggyback(self, used: int, count: int, *, gossip: bool) -> list[bytes]:
        """Take queued broadcasts for a packet already holding ``used`` bytes in ``count`` parts.

        Application broadcasts are offered ``app_budget_share`` of the free
        space first, membership news takes what it needs of the rest, then
        application broadcasts take any leftover. On a gossip packet an
        application broadcast larger than its share may take the whole space,
        so it cannot starve behind a steady stream of membership news.
        """
        free = self._config.packet_budget - PACKET_OVERHEAD - used
        room = MAX_PACKET_MESSAGES - count
        broadcasts = self._broadcasts
        app = self._app_broadcasts
        if free <= 0 or room <= 0 or (not broadcasts and not app):
            return []
        taken_app: list[QueuedBroadcast] = []
        if app:
            taken_app = app.take(int(free * self._config.app_budget_share), room)
            if not taken_app and gossip:
                taken_app = app.take(free, 1)
            free -= sum(len(b.message) for b in taken_app)
            room -= len(taken_app)
        taken: list[QueuedBroadcast] = []
        if broadcasts and free > 0 and room > 0:
            taken = broadcasts.take(free, room)
            free -= sum(len(b.message) for b in taken)
            room -= len(taken)
        if app and free > 0 and room > 0:
            taken_app.extend(app.take(free, room))
        limit = retransmit_limit(self._config.retransmit_mult, self._live_count())
        app.release(taken_app, limit)
        broadcasts.release(taken, limit)
        return [b.message for b in taken_app] + [b.message for b in taken]

    def _queue_broadcast(self, key: str, message: Message, now: float) -> None:
        # A leave (a death its subject declares) is not sped by refusals.
        repeats = DEAD_REPEATS if type(message) is Dead and message.source != message.name else 1
        self._broadcasts.queue(key, encode_message(message), repeats=repeats)
        self._stats.broadcasts_queued += 1
        self._arm_gossip(now)

    def _self_alive(self) -> Alive:
        """Our own ``alive`` at our current incarnation."""
        me = self._self
        return Alive(incarnation=me.incarnation, name=me.name, address=me.address, meta=me.meta)

    def _queue_self_alive(self, now: float) -> None:
        self._queue_broadcast(self._name, self._self_alive(), now)

    def _queue_app(self, key: str, data: bytes, now: float) -> None:
        encoded = encode_message(UserMsg(key=key, data=data))
        if len(encoded) <= self._config.packet_budget - PACKET_OVERHEAD:
            self._app_broadcasts.queue(key, encoded)
            self._stats.app_broadcasts_queued += 1
            self._arm_gossip(now)
            return
        # Too large for any packet: hand it to a few members over streams.
        # Each receiver that finds it new re-broadcasts it the same way, and
        # push-pull's application state repairs what this misses.
        self._app_broadcasts.discard(key)
        request = bytes((PROTOCOL_VERSION,)) + encoded
        for node in self._random_nodes(self._config.gossip_nodes, self._is_live):
            self._streams.append((node.address, request))
            self._stats.app_stream_broadcasts += 1

    def _arm_gossip(self, now: float) -> None:
        if self._gossip_timer is None:
            delay = self._config.gossip_interval * self._rng.random()
            self._gossip_timer = self._schedule(now + delay, self._gossip_tick)

    def _revive(self, name: str, address: Address, now: float) -> None:
        """A member we hold dead (or reaped) is talking to us: ask it directly how it is.

        After a partition heals, a member that missed the broadcast refuting
        a death would otherwise hold the member dead until its next
        push-pull (90 s at 100 members). A push-pull with the sender settles
        it at once; one per `REVIVE_SPACING` per member bounds the cost.
        """
        last = self._revive_at.get(name)
        if last is not None and now - last < REVIVE_SPACING:
            return
        self._revive_at[name] = now
        if len(self._revive_at) > 4 * len(self._nodes):
            # Forget old entries so the map cannot outgrow the membership.
            self._revive_at = {k: v for k, v in self._revive_at.items() if now - v < REVIVE_SPACING}
        self._open_push_pull(address, join=False)

    def _open_push_pull(self, address: Address, *, join: bool) -> None:
        self._stats.push_pulls += 1
        self._streams.append((address, self._push_pull_bytes(join, reply=False)))

    def _push_pull_bytes(self, join: bool, *, reply: bool) -> bytes:
        table = self._table
        if table is None:
            # Encoded once per change of any record, not once per push-pull:
            # in a quiet cluster of n members this saves O(n) work per exchange.
            # In name order, so members holding the same records send the
            # same bytes, which receivers then decode once (the codec's
            # recalled tables).
            table = self._table = encode_table(
                (node.name, node.address, node.incarnation, node.state, node.meta)
                for node in sorted(self._nodes.values(), key=_name_of)
            )
        app_state = b"" if self._delegate is None else self._delegate.local_state()
        return encode_push_pull(self._name, join, reply, table, app_state)

    # ------------------------------------------------------------------ selection

    @staticmethod
    def _is_live(node: _Node) -> bool:
        return node.state is _ALIVE or node.state is _SUSPECT

    def _random_nodes(self, k: int, accept: Callable[[_Node], bool]) -> list[_Node]:
        """Pick up to ``k`` distinct random members (never ourselves) that ``accept`` likes.

        Small lists are filtered and sampled exhaustively; large ones are
        sampled by at most ``3 * n`` random draws (memberlist ``kRandomNodes``),
        which costs O(k) when most members qualify.
        """
        nodes = self._probe_list
        n = len(nodes)
        if n == 0 or k <= 0:
            return []
        if n <= 3 * k:
            candidates = [node for node in nodes if accept(node)]
            if len(candidates) <= k:
                return candidates
            return self._rng.sample(candidates, k)
        picked: list[_Node] = []
        rng = self._rng
        for _ in range(3 * n):
            node = nodes[rng.randrange(n)]
            if node not in picked and accept(node):
                picked.append(node)
                if len(picked) >= k:
                    break
        return picked

    # ------------------------------------------------------------------ probing

    def _probe_period(self) -> float:
        return self._awareness.scale(self._config.probe_interval)

    def _probe_tick(self, now: float) -> None:
        self._schedule(now + self._probe_period(), self._probe_tick)
        if self._probe is not None:
            # The previous probe's period is over (its deadline shares this time).
            self._probe_failed(self._probe, now)
        if self._leaving:
            return
        target = self._next_probe_target(now)
        if target is not None:
            self._start_probe(target, now)

    def _next_probe_target(self, now: float) -> _Node | None:
        for _ in range(2 * len(self._probe_list) + 2):
            if self._probe_index >= len(self._probe_list):
                self._reset_probe_list(now)
                if not self._probe_list:
                    return None
            node = self._probe_list[self._probe_index]
            self._probe_index += 1
            if node.state is _ALIVE or node.state is _SUSPECT:
                return node
        return None

    def _reset_probe_list(self, now: float) -> None:
        """Reap expired dead and left members, then reshuffle (once per round)."""
        retention = self._config.dead_retention
        kept: list[_Node] = []
        for node in self._probe_list:
            if (node.state is _DEAD or node.state is _LEFT) and (
                now - node.state_changed_at > retention
            ):
                self._reap(node, now)
            else:
                kept.append(node)
        self._rng.shuffle(kept)
        self._probe_list = kept
        self._probe_index = 0

    def _reap(self, node: _Node, now: float) -> None:
        del self._nodes[node.name]
        self._table = None
        if self._by_address.get(node.address) is node:
            del self._by_address[node.address]
        self._counts[node.state] -= 1
        if node.state is _DEAD:
            del self._dead[node.name]
            self._remembered[node.name] = (node.address, now + self._config.reconnect_timeout)
        self._events.append(MemberReaped(member=node.snapshot()))

    def _start_probe(self, target: _Node, now: float) -> None:
        config = self._config
        probe = _Probe(target, self._next_seq())
        self._probe = probe
        self._ack_waiters[probe.seq] = probe
        self._stats.probes += 1
        messages: list[Message] = []
        if target.state is _SUSPECT and config.lifeguard_buddy:
            # Lifeguard buddy system: tell the suspect, so it can refute. The
            # suspicion goes ahead of the ping so the refutation is already
            # queued when the target acks, and rides back on the ack.
            messages.append(
                Suspect(incarnation=target.incarnation, name=target.name, source=self._name)
            )
        messages.append(Ping(seq=probe.seq, target=target.name, source=self._name))
        self._send(target.address, messages)
        timeout = config.probe_timeout
        if config.awareness_scales_probe_timeout:
            timeout = self._awareness.scale(timeout)
        probe.timer = self._schedule(now + timeout, lambda t: self._probe_timeout(probe, t))
        probe.deadline_timer = self._schedule(
            now + self._probe_period(), lambda t: self._probe_deadline(probe, t)
        )

    def _probe_timeout(self, probe: _Probe, now: float) -> None:
        if probe is not self._probe or probe.acked:
            return
        config = self._config
        target = probe.target
        helpers = self._random_nodes(
            config.indirect_checks, lambda n: n is not target and n.state is _ALIVE
        )
        request = PingReq(
            seq=probe.seq,
            target=target.name,
            target_address=target.address,
            nack=config.lifeguard_nack,
            source=self._name,
        )
        for helper in helpers:
            self._send(helper.address, [request])
        self._stats.indirect_probes += len(helpers)
        if config.lifeguard_nack:
            probe.expected_nacks = len(helpers)
        if config.tcp_fallback_ping:
            ping = Ping(seq=probe.seq, target=target.name, source=self._name)
            self._streams.append((target.address, encode_stream(ping)))
            self._stats.tcp_fallback_probes += 1

    def _probe_deadline(self, probe: _Probe, now: float) -> None:
        if probe is self._probe:
            self._probe_failed(probe, now)

    def _end_probe(self, probe: _Probe) -> None:
        self._probe = None
        if self._ack_waiters.get(probe.seq) is probe:
            del self._ack_waiters[probe.seq]
        for timer in (probe.timer, probe.deadline_timer):
            if timer is not None:
                timer.cancelled = True
        # Each timer's callback holds the probe: dropping the probe's hold on
        # its timers breaks the cycle, so reference counting frees the probe
        # and its timers once they leave the heap. Left to the cyclic
        # collector, a probe a second per node was most of what it collected,
        # and what its full collections walked (a third of a simulator's CPU).
        probe.timer = probe.deadline_timer = None

    def _probe_failed(self, probe: _Probe, now: float) -> None:
        self._end_probe(probe)
        self._stats.probe_failures += 1
        # Lifeguard: missing nacks mean we, not the target, may be the slow
        # one; without helpers that could nack, any failure counts once.
        if probe.expected_nacks > 0:
            self._awareness.apply_delta(probe.expected_nacks - probe.nacks)
        else:
            self._awareness.apply_delta(1)
        target = probe.target
        if self._nodes.get(target.name) is target and self._is_live(target):
            suspect = Suspect(incarnation=target.incarnation, name=target.name, source=self._name)
            self._on_suspect(suspect, now)
            if self._config.lifeguard_buddy:
                # Buddy system, eagerly: tell the suspect at once rather than
                # at its next probe, which round-robin may put seconds away.
                # One packet; if the member is really down it is lost anyway.
                self._send(target.address, [suspect])

    def _on_ack(self, ack: Ack, now: float) -> None:
        waiter = self._ack_waiters.pop(ack.seq, None)
        if waiter is None:
            return  # late, duplicate or unsolicited: harmless
        self._stats.acks_received += 1
        if isinstance(waiter, _Probe):
            waiter.acked = True
            self._end_probe(waiter)
            self._awareness.apply_delta(-1)
        else:
            if waiter.timer is not None:
                waiter.timer.cancelled = True
                waiter.timer = None  # no cycle through its callback (see `_end_probe`)
            self._send(waiter.origin, [Ack(seq=waiter.origin_seq)])

    def _on_nack(self, nack: Nack) -> None:
        waiter = self._ack_waiters.get(nack.seq)
        if isinstance(waiter, _Probe) and waiter.nacks < waiter.expected_nacks:
            waiter.nacks += 1
            self._stats.nacks_received += 1

    def _on_ping_req(self, request: PingReq, src: Address, now: float) -> None:
        self._stats.indirect_probes_served += 1
        if request.target == self._name:
            self._send(src, [Ack(seq=request.seq)])
            return
        seq = self._next_seq()
        relay = _Relay(src, request.seq, request.nack)
        self._ack_waiters[seq] = relay
        self._send(
            request.target_address, [Ping(seq=seq, target=request.target, source=self._name)]
        )
        relay.timer = self._schedule(
            now + self._config.probe_timeout, lambda t: self._relay_timeout(seq, relay)
        )

    def _relay_timeout(self, seq: int, relay: _Relay) -> None:
        relay.timer = None  # no cycle through its callback (see `_end_probe`)
        if self._ack_waiters.get(seq) is relay:
            del self._ack_waiters[seq]
        if relay.want_nack:
            self._send(relay.origin, [Nack(seq=relay.origin_seq)])
            self._stats.nacks_sent += 1

    # ------------------------------------------------------------------ gossip loops

    def _gossip_tick(self, now: float) -> None:
        self._gossip_timer = None
        if not self._broadcasts and not self._app_broadcasts:
            return  # idle clusters send nothing; the next broadcast re-arms us
        dead_window = self._config.gossip_to_the_dead_time

        def eligible(node: _Node) -> bool:
            state = node.state
            if state is _ALIVE or state is _SUSPECT:
                return True
            return state is _DEAD and now - node.state_changed_at <= dead_window

        targets = self._random_nodes(self._config.gossip_nodes, eligible)
        if not targets:
            return  # alone: the queue waits for the next member to appear
        for node in targets:
            parts = self._piggyback(0, 0, gossip=True)
            if not parts:
                break
            self._packets.append((node.address, encode_packet(parts)))
            self._stats.gossip_packets += 1
        if self._broadcasts or self._app_broadcasts:
            self._gossip_timer = self._schedule(
                now + self._config.gossip_interval, self._gossip_tick
            )

    def _push_pull_tick(self, now: float) -> None:
        config = self._config
        period = push_pull_scale(config.push_pull_interval, self._live_count())
        if self._push_pull_phase is not None:
            # The first tick was staggered over the unscaled interval, before
            # we knew the cluster's size; spread the first exchange over the
            # scaled period instead, or a large cluster started together
            # push-pulls all at once.
            target = self._push_pull_phase + self._rng.uniform(0, period)
            self._push_pull_phase = None
            if target > now:
                self._schedule(target, self._push_pull_tick)
                return
        self._schedule(now + period, self._push_pull_tick)
        if self._leaving:
            return
        for node in self._random_nodes(1, lambda n: n.state is _ALIVE):
            self._open_push_pull(node.address, join=False)

    def _schedule_catch_up(self, now: float) -> None:
        if self._catch_ups_left > 0:
            self._catch_ups_left -= 1
            delay = self._config.probe_interval * self._rng.uniform(1.0, 2.0)
            self._schedule(now + delay, self._catch_up)

    def _catch_up(self, now: float) -> None:
        if self._leaving:
            return
        # The first catch-up after a join goes to a seed: in a cluster
        # started at once, everyone joined through it, so it knows them all.
        first = self._catch_up_seed_first
        self._catch_up_seed_first = False
        seeds = [self._by_address.get(seed) for seed in self._seeds] if first else []
        partners = [n for n in seeds if n is not None and n.state is _ALIVE]
        if partners:
            partner: _Node | None = self._rng.choice(partners)
        else:
            picked = self._random_nodes(1, lambda n: n.state is _ALIVE)
            partner = picked[0] if picked else None
        if partner is not None:
            self._catch_up_pending = True
            self._open_push_pull(partner.address, join=False)

    def _reconnect_tick(self, now: float) -> None:
        config = self._config
        rng = self._rng
        jitter = config.reconnect_jitter
        self._schedule(
            now + config.reconnect_interval * rng.uniform(1 - jitter, 1 + jitter),
            self._reconnect_tick,
        )
        if self._leaving:
            return
        remembered = self._remembered
        for name in [n for n, (_, forget_at) in remembered.items() if forget_at <= now]:
            del remembered[name]
        tried: set[Address] = set()
        for seed in self._seeds:
            node = self._by_address.get(seed)
            if node is None or not self._is_live(node):
                tried.add(seed)
                self._stats.reconnect_attempts += 1
                self._open_push_pull(seed, join=True)
        failed = len(self._dead) + len(remembered)
        if not failed:
            return
        # Serf's rule: each dead member is retried about once per interval
        # cluster-wide, so a node of a large healthy side rarely dials out and
        # a node cut off alone dials every interval.
        if rng.random() >= failed / max(1, self._live_count()):
            return
        index = rng.randrange(failed)
        if index < len(self._dead):
            address = list(self._dead.values())[index].address
        else:
            address = list(remembered.values())[index - len(self._dead)][0]
        if address not in tried and address != self._address:
            self._stats.reconnect_attempts += 1
            self._open_push_pull(address, join=True)

    # ------------------------------------------------------------------ receiving

    def _drop(self, reason: str) -> None:
        self._drops[reason] = self._drops.get(reason, 0) + 1

    def _handle_packet_message(self, message: Message, src: Address, now: float) -> None:
        if isinstance(message, Ping):
            if message.target == self._name:
                self._send(src, [Ack(seq=message.seq)])
                if message.source in self._remembered:
                    # A member we reaped is probing us: it never learned of
                    # its death (a lone node slowed by its health score can
                    # still count most of us alive), so nobody would tell it.
                    self._revive(message.source, src, now)
            else:
                self._drop("wrong_target")
        elif isinstance(message, Ack):
            self._on_ack(message, now)
        elif isinstance(message, Alive):
            self._on_alive(message, now)
        elif isinstance(message, Suspect):
            self._on_suspect(message, now, src=src)
        elif isinstance(message, Dead):
            self._on_dead(message, now, src=src)
        elif isinstance(message, PingReq):
            self._on_ping_req(message, src, now)
        elif isinstance(message, Nack):
            self._on_nack(message)
        elif isinstance(message, UserMsg):
            self._on_user(message, now)
        elif isinstance(message, Refused):
            self._on_refused(message, now, src=src)
        # PushPull never reaches here: the codec refuses it in packets.

    def _on_user(self, message: UserMsg, now: float) -> None:
        self._stats.app_messages_received += 1
        if self._delegate is None:
            return
        try:
            news = self._delegate.notify_message(message.data)
        except RemoteProtocolError:
            self._drop("app_message")
            return
        if news:
            self._queue_app(message.key, message.data, now)

    def _merge_push_pull(self, message: PushPull, now: float, *, asked: bool = False) -> None:
        # A node that knew nobody (a fresh joiner) does not echo the table it
        # just learned: everyone else already knows it. A node that had peers
        # re-gossips what was new to it, which is how joins and healed
        # partitions spread (memberlist re-gossips in both cases; this saves
        # a joiner n broadcasts).
        echo = self._live_count() - (0 if self._leaving else 1) > 0
        source = message.source
        nodes = self._nodes
        own = self._name
        me = self._self
        for entry in message.members:
            state = entry.state
            if (
                asked
                and entry.name == own
                and not incarnation_in_reach(me.incarnation, entry.incarnation)
                and not self._leaving
            ):
                # Rule 5's exception: a reply we asked for is how a restarted
                # member learns how far its previous life got.
                self._refute(entry.incarnation, now)
                continue
            if state is _ALIVE:
                name = entry.name
                node = nodes.get(name)
                if node is None:
                    if name != own and not echo and name != source:
                        # A member new to us that we do not pass on: what
                        # `_on_alive` would do, without building the message
                        # (a joiner learns the whole table this way).
                        self._learn(name, entry.address, entry.meta, entry.incarnation, now)
                        continue
                elif (
                    node.incarnation >= entry.incarnation
                    and node.address == entry.address
                    and name != own
                ):
                    continue  # old news, as most of a table is in a quiet cluster
                alive = Alive(
                    incarnation=entry.incarnation,
                    name=entry.name,
                    address=entry.address,
                    meta=entry.meta,
                )
                self._on_alive(alive, now, rebroadcast=echo or entry.name == source)
            elif state is _LEFT:
                leave = Dead(incarnation=entry.incarnation, name=entry.name, source=entry.name)
                self._on_dead(leave, now)
            else:
                # memberlist: a remote "dead" is only a suspicion here; the
                # member gets its chance to refute. Unlike memberlist, it is
                # attributed to the remote and never counts as a confirmation
                # of a suspicion we already hold: a table entry echoes
                # whatever suspicion the remote heard, it is no independent
                # probe, and counting it collapsed timeouts to the minimum.
                suspect = Suspect(incarnation=entry.incarnation, name=entry.name, source=source)
                self._on_suspect(suspect, now, confirm=False)
        if message.app_state and self._delegate is not None:
            try:
                self._delegate.merge_remote_state(message.app_state, source)
            except RemoteProtocolError:
                self._drop("app_state")

    def _refuse_name_claim(self, message: PushPull, now: float) -> bool:
        """Refuse a push-pull whose sender claims a name held at another address.

        Without this, a second node started with a live member's name would
        be merged piecemeal: its alive records ignored, but its table, its
        application state and its later leave taken as the real member's. A
        refused sender is told by our reply (see `_join_refused`); a name
        whose holder is dead past ``dead_node_reclaim_time`` (or left) may
        move, so a node restarted at a new address gets in once its old self
        is gone.
        """
        name = message.source
        claimed = next((e.address for e in message.members if e.name == name), None)
        if claimed is None:
            return False
        node = self._self if name == self._name else self._nodes.get(name)
        if node is None or node.address == claimed:
            return False
        if node is not self._self and address_change_allowed(
            node.state, node.state_changed_at, now, self._config.dead_node_reclaim_time
        ):
            return False
        self._stats.name_conflicts += 1
        self._events.append(
            NameConflict(
                name=name, known_address=node.address, claimed_address=claimed, refused=True
            )
        )
        return True

    def _announce(self, peer: Address) -> None:
        """Tell the members a fresh join just taught us that we are alive, directly.

        Otherwise they hear it by gossip from ``peer``, the member we joined
        through: a round of ``gossip_interval`` per hop, 0.4 s until every
        one of 20 members listed a new node, twice what the join itself
        took. One packet holding our ``alive`` goes to every live member, or
        to `_JOIN_ANNOUNCE_MAX` random ones in a larger cluster, where
        gossip from that many sources spreads in a round or two. Nothing is
        piggybacked, so the broadcast queue is untouched.
        """
        me = self._self
        packet = encode_packet([encode_message(self._self_alive())])

        def other_live(node: _Node) -> bool:
            return node.state is _ALIVE and node is not me and node.address != peer

        for node in self._random_nodes(_JOIN_ANNOUNCE_MAX, other_live):
            self._packets.append((node.address, packet))

    def _retry_refused_join(self, peer: Address, now: float) -> None:
        """Ask ``peer`` again soon: the holder of our name it knows may be dying.

        A node restarted at a new address (a rescheduled container, a new
        gossip port) is refused while its old self is still alive or suspect
        in the peer's view. Once that old self is declared dead, within a
        few probe intervals of the crash, the name may move; waiting for the
        healing loop would add up to ``reconnect_interval`` more (5 to 11 s
        measured between two processes). So a refused join is retried after
        ``probe_interval``, then at doubling delays up to
        ``reconnect_interval``, until a reply takes us in. A true impostor,
        the real node alive, costs the peer a few push-pulls more.
        """
        if self._leaving or peer in self._rejoins_due:
            return
        config = self._config
        delay = self._refused_joins.get(peer, config.probe_interval)
        self._refused_joins[peer] = min(delay * 2, config.reconnect_interval)
        self._rejoins_due.add(peer)
        self._schedule(now + delay, functools.partial(self._rejoin, peer))

    def _rejoin(self, peer: Address, now: float) -> None:
        self._rejoins_due.discard(peer)
        if self._leaving or peer not in self._refused_joins:
            return  # taken in meanwhile, or leaving
        self._stats.reconnect_attempts += 1
        self._open_push_pull(peer, join=True)

    def _join_refused(self, message: PushPull) -> bool:
        """A push-pull reply lists our name, alive at another address: we were refused.

        The peer holds another live node under our name (`_refuse_name_claim`
        on its side); merging its table would make us a second member of
        that name, so nothing of it is taken.
        """
        for entry in message.members:
            if (
                entry.name == self._name
                and entry.address != self._address
                and (entry.state is _ALIVE or entry.state is _SUSPECT)
            ):
                self._stats.name_conflicts += 1
                self._events.append(
                    NameConflict(
                        name=self._name,
                        known_address=entry.address,
                        claimed_address=self._address,
                        refused=True,
                    )
                )
                return True
        return False

    # ------------------------------------------------------------------ transitions

    def _set_state(self, node: _Node, state: MemberState, now: float) -> None:
        old = node.state
        if old is state:
            return
        counts = self._counts
        counts[old] -= 1
        counts[state] += 1
        node.state = state
        node.state_changed_at = now
        self._table = None
        if old is _DEAD:
            self._dead.pop(node.name, None)
        elif state is _DEAD:
            self._dead[node.name] = node
        if old is _SUSPECT:
            suspected = node.suspected
            node.suspected = None
            if suspected is not None and suspected.timer is not None:
                suspected.timer.cancelled = True

    def _on_accusation(
        self, incarnation: int, accuser: str, src: Address | None, now: float
    ) -> None:
        """Answer a suspect or dead message about ourselves.

        Besides gossiping the refutation, it goes straight back to the node
        that told us (``src``) and to the accuser: both hold the wrong view
        for sure, and gossip alone reaches a given member only with some
        probability before its suspicion timer runs out. A stale accusation
        (older than our incarnation) means we refuted already but the sender
        did not hear; it gets the same direct answer.
        """
        if self._leaving:
            return
        if not incarnation_in_reach(self._self.incarnation, incarnation):
            self._drop("incarnation_jump")
            return
        if incarnation >= self._self.incarnation:
            self._refute(incarnation, now)
            self._catch_up_soon(now)
        elif self._name not in self._broadcasts:
            self._queue_self_alive(now)
        alive = self._self_alive()
        accuser_node = self._nodes.get(accuser)
        # A dict, not a set: the order of the sends decides which queued
        # broadcasts ride in each packet, and a set of addresses iterates in
        # an order that changes with PYTHONHASHSEED, so seeded runs diverged.
        targets = dict.fromkeys((src, None if accuser_node is None else accuser_node.address))
        for address in targets:
            if address is not None and address != self._address:
                self._send(address, [alive])

    def _catch_up_soon(self, now: float) -> None:
        """Push-pull with a random member a few probe intervals from now.

        Called on the signs of a healed partition: we refuted an accusation,
        or members came alive or fell under suspicion in bulk
        (`_note_upheaval`: the two sides' tables meeting). Members of the
        other group held us dead or had forgotten us, and the refutations and
        rejoins that follow race through the cluster in a storm of broadcasts
        that misses a member now and then; periodic push-pull would repair
        that only after 90 s at 100 members. The
        exchange waits until those broadcasts have settled and repeats once
        if it taught us something. At most one round per
        `HEAL_CATCH_UP_SPACING`, so a lossy network that keeps raising
        suspicions, or steady churn, costs little.
        """
        last = self._heal_catch_up_at
        if last is not None and now - last < HEAL_CATCH_UP_SPACING:
            return
        self._heal_catch_up_at = now
        self._catch_ups_left = max(self._catch_ups_left, _HEAL_CATCH_UPS - 1)
        delay = self._config.probe_interval * self._rng.uniform(2.0, 4.0)
        self._schedule(now + delay, self._catch_up)

    def _note_upheaval(self, now: float) -> None:
        """Count a member arriving or suspected; a burst of them prompts `_catch_up_soon`."""
        changes = self._upheavals
        changes.append(now)
        while changes and now - changes[0] > _MERGE_WINDOW:
            changes.pop(0)
        if len(changes) >= _MERGE_CHANGES:
            changes.clear()
            self._catch_up_soon(now)

    def _refute(self, accused_incarnation: int, now: float) -> None:
        me = self._self
        me.incarnation = refute_incarnation(me.incarnation, accused_incarnation)
        self._table = None
        self._queue_self_alive(now)
        self._awareness.apply_delta(1)
        self._stats.refutations += 1

    def _on_alive(self, message: Alive, now: float, *, rebroadcast: bool = True) -> None:
        name = message.name
        if name == self._name:
            self._on_alive_about_self(message, now)
            return
        node = self._nodes.get(name)
        if node is None:
            self._learn(name, message.address, message.meta, message.incarnation, now)
            if rebroadcast:
                # Not for a fresh joiner learning the cluster (it has its own
                # catch-ups): only news we pass on says two groups met.
                self._queue_broadcast(name, message, now)
                self._note_upheaval(now)
            return
        if not incarnation_in_reach(node.incarnation, message.incarnation):
            self._drop("incarnation_jump")
            return
        moved = node.address != message.address
        if moved and not address_change_allowed(
            node.state, node.state_changed_at, now, self._config.dead_node_reclaim_time
        ):
            self._stats.name_conflicts += 1
            self._events.append(
                NameConflict(name=name, known_address=node.address, claimed_address=message.address)
            )
            return
        if not alive_applies(node.incarnation, message.incarnation):
            return
        old_state = node.state
        meta_changed = node.meta != message.meta
        node.incarnation = message.incarnation
        node.meta = message.meta
        self._table = None
        if moved:
            if self._by_address.get(node.address) is node:
                del self._by_address[node.address]
            node.address = message.address
            self._by_address[node.address] = node
        self._set_state(node, _ALIVE, now)
        if rebroadcast:
            self._queue_broadcast(name, message, now)
        if old_state is _DEAD or old_state is _LEFT:
            self._remembered.pop(name, None)
            self._events.append(MemberJoined(member=node.snapshot()))
            if rebroadcast:
                self._note_upheaval(now)
        elif old_state is _SUSPECT:
            self._events.append(MemberRecovered(member=node.snapshot()))
        elif moved or meta_changed:
            self._events.append(MemberUpdated(member=node.snapshot()))

    def _on_alive_about_self(self, message: Alive, now: float) -> None:
        if self._leaving:
            return
        me = self._self
        if not incarnation_in_reach(me.incarnation, message.incarnation):
            self._drop("incarnation_jump")
            return
        if not self_alive_needs_refute(
            me.incarnation,
            me.address,
            me.meta,
            message.incarnation,
            message.address,
            message.meta,
        ):
            return
        if message.address != me.address:
            self._stats.name_conflicts += 1
            self._events.append(
                NameConflict(
                    name=me.name, known_address=me.address, claimed_address=message.address
                )
            )
        self._refute(message.incarnation, now)

    def _learn(
        self, name: str, address: Address, meta: Mapping[str, str], incarnation: int, now: float
    ) -> None:
        """Add a member new to us, alive, and raise its `MemberJoined`."""
        node = _Node(name, address, meta, incarnation, _ALIVE, now)
        self._add_node(node)
        self._events.append(MemberJoined(member=node.snapshot()))

    def _add_node(self, node: _Node) -> None:
        self._nodes[node.name] = node
        self._table = None
        self._by_address[node.address] = node
        self._counts[node.state] += 1
        if self._remembered:
            self._remembered.pop(node.name, None)
        # Insert at a random position (memberlist): a newcomer is probed, on
        # average, half a round from now rather than always last. Scaled from
        # random() rather than randrange(), which costs five times as much
        # and dominated a joiner learning a large table; the bias is below
        # n / 2**53.
        nodes = self._probe_list
        nodes.append(node)
        index = int(self._rng.random() * len(nodes))
        nodes[index], nodes[-1] = nodes[-1], nodes[index]

    def _on_suspect(
        self,
        message: Suspect,
        now: float,
        *,
        confirm: bool = True,
        src: Address | None = None,
    ) -> None:
        name = message.name
        if name == self._name:
            self._on_accusation(message.incarnation, message.source, src, now)
            return
        node = self._nodes.get(name)
        if node is None or message.incarnation < node.incarnation:
            return
        if not incarnation_in_reach(node.incarnation, message.incarnation):
            self._drop("incarnation_jump")
            return
        suspected = node.suspected
        suspicion = None if suspected is None else suspected.suspicion
        if suspicion is not None and message.incarnation == node.incarnation:
            # Already suspect: only an independent confirmation matters; it
            # shortens the timeout and is re-gossiped so others count it too.
            if confirm and suspicion.confirm(message.source):
                self._stats.confirmations += 1
                self._queue_broadcast(name, message, now)
                self._arm_suspicion_timer(node, suspicion.deadline)
            return
        if suspicion is not None:
            # A suspicion at a newer incarnation proves the member refuted the
            # one we hold (only it raises its incarnation): SWIM lets the newer
            # suspicion override, so it starts afresh rather than confirming
            # (memberlist would count it as a confirmation of the stale one
            # and could declare a member dead that had refuted in time).
            self._start_suspicion(node, message, now)
            return
        if not suspect_applies(node.state, node.incarnation, message.incarnation):
            return
        self._set_state(node, _SUSPECT, now)
        self._start_suspicion(node, message, now)
        self._stats.suspicions += 1
        self._note_upheaval(now)
        self._events.append(MemberSuspected(member=node.snapshot(), accuser=message.source))

    def _on_refused(self, message: Refused, now: float, *, src: Address | None = None) -> None:
        """Weigh a refused probe: suspect, look for ourselves, and count the evidence.

        A refusal is a suspicion from its source (so a member that is in fact
        alive refutes it the usual way, and the timeout still runs) plus
        evidence kept per suspicion. Every member that hears of a refusal and
        has none of its own pings the member at once, carrying the refusal so
        a live member refutes straight back; if its host refuses that ping
        too, the driver reports it and this member's refusal joins the
        evidence. Once ``refusal_confirmations`` distinct members' probes were
        refused, the member is dead: a crashed process on a live host leaves
        every view within one probe and a round trip, while a single stray
        refusal can never kill, and silence (host or network gone) keeps
        Lifeguard's timing.
        """
        name = message.name
        if name == self._name:
            self._on_accusation(message.incarnation, message.source, src, now)
            return
        node = self._nodes.get(name)
        if node is not None and node.state is _DEAD and src is not None:
            if message.incarnation <= node.incarnation:
                # The sender missed the death: tell it (it never answers a Dead).
                dead = Dead(incarnation=node.incarnation, name=name, source=self._name)
                self._send(src, [dead])
            else:
                self._check_for_peer(node, message, src)
            return
        if node is None or not self._is_live(node) or message.incarnation < node.incarnation:
            return
        suspect = Suspect(incarnation=message.incarnation, name=name, source=message.source)
        self._on_suspect(suspect, now, src=src)
        need = self._config.refusal_confirmations
        if not need or node.state is not _SUSPECT or node.incarnation != message.incarnation:
            return
        suspected = node.suspected
        if suspected is None:
            return
        refusals = suspected.refusals
        if refusals is None:
            refusals = suspected.refusals = set()
        if message.source in refusals:
            return
        refusals.add(message.source)
        # Replaces the plain suspicion queued under the member's name, so the
        # evidence travels with it.
        self._queue_broadcast(name, message, now)
        if len(refusals) >= need:
            self._stats.deaths_declared += 1
            self._stats.refusal_deaths += 1
            self._on_dead(Dead(incarnation=node.incarnation, name=name, source=self._name), now)
            return
        if self._name not in refusals and not suspected.verifying:
            suspected.verifying = True
            ping = Ping(seq=self._next_seq(), target=name, source=self._name)
            self._send(node.address, [message, ping])

    def _check_for_peer(self, node: _Node, message: Refused, src: Address) -> None:
        """A peer gathers refusals about a member we hold dead at an older incarnation.

        The peer heard of a refutation we missed, so our death does not
        apply for it, and the members
        that declared it dead no longer probe it, so its suspicion would wait
        out the full timeout for want of a second refusal. We probe the member
        once; if our probe is refused too, `_answer_refusal_check` sends the
        peer our refusal at the incarnation it holds.
        """
        checks = self._refusal_checks
        if node.name in checks or len(checks) >= len(self._nodes):
            return
        checks[node.name] = (message.incarnation, src)
        self._send(node.address, [Ping(seq=self._next_seq(), target=node.name, source=self._name)])

    def _answer_refusal_check(self, node: _Node) -> None:
        check = self._refusal_checks.pop(node.name, None)
        if check is not None:
            incarnation, peer = check
            self._send(peer, [Refused(incarnation=incarnation, name=node.name, source=self._name)])

    def _start_suspicion(self, node: _Node, message: Suspect, now: float) -> None:
        config = self._config
        k, low, high = suspicion_bounds(
            config.suspicion_mult,
            config.suspicion_max_timeout_mult,
            self._live_count(),
            config.probe_interval,
            dynamic=config.lifeguard_suspicion,
        )
        node.incarnation = message.incarnation
        node.state_changed_at = now
        self._table = None
        suspicion = Suspicion(accuser=message.source, started_at=now, k=k, low=low, high=high)
        previous = node.suspected
        if previous is not None and previous.timer is not None:
            previous.timer.cancelled = True
        node.suspected = _Suspected(suspicion)
        self._arm_suspicion_timer(node, suspicion.deadline)
        self._queue_broadcast(node.name, message, now)

    def _arm_suspicion_timer(self, node: _Node, deadline: float) -> None:
        suspected = node.suspected
        assert suspected is not None  # armed only for a running suspicion
        if suspected.timer is not None:
            suspected.timer.cancelled = True
        suspicion = suspected.suspicion
        suspected.timer = self._schedule(
            deadline, lambda t: self._suspicion_expired(node, suspicion, t)
        )

    def _suspicion_expired(self, node: _Node, suspicion: Suspicion, now: float) -> None:
        suspected = node.suspected
        if suspected is None or suspected.suspicion is not suspicion or node.state is not _SUSPECT:
            return
        if self._nodes.get(node.name) is not node:
            return
        suspected.timer = None
        self._stats.deaths_declared += 1
        self._on_dead(Dead(incarnation=node.incarnation, name=node.name, source=self._name), now)

    def _on_dead(self, message: Dead, now: float, *, src: Address | None = None) -> None:
        name = message.name
        if name == self._name:
            # A node never declares itself dead: it refutes, unless this is
            # the echo of its own leave.
            self._on_accusation(message.incarnation, message.source, src, now)
            return
        node = self._nodes.get(name)
        if node is None or not dead_applies(node.state, node.incarnation, message.incarnation):
            return
        if not incarnation_in_reach(node.incarnation, message.incarnation):
            self._drop("incarnation_jump")
            return
        node.incarnation = message.incarnation
        self._table = None
        left = message.source == name
        self._set_state(node, _LEFT if left else _DEAD, now)
        self._queue_broadcast(name, message, now)
        if left:
            self._events.append(MemberLeft(member=node.snapshot()))
        else:
            self._events.append(MemberFailed(member=node.snapshot(), declared_by=message.source))

    # ------------------------------------------------------------------ validation

    def _check_meta(self, meta: object) -> dict[str, str]:
        # Typed as object: callers such as the CLI build it from user input.
        if meta is None:
            return {}
        if not isinstance(meta, Mapping):
            raise LocalProtocolError("meta must be a mapping of strings to strings")
        size = 0
        limit = self._config.max_name_length
        checked: dict[str, str] = {}
        for key, value in meta.items():
            if not isinstance(key, str) or not isinstance(value, str) or not key:
                raise LocalProtocolError("meta must map non-empty strings to strings")
            if len(key) > limit:
                raise LocalProtocolError(f"meta key longer than {limit}")
            size += len(key.encode()) + len(value.encode())
            checked[key] = value
        if size > self._config.meta_max_size:
            raise LocalProtocolError(f"meta larger than {self._config.meta_max_size} bytes")
        return checked
