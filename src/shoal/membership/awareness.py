"""Lifeguard local health awareness (LHA-probe): a small score that slows a sick node.

Theory of operation (docs/membership.md §1.6; memberlist ``awareness.go``):
a node that misses acks it should have received, fails to get the nacks its
indirect helpers promised, or has to refute suspicions about itself is more
likely the slow party than its peers are. Its health score rises, and it probes
(and, with ``awareness_scales_probe_timeout``, waits for acks) ``score + 1``
times slower, so it accuses others less while it is unhealthy.

Deltas, applied by the engine:

* any ack for our probe: -1;
* a failed probe: + (expected nacks - received nacks) when helpers were asked
  for nacks, otherwise +1;
* refuting a suspicion or death about ourselves: +1.

The score is clamped to ``0 .. max_multiplier - 1``; 0 is healthy.
"""

from __future__ import annotations

__all__ = ["Awareness"]


class Awareness:
    """The health score of the local node.

    Args:
        max_multiplier: ``MembershipConfig.awareness_max_multiplier``.
        enabled: when false the score stays 0 (classic SWIM timing).
    """

    __slots__ = ("_enabled", "_max", "score")

    def __init__(self, max_multiplier: int, *, enabled: bool = True) -> None:
        self._max = max_multiplier
        self._enabled = enabled
        self.score = 0

    def apply_delta(self, delta: int) -> None:
        """Add ``delta`` to the score, clamped to ``0 .. max_multiplier - 1``."""
        if not self._enabled:
            return
        self.score = min(max(self.score + delta, 0), self._max - 1)

    def scale(self, duration: float) -> float:
        """Return ``duration * (score + 1)``."""
        return duration * (self.score + 1)
