"""What a simulation run measures, recorded from the engines' own events.

Rules:

1. **Measure from the real outputs.** Every figure comes from the events the
   engines raise (`shoal.membership.events`), the registries' contents and the
   bytes the network carried; nothing is inferred from the model.
2. **Exact times, bounded cost.** Each event updates the views in O(1); view
   convergence is tracked by a running count of disagreements, so it is known
   the instant it happens. Only registry equality is polled (every
   `REGISTRY_POLL` seconds, and only while a heal waits for it).
3. **Deterministic output.** `RunMetrics.to_json` holds only virtual-time
   figures and counts, rounded to the microsecond; wall time is kept apart.

Definitions:

* *Detection time* of a crash at an observer: from the crash to the
  observer's `MemberFailed` about it. Observers are the members that were
  running and saw the victim alive or suspect at the crash; one that
  crashes itself is dropped. "All" is the time until the last of them knows.
* *False suspicion / false death*: a `MemberSuspected` / `MemberFailed` about
  a member that was running, in its current life, and not stalled, slowed or
  leaving, at that time or within the grace period before it (the longest a
  true suspicion can take to start and expire), while no partition was in
  force during that period either (a partition disturbs everyone: stale
  "dead" records travel between members in push-pull tables after the
  heal). An *incident* is one (member, incarnation); events count every
  observer.
* *Heal time*: from the end of a partition until every live member sees
  exactly the live members alive (*view*), and until, in addition, every
  live member holds the same registry (*full*).
* *Dissemination time* of an update (new metadata, a join, a leave): until
  every member live at the time, and still live, holds it.
* *Topic propagation time*: from a topic's creation until the owner appears
  as a producer in `Registry.lookup` at every live member.
* *Traffic*: datagram payload plus stream bytes, sent plus received, divided
  by the node-seconds the hosts were running (IP, UDP and TCP headers not
  included).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from shoal.membership import (
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MemberReaped,
    MemberRecovered,
    MemberState,
    MemberSuspected,
    MemberUpdated,
    NameConflict,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    from shoal.membership import Event
    from shoal.simulations.network import Host, Network
    from shoal.simulations.scheduler import Scheduler
    from shoal.simulations.topics import SimulatedRegistry

__all__ = [
    "REGISTRY_POLL",
    "HealTime",
    "Marker",
    "Recorder",
    "RunMetrics",
    "Summary",
    "Timeline",
    "Tracked",
]

#: Seconds between registry equality checks while a heal waits for them.
REGISTRY_POLL = 0.1

#: Most suspicion and death markers kept for plotting (the counts stay exact).
MAX_MARKERS = 20_000

_ALIVE = MemberState.ALIVE
_SUSPECT = MemberState.SUSPECT
_DEATH = ("crash",)
_UNCHANGED: Any = object()
_LEAVE = ("leave",)
_NEWS = ("update", "join")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """A distribution of durations: how many, median, 99th percentile, worst.

    Percentiles are nearest-rank: p99 of fewer than 100 values is the largest.
    """

    count: int
    p50: float | None
    p99: float | None
    max: float | None
    mean: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        """Summarise ``values``."""
        ordered = sorted(values)
        n = len(ordered)
        if n == 0:
            return cls(count=0, p50=None, p99=None, max=None, mean=None)

        def rank(q: float) -> float:
            return ordered[max(0, math.ceil(q * n) - 1)]

        return cls(count=n, p50=rank(0.5), p99=rank(0.99), max=ordered[-1], mean=sum(ordered) / n)

    def to_json(self) -> dict[str, Any]:
        """Return the summary as JSON-ready data."""
        return {
            "count": self.count,
            "p50": _round(self.p50),
            "p99": _round(self.p99),
            "max": _round(self.max),
            "mean": _round(self.mean),
        }


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HealTime:
    """One partition's end and how long the cluster took to agree again.

    Attributes:
        label: which partition.
        healed_at: virtual time connectivity returned.
        view: seconds until every live member saw exactly the live members
            alive, or None if that never happened in the run.
        full: seconds until, in addition, every registry was the same (None
            likewise; equal to ``view`` when registries are off).
    """

    label: str
    healed_at: float
    view: float | None
    full: float | None

    def to_json(self) -> dict[str, Any]:
        """Return the heal time as JSON-ready data."""
        return {
            "label": self.label,
            "healed_at": _round(self.healed_at),
            "view": _round(self.view),
            "full": _round(self.full),
        }


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Marker:
    """A suspicion or death seen by some member, for plots."""

    at: float
    kind: str  # "suspect" or "dead"
    group: int
    false: bool


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Timeline:
    """Mean alive-view size of each group's running members, sampled over time."""

    groups: tuple[str, ...]
    times: tuple[float, ...]
    sizes: tuple[tuple[float, ...], ...]  # one tuple per group, parallel to times


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunMetrics:
    """The figures of one run (virtual time only; see the module docstring).

    Attributes:
        nodes: members at the start.
        duration: virtual seconds simulated.
        detection: crash detection time at each observer.
        detection_all: per crash, time until all observers knew.
        undetected: (crash, observer) pairs never detected in the run.
        suspicions: suspicion events, all of them.
        false_suspicions: false suspicion incidents.
        false_suspicion_events: false suspicion events.
        deaths: death events, all of them.
        false_deaths: false death incidents.
        false_death_events: false death events.
        heals: one entry per partition that ended.
        dissemination: time for each tracked update to reach everyone.
        dissemination_incomplete: tracked updates that did not.
        topic_propagation: time for each created topic to be looked up everywhere.
        topics_incomplete: topics that were not.
        packets_per_node_per_s: datagrams sent plus received per node-second.
        bytes_per_node_per_s: datagram and stream bytes sent plus received per
            node-second.
        stream_bytes_per_node_per_s: the stream part of it (push-pull mostly).
        refutations: accusations refuted, summed over the engines running at
            the end.
        events_processed: scheduler callbacks run.
        converged_at_end: every live member saw exactly the live members
            alive when the run ended.
    """

    nodes: int
    duration: float
    detection: Summary
    detection_all: Summary
    undetected: int
    suspicions: int
    false_suspicions: int
    false_suspicion_events: int
    deaths: int
    false_deaths: int
    false_death_events: int
    heals: tuple[HealTime, ...]
    dissemination: Summary
    dissemination_incomplete: int
    topic_propagation: Summary
    topics_incomplete: int
    packets_per_node_per_s: float
    bytes_per_node_per_s: float
    stream_bytes_per_node_per_s: float
    refutations: int
    events_processed: int
    converged_at_end: bool

    def to_json(self) -> dict[str, Any]:
        """Return the metrics as JSON-ready data (deterministic for a seed)."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Summary):
                out[field.name] = value.to_json()
            elif field.name == "heals":
                out[field.name] = [heal.to_json() for heal in value]
            elif isinstance(value, float):
                out[field.name] = _round(value)
            else:
                out[field.name] = value
        return out


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Tracked:
    """One tracked crash, update or topic, as it stands.

    Attributes:
        kind: ``crash``, ``update``, ``join``, ``leave`` or ``topic``.
        subject: the member it concerns (a topic's owner).
        at: when it happened.
        times: seconds until each observer knew, in the order they learned.
        all_known: seconds until the last observer knew (None while some
            observer still does not).
        missing: observers that do not know yet.
    """

    kind: str
    subject: str
    at: float
    times: tuple[float, ...]
    all_known: float | None
    missing: int


class _Tracked:
    """Something every live member should come to know (a crash, an update, a topic)."""

    __slots__ = ("at", "incarnation", "kind", "last", "remaining", "subject", "times", "topic")

    def __init__(
        self, kind: str, subject: str, incarnation: int, at: float, remaining: set[str]
    ) -> None:
        self.kind = kind
        self.subject = subject
        self.incarnation = incarnation
        self.at = at
        self.remaining = remaining
        self.times: list[float] = []
        self.last: float | None = None
        self.topic = ""


class _Window:
    __slots__ = ("destinations", "end", "sources", "start")

    def __init__(self, sources: frozenset[str], destinations: frozenset[str], start: float) -> None:
        self.sources = sources
        self.destinations = destinations
        self.start = start
        self.end = math.inf


class _Heal:
    __slots__ = ("at", "full", "label", "view")

    def __init__(self, label: str, at: float) -> None:
        self.label = label
        self.at = at
        self.view: float | None = None
        self.full: float | None = None


class _View:
    """How one host sees the others, from its events: a shared start plus its own changes.

    A preformed cluster starts every host holding every other alive at
    incarnation 1. Keeping that as one table shared by every view, with each
    host's departures from it in a small dict of its own, makes the recorder
    O(n) in memory plus O(changes) instead of n tables of n members (at
    10,000 nodes, three such tables per host took gigabytes). Lookups cost
    one or two dict probes.

    The host itself is never in its view, and always counts as alive (it
    holds itself alive: `Recorder.sample` checks that on the engine).
    """

    __slots__ = ("_base", "_changes", "alive_count", "own")

    def __init__(self, own: str, base: Mapping[str, MemberState] | None = None) -> None:
        self.own = own
        #: Members alive at incarnation 1 from the start; shared, never modified.
        self._base: Mapping[str, MemberState] = base if base is not None else {}
        #: Departures from the base: (state, incarnation), or None once reaped.
        self._changes: dict[str, tuple[MemberState, int] | None] = {}
        if own in self._base:
            self._changes[own] = None
            self.alive_count = len(self._base)
        else:
            self.alive_count = len(self._base) + 1

    def get(self, name: str) -> MemberState | None:
        """Return the state ``name`` is held in, or None if it is not held."""
        change = self._changes.get(name, _UNCHANGED)
        if change is _UNCHANGED:
            return self._base.get(name)
        return None if change is None else change[0]

    def incarnation(self, name: str) -> int | None:
        """Return the incarnation ``name`` is held at, or None if it is not held."""
        change = self._changes.get(name, _UNCHANGED)
        if change is _UNCHANGED:
            return 1 if name in self._base else None
        return None if change is None else change[1]

    def is_alive(self, name: str) -> bool:
        """Say whether ``name`` counts as alive in this view (the host itself does)."""
        return name == self.own or self.get(name) is _ALIVE

    def hold(self, name: str, state: MemberState, incarnation: int) -> None:
        """Hold ``name`` in ``state`` at ``incarnation``."""
        was = self.get(name) is _ALIVE
        self._changes[name] = (state, incarnation)
        self.alive_count += (state is _ALIVE) - was

    def remove(self, name: str) -> None:
        """Forget ``name`` (reaped)."""
        if self.get(name) is _ALIVE:
            self.alive_count -= 1
        self._changes[name] = None

    def items(self) -> Iterator[tuple[str, MemberState]]:
        """Yield every member held, with its state."""
        changes = self._changes
        for name, state in self._base.items():
            if name not in changes:
                yield name, state
        for name, change in changes.items():
            if change is not None:
                yield name, change[0]

    def mismatch(self, live: set[str]) -> int:
        """Return how many members are alive here but not live, or live but not alive here."""
        if not self._base and not self._changes:
            return len(live) - 1 if self.own in live else len(live) + 1
        shared = sum(1 for name in live if self.is_alive(name))
        return self.alive_count + len(live) - 2 * shared


class Recorder:
    """Turns engine events, registry changes and traffic into `RunMetrics`.

    The runner tells it about the world (hosts starting and stopping, faults,
    cuts, what to track); the network hands it every engine event.

    Args:
        scheduler: the virtual clock (for registry polls).
        network: the hosts and their traffic counters.
        registries: each host's registry by name (empty when registries are off).
        grace: seconds after a fault or cut during which suspicions and deaths
            it touches are not counted as false.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        network: Network,
        registries: dict[str, SimulatedRegistry],
        *,
        grace: float,
    ) -> None:
        self.scheduler = scheduler
        self.network = network
        self.registries = registries
        self.grace = grace
        self.violations: list[str] = []
        self.markers: list[Marker] = []
        self.groups: dict[str, list[str]] = {}
        self._group_of: dict[str, int] = {}
        self._views: list[_View] = []
        self._own_incarnation: list[int] = []
        self._life_incarnation: dict[str, int] = {}
        self._mismatch: list[int] = []
        self._live: set[str] = set()
        self._live_index: set[int] = set()
        self._index: dict[str, int] = {}
        self._total = 0
        self._faults: dict[str, list[list[float]]] = {}
        self._cuts: list[_Window] = []
        self._pending: dict[str, list[_Tracked]] = {}
        self._done: list[_Tracked] = []
        self._topics: list[_Tracked] = []
        self._heals: list[_Heal] = []
        self._polling = False
        self._last_unequal = 0
        self._running_since: dict[str, float] = {}
        self._node_seconds = 0.0
        self._samples: list[tuple[float, tuple[float, ...]]] = []
        self._suspicions = 0
        self._deaths = 0
        self._false_suspicions: set[tuple[str, int]] = set()
        self._false_deaths: set[tuple[str, int]] = set()
        self._false_suspicion_events = 0
        self._false_death_events = 0

    # ------------------------------------------------------------------ world

    def set_groups(self, groups: dict[str, list[str]]) -> None:
        """Name the groups plotted and used to label markers (first group wins)."""
        self.groups = {name: list(members) for name, members in groups.items()}
        self._group_of = {}
        for position, members in enumerate(self.groups.values()):
            for name in members:
                self._group_of.setdefault(name, position)

    def add_to_group(self, group: str, name: str) -> None:
        """Put a member that appeared during the run in ``group``."""
        self.groups.setdefault(group, []).append(name)
        self._group_of.setdefault(name, list(self.groups).index(group))

    def host_started(self, host: Host, now: float) -> None:
        """A host (re)started with a fresh engine: it knows only itself."""
        index = host.index
        while len(self._views) <= index:
            self._views.append(_View(""))
            self._own_incarnation.append(0)
            self._mismatch.append(0)
        self._index[host.name] = index
        assert host.engine is not None
        incarnation = host.engine.incarnation
        self._life_incarnation[host.name] = incarnation
        self._own_incarnation[index] = incarnation
        self._views[index] = _View(host.name)
        self._running_since[host.name] = now
        self._enter_live(host.name, index)

    def preformed(self, names: Sequence[str]) -> None:
        """Record that every host in ``names`` holds every other alive at incarnation 1.

        What the preformed start hands each engine, recorded in bulk: the
        engines' own "joined" events for it are not fed to `on_events`.
        """
        base = dict.fromkeys(names, _ALIVE)
        # Every such view holds exactly ``names`` alive: one mismatch for all.
        mismatch = len(set(names) ^ self._live)
        for name in names:
            index = self._index[name]
            self._views[index] = _View(name, base)
            if index in self._live_index:
                self._total += mismatch - self._mismatch[index]
                self._mismatch[index] = mismatch

    def host_leaving(self, host: Host, now: float) -> None:
        """A host started a graceful leave: it no longer counts as live."""
        self._leave_live(host.name, host.index, now)
        self.fault(host.name, now)

    def host_stopped(self, host: Host, now: float) -> None:
        """A host crashed or finished leaving."""
        self._leave_live(host.name, host.index, now)
        since = self._running_since.pop(host.name, None)
        if since is not None:
            self._node_seconds += now - since

    def fault(self, name: str, start: float, end: float = math.inf) -> None:
        """Record that ``name`` is unhealthy from ``start`` (to ``end``)."""
        self._faults.setdefault(name, []).append([start, end])

    def end_fault(self, name: str, end: float) -> None:
        """Close ``name``'s open fault windows at ``end``."""
        for window in self._faults.get(name, ()):
            if window[1] == math.inf:
                window[1] = end

    def cut(self, sources: Iterable[str], destinations: Iterable[str], start: float) -> object:
        """Record a one-way cut; returns a token for `uncut`."""
        window = _Window(frozenset(sources), frozenset(destinations), start)
        self._cuts.append(window)
        return window

    def uncut(self, token: object, end: float) -> None:
        """Record the end of a cut."""
        assert isinstance(token, _Window)
        token.end = end

    def watch_heal(self, label: str, now: float) -> None:
        """Start timing a heal (connectivity returned at ``now``)."""
        heal = _Heal(label, now)
        self._heals.append(heal)
        self._check_converged(now)

    # ------------------------------------------------------------------ tracking

    def track_crash(self, name: str, incarnation: int, now: float) -> None:
        """Time how long the live members take to declare ``name`` dead."""
        observers = set()
        for other in self._live:
            view = self._views[self._index[other]]
            if view.get(name) in (_ALIVE, _SUSPECT):
                observers.add(other)
        self._add_tracked(_Tracked("crash", name, incarnation, now, observers))

    def track_update(self, kind: str, name: str, incarnation: int, now: float) -> None:
        """Time how long ``name``'s news (``update``, ``join``, ``leave``) takes to spread."""
        observers = self._live - {name}
        self._add_tracked(_Tracked(kind, name, incarnation, now, observers))

    def track_topic(self, owner: str, topic: str, now: float) -> None:
        """Time how long a new topic takes to be looked up at every live member."""
        item = _Tracked("topic", owner, 0, now, self._live - {owner})
        item.topic = topic
        self._topics.append(item)
        if not item.remaining:
            self._done.append(item)

    def _add_tracked(self, item: _Tracked) -> None:
        if item.remaining:
            self._pending.setdefault(item.subject, []).append(item)
        else:
            self._done.append(item)

    def registry_changed(self, name: str) -> None:
        """A registry changed: see whether it now answers a pending topic lookup."""
        if not self._topics:
            return
        now = self.scheduler.now
        for item in self._topics:
            if name in item.remaining and self._lookup_ok(name, item):
                self._observed(item, name, now)
        self._topics = [item for item in self._topics if item.remaining]

    def _lookup_ok(self, name: str, item: _Tracked) -> bool:
        holder = self.registries.get(name)
        index = self._index.get(name)
        if holder is None or index is None:
            return False
        view = self._views[index]

        def alive(owner: str) -> bool:
            return owner == name or view.get(owner) in (_ALIVE, _SUSPECT)

        result = holder.registry.lookup(item.topic, alive, wall=self.scheduler.now)
        return result is not None and any(p.node == item.subject for p in result[1])

    def _observed(self, item: _Tracked, name: str, now: float) -> None:
        item.remaining.discard(name)
        item.times.append(now - item.at)
        item.last = now
        if not item.remaining:
            self._done.append(item)

    # ------------------------------------------------------------------ events

    def on_events(self, host: Host, events: list[Event], now: float) -> None:
        """Take the events ``host``'s engine raised at ``now``."""
        index = host.index
        observer = host.name
        view = self._views[index]
        live = self._live
        counted = index in self._live_index
        pending = self._pending
        for event in events:
            if isinstance(event, NameConflict):
                continue
            member = event.member
            name = member.name
            if name == observer:
                self.violations.append(f"t={now:.3f} {observer} got an event about itself")
                continue
            was_alive = view.get(name) is _ALIVE
            if isinstance(event, MemberReaped):
                view.remove(name)
                is_alive = False
            else:
                incarnation = member.incarnation
                last = view.incarnation(name)
                if last is not None and incarnation < last:
                    self.violations.append(
                        f"t={now:.3f} {observer} lowered {name}'s incarnation "
                        f"from {last} to {incarnation}"
                    )
                state = member.state
                view.hold(name, state, incarnation)
                is_alive = state is _ALIVE
            if was_alive != is_alive and counted:
                in_live = name in live
                delta = (is_alive != in_live) - (was_alive != in_live)
                self._mismatch[index] += delta
                self._total += delta
            if isinstance(event, MemberSuspected):
                self._suspicions += 1
                self._judge(observer, name, event.accuser, member.incarnation, now, suspect=True)
            elif isinstance(event, MemberFailed):
                self._deaths += 1
                self._judge(
                    observer, name, event.declared_by, member.incarnation, now, suspect=False
                )
                if name in pending:
                    self._advance(name, observer, now, _DEATH, member.incarnation, dead=True)
            elif name not in pending:
                continue
            elif isinstance(event, MemberLeft):
                self._advance(name, observer, now, _LEAVE, member.incarnation, dead=True)
            elif isinstance(event, MemberJoined | MemberRecovered | MemberUpdated):
                self._advance(name, observer, now, _NEWS, member.incarnation)
        if self._total == 0 and self._heals:
            self._check_converged(now)

    def _advance(
        self,
        subject: str,
        observer: str,
        now: float,
        kinds: tuple[str, ...],
        incarnation: int,
        *,
        dead: bool = False,
    ) -> None:
        items = self._pending.get(subject)
        if not items:
            return
        for item in items:
            if item.kind not in kinds or observer not in item.remaining:
                continue
            if not dead and incarnation < item.incarnation:
                continue
            self._observed(item, observer, now)
        remaining = [item for item in items if item.remaining]
        if remaining:
            self._pending[subject] = remaining
        else:
            del self._pending[subject]

    def _judge(
        self,
        observer: str,
        target: str,
        accuser: str,
        incarnation: int,
        now: float,
        *,
        suspect: bool,
    ) -> None:
        marker_false = self._is_false(observer, target, accuser, incarnation, now)
        if marker_false:
            if suspect:
                self._false_suspicion_events += 1
                self._false_suspicions.add((target, incarnation))
            else:
                self._false_death_events += 1
                self._false_deaths.add((target, incarnation))
        if len(self.markers) < MAX_MARKERS:
            self.markers.append(
                Marker(
                    at=now,
                    kind="suspect" if suspect else "dead",
                    group=self._group_of.get(target, 0),
                    false=marker_false,
                )
            )

    def _is_false(
        self, observer: str, target: str, accuser: str, incarnation: int, now: float
    ) -> bool:
        if target not in self._live:
            return False
        if incarnation < self._life_incarnation.get(target, 0):
            return False  # about an earlier life of a restarted member
        since = now - self.grace
        for window in self._faults.get(target, ()):
            if window[0] <= now and window[1] >= since:
                return False
        # A partition disturbs the whole cluster: stale "dead" records travel
        # from member to member in push-pull tables long after the heal.
        return all(window.start > now or window.end < since for window in self._cuts)

    # ------------------------------------------------------------------ convergence

    def _enter_live(self, name: str, index: int) -> None:
        live = self._live
        if name in live:
            return
        views = self._views
        for other in self._live_index:
            delta = -1 if views[other].is_alive(name) else 1
            self._mismatch[other] += delta
            self._total += delta
        live.add(name)
        self._live_index.add(index)
        mismatch = views[index].mismatch(live)
        self._mismatch[index] = mismatch
        self._total += mismatch

    def _leave_live(self, name: str, index: int, now: float) -> None:
        if name not in self._live:
            return
        self._live_index.discard(index)
        self._total -= self._mismatch[index]
        self._mismatch[index] = 0
        self._live.discard(name)
        views = self._views
        for other in self._live_index:
            delta = 1 if views[other].is_alive(name) else -1
            self._mismatch[other] += delta
            self._total += delta
        for items in list(self._pending.values()):
            for item in items:
                if name in item.remaining:
                    self._drop_observer(item, name)
        for subject in [
            s for s, items in self._pending.items() if not any(i.remaining for i in items)
        ]:
            del self._pending[subject]
        for item in self._topics:
            if name in item.remaining:
                self._drop_observer(item, name)
        self._topics = [item for item in self._topics if item.remaining]
        if self._total == 0 and self._heals:
            self._check_converged(now)

    def _drop_observer(self, item: _Tracked, name: str) -> None:
        item.remaining.discard(name)
        if not item.remaining:
            self._done.append(item)

    def view_of(self, index: int) -> _View:
        """Return how host ``index`` sees the others, from its events (do not modify)."""
        return self._views[index]

    def converged(self) -> bool:
        """Say whether every live member sees exactly the live members alive."""
        return self._total == 0 and bool(self._live)

    def _check_converged(self, now: float) -> None:
        if not self.converged():
            return
        waiting = False
        for heal in self._heals:
            if heal.view is None:
                heal.view = now - heal.at
            if heal.full is None:
                waiting = True
        if waiting:
            self._check_registries(now)

    def registries_equal(self) -> bool:
        """Say whether every live member holds the same registry."""
        if not self.registries:
            return True
        holders = [self.registries[name] for name in sorted(self._live) if name in self.registries]
        if len(holders) < 2:
            return True
        # Start from the member that differed last time: while registries
        # converge, one comparison usually settles the question.
        start = self._last_unequal % len(holders)
        reference = holders[0].registry.digest()
        for offset in range(len(holders)):
            position = (start + offset) % len(holders)
            registry = holders[position].registry
            if registry.behind() or registry.digest() != reference:
                self._last_unequal = position
                return False
        return True

    def _check_registries(self, now: float) -> None:
        if self.converged() and self.registries_equal():
            for heal in self._heals:
                if heal.full is None and heal.view is not None:
                    heal.full = now - heal.at
            return
        if not self._polling:
            self._polling = True
            self.scheduler.call_later(REGISTRY_POLL, self._poll)

    def _poll(self) -> None:
        self._polling = False
        if any(heal.full is None for heal in self._heals):
            now = self.scheduler.now
            if self.converged():
                for heal in self._heals:
                    if heal.view is None:
                        heal.view = now - heal.at
            self._check_registries(now)

    # ------------------------------------------------------------------ sampling

    def sample(self, now: float) -> None:
        """Record the alive-view sizes and check each engine's own record."""
        sizes = []
        for members in self.groups.values():
            total = 0
            count = 0
            for name in members:
                index = self._index.get(name)
                if index is not None and index in self._live_index:
                    total += self._views[index].alive_count
                    count += 1
            sizes.append(total / count if count else 0.0)
        self._samples.append((now, tuple(sizes)))
        for index in self._live_index:
            host = self.network.hosts[index]
            engine = host.engine
            if engine is None:
                continue
            incarnation = engine.incarnation
            if incarnation < self._own_incarnation[index]:
                self.violations.append(f"t={now:.3f} {host.name}'s own incarnation went down")
            self._own_incarnation[index] = incarnation
            me = engine.member(host.name)
            if me is None or me.state is not _ALIVE:
                state = None if me is None else me.state.name
                self.violations.append(f"t={now:.3f} {host.name} holds itself as {state}")
        for item in list(self._topics):
            for name in list(item.remaining):
                if self._lookup_ok(name, item):
                    self._observed(item, name, now)
        self._topics = [item for item in self._topics if item.remaining]

    def timeline(self) -> Timeline:
        """Return the sampled alive-view sizes."""
        groups = tuple(self.groups)
        times = tuple(t for t, _ in self._samples)
        sizes = tuple(tuple(s[i] for _, s in self._samples) for i in range(len(groups)))
        return Timeline(groups=groups, times=times, sizes=sizes)

    # ------------------------------------------------------------------ result

    def tracked(self) -> list[Tracked]:
        """Return every tracked crash, update and topic (for per-item figures)."""
        pending = [item for items in self._pending.values() for item in items if item.remaining]
        return [
            Tracked(
                kind=item.kind,
                subject=item.subject,
                at=item.at,
                times=tuple(item.times),
                all_known=(
                    item.last - item.at if not item.remaining and item.last is not None else None
                ),
                missing=len(item.remaining),
            )
            for item in [*self._done, *pending, *self._topics]
        ]

    def finish(self, now: float, nodes: int, duration: float) -> RunMetrics:
        """Close the books at ``now`` and return the run's figures."""
        node_seconds = self._node_seconds + sum(now - t for t in self._running_since.values())
        packets = 0
        datagram_bytes = 0
        stream_bytes = 0
        refutations = 0
        for host in self.network.hosts:
            stats = host.stats
            packets += stats.packets_sent + stats.packets_received
            datagram_bytes += stats.bytes_sent + stats.bytes_received
            stream_bytes += stats.stream_bytes_sent + stats.stream_bytes_received
            if host.engine is not None:
                refutations += host.engine.statistics().refutations
        pending = [item for items in self._pending.values() for item in items if item.remaining]
        everything = self._done + pending + self._topics
        crashes = [item for item in everything if item.kind == "crash"]
        updates = [item for item in everything if item.kind in ("update", "join", "leave")]
        topics = [item for item in everything if item.kind == "topic"]
        per_second = max(node_seconds, 1e-9)

        def all_known(items: Sequence[_Tracked]) -> list[float]:
            return [
                item.last - item.at
                for item in items
                if not item.remaining and item.last is not None
            ]

        return RunMetrics(
            nodes=nodes,
            duration=duration,
            detection=Summary.of(t for item in crashes for t in item.times),
            detection_all=Summary.of(all_known(crashes)),
            undetected=sum(len(item.remaining) for item in crashes),
            suspicions=self._suspicions,
            false_suspicions=len(self._false_suspicions),
            false_suspicion_events=self._false_suspicion_events,
            deaths=self._deaths,
            false_deaths=len(self._false_deaths),
            false_death_events=self._false_death_events,
            heals=tuple(
                HealTime(label=h.label, healed_at=h.at, view=h.view, full=h.full)
                for h in self._heals
            ),
            dissemination=Summary.of(all_known(updates)),
            dissemination_incomplete=sum(1 for item in updates if item.remaining),
            topic_propagation=Summary.of(all_known(topics)),
            topics_incomplete=sum(1 for item in topics if item.remaining),
            packets_per_node_per_s=packets / per_second,
            bytes_per_node_per_s=(datagram_bytes + stream_bytes) / per_second,
            stream_bytes_per_node_per_s=stream_bytes / per_second,
            refutations=refutations,
            events_processed=self.scheduler.steps,
            converged_at_end=self.converged(),
        )
