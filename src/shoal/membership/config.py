"""Tuning of the SWIM + Lifeguard engine, with memberlist's names, values and formulas.

Every field is data: the engine reads it, the CLI maps one option to each field,
and ``shoal config show`` can dump it. Durations are float seconds. The three
presets follow memberlist's ``DefaultLANConfig``, ``DefaultWANConfig`` and
``DefaultLocalConfig`` (reference/membership.md §1.10); fields memberlist does
not have (healing, the application share of each packet, Lifeguard switches)
carry the defaults chosen in reference/membership.md §7.1.

Formulas used by the engine, with ``n`` the number of members believed alive or
suspect, the local node included:

* probe period = ``probe_interval * (health + 1)`` (Lifeguard LHA, health in
  ``0 .. awareness_max_multiplier - 1``);
* suspicion timeout: ``min = suspicion_mult * max(1, log10(n)) * probe_interval``,
  ``max = suspicion_max_timeout_mult * min``, shrinking from ``max`` towards
  ``min`` as ``k = suspicion_mult - 2`` independent confirmations arrive;
* retransmissions of each broadcast = ``retransmit_mult * ceil(log10(n + 1))``;
* push-pull period = ``push_pull_interval * (ceil(log2(n) - log2(32)) + 1)`` above
  32 members, ``push_pull_interval`` up to 32.
"""

from __future__ import annotations

import dataclasses
import math

from shoal.errors import ConfigError

__all__ = ["MembershipConfig"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MembershipConfig:
    """Configuration of one membership engine; build it with `lan`, `wan` or `local`.

    Attributes:
        probe_interval: time between two failure-detection probes of this node
            (one random member per period, in shuffled round-robin order). With
            Lifeguard awareness the period becomes ``probe_interval * (health+1)``.
            Lower detects failures sooner at the cost of more packets; it is also
            the unit of the suspicion timeout.
        probe_timeout: how long to wait for the direct ack before asking
            ``indirect_checks`` members to probe on our behalf. Should be about
            the 99th percentile of round-trip time; must be below
            ``probe_interval``. Scaled like the interval when
            ``awareness_scales_probe_timeout`` is set.
        indirect_checks: members asked to probe a target that missed its direct
            ack (SWIM's k ping-req helpers). More helpers lower false suspicions
            under packet loss and cost ``4 * k`` packets per failed probe.
        tcp_fallback_ping: also ping a target that missed its direct ack over a
            reliable stream, in parallel with the indirect probes. Keeps members
            behind UDP-hostile networks alive.
        suspicion_mult: alpha of Lifeguard; ``min`` suspicion timeout is
            ``suspicion_mult * max(1, log10(n)) * probe_interval``. Higher means
            fewer false deaths and slower detection. ``suspicion_mult - 2``
            independent confirmations collapse the timeout to ``min``.
        suspicion_max_timeout_mult: beta of Lifeguard; a suspicion starts at
            ``suspicion_max_timeout_mult * min`` and shrinks with confirmations,
            so a lone (possibly unhealthy) accuser waits much longer.
        awareness_max_multiplier: upper bound of Lifeguard local health scaling;
            the health score lives in ``0 .. awareness_max_multiplier - 1`` and a
            degraded node probes up to this many times slower.
        awareness_scales_probe_timeout: scale ``probe_timeout`` by the health
            multiplier as the Lifeguard paper does (memberlist scales only the
            interval). Both are kept so the simulator can compare them.
        retransmit_mult: each broadcast is sent
            ``retransmit_mult * ceil(log10(n + 1))`` times (4 at n <= 9, 12 at
            n = 100 with the default 4). Higher spreads news more reliably under
            loss, at the cost of packet space.
        gossip_interval: period of the dedicated gossip packets sent to
            ``gossip_nodes`` random members while broadcasts are queued (an idle
            queue sends nothing). Lower spreads news faster, costs bandwidth.
        gossip_nodes: members each gossip round sends to (the epidemic fanout).
        gossip_to_the_dead_time: dead members still receive gossip for this
            long after their death, so a member falsely declared dead hears it
            and refutes.
        push_pull_interval: period of the full-state exchange (anti-entropy)
            with one random live member over a stream, scaled up above 32
            members by ``ceil(log2(n) - log2(32)) + 1``. Zero disables it.
        dead_node_reclaim_time: how long a member must have been dead before an
            ``alive`` from a *different address* may take over its name (always
            with a higher incarnation). Zero allows it as soon as the member is
            dead (memberlist's zero means never); ``math.inf`` forbids it while
            the dead record is retained. A ``left`` name is always reclaimable.
        dead_retention: dead and left members stay listed (and dead ones are
            retried by the healing loop) this long, then are reaped at the next
            wrap of the probe list. Serf calls it reconnect and tombstone timeout.
        reconnect_interval: period of the healing loop that push-pulls with one
            dead member (Serf's probability ``dead / alive``, capped at 1) and
            with every seed address that is not a live member. Jittered by
            ``reconnect_jitter``.
        reconnect_jitter: relative jitter of ``reconnect_interval`` (0.2 draws
            each period uniformly from 80% to 120%), so nodes do not synchronise.
        reconnect_timeout: the address of a reaped dead member keeps being
            retried by the healing loop this long after the reap. Seeds are
            retried forever.
        stream_timeout: how long a driver should wait to connect, send and read
            a stream (push-pull, TCP ping, large application message) before it
            reports the stream failed. Not used by the engine itself.
        packet_budget: largest datagram the engine builds, in bytes; several
            messages are packed into one packet up to this size. 1400 fits a
            1500-byte Ethernet MTU with IP/UDP headers and some encapsulation.
        app_budget_share: fraction of the space left in every packet that is
            offered first to application broadcasts, so membership gossip can
            never starve them (memberlist #299); membership gossip then fills
            what remains, and application broadcasts take any leftover.
        max_packet_size: datagrams larger than this are dropped unread.
        max_stream_size: stream requests and replies larger than this are
            dropped unread; bounds push-pull and large application messages.
        max_push_pull_members: member records accepted in one push-pull.
        meta_max_size: largest metadata (sum of UTF-8 key and value lengths) a
            member may announce; memberlist's ``MetaMaxSize``.
        max_name_length: longest member name and metadata key accepted, in
            characters.
        max_app_message_size: largest application message, sent over streams
            when it does not fit in a packet.
        lifeguard_awareness: Lifeguard local health awareness (LHA-probe):
            failed probes, missing nacks and refutations raise the health score
            that slows this node's probing. Off gives classic SWIM timing.
        lifeguard_suspicion: Lifeguard dynamic suspicion (LHA-suspicion): start
            at the max timeout and shrink with independent confirmations. Off
            uses a fixed timeout of ``min``.
        lifeguard_buddy: Lifeguard buddy system: a ping to a suspect member
            carries the suspicion so the member can refute at once.
        lifeguard_nack: indirect helpers send a nack when the target stays
            silent, so a prober can tell "target down" from "I am slow"; missing
            nacks raise the prober's health score.
        refusal_confirmations: distinct members whose probes of a member must
            be refused (ICMP port unreachable, or a refused TCP connection)
            before it is declared dead without waiting out its suspicion: the
            host is up and nothing listens, so the process is gone. A first
            refusal only suspects, and every member that hears of it probes
            the member itself, so one stray refusal never kills. At least 2;
            0 ignores refusals (silence and refusal then weigh the same, as
            in memberlist).
        watch_successors: how many successors on a ring of the live members
            (ordered by a hash of their names, `shoal.membership.watch`) this
            member holds a watch stream to. The host's kernel closes such a
            stream the moment the process at the other end dies, and the
            close counts as a refused probe; 0 turns the watch off.
    """

    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    tcp_fallback_ping: bool = True
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    awareness_max_multiplier: int = 8
    awareness_scales_probe_timeout: bool = True
    retransmit_mult: int = 4
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    gossip_to_the_dead_time: float = 30.0
    push_pull_interval: float = 30.0
    dead_node_reclaim_time: float = 0.0
    dead_retention: float = 3600.0
    reconnect_interval: float = 10.0
    reconnect_jitter: float = 0.2
    reconnect_timeout: float = 72 * 3600.0
    stream_timeout: float = 10.0
    packet_budget: int = 1400
    app_budget_share: float = 0.3
    max_packet_size: int = 65_536
    max_stream_size: int = 16 * 1024 * 1024
    max_push_pull_members: int = 65_536
    meta_max_size: int = 512
    max_name_length: int = 255
    max_app_message_size: int = 1024 * 1024
    lifeguard_awareness: bool = True
    lifeguard_suspicion: bool = True
    lifeguard_buddy: bool = True
    lifeguard_nack: bool = True
    refusal_confirmations: int = 2
    watch_successors: int = 2

    def __post_init__(self) -> None:
        positive = (
            "probe_interval",
            "probe_timeout",
            "gossip_interval",
            "reconnect_interval",
            "stream_timeout",
        )
        for name in positive:
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        non_negative = (
            "gossip_to_the_dead_time",
            "push_pull_interval",
            "dead_node_reclaim_time",
            "dead_retention",
            "reconnect_timeout",
        )
        for name in non_negative:
            value = getattr(self, name)
            if not value >= 0:
                raise ConfigError(f"{name} must not be negative, got {value!r}")
        if self.probe_timeout >= self.probe_interval:
            raise ConfigError("probe_timeout must be shorter than probe_interval")
        if self.indirect_checks < 0:
            raise ConfigError("indirect_checks must not be negative")
        if self.suspicion_mult < 1 or self.suspicion_max_timeout_mult < 1:
            raise ConfigError("suspicion_mult and suspicion_max_timeout_mult must be >= 1")
        if self.refusal_confirmations != 0 and self.refusal_confirmations < 2:
            raise ConfigError("refusal_confirmations must be 0 (off) or at least 2")
        if self.watch_successors < 0:
            raise ConfigError("watch_successors must not be negative")
        if self.awareness_max_multiplier < 1:
            raise ConfigError("awareness_max_multiplier must be >= 1")
        if self.retransmit_mult < 1:
            raise ConfigError("retransmit_mult must be >= 1")
        if self.gossip_nodes < 1:
            raise ConfigError("gossip_nodes must be >= 1")
        if not 0 <= self.reconnect_jitter < 1:
            raise ConfigError("reconnect_jitter must be in [0, 1)")
        if not 0 <= self.app_budget_share < 1:
            raise ConfigError("app_budget_share must be in [0, 1)")
        if not 256 <= self.packet_budget <= self.max_packet_size:
            raise ConfigError("packet_budget must be in 256 .. max_packet_size")
        if self.meta_max_size < 0 or self.meta_max_size > self.packet_budget // 2:
            raise ConfigError("meta_max_size must be in 0 .. packet_budget / 2")
        if not 1 <= self.max_name_length <= 1024:
            raise ConfigError("max_name_length must be in 1 .. 1024")
        if self.max_stream_size < self.packet_budget:
            raise ConfigError("max_stream_size must be at least packet_budget")
        if self.max_push_pull_members < 1:
            raise ConfigError("max_push_pull_members must be >= 1")
        if not self.packet_budget <= self.max_app_message_size <= self.max_stream_size:
            raise ConfigError("max_app_message_size must be in packet_budget .. max_stream_size")

    @classmethod
    def lan(cls) -> MembershipConfig:
        """Return memberlist's ``DefaultLANConfig`` values: a datacenter network.

        Failure detection of a crashed member takes about 6 s at 5 members and
        10-12 s at 100 (reference/membership.md §3.4).
        """
        return cls()

    @classmethod
    def wan(cls) -> MembershipConfig:
        """Return memberlist's ``DefaultWANConfig`` values: high latency, some loss."""
        return cls(
            probe_interval=5.0,
            probe_timeout=3.0,
            suspicion_mult=6,
            push_pull_interval=60.0,
            gossip_nodes=4,
            gossip_interval=0.5,
            gossip_to_the_dead_time=60.0,
            stream_timeout=30.0,
        )

    @classmethod
    def local(cls) -> MembershipConfig:
        """Return memberlist's ``DefaultLocalConfig`` values: loopback, tests, simulations.

        One deviation: ``retransmit_mult`` stays at the LAN value 4 (memberlist: 2).

        Dead members are kept only a minute and reaped addresses retried for ten,
        so partition and restart scenarios play out in little virtual time.
        """
        return cls(
            indirect_checks=1,
            # memberlist's Local profile uses 2; with so few retransmissions an
            # update misses a member every few broadcasts in small clusters
            # and waits for push-pull, which makes tests slow and flaky.
            retransmit_mult=4,
            suspicion_mult=3,
            push_pull_interval=15.0,
            probe_timeout=0.2,
            probe_interval=1.0,
            gossip_interval=0.1,
            gossip_to_the_dead_time=15.0,
            dead_retention=60.0,
            reconnect_timeout=600.0,
            stream_timeout=1.0,
        )
