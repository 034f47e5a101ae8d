"""The scenarios users run to decide whether to trust the cluster.

Each scenario is a frozen dataclass of parameters that knows three things:
how long it runs by default (`Scenario.default_duration`, from the membership
configuration so the ``wan`` profile gets its slower timing), which runs it is
made of (`Scenario.variants`: one run, or one per loss rate for ``loss``),
and which faults to schedule on a `shoal.simulations.runner.Simulation`
(`Scenario.install`). Random choices (which nodes, when) draw from the
simulation's seeded generator when the fault happens, so they replay.

Scenarios (docs/membership.md §7.2 names the goals they measure):

========  ===============================================================
idle      no faults: the baseline for traffic (G10) and for "nobody is
          ever suspected"
crash     ``kill`` nodes crash (SIGKILL), optionally restarted: detection
          time (G1, G2)
split     two (or more) groups cut apart for a while, then healed: heal
          time (G5); a topic is created on each side while split
isolate   one node cut off (both ways, or only inbound) and back
loss      one run per loss rate, with metadata updates to time
          dissemination (G3, G7, G8)
churn     joins, graceful leaves and crashes as Poisson processes, then a
          quiet period to converge
stall     a share of nodes stall their event loop periodically (G9,
          Lifeguard's scenario)
slow      a share of nodes read every input late
topics    topic creations propagating through the registry to lookups
========  ===============================================================

With replicated topics (`shoal.simulations.replication`, the real cores of
`shoal.replication` on every node), ``replication-crash``,
``replication-split`` and ``replication-churn`` report acknowledged, lost
and duplicated messages and check that no acknowledged message is lost.

Node ``node-0`` is the seed when the cluster forms by joining; scenarios
never pick it as a victim, so a restarted or new node always has a seed to
join through.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from shoal.errors import ConfigError
from shoal.membership import push_pull_scale
from shoal.membership.suspicion import suspicion_bounds
from shoal.simulations.replication import ReplicatedChurn, ReplicatedCrash, ReplicatedSplit

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from shoal.membership import MembershipConfig
    from shoal.simulations.runner import RunSettings, Simulation

__all__ = [
    "SCENARIOS",
    "Churn",
    "Crash",
    "Idle",
    "Isolate",
    "Loss",
    "ReplicatedChurn",
    "ReplicatedCrash",
    "ReplicatedSplit",
    "Scenario",
    "Slow",
    "Split",
    "Stall",
    "Topics",
    "detection_allowance",
    "heal_allowance",
]


class Scenario(Protocol):
    """What the runner needs from a scenario."""

    name: ClassVar[str]
    #: Whether the scenario injects faults (besides any loss in the settings).
    faults: ClassVar[bool]

    def default_duration(self, config: MembershipConfig, nodes: int) -> float:
        """Return the virtual seconds to run when the user gives no duration."""
        ...

    def variants(self, settings: RunSettings) -> list[tuple[str, RunSettings]]:
        """Return the runs this scenario is made of, each with a label."""
        ...

    def install(self, sim: Simulation) -> None:
        """Schedule the scenario's faults and measurements on ``sim``."""
        ...

    def parameters(self) -> dict[str, Any]:
        """Return the scenario's parameters as JSON-ready data."""
        ...


def detection_allowance(config: MembershipConfig, nodes: int) -> float:
    """Return a bound on crash detection: the longest suspicion plus a few probe rounds."""
    _, _, high = suspicion_bounds(
        config.suspicion_mult,
        config.suspicion_max_timeout_mult,
        nodes,
        config.probe_interval,
        dynamic=config.lifeguard_suspicion,
    )
    return high + 10 * config.probe_interval


def heal_allowance(config: MembershipConfig, nodes: int) -> float:
    """Return a bound on healing: two healing rounds and two (scaled) push-pull periods."""
    period = push_pull_scale(config.push_pull_interval, nodes) if config.push_pull_interval else 0
    return 2 * config.reconnect_interval * (1 + config.reconnect_jitter) + 2 * period


class _Base:
    """Shared defaults: one run, parameters from the dataclass fields."""

    name: ClassVar[str] = ""
    faults: ClassVar[bool] = True

    def variants(self, settings: RunSettings) -> list[tuple[str, RunSettings]]:
        """Return a single run."""
        return [(self.name, settings)]

    def parameters(self) -> dict[str, Any]:
        """Return the dataclass fields."""
        fields: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(self)  # type: ignore[arg-type]
        return {field.name: _jsonable(getattr(self, field.name)) for field in fields}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def _check_non_negative(**values: float | None) -> None:
    for name, value in values.items():
        if value is not None and not (value >= 0 and math.isfinite(value)):
            raise ConfigError(f"{name} must be a non-negative number of seconds, got {value!r}")


def _victim(sim: Simulation) -> str | None:
    """Pick a random running, unpaused, non-seed node (None if there is none)."""
    candidates = [name for name in sim.live_names() if name != sim.seed_name]
    candidates = [name for name in candidates if not sim.is_paused(name)]
    if not candidates:
        return None
    return sim.rng.choice(candidates)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Idle(_Base):
    """No faults at all."""

    name: ClassVar[str] = "idle"
    faults: ClassVar[bool] = False

    def default_duration(self, config: MembershipConfig, nodes: int) -> float:
        """Two minutes, or four push-pull periods if longer."""
        return max(120.0, 4 * push_pull_scale(config.push_pull_interval, nodes))

    def install(self, sim: Simulation) -> None:
        """Schedule nothing."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Crash(_Base):
    """``kill`` random nodes crash, ``interval`` apart, from time ``at``.

    Attributes:
        kill: how many nodes crash.
        at: when the first crashes.
        interval: time between crashes (0: all at once).
        restart_after: restart each crashed node this long after its crash,
            with a higher incarnation (None: never).
        host_down: the whole host goes down, so nothing refuses probes and
            detection relies on silence (by default only the process dies
            and its host's kernel refuses).
    """

    name: ClassVar[str] = "crash"
    kill: int = 1
    at: float = 20.0
    interval: float = 0.0
    restart_after: float | None = None
    host_down: bool = False

    def __post_init__(self) -> None:
        if self.kill < 1:
            raise ConfigError("kill must be at least 1")
        _check_non_negative(at=self.at, interval=self.interval, restart_after=self.restart_after)

    def default_duration(self, config: MembershipConfig, nodes: int) -> float:
        """Until the last crash plus the detection allowance."""
        return self.at + (self.kill - 1) * self.interval + detection_allowance(config, nodes)

    def install(self, sim: Simulation) -> None:
        """Schedule the crashes (and restarts)."""
        if self.kill >= sim.settings.nodes:
            raise ConfigError("kill must leave at least one node running")
        for i in range(self.kill):
            sim.at(self.at + i * self.interval, self._crash_one, sim)

    def _crash_one(self, sim: Simulation) -> None:
        victim = _victim(sim)
        if victim is None:
            return
        sim.crash(victim, host_down=self.host_down)
        if self.restart_after is not None:
            sim.at(sim.now + self.restart_after, sim.restart, victim)


def _group_names(count: int) -> list[str]:
    return [chr(ord("A") + i) if i < 26 else f"G{i}" for i in range(count)]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Split(_Base):
    """The cluster splits into groups of ``sizes`` at ``at`` for ``duration``, then heals.

    Attributes:
        sizes: group sizes, summing to the node count (default: two halves).
            Members are assigned at random.
        at: when the split starts.
        duration: how long it lasts.
        one_way: cut only the first group's traffic to the others (their
            traffic to it still flows), instead of both directions.
        topics: create a topic on one member of each group half-way through
            the split, so the heal has registry news to merge.
    """

    name: ClassVar[str] = "split"
    sizes: tuple[int, ...] | None = None
    at: float = 20.0
    duration: float = 60.0
    one_way: bool = False
    topics: bool = True

    def __post_init__(self) -> None:
        _check_non_negative(at=self.at, duration=self.duration)
        if self.sizes is not None and (len(self.sizes) < 2 or min(self.sizes) < 1):
            raise ConfigError("sizes needs at least two groups of at least one node")

    def default_duration(self, config: MembershipConfig, nodes: int) -> float:
        """Until the heal plus the heal allowance."""
        return self.at + self.duration + heal_allowance(config, nodes)

    def install(self, sim: Simulation) -> None:
        """Assign the groups and schedule the split, the topics and the heal."""
        nodes = sim.settings.nodes
        sizes = self.sizes or (nodes // 2, nodes - nodes // 2)
        if sum(sizes) != nodes:
            raise ConfigError(f"split sizes {list(sizes)} do not add up to {nodes} nodes")
        names = list(sim.names)
        sim.rng.shuffle(names)
        groups: dict[str, list[str]] = {}
        start = 0
        for label, size in zip(_group_names(len(sizes)), sizes, strict=True):
            groups[label] = sorted(names[start : start + size], key=sim.names.index)
            start += size
        sim.set_groups(groups)
        members = list(groups.values())
        if self.one_way:
            rest = [name for group in members[1:] for name in group]
            sim.at(self.at, sim.cut, members[0], rest, "split")
        else:
            sim.at(self.at, sim.partition, members, "split")
        if self.topics:
            for index, group in enumerate(members):
                sim.at(self.at + self.duration / 2, self._topic, sim, group, f"split-{index}")
        sim.at(self.at + self.duration, sim.heal, "split")

    @staticmethod
    def _topic(sim: Simulation, group: list[str], topic: str) -> None:
        candidates = [name for name in group if name in sim.live_names()]
        if candidates:
            sim.create_topic(sim.rng.choice(candidates), topic)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Isolate(_Base):
    """One node is cut off at ``at`` for ``duration``, then reconnected.

    Attributes:
        node: the node (default: a random non-seed node).
        at: when the cut starts.
        duration: how long it lasts.
        one_way: cut only what reaches the node (it still sends), instead
            of both directions.
    """

    name: ClassVar[str] = "isolate"
    node: str | None = None
    at: float = 20.0
    duration: float = 30.0
    one_way: bool = False

    def __post_init__(self) -> None:
        _check_non_negative(at=self.at, duration=self.duration)

    def default_duration(self, config: MembershipConfig, nodes: int) -> float:
        """Until the reconnection plus the heal allowance."""
        return self.at + self.duration + heal_allowance(config, nodes)

    def install(self, sim: Simulation) -> None:
        """Pick the node and schedule the cut and the heal."""
        if self.node is not None and self.node not in sim.names:
            raise ConfigError(f"no node named {self.node!r}")
        node = self.node
        if node is None:
            candidates = [name for name in sim.names if name != sim.seed_name]
            node = sim.rng.choice(candidates) if candidates else sim.names[0]
        rest = [name for name in sim.names if name != node]
        sim.set_groups({"isolated": [node], "rest": rest})
        if self.one_way:
            sim.at(self.at, sim.cut, rest, [node], "isolate")
        else:
            sim.at(self.at, sim.partition, [[node], rest], "isolate")
        sim.at(self.at + self.duration, sim.heal, "isolate")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Loss(_Base):
    """One run per datagram loss rate, with updates to time their dissemination.

    Attributes:
        rates: the loss rates swept (each 0..1).
        updates_every: a random node announces new metadata this often
            (unless the run settings give their own interval).
    """

    name: ClassVar[str] = "loss"
    faults: ClassVar[bool] = False  # the loss itself is in each run's settings
    rates: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)
    updates_every: float = 1.0

    def __post_init__(self) -> None:
        if not self.rates or not all(0.0 <= r < 1.0 for r in self.rates):
            raise ConfigError("loss rates must be in [0, 1)")
        if not self.updates_every > 0:
            raise ConfigError("updates_every must be positive")

    def default_duration(self, config: MembershipConfig, nodes: int) -> float:
        """Two minutes, or two push-pull periods if longer."""
        return max(120.0, 2 * push_pull_scale(config.push_pull_interval, nodes))

    def variants(self, settings: RunSettings) -> list[tuple[str, RunSettings]]:
        """Return one run per rate."""
        every = settings.updates_every or self.updates_every
        return [
            (f"loss={rate:.0%}", dataclasses.replace(settings, loss=rate, updates_every=every))
            for rate in self.rates
        ]

    def install(self, sim: Simulation) -> None:
        """Nothing beyond the run settings' loss and updates."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Churn(_Base):
    """Joins, graceful leaves and crashes arrive as Poisson processes.

    Attributes:
        join_rate: new nodes per minute (each joins through up to three
            random live nodes).
        leave_rate: graceful leaves per minute.
        crash_rate: crashes per minute.
        restart_after: restart each crashed node this long after its crash
            (None: never).
        start: when churn begins.
        settle: churn stops this long before the end, so the cluster can
            converge.
    """

    name: ClassVar[str] = "churn"
    join_rate: float = 2.0
    leave_rate: float = 1.0
    crash_rate: float = 1.0
    restart_after: float | None = 30.0
    start: float = 10.0
    settle: float = 90.0

    def __post_init__(self) -> None:
        _check_non_negative(
            join_rate=self.join_rate,
            leave_rate=self.leave_rate,
            crash_rate=self.crash_rate,
            restart_after=self.restart_after,
            start=self.start,
            settle=self.settle,
        )

    def default_duration(self, config: MembershipConfig, nodes: int) -> float:
        """Five minutes of churn plus the settling period."""
        return self.start + 300.0 + self.settle

    def install(self, sim: Simulation) -> None:
        """Draw the arrival times and schedule them."""
        end = sim.duration - self.settle
        rng = sim.rng
        actions: list[tuple[float, Callable[[Simulation], None]]] = [
            (self.join_rate, self._join),
            (self.leave_rate, self._leave),
            (self.crash_rate, self._crash),
        ]
        for rate, action in actions:
            if rate <= 0:
                continue
            t = self.start
            for _ in range(1_000_000):
                t += rng.expovariate(rate / 60.0)
                if t >= end:
                    break
                sim.at(t, action, sim)

    @staticmethod
    def _join(sim: Simulation) -> None:
        sim.add_node()

    @staticmethod
    def _leave(sim: Simulation) -> None:
        victim = _victim(sim)
        if victim is not None and len(sim.live_names()) > 2:
            sim.leave(victim)

    def _crash(self, sim: Simulation) -> None:
        victim = _victim(sim)
        if victim is None or len(sim.live_names()) <= 2:
            return
        sim.crash(victim)
        if self.restart_after is not None and sim.now + self.restart_after < sim.duration - 1:
            sim.at(sim.now + self.restart_after, sim.restart, victim)


def _pick_share(sim: Simulation, share: float) -> list[str]:
    count = round(share * sim.settings.nodes)
    candidates = [name for name in sim.names if name != sim.seed_name]
    count = min(count, len(candidates))
    return sorted(sim.rng.sample(candidates, count), key=sim.names.index)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Stall(_Base):
    """A share of nodes stall their event loop for ``stall`` seconds every ``every``.

    Lifeguard's scenario as docs/membership.md G9 states it. Each
    stalled node has its own random phase. Note what the model shows: a
    stalled node starts its next probe only after it resumes, so it rarely
    accuses anyone (an ack it has not read arrives within a millisecond of
    its ping); the others suspect *it*, and it refutes. False suspicions of
    healthy members come from slow processing instead, see `Slow`.

    Attributes:
        share: fraction of the nodes that stall.
        stall: length of each stall.
        every: period of the stalls.
        start: when stalling begins.
    """

    name: ClassVar[str] = "stall"
    share: float = 0.1
    stall: float = 2.0
    every: float = 10.0
    start: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.share < 1.0:
            raise ConfigError("share must be in [0, 1)")
        _check_non_negative(stall=self.stall, start=self.start)
        if not self.every > self.stall:
            raise ConfigError("every must be longer than stall")

    def default_duration(self, config: MembershipConfig, nodes: int) -> float:
        """Five minutes."""
        return 300.0

    def install(self, sim: Simulation) -> None:
        """Pick the stalling nodes and schedule every stall."""
        stalled = _pick_share(sim, self.share)
        healthy = [name for name in sim.names if name not in stalled]
        sim.set_groups({"healthy": healthy, "stalled": stalled})
        for name in stalled:
            t = self.start + sim.rng.uniform(0.0, self.every)
            for _ in range(1_000_000):
                if t >= sim.duration:
                    break
                sim.at(t, sim.pause, name, self.stall)
                t += self.every


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Slow(_Base):
    """A share of nodes read every input ``delay`` seconds late (their timers are on time).

    Lifeguard's slow message processing: a slow node misses acks that did
    arrive and accuses healthy members. The default delay is longer than
    the LAN probe interval, so without local health awareness every probe
    of a slow node fails; with it, its probing slows until acks fit.

    Attributes:
        share: fraction of the nodes that are slow.
        delay: how late they are.
        start: when they become slow.
    """

    name: ClassVar[str] = "slow"
    share: float = 0.1
    delay: float = 1.5
    start: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.share < 1.0:
            raise ConfigError("share must be in [0, 1)")
        _check_non_negative(delay=self.delay, start=self.start)

    def default_duration(self, config: MembershipConfig, nodes: int) -> float:
        """Five minutes."""
        return 300.0

    def install(self, sim: Simulation) -> None:
        """Pick the slow nodes and slow them at ``start``."""
        slow = _pick_share(sim, self.share)
        healthy = [name for name in sim.names if name not in slow]
        sim.set_groups({"healthy": healthy, "slow": slow})
        for name in slow:
            sim.at(self.start, sim.slow, name, self.delay)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Topics(_Base):
    """``count`` topics are created on random nodes, ``every`` seconds apart.

    Attributes:
        count: how many topics.
        every: time between creations.
        at: when the first is created.
    """

    name: ClassVar[str] = "topics"
    faults: ClassVar[bool] = False
    count: int = 20
    every: float = 1.0
    at: float = 10.0

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError("count must be at least 1")
        _check_non_negative(every=self.every, at=self.at)

    def default_duration(self, config: MembershipConfig, nodes: int) -> float:
        """Until the last creation plus two (scaled) push-pull periods."""
        period = push_pull_scale(config.push_pull_interval, nodes)
        return self.at + self.count * self.every + max(30.0, 2 * period)

    def install(self, sim: Simulation) -> None:
        """Schedule the creations."""
        if not sim.settings.registry:
            raise ConfigError("the topics scenario needs the registry (do not turn it off)")
        for i in range(self.count):
            sim.at(self.at + i * self.every, self._create, sim, f"topic-{i}")

    @staticmethod
    def _create(sim: Simulation, topic: str) -> None:
        owner = _victim(sim)
        if owner is not None:
            sim.create_topic(owner, topic)


SCENARIOS: Mapping[str, type[Scenario]]
SCENARIOS = {
    cls.name: cls
    for cls in (
        Idle,
        Crash,
        Split,
        Isolate,
        Loss,
        Churn,
        Stall,
        Slow,
        Topics,
        ReplicatedCrash,
        ReplicatedSplit,
        ReplicatedChurn,
    )
}
