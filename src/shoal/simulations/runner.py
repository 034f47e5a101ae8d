"""Seed in, report out: builds a simulated cluster, runs a scenario, measures it.

Rules:

1. **The real code runs.** Every node is a real `shoal.membership.Membership`
   with the real configuration preset, carrying a real
   `shoal.registry.Registry` on its application channel, spread by the real
   `shoal.registry.RegistryGossip` policy
   (`shoal.simulations.topics`). The simulator only plays the network and
   the clock.
2. **One seed.** The run's seed builds one master `random.Random`; the
   network, the scenario's choices and every engine draw from generators
   taken from it in a fixed order, so a seed replays a run bit for bit and
   the same seed gives byte-identical JSON.
3. **Bounded.** The scheduler refuses livelocks; every loop here is bounded.

Theory of operation: `Simulation` creates ``nodes`` hosts named ``node-0``
.. ``node-{n-1}`` at ``10.0.<i // 256>.<i % 256>:4160``. By default the cluster
starts *preformed*: every engine is handed the full member table (and every
registry the full registry) as a push-pull reply, as a warm cluster would
hold, which skips the O(n^2 log n) gossip of a mass join. With
``bootstrap="join"`` every node instead joins through ``node-0`` at time 0, as
real processes do. The scenario then schedules its faults, the recorder
(`shoal.simulations.metrics`) turns events into figures, and `simulate`
returns a `shoal.simulations.report.SimulationReport`.

Cost: per virtual second, probing costs O(n) packets, gossip O(n) per piece
of news, the registry's digest exchanges O(n) exchanges of O(n)-byte digests
(compared, not decoded, while equal), and push-pull O(n^2 / log n) work (each
of the n nodes merges an n-member table once per ``push_pull_interval *
(log2(n) - 4)``; members holding the same records send byte-identical tables,
which the codec decodes once, so a merge is a walk of n records); the
preformed start costs O(n^2) once (n engines learning n members, n
registries learning n owners), with the cyclic garbage collector paused, and
what it built frozen out of the collector during the run. 120 virtual
seconds of the crash scenario take about 0.8 s of CPU at n=100, 4 s at 300
and 12-14 s at 1000 (`bench/simulations.py scale`; wall time is longer on a
loaded machine; 19-22 s at 1000 while every probe left a reference cycle
for the collector and every push-pull table was encoded whole). Memory is
O(n^2) too: every engine holds a record of every member (about 170 bytes,
the names and addresses shared between engines),
while the registries share each owner's preformed state until one changes
it (`shoal.registry.StateImage`), leaving about 70 bytes a pair (a slot in
the registry's table and in its cached digest): 225 MB peak at 1000 without
the registry and 295 MB with it (675 MB when each registry held copies); 60
virtual seconds at 10,000 nodes without the registry took 480 s of CPU
(750 s before the same work; most of it the preformed start) and 16.3 GB.
`shoal.simulations.sweep` runs many seeds in parallel processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import random
import sys
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, Protocol

from shoal.errors import ConfigError
from shoal.membership import Membership, MembershipConfig, MemberState
from shoal.membership.codec import encode_push_pull, encode_table
from shoal.membership.messages import PushPullEntry
from shoal.membership.suspicion import suspicion_bounds
from shoal.simulations.metrics import Recorder
from shoal.simulations.network import PROFILES, Network
from shoal.simulations.report import RunReport, SimulationReport
from shoal.simulations.scheduler import Scheduler
from shoal.simulations.topics import RegistrySync, SimulatedRegistry

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from shoal.membership import Address, Event
    from shoal.simulations.network import Cut, Host
    from shoal.simulations.scenarios import Scenario

__all__ = [
    "LIFEGUARD_OFF",
    "PROFILE_NAMES",
    "RunProgress",
    "RunSettings",
    "Simulation",
    "compare",
    "run_once",
    "simulate",
]

#: The profiles: each names a membership preset and a network model.
PROFILE_NAMES = ("lan", "wan", "local")

#: The switches that turn every Lifeguard mechanism off (classic SWIM).
LIFEGUARD_OFF: dict[str, Any] = {
    "lifeguard_awareness": False,
    "lifeguard_suspicion": False,
    "lifeguard_buddy": False,
    "lifeguard_nack": False,
}

_LIVE = (MemberState.ALIVE, MemberState.SUSPECT)

#: How long a leaving node waits for its leave to be gossiped before stopping.
LEAVE_TIMEOUT = 5.0

#: Most nodes a joining node lists as seeds.
JOIN_SEEDS = 3

#: Progress reports per run: the scheduler runs to each of these many
#: equally spaced virtual times in turn, which changes nothing in the run
#: (callbacks keep their times; nothing is due between two slices).
PROGRESS_SLICES = 200


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunProgress:
    """Where a simulation stands, for a progress bar.

    Attributes:
        run: the 0-based index of the run under way.
        runs: how many runs the simulation has.
        label: the run's label.
        virtual_now: virtual seconds simulated in this run.
        duration: virtual seconds this run lasts.
    """

    run: int
    runs: int
    label: str
    virtual_now: float
    duration: float


class Model(Protocol):
    """A model riding on a simulation (replication), reporting at the end of the run."""

    #: The name of its section in the report.
    section: str

    def finish(self, now: float) -> tuple[dict[str, Any], list[str]]:
        """Return the model's figures and the invariants it found broken."""
        ...


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunSettings:
    """Everything that defines one run besides the scenario.

    Attributes:
        nodes: members at the start.
        seed: the run's seed.
        duration: virtual seconds to run (None: the scenario's default).
        profile: ``lan``, ``wan`` or ``local``: the membership preset and the
            network model.
        loss: datagram (and TCP segment) loss probability.
        duplicate: datagram duplication probability.
        reorder: probability that a datagram is held back up to 10 ms.
        lifeguard: Lifeguard on (the preset) or every switch off.
        overrides: ``(field, value)`` pairs replacing fields of the preset,
            applied after ``lifeguard``.
        bootstrap: ``preformed`` (a warm cluster) or ``join`` (everyone joins
            through ``node-0`` at time 0).
        registry: carry a topic registry on every node.
        updates_every: a random node announces new metadata this often, to
            time dissemination (None: never); updates stop 30 s (or a quarter
            of the run) before the end.
        sample_interval: seconds between timeline samples (None: 1/200th of
            the run, at least 0.1 s).
    """

    nodes: int = 100
    seed: int = 0
    duration: float | None = None
    profile: str = "lan"
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    lifeguard: bool = True
    overrides: tuple[tuple[str, Any], ...] = ()
    bootstrap: Literal["preformed", "join"] = "preformed"
    registry: bool = True
    updates_every: float | None = None
    sample_interval: float | None = None

    def __post_init__(self) -> None:
        if self.nodes < 2:
            raise ConfigError("a simulation needs at least 2 nodes")
        if self.nodes > 65_536:
            raise ConfigError("a simulation supports at most 65536 nodes")
        if self.profile not in PROFILE_NAMES:
            raise ConfigError(f"profile must be one of {', '.join(PROFILE_NAMES)}")
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
        for name in ("duration", "updates_every", "sample_interval"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number of seconds")
        if self.bootstrap not in ("preformed", "join"):
            raise ConfigError("bootstrap must be 'preformed' or 'join'")
        self.membership_config()  # raises ConfigError on a bad override

    def membership_config(self) -> MembershipConfig:
        """Return the membership configuration every node runs.

        Raises:
            ConfigError: an override names no field or has a bad value.
        """
        preset: MembershipConfig = getattr(MembershipConfig, self.profile)()
        changes: dict[str, Any] = {} if self.lifeguard else dict(LIFEGUARD_OFF)
        fields = {field.name for field in dataclasses.fields(MembershipConfig)}
        for name, value in self.overrides:
            if name not in fields:
                raise ConfigError(f"no membership setting named {name!r}")
            changes[name] = value
        try:
            config: MembershipConfig = dataclasses.replace(preset, **changes)
        except TypeError as exc:
            raise ConfigError(str(exc)) from None
        return config

    def to_json(self) -> dict[str, Any]:
        """Return the settings as JSON-ready data."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "overrides":
                value = dict(value)
            out[field.name] = value
        return out


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Keep Python's cyclic garbage collector from running inside the block.

    Building a cluster allocates O(n^2) long-lived records (every engine's
    member table) and no garbage cycles, so every collection the allocations
    trigger is pure cost: the full ones walk everything built so far, which
    took a third of the build at 1,000 nodes and grows with n.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def _built_objects_frozen() -> Iterator[None]:
    """Exempt everything built so far from the cyclic collector inside the block.

    A run keeps the collector (a crashed engine and its timers' callbacks
    make cycles that only it frees), but its full collections would
    otherwise walk every engine's member table each time: a quarter of a
    1,000-node run's CPU. Little else is left for it: the engine's
    per-probe objects make no cycles (`tests/membership/test_hot_paths.py`).
    Frozen objects are still freed by reference counting; afterwards they
    are collectable as before.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _address(index: int) -> Address:
    # Interned, as the codec interns what it decodes: every engine's record
    # of this member then shares the strings with the member itself.
    return (sys.intern(f"10.{index // 65536}.{index // 256 % 256}.{index % 256}"), 4160)


class Simulation:
    """A simulated cluster: hosts, network, clock and recorder, with fault actions.

    Scenarios schedule the actions (`crash`, `restart`, `pause`, `slow`,
    `partition`, `cut`, `heal`, `leave`, `add_node`, `update_meta`,
    `create_topic`) with `at`; `run` then plays the whole run.

    Args:
        settings: the run settings.
        duration: virtual seconds the run will last (scenarios read it).

    Raises:
        ConfigError: the settings are inconsistent.
    """

    def __init__(self, settings: RunSettings, *, duration: float) -> None:
        self.settings = settings
        self.duration = duration
        self.config = settings.membership_config()
        master = random.Random(settings.seed)
        self.rng = random.Random(master.getrandbits(64))
        self._engine_seeds = random.Random(master.getrandbits(64))
        self.scheduler = Scheduler()
        self.network = Network(
            self.scheduler,
            random.Random(master.getrandbits(64)),
            PROFILES[settings.profile],
            loss=settings.loss,
            duplicate=settings.duplicate,
            reorder=settings.reorder,
        )
        self.registries: dict[str, SimulatedRegistry] = {}
        self.sync = RegistrySync(self.scheduler, self.network, self._pick_peer)
        _, _, high = suspicion_bounds(
            self.config.suspicion_mult,
            self.config.suspicion_max_timeout_mult,
            settings.nodes,
            self.config.probe_interval,
            dynamic=self.config.lifeguard_suspicion,
        )
        grace = high + self.config.probe_interval * self.config.awareness_max_multiplier
        self.recorder = Recorder(self.scheduler, self.network, self.registries, grace=grace)
        self.network.observer = self
        #: Models riding on the cluster (`shoal.simulations.replication`):
        #: each adds a section of figures, and its broken invariants, to the report.
        self.models: list[Model] = []
        self._syncing = False
        self._observing = True
        self.names: list[str] = []
        self._hosts: dict[str, Host] = {}
        self._partitions: dict[str, tuple[list[Cut], list[object]]] = {}
        self._leaving: set[str] = set()
        self._meta_version = 0
        self._incarnations: dict[str, int] = {}
        with _collector_paused():
            self._build(settings)

    def _build(self, settings: RunSettings) -> None:
        for i in range(settings.nodes):
            self._new_host(f"node-{i}")
        self.seed_name = self.names[0]
        self.recorder.set_groups({"all": list(self.names)})
        if settings.bootstrap == "preformed":
            for name in self.names:
                self._boot(self._hosts[name], incarnation=1)
            self._preform()
            # The registry loops start once the cluster is warm: the
            # preformed members' "joined" events are history, not news.
            self._syncing = True
            for name in self.names:
                self._start_sync(self._hosts[name])
        else:
            self._syncing = True
            seed = [self._hosts[self.seed_name].address]
            for name in self.names:
                self._boot(self._hosts[name], incarnation=1)
                if name != self.seed_name:
                    self._join(name, seed)

    # ------------------------------------------------------------------ queries

    @property
    def now(self) -> float:
        """The virtual time."""
        return self.scheduler.now

    def live_names(self) -> list[str]:
        """Names of running members that are not leaving, in creation order."""
        return [
            name
            for name in self.names
            if self._hosts[name].engine is not None and name not in self._leaving
        ]

    def is_paused(self, name: str) -> bool:
        """Say whether ``name``'s event loop is stalled right now."""
        return self._hosts[name].paused_until is not None

    def engine(self, name: str) -> Membership | None:
        """Return the engine running as ``name``, if any."""
        return self._hosts[name].engine

    def view(self, name: str) -> dict[str, MemberState]:
        """Return how ``name`` sees every member it holds (itself included)."""
        engine = self._hosts[name].engine
        return {} if engine is None else {m.name: m.state for m in engine.members()}

    # ------------------------------------------------------------------ scheduling

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` at virtual time ``when``."""
        self.scheduler.call_at(when, fn, *args)

    def set_groups(self, groups: dict[str, list[str]]) -> None:
        """Name the groups of members plotted over time."""
        self.recorder.set_groups(groups)

    # ------------------------------------------------------------------ faults

    def crash(self, name: str, *, host_down: bool = False) -> None:
        """Kill ``name`` without a leave (SIGKILL): it vanishes from the network.

        Its host stays up and refuses what is sent to it, unless ``host_down``
        (the machine died or dropped off the network: silence).
        """
        host = self._hosts[name]
        engine = host.engine
        if engine is None:
            return
        now = self.now
        self._incarnations[name] = engine.incarnation
        self.recorder.track_crash(name, engine.incarnation, now)
        self.recorder.fault(name, now)
        self._leaving.discard(name)
        if not host_down:
            self.network.close_watches(host)
        self.network.stop(host, refuses=not host_down)
        self.recorder.host_stopped(host, now)

    def restart(self, name: str, incarnation: int | None = None) -> None:
        """Start ``name`` again with all state lost and a higher incarnation.

        It joins through up to three random live members. Does nothing if
        ``name`` is running.
        """
        host = self._hosts[name]
        if host.engine is not None:
            return
        previous = self._incarnations.get(name, 1)
        self.recorder.end_fault(name, self.now)
        self._boot(host, incarnation=previous + 1 if incarnation is None else incarnation)
        self._join(name, self._join_seeds(name))

    def pause(self, name: str, duration: float) -> None:
        """Stall ``name``'s event loop for ``duration`` seconds."""
        host = self._hosts[name]
        if host.engine is None or duration <= 0:
            return
        self.recorder.fault(name, self.now, self.now + duration)
        self.network.pause(host, duration)

    def slow(self, name: str, delay: float, duration: float | None = None) -> None:
        """Make ``name`` read every input ``delay`` seconds late (for ``duration``)."""
        host = self._hosts[name]
        end = math.inf if duration is None else self.now + duration
        self.recorder.fault(name, self.now, end)
        self.network.slow(host, delay)
        if duration is not None:
            self.at(end, self.network.slow, host, 0.0)

    def partition(self, groups: Sequence[Sequence[str]], label: str = "partition") -> None:
        """Cut the groups apart in both directions until `heal` with ``label``."""
        addresses = [[self._hosts[name].address for name in group] for group in groups]
        cuts = self.network.partition(addresses)
        tokens = [
            self.recorder.cut(a, b, self.now)
            for i, a in enumerate(groups)
            for j, b in enumerate(groups)
            if i != j
        ]
        self._add_partition(label, cuts, tokens)

    def cut(self, sources: Iterable[str], destinations: Iterable[str], label: str = "cut") -> None:
        """Stop traffic from ``sources`` to ``destinations`` (one way) until `heal`."""
        sources = list(sources)
        destinations = list(destinations)
        rule = self.network.cut(
            [self._hosts[n].address for n in sources],
            [self._hosts[n].address for n in destinations],
        )
        token = self.recorder.cut(sources, destinations, self.now)
        self._add_partition(label, [rule], [token])

    def _add_partition(self, label: str, cuts: list[Cut], tokens: list[object]) -> None:
        old_cuts, old_tokens = self._partitions.get(label, ([], []))
        self._partitions[label] = (old_cuts + cuts, old_tokens + tokens)

    def heal(self, label: str = "partition") -> None:
        """Lift the cuts made under ``label`` and time the heal."""
        cuts, tokens = self._partitions.pop(label, ([], []))
        self.network.restore(cuts)
        for token in tokens:
            self.recorder.uncut(token, self.now)
        self.recorder.watch_heal(label, self.now)

    def leave(self, name: str) -> None:
        """Leave gracefully, then stop once the leave is gossiped (or after 5 s)."""
        host = self._hosts[name]
        engine = host.engine
        if engine is None or name in self._leaving or host.paused_until is not None:
            return
        now = self.now
        self._leaving.add(name)
        self.recorder.host_leaving(host, now)
        self.recorder.track_update("leave", name, engine.incarnation, now)
        engine.leave(now)
        self.network.flush(host)
        self._await_leave(host, host.life, now + LEAVE_TIMEOUT)

    def _await_leave(self, host: Host, life: int, give_up_at: float) -> None:
        engine = host.engine
        if host.life != life or engine is None:
            return
        if engine.leave_complete() or self.now >= give_up_at:
            self._leaving.discard(host.name)
            self.network.stop(host)
            self.recorder.host_stopped(host, self.now)
            return
        self.scheduler.call_later(0.1, self._await_leave, host, life, give_up_at)

    def add_node(self) -> str:
        """Start a new member that joins through up to three random live members."""
        name = f"node-{len(self.names)}"
        host = self._new_host(name)
        self.recorder.add_to_group(next(iter(self.recorder.groups), "all"), name)
        self._boot(host, incarnation=1)
        self._join(name, self._join_seeds(name))
        self.recorder.track_update("join", name, 1, self.now)
        return name

    def update_meta(self, name: str) -> None:
        """Make ``name`` announce new metadata (a new incarnation) and time its spread."""
        host = self._hosts[name]
        engine = host.engine
        if engine is None or name in self._leaving or host.paused_until is not None:
            return
        self._meta_version += 1
        engine.update_meta({"v": str(self._meta_version)}, self.now)
        self.network.flush(host)
        self.recorder.track_update("update", name, engine.incarnation, self.now)

    def create_topic(self, name: str, topic: str) -> None:
        """Create ``topic`` on ``name``'s broker and time its way to every lookup."""
        host = self._hosts[name]
        holder = self.registries.get(name)
        if holder is None or host.engine is None or host.paused_until is not None:
            return
        holder.set_topic(topic, ["archive"], self.now)
        self.network.flush(host)
        self.recorder.track_topic(name, topic, self.now)

    # ------------------------------------------------------------------ running

    def run(
        self,
        label: str,
        scenario: Scenario,
        progress: Callable[[float], None] | None = None,
    ) -> RunReport:
        """Install ``scenario``, run to the end and return the report.

        ``progress``, if given, is called with the virtual time reached
        `PROGRESS_SLICES` times over the run.
        """
        started = time.perf_counter()
        scenario.install(self)
        interval = self.settings.sample_interval or max(0.1, self.duration / 200)
        self._sample(interval)
        if self.settings.updates_every is not None:
            self.at(self.settings.updates_every, self._update_tick, self.settings.updates_every)
        with _built_objects_frozen():
            if progress is None:
                self.scheduler.run_until(self.duration)
            else:
                for step in range(1, PROGRESS_SLICES + 1):
                    self.scheduler.run_until(self.duration * step / PROGRESS_SLICES)
                    progress(self.now)
        self.recorder.sample(self.now)
        metrics = self.recorder.finish(self.now, self.settings.nodes, self.duration)
        sections: dict[str, dict[str, Any]] = {}
        violations = list(self.recorder.violations)
        for model in self.models:
            sections[model.section], problems = model.finish(self.now)
            violations.extend(problems)
        return RunReport(
            label=label,
            settings=self.settings.to_json() | {"duration": self.duration},
            parameters=scenario.parameters(),
            metrics=metrics,
            timeline=self.recorder.timeline(),
            markers=tuple(self.recorder.markers),
            violations=tuple(violations),
            sections=sections,
            wall_time=time.perf_counter() - started,
        )

    def _sample(self, interval: float) -> None:
        self.recorder.sample(self.now)
        if self.now + interval < self.duration:
            self.scheduler.call_later(interval, self._sample, interval)

    def _update_tick(self, interval: float) -> None:
        # Updates stop a while before the end, so each has time to spread and
        # "incomplete" means lost, not merely late.
        if self.now > self.duration - min(30.0, self.duration / 4):
            return
        candidates = [name for name in self.live_names() if not self.is_paused(name)]
        if candidates:
            self.update_meta(self.rng.choice(candidates))
        self.scheduler.call_later(interval, self._update_tick, interval)

    # ------------------------------------------------------------------ internals

    def _new_host(self, name: str) -> Host:
        name = sys.intern(name)
        host = self.network.add_host(name, _address(len(self.names)))
        self.names.append(name)
        self._hosts[name] = host
        return host

    def _boot(self, host: Host, *, incarnation: int) -> None:
        now = self.now
        name = host.name
        holder: SimulatedRegistry | None = None
        if self.settings.registry:
            holder = SimulatedRegistry(
                name,
                generation=int(now * 1e9) + host.life + 1,
                host=host.address[0],
                clock=self._clock,
                now=now,
            )
            holder.registry.add_listener(partial(self.recorder.registry_changed, name))
            self.registries[name] = holder
        engine = Membership(
            self.config,
            name=name,
            address=host.address,
            rng=random.Random(self._engine_seeds.getrandbits(64)),
            now=now,
            incarnation=incarnation,
            delegate=holder,
        )
        if holder is not None:
            holder.attach_engine(engine)
        self.network.start(host, engine)
        self.recorder.host_started(host, now)
        if self._syncing:
            self._start_sync(host)

    def _start_sync(self, host: Host) -> None:
        holder = self.registries.get(host.name)
        if holder is not None and host.engine is not None:
            self.sync.start(host, holder, random.Random(self._engine_seeds.getrandbits(64)))

    def _pick_peer(self, host: Host, rng: random.Random) -> Address | None:
        # Uniform over the members the host sees alive or suspect, as the
        # node's rng.choice over that list, by rejection from every name:
        # O(1) expected instead of building the list each time.
        view = self.recorder.view_of(host.index)
        names = self.names
        count = len(names)
        for _ in range(3 * count):
            name = names[rng.randrange(count)]
            if name != host.name and view.get(name) in _LIVE:
                return self._hosts[name].address
        live = [name for name, state in view.items() if state in _LIVE]
        return self._hosts[rng.choice(live)].address if live else None

    def on_events(self, host: Host, events: list[Event], now: float) -> None:
        """Hand an engine's events to the recorder, then to the registry loops."""
        if not self._observing:
            return
        self.recorder.on_events(host, events, now)
        if self._syncing:
            self.sync.on_events(host, events)

    def _clock(self) -> float:
        return self.scheduler.now

    def _join(self, name: str, seeds: list[Address]) -> None:
        host = self._hosts[name]
        engine = host.engine
        assert engine is not None
        engine.join(seeds, self.now)
        holder = self.registries.get(name)
        if holder is not None:
            holder.announce()
        self.network.flush(host)

    def _join_seeds(self, name: str) -> list[Address]:
        others = [n for n in self.live_names() if n != name]
        picked = self.rng.sample(others, min(JOIN_SEEDS, len(others)))
        return [self._hosts[n].address for n in picked]

    def _preform(self) -> None:
        table = encode_table(
            PushPullEntry(name, self._hosts[name].address, 1, MemberState.ALIVE, {})
            for name in self.names
        )
        now = self.now
        self._observing = False
        for name in self.names:
            host = self._hosts[name]
            engine = host.engine
            assert engine is not None
            # Attributed to the engine itself, so nothing is re-gossiped.
            reply = encode_push_pull(name, False, True, table, b"")
            engine.receive_stream_reply(reply, host.address, now)
            self.network.flush(host)
        self._observing = True
        self.recorder.preformed(self.names)
        if self.registries:
            images = [holder.registry.image() for holder in self.registries.values()]
            for holder in self.registries.values():
                holder.preload(images)


def run_once(
    scenario: Scenario,
    settings: RunSettings,
    label: str | None = None,
    *,
    progress: Callable[[RunProgress], None] | None = None,
    position: tuple[int, int] = (0, 1),
) -> RunReport:
    """Run one variant of ``scenario`` with ``settings`` and return its report.

    ``progress`` is told how far the run is; ``position`` is its (index,
    count) among the runs of the simulation, for that report.

    Raises:
        ConfigError: the settings or the scenario's parameters are inconsistent.
    """
    config = settings.membership_config()
    duration = settings.duration or scenario.default_duration(config, settings.nodes)
    simulation = Simulation(settings, duration=duration)
    name = label or scenario.name
    tick = None
    if progress is not None:
        report = progress

        def tick(now: float) -> None:
            report(RunProgress(run=position[0], runs=position[1], label=name,
                               virtual_now=now, duration=duration))  # fmt: skip

    return simulation.run(name, scenario, tick)


def simulate(
    scenario: Scenario,
    settings: RunSettings,
    *,
    progress: Callable[[RunProgress], None] | None = None,
) -> SimulationReport:
    """Run every variant of ``scenario`` (one, or one per loss rate) and report.

    Raises:
        ConfigError: the settings or the scenario's parameters are inconsistent.
    """
    variants = scenario.variants(settings)
    runs = tuple(
        run_once(scenario, s, label, progress=progress, position=(index, len(variants)))
        for index, (label, s) in enumerate(variants)
    )
    return SimulationReport(scenario=scenario.name, parameters=scenario.parameters(), runs=runs)


def compare(
    scenario: Scenario,
    settings: RunSettings,
    *,
    profiles: Sequence[str] = PROFILE_NAMES,
    lifeguard: Sequence[bool] = (True, False),
    progress: Callable[[RunProgress], None] | None = None,
) -> SimulationReport:
    """Run ``scenario`` under each profile with Lifeguard on and off, side by side.

    The run settings' own ``profile`` and ``lifeguard`` are replaced; each run
    keeps the scenario's default duration for its profile unless the settings
    fix one.

    Raises:
        ConfigError: a profile is unknown, or the settings are inconsistent.
    """
    planned: list[tuple[str, RunSettings]] = []
    for profile in profiles:
        for on in lifeguard:
            varied = dataclasses.replace(settings, profile=profile, lifeguard=on)
            for label, variant in scenario.variants(varied):
                suffix = "" if label == scenario.name else f" {label}"
                planned.append((f"{profile} lifeguard={'on' if on else 'off'}{suffix}", variant))
    runs = [
        run_once(scenario, variant, name, progress=progress, position=(index, len(planned)))
        for index, (name, variant) in enumerate(planned)
    ]
    return SimulationReport(
        scenario=f"compare {scenario.name}", parameters=scenario.parameters(), runs=tuple(runs)
    )
