"""The modelled network and hosts that the simulator drives the real engines over.

Rules:

1. **One seed.** Every random draw of the network (delay, loss, duplication,
   reordering, resume order) comes from the one `random.Random` it is given,
   itself derived from the run's seed, so a seed replays a run bit for bit.
2. **The engines are driven exactly as their contract says**
   (`shoal.membership.Membership`): after every call the host drains packets,
   streams and events and re-reads the next deadline.
3. **Faults are modelled where they happen.** Loss, duplication, reordering
   and partitions act on transmissions; crashes, restarts, stalls and slowness
   act on hosts.

Theory of operation:

* *Datagrams* take one one-way delay: the link's latency (a base plus an
  exponential tail, so delays cross and packets reorder as on a real network)
  plus, with probability ``reorder``, an extra uniform delay of up to
  ``reorder_delay``. They are lost with probability ``loss`` (the global rate
  or a per-link override) and duplicated with probability ``duplicate``.
* *Streams* model TCP: a request arrives after SYN, SYN-ACK and the data
  segment, a reply after one more leg, each leg retransmitted after TCP's
  timeouts when the link loses it (1 s for the handshake, 0.2 s for data,
  doubling) and each transfer costing ``bytes / bandwidth``. An opener that has
  no reply within its engine's ``stream_timeout`` is told the stream failed; a
  connection to a crashed process is refused after one round trip. A SYN into a
  partition (or to an address nobody holds) is resent on Linux's schedule
  (``NetworkProfile.syn_linear_timeouts``), so a connection attempt made
  during a split gets through when the split heals, if the opener is still
  waiting.
* *Partitions* are `Cut` rules: transmissions from any source in a cut to any
  destination in it are dropped. Two-way partitions are two cuts. A stream
  needs both directions open.
* *Host faults.* A crash detaches the engine (what was in flight to it is
  lost, its open streams die with it); a restart attaches a fresh engine.
  After a process crash the host still runs, so its kernel refuses: a
  datagram draws an ICMP port unreachable that reaches the sender one
  way-delay later (`Membership.probe_refused`) and a connection is refused.
  After a host crash (``refuses=False``) nothing answers at all. A process
  crash also closes the watch streams other members hold to it
  (`Network.close_watches`, `shoal.membership.watch`): each watcher hears
  one TCP segment later (`Membership.watch_closed`). The model assumes every
  watcher's stream to its current targets is already established (the
  real re-dial after a ring change takes one round trip). A graceful leave
  says goodbye on them, and a host crash closes nothing. A
  *pause* models a stalled event loop: the host runs no timer and reads no
  input until it resumes, datagrams queue in a socket buffer of
  `SOCKET_BUFFER` bytes (the excess is dropped), and on resuming it handles
  the overdue timers and the queued input in an order drawn at random, as
  trio's scheduler would. A *slow* host reads every input a fixed delay late
  (a backlog in its receive path) while its timers fire on time, so it
  misses acks that did arrive: Lifeguard's slow message processing.

Profiles (`PROFILES`): ``local`` is loopback (50 us), ``lan`` a datacenter
network (0.2 ms plus a 0.1 ms tail, 1 Gbit/s), ``wan`` three regions in a
line, 1 ms within a region and 30 ms per region hop (100 Mbit/s).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import TYPE_CHECKING, Protocol

from shoal.membership.watch import ring_key

if TYPE_CHECKING:
    import random
    from collections.abc import Iterable, Mapping

    from shoal.membership import Address, Event, Membership
    from shoal.simulations.scheduler import Scheduler

__all__ = [
    "PROFILES",
    "SOCKET_BUFFER",
    "Cut",
    "Host",
    "HostStatistics",
    "Latency",
    "Network",
    "NetworkObserver",
    "NetworkProfile",
]

#: Bytes of datagrams a paused host's socket holds (Linux's default rmem).
SOCKET_BUFFER = 212_992

#: Most transmissions of one TCP segment before the connection gives up.
_TCP_ATTEMPTS = 6


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Latency:
    """A one-way delay distribution: ``base`` plus an exponential tail of mean ``jitter``.

    The tail is capped at ten times its mean so one draw cannot stall a run.
    """

    base: float
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not (self.base >= 0 and self.jitter >= 0):
            raise ValueError("latency base and jitter must not be negative")

    def draw(self, rng: random.Random) -> float:
        """Draw one delay in seconds."""
        if self.jitter <= 0:
            return self.base
        return self.base + min(rng.expovariate(1.0 / self.jitter), 10.0 * self.jitter)

    def mean(self) -> float:
        """Return the mean delay (ignoring the cap)."""
        return self.base + self.jitter


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NetworkProfile:
    """Where hosts sit and how fast links between them are.

    Attributes:
        name: ``local``, ``lan`` or ``wan`` (also names the membership preset).
        latency: delay between two hosts of the same region.
        regions: hosts are spread round-robin over this many regions, placed
            on a line.
        hop_latency: base delay added per region between two hosts.
        hop_jitter: mean of the extra tail per region hop.
        bandwidth: bytes per second of a stream transfer.
        syn_timeout: TCP's first retransmission timeout for the handshake.
        syn_linear_timeouts: handshake retransmissions after the first that
            keep ``syn_timeout`` before the timeout starts doubling; Linux 6.5
            and later default to 4 (``net.ipv4.tcp_syn_linear_timeouts``),
            so a SYN goes out at 0, 1, 2, 3, 4, 5, 7, 11 s. Zero gives the
            classic 0, 1, 3, 7 s.
        data_timeout: TCP's first retransmission timeout for data.
    """

    name: str
    latency: Latency
    regions: int = 1
    hop_latency: float = 0.0
    hop_jitter: float = 0.0
    bandwidth: float = 125e6
    syn_timeout: float = 1.0
    syn_linear_timeouts: int = 4
    data_timeout: float = 0.2

    def syn_retry_delay(self, tries: int) -> float:
        """Return how long a SYN waits for an answer after its ``tries``-th sending (from 1)."""
        doublings = max(0, tries - 1 - self.syn_linear_timeouts)
        return self.syn_timeout * 2.0**doublings

    def link_latency(self, source_region: int, destination_region: int) -> Latency:
        """Return the delay distribution between two regions."""
        hops = abs(source_region - destination_region)
        if hops == 0:
            return self.latency
        return Latency(
            base=self.latency.base + hops * self.hop_latency,
            jitter=self.latency.jitter + hops * self.hop_jitter,
        )


PROFILES: Mapping[str, NetworkProfile] = {
    "local": NetworkProfile(name="local", latency=Latency(base=50e-6, jitter=20e-6), bandwidth=1e9),
    "lan": NetworkProfile(name="lan", latency=Latency(base=200e-6, jitter=100e-6)),
    "wan": NetworkProfile(
        name="wan",
        latency=Latency(base=1e-3, jitter=0.5e-3),
        regions=3,
        hop_latency=30e-3,
        hop_jitter=5e-3,
        bandwidth=12.5e6,
    ),
}


@dataclasses.dataclass(frozen=True, slots=True)
class Cut:
    """A one-way partition: nothing from ``sources`` reaches ``destinations``."""

    sources: frozenset[Address]
    destinations: frozenset[Address]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _LinkOverride:
    loss: float | None
    delay: float


@dataclasses.dataclass(slots=True)
class HostStatistics:
    """Traffic of one host (all lives), as seen on the wire.

    Datagram sizes are payload bytes (no IP or UDP header); stream sizes are
    request and reply bytes (no TCP overhead).
    """

    packets_sent: int = 0
    packets_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    streams_opened: int = 0
    stream_bytes_sent: int = 0
    stream_bytes_received: int = 0
    inbox_dropped: int = 0


class Host:
    """One simulated machine: a name, an address, and the engine running there.

    The runner owns the lifecycle (it builds engines); the network drives the
    engine while the host is running.

    Attributes:
        name: the member name.
        address: where its gossip endpoint lives.
        index: position in the network's host list.
        region: which region of the profile it sits in.
        engine: the running engine, or None while crashed or stopped.
        life: increases on every crash and restart; in-flight work for an
            older life is discarded.
        paused_until: end of the current pause, or None.
        refuses: while no engine runs, whether the host's kernel answers
            datagrams and connections with a refusal (the process crashed,
            the host is up).
        slow_delay: extra delay on every input.
        stats: traffic counters.
    """

    __slots__ = (
        "address",
        "engine",
        "inbox",
        "inbox_bytes",
        "index",
        "life",
        "name",
        "paused_until",
        "refuses",
        "region",
        "slow_delay",
        "stats",
        "wake_at",
    )

    def __init__(self, name: str, address: Address, index: int, region: int) -> None:
        self.name = name
        self.address = address
        self.index = index
        self.region = region
        self.engine: Membership | None = None
        self.life = 0
        self.paused_until: float | None = None
        self.refuses = True
        self.slow_delay = 0.0
        self.wake_at: float | None = None
        self.inbox: deque[tuple[str, object, object]] = deque()
        self.inbox_bytes = 0
        self.stats = HostStatistics()

    @property
    def running(self) -> bool:
        """Say whether an engine runs here (paused hosts are running)."""
        return self.engine is not None


class _Stream:
    __slots__ = ("destination", "done", "life", "opener")

    def __init__(self, opener: Host, destination: Address) -> None:
        self.opener = opener
        self.life = opener.life
        self.destination = destination
        self.done = False


class NetworkObserver(Protocol):
    """What the network reports to (the metrics recorder)."""

    def on_events(self, host: Host, events: list[Event], now: float) -> None:
        """Take the events an engine raised."""
        ...


class Network:
    """Carries datagrams and streams between hosts on a `Scheduler`, with faults.

    Args:
        scheduler: the virtual clock.
        rng: the only source of randomness of the network.
        profile: latency, regions and bandwidth.
        loss: probability that a datagram (or a TCP segment) is lost.
        duplicate: probability that a datagram is delivered twice.
        reorder: probability that a datagram is held back by up to
            ``reorder_delay`` extra seconds.
        reorder_delay: the longest such hold-back.
        observer: told of every engine event.

    ``loss``, ``duplicate`` and ``reorder`` may be changed during a run.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        rng: random.Random,
        profile: NetworkProfile,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        reorder_delay: float = 0.01,
        observer: NetworkObserver | None = None,
    ) -> None:
        for name, value in (("loss", loss), ("duplicate", duplicate), ("reorder", reorder)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability, got {value!r}")
        self.scheduler = scheduler
        self.rng = rng
        self.profile = profile
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.reorder_delay = reorder_delay
        self.observer = observer
        self.hosts: list[Host] = []
        self._by_address: dict[Address, Host] = {}
        self._cuts: list[Cut] = []
        self._links: dict[tuple[Address, Address], _LinkOverride] = {}
        self._latency_cache: dict[tuple[int, int], Latency] = {}
        self.packets_dropped = 0

    # ------------------------------------------------------------------ topology

    def add_host(self, name: str, address: Address) -> Host:
        """Create a host (not running) and place it in a region."""
        index = len(self.hosts)
        host = Host(name, address, index, index % self.profile.regions)
        self.hosts.append(host)
        self._by_address[address] = host
        return host

    def host_at(self, address: Address) -> Host | None:
        """Return the host at ``address``, if any."""
        return self._by_address.get(address)

    def cut(self, sources: Iterable[Address], destinations: Iterable[Address]) -> Cut:
        """Stop everything from ``sources`` reaching ``destinations`` (one way)."""
        rule = Cut(frozenset(sources), frozenset(destinations))
        self._cuts.append(rule)
        return rule

    def partition(self, groups: Iterable[Iterable[Address]]) -> list[Cut]:
        """Cut every pair of ``groups`` from each other in both directions."""
        sets = [frozenset(group) for group in groups]
        return [self.cut(a, b) for i, a in enumerate(sets) for j, b in enumerate(sets) if i != j]

    def restore(self, cuts: Iterable[Cut]) -> None:
        """Lift the given cuts (others stay)."""
        for rule in cuts:
            if rule in self._cuts:
                self._cuts.remove(rule)

    def heal(self) -> None:
        """Lift every cut."""
        self._cuts.clear()

    def set_link(
        self, source: Address, destination: Address, *, loss: float | None = None, delay: float = 0
    ) -> None:
        """Override one direction of one link: its loss rate, and an extra delay."""
        if loss is not None and not 0.0 <= loss <= 1.0:
            raise ValueError("loss must be a probability")
        self._links[(source, destination)] = _LinkOverride(loss=loss, delay=delay)

    def blocked(self, source: Address, destination: Address) -> bool:
        """Say whether a cut stops ``source`` from reaching ``destination``."""
        for rule in self._cuts:
            if source in rule.sources and destination in rule.destinations:
                return True
        return False

    # ------------------------------------------------------------------ host faults

    def start(self, host: Host, engine: Membership) -> None:
        """Attach ``engine`` to ``host`` (a boot or a restart) and drive it."""
        host.life += 1
        host.engine = engine
        host.paused_until = None
        host.wake_at = None
        host.inbox.clear()
        host.inbox_bytes = 0
        self.flush(host)

    def stop(self, host: Host, *, refuses: bool = True) -> None:
        """Detach the engine: a crash, or the end of a graceful leave.

        ``refuses`` says the host stays up (a process crash): its kernel
        refuses what is sent to the engine's port. False models a host that
        went down or off the network: silence.
        """
        host.refuses = refuses
        host.life += 1
        host.engine = None
        host.paused_until = None
        host.wake_at = None
        host.inbox.clear()
        host.inbox_bytes = 0

    def close_watches(self, host: Host) -> None:
        """Close the watch streams held to ``host``, whose process just died.

        Its kernel sends FIN on each; a watcher hears it one TCP segment later
        (retransmitted on loss, never through a cut). Watchers are found
        among the crashed member's ring predecessors in the true membership
        (up to twice as many as anyone watches, so views that lag a little
        are covered) and confirmed against their own engine's
        `Membership.watch_targets`, which keeps this O(k) engines per crash.
        """
        engine = host.engine
        k = 0 if engine is None else engine.config.watch_successors
        if not k:
            return
        live = [h for h in self._by_address.values() if h.engine is not None]
        live.sort(key=lambda h: ring_key(h.name))
        at = live.index(host)
        key = (host.name, host.address)
        for step in range(1, min(2 * k + 2, len(live))):
            watcher = live[at - step]
            watcher_engine = watcher.engine
            assert watcher_engine is not None
            if key not in watcher_engine.watch_targets():
                continue
            if self._cuts and self.blocked(host.address, watcher.address):
                continue
            delay = self.tcp_leg(host, watcher)
            if delay is not None:
                self.scheduler.call_later(
                    delay, self._watch_closed, watcher, watcher.life, host.name, host.address
                )

    def _watch_closed(self, host: Host, life: int, name: str, address: Address) -> None:
        engine = host.engine
        if engine is None or host.life != life:
            return
        if host.paused_until is not None:
            host.inbox.append(("watch_closed", name, address))
            return
        engine.watch_closed(name, address, self.scheduler.now)
        self.flush(host)

    def pause(self, host: Host, duration: float) -> None:
        """Stall ``host``'s event loop for ``duration`` seconds (extends a pause)."""
        if host.engine is None or duration <= 0:
            return
        until = self.scheduler.now + duration
        if host.paused_until is not None and host.paused_until >= until:
            return
        host.paused_until = until
        self.scheduler.call_at(until, self._resume, host, until, host.life)

    def slow(self, host: Host, delay: float) -> None:
        """Make ``host`` read every input ``delay`` seconds late (0 ends it)."""
        host.slow_delay = max(0.0, delay)

    # ------------------------------------------------------------------ driving

    def flush(self, host: Host) -> None:
        """Drain ``host``'s engine outputs and schedule its next wake-up.

        Call it after calling the engine directly (``join``, ``leave``,
        ``update_meta``, ``broadcast_app``); the network calls it after its own
        calls.
        """
        engine = host.engine
        if engine is None:
            return
        for destination, data in engine.packets_to_send():
            self._send_packet(host, destination, data)
        streams = engine.streams_to_open()
        for destination, data in streams:
            self._open_stream(host, destination, data)
        events = engine.events()
        if events and self.observer is not None:
            self.observer.on_events(host, events, self.scheduler.now)
        if host.paused_until is not None:
            return  # the resume ticks and flushes
        scheduler = self.scheduler
        deadline = engine.next_deadline()
        if deadline < scheduler.now:
            deadline = scheduler.now
        if deadline != host.wake_at:
            # A new entry supersedes the old one, which is skipped when it
            # pops: cheaper than waking the engine for a timer that was
            # cancelled (most probe timeouts are, by their ack).
            host.wake_at = deadline
            scheduler.call_at(deadline, self._wake, host, deadline, host.life)

    def _wake(self, host: Host, at: float, life: int) -> None:
        if host.life != life or host.wake_at != at:
            return  # superseded by an earlier wake-up, or the host restarted
        host.wake_at = None
        engine = host.engine
        if engine is None or host.paused_until is not None:
            return
        engine.tick(self.scheduler.now)
        self.flush(host)

    def _resume(self, host: Host, until: float, life: int) -> None:
        if host.life != life or host.paused_until != until:
            return
        host.paused_until = None
        host.wake_at = None
        engine = host.engine
        if engine is None:
            return
        now = self.scheduler.now
        # Overdue timers and queued input are both ready when the loop comes
        # back; which runs first is up to the event loop's scheduler.
        timers_first = self.rng.random() < 0.5
        if timers_first:
            engine.tick(now)
            self.flush(host)
        inbox = host.inbox
        for _ in range(len(inbox)):
            if host.life != life or host.paused_until is not None:
                break
            kind, first, second = inbox.popleft()
            self._handle(host, kind, first, second)
        inbox.clear()
        host.inbox_bytes = 0
        if host.life == life and host.engine is not None and not timers_first:
            host.engine.tick(now)
        self.flush(host)

    def _handle(self, host: Host, kind: str, first: object, second: object) -> None:
        engine = host.engine
        if engine is None:
            return
        now = self.scheduler.now
        if kind == "packet":
            assert isinstance(second, bytes)
            host.stats.packets_received += 1
            host.stats.bytes_received += len(second)
            engine.receive_packet(second, first, now)  # type: ignore[arg-type]
            self.flush(host)
        elif kind == "request":
            assert isinstance(first, _Stream)
            assert isinstance(second, bytes)
            self._serve(host, first, second)
        elif kind == "reply":
            assert isinstance(first, _Stream)
            assert isinstance(second, bytes)
            host.stats.stream_bytes_received += len(second)
            engine.receive_stream_reply(second, first.destination, now)
            self.flush(host)
        elif kind == "refused":
            engine.probe_refused(first, now)  # type: ignore[arg-type]
            self.flush(host)
        elif kind == "watch_closed":
            assert isinstance(first, str)
            engine.watch_closed(first, second, now)  # type: ignore[arg-type]
            self.flush(host)
        else:  # "failed"
            assert isinstance(first, _Stream)
            if second is not None:
                engine.probe_refused(first.destination, now)
            engine.stream_failed(first.destination, now)
            self.flush(host)

    # ------------------------------------------------------------------ datagrams

    def _latency(self, source: Host, destination: Host | None) -> Latency:
        region = 0 if destination is None else destination.region
        key = (source.region, region)
        latency = self._latency_cache.get(key)
        if latency is None:
            latency = self._latency_cache[key] = self.profile.link_latency(*key)
        return latency

    def _one_way(self, source: Host, destination: Host | None, loss: float) -> float | None:
        """Draw one datagram's delay, or None if the link loses it."""
        rng = self.rng
        if loss and rng.random() < loss:
            return None
        delay = self._latency(source, destination).draw(rng)
        if self.reorder and rng.random() < self.reorder:
            delay += rng.uniform(0.0, self.reorder_delay)
        return delay

    def _link_loss(self, source: Address, destination: Address) -> tuple[float, float]:
        override = self._links.get((source, destination)) if self._links else None
        if override is None:
            return self.loss, 0.0
        loss = self.loss if override.loss is None else override.loss
        return loss, override.delay

    def _send_packet(self, host: Host, destination: Address, data: bytes) -> None:
        stats = host.stats
        stats.packets_sent += 1
        stats.bytes_sent += len(data)
        if self._cuts and self.blocked(host.address, destination):
            self.packets_dropped += 1
            return
        target = self._by_address.get(destination)
        if self._links:
            loss, extra = self._link_loss(host.address, destination)
        else:
            loss, extra = self.loss, 0.0
        rng = self.rng
        copies = 2 if self.duplicate and rng.random() < self.duplicate else 1
        scheduler = self.scheduler
        for _ in range(copies):
            delay = self._one_way(host, target, loss)
            if delay is None:
                self.packets_dropped += 1
                continue
            if target is not None:
                delay += target.slow_delay
            scheduler.call_at(
                scheduler.now + delay + extra, self._deliver, destination, host.address, data
            )

    def _deliver(self, destination: Address, source: Address, data: bytes) -> None:
        host = self._by_address.get(destination)
        if host is None or host.engine is None:
            self.packets_dropped += 1
            if host is not None and host.refuses:
                self._icmp(host, source)
            return
        if host.paused_until is not None:
            if host.inbox_bytes + len(data) > SOCKET_BUFFER:
                host.stats.inbox_dropped += 1
                self.packets_dropped += 1
                return
            host.inbox_bytes += len(data)
            host.inbox.append(("packet", source, data))
            return
        stats = host.stats
        stats.packets_received += 1
        stats.bytes_received += len(data)
        host.engine.receive_packet(data, source, self.scheduler.now)
        self.flush(host)

    def _icmp(self, host: Host, destination: Address) -> None:
        """Send a port unreachable from ``host``'s kernel back to ``destination``."""
        sender = self._by_address.get(destination)
        if sender is None or (self._cuts and self.blocked(host.address, destination)):
            return
        loss, extra = self._link_loss(host.address, destination)
        delay = self._one_way(host, sender, loss)
        if delay is not None:
            self.scheduler.call_later(delay + extra, self._refused, sender, host.address)

    def _refused(self, host: Host, refused: Address) -> None:
        engine = host.engine
        if engine is None:
            return
        if host.paused_until is not None:
            host.inbox.append(("refused", refused, None))
            return
        engine.probe_refused(refused, self.scheduler.now)
        self.flush(host)

    # ------------------------------------------------------------------ streams

    def tcp_leg(
        self, source: Host, destination: Host | None, size: int = 0, *, handshake: bool = False
    ) -> float | None:
        """Return the delay of one TCP segment of ``size`` bytes, or None if it never arrives.

        The segment is retransmitted while the link loses it (at most six
        tries): a handshake segment on the profile's SYN schedule, a data
        segment after ``data_timeout``, doubling. Its transfer takes
        ``size / bandwidth``.
        """
        profile = self.profile
        loss, extra = self._link_loss(
            source.address, source.address if destination is None else destination.address
        )
        waited = 0.0
        timeout = profile.data_timeout
        for tries in range(1, _TCP_ATTEMPTS + 1):
            delay = self._one_way(source, destination, loss)
            if delay is not None:
                return waited + delay + extra + size / profile.bandwidth
            if handshake:
                waited += profile.syn_retry_delay(tries)
            else:
                waited += timeout
                timeout *= 2
        return None

    def _open_stream(self, host: Host, destination: Address, data: bytes) -> None:
        engine = host.engine
        assert engine is not None
        stats = host.stats
        stats.streams_opened += 1
        stats.stream_bytes_sent += len(data)
        stream = _Stream(host, destination)
        self.scheduler.call_later(engine.config.stream_timeout, self._fail, stream)
        self._connect(stream, data, 1)

    def _connect(self, stream: _Stream, data: bytes, tries: int) -> None:
        """Send a SYN; while it cannot get through, send it again as TCP would.

        A SYN into a partition, or to an address nobody answers, vanishes; the
        kernel resends it on the profile's schedule (every second at first on
        Linux 6.5+) until the opener's stream timeout gives up. A partition
        that heals meanwhile lets the next resend through, so a push-pull
        begun during a split completes shortly after it heals, as on a real
        network.
        """
        if stream.done:
            return
        host = stream.opener
        destination = stream.destination
        target = self._by_address.get(destination)
        cut = bool(self._cuts) and (
            self.blocked(host.address, destination) or self.blocked(destination, host.address)
        )
        if target is None or cut:
            retry = self.profile.syn_retry_delay(tries)
            self.scheduler.call_later(retry, self._connect, stream, data, tries + 1)
            return
        delay, refused = self.handshake(host, target, len(data))
        if delay is None:
            return  # a segment lost for good: the opener times out
        if refused:
            self.scheduler.call_later(delay, self._refuse, stream)
        else:
            self.scheduler.call_later(delay, self._arrive, stream, data)

    def handshake(self, opener: Host, target: Host, size: int) -> tuple[float | None, bool]:
        """Time a connection that gets through to ``target`` and its first request.

        Returns:
            ``(delay, refused)``: with ``refused`` False, when a request of
            ``size`` bytes is read by ``target`` (SYN, SYN-ACK and data legs,
            plus the target's read delay); with ``refused`` True, when the
            opener learns that nobody listens (the host is down). ``delay`` is
            None if a segment is lost for good: the opener times out.
        """
        syn = self.tcp_leg(opener, target, handshake=True)
        if target.engine is None:
            if not target.refuses:
                return None, False  # the host is down: the opener times out
            return (None if syn is None else 2 * syn), True
        syn_ack = self.tcp_leg(target, opener, handshake=True)
        request = self.tcp_leg(opener, target, size)
        if syn is None or syn_ack is None or request is None:
            return None, False
        return syn + syn_ack + request + target.slow_delay, False

    def _arrive(self, stream: _Stream, data: bytes) -> None:
        host = self._by_address.get(stream.destination)
        if host is None or host.engine is None:
            self.scheduler.call_later(self._latency(stream.opener, None).base, self._fail, stream)
            return
        if host.paused_until is not None:
            host.inbox.append(("request", stream, data))
            return
        self._serve(host, stream, data)

    def _serve(self, host: Host, stream: _Stream, data: bytes) -> None:
        engine = host.engine
        assert engine is not None
        host.stats.stream_bytes_received += len(data)
        opener = stream.opener
        reply = engine.receive_stream(data, opener.address, self.scheduler.now)
        self.flush(host)
        if not reply:
            # Closed without a reply: the opener needs no call.
            self.scheduler.call_later(self._latency(host, opener).base, self._close, stream)
            return
        host.stats.stream_bytes_sent += len(reply)
        if self._cuts and self.blocked(host.address, opener.address):
            return  # the opener times out
        delay = self.tcp_leg(host, opener, len(reply))
        if delay is None:
            return
        self.scheduler.call_later(delay + opener.slow_delay, self._reply, stream, reply)

    @staticmethod
    def _close(stream: _Stream) -> None:
        stream.done = True

    @staticmethod
    def _settle(stream: _Stream, kind: str, reply: bytes | None) -> Host | None:
        """End ``stream`` once; return its opener if the outcome is to be handled now.

        A restarted or crashed opener never hears of it; a paused one finds
        it in its inbox when it resumes.
        """
        if stream.done:
            return None
        stream.done = True
        opener = stream.opener
        if opener.life != stream.life or opener.engine is None:
            return None
        if opener.paused_until is not None:
            opener.inbox.append((kind, stream, reply))
            return None
        return opener

    def _reply(self, stream: _Stream, reply: bytes) -> None:
        opener = self._settle(stream, "reply", reply)
        if opener is None or opener.engine is None:
            return
        opener.stats.stream_bytes_received += len(reply)
        opener.engine.receive_stream_reply(reply, stream.destination, self.scheduler.now)
        self.flush(opener)

    def _fail(self, stream: _Stream) -> None:
        opener = self._settle(stream, "failed", None)
        if opener is None or opener.engine is None:
            return
        opener.engine.stream_failed(stream.destination, self.scheduler.now)
        self.flush(opener)

    def _refuse(self, stream: _Stream) -> None:
        """The connection was refused: evidence for the engine, then a failure."""
        opener = self._settle(stream, "failed", b"")
        if opener is None or opener.engine is None:
            return
        now = self.scheduler.now
        opener.engine.probe_refused(stream.destination, now)
        opener.engine.stream_failed(stream.destination, now)
        self.flush(opener)
