"""Lifeguard's dynamic suspicion timeout: math and per-suspect bookkeeping.

Theory of operation (docs/membership.md §1.5; memberlist ``suspicion.go``,
``util.go``; Lifeguard's LHA-suspicion):

A suspicion starts at a long timeout, ``max``, because a lone accuser may be the
unhealthy party. Each *independent* confirmation (a suspect message from
another member, the original accuser excluded, at most ``k`` counted) shrinks
the total timeout logarithmically towards ``min``::

    timeout(c) = max - (max - min) * ln(c + 1) / ln(k + 1),   floored at min

measured from the start of the suspicion, so a confirmation arriving late may
make the suspicion expire at once. With ``k = 0`` (too few members to expect
confirmations, or Lifeguard off) the timeout is ``min`` from the start.

``min = suspicion_mult * max(1, log10(max(1, n))) * probe_interval`` and
``max = suspicion_max_timeout_mult * min``: note log10, not ln, as memberlist.

Nothing here runs a timer. `Suspicion` returns deadlines; the engine keeps them
in its timer heap and asks again after each confirmation.
"""

from __future__ import annotations

import math

__all__ = [
    "Suspicion",
    "remaining_suspicion_time",
    "suspicion_bounds",
    "suspicion_timeout",
]


def suspicion_timeout(suspicion_mult: int, n: int, probe_interval: float) -> float:
    """Return the minimum suspicion timeout for a cluster of ``n`` members.

    Args:
        suspicion_mult: Lifeguard's alpha (``MembershipConfig.suspicion_mult``).
        n: estimated number of live members, the local node included.
        probe_interval: the base probe interval in seconds.

    Returns:
        ``suspicion_mult * max(1, log10(max(1, n))) * probe_interval``, with
        memberlist's millisecond truncation of the node scale.
    """
    node_scale = max(1.0, math.log10(max(1.0, float(n))))
    # memberlist keeps three decimals of the scale (it multiplies by 1000 to
    # stay in integer durations); we do the same so the tables agree, with a
    # hair of slack so log10(1000) = 2.9999999999999996 still counts as 3.
    return suspicion_mult * math.floor(node_scale * 1000 + 1e-6) / 1000 * probe_interval


def suspicion_bounds(
    suspicion_mult: int,
    suspicion_max_timeout_mult: int,
    n: int,
    probe_interval: float,
    *,
    dynamic: bool = True,
) -> tuple[int, float, float]:
    """Return ``(k, min, max)`` for a new suspicion.

    Args:
        suspicion_mult: Lifeguard's alpha.
        suspicion_max_timeout_mult: Lifeguard's beta.
        n: estimated number of live members, the local node included.
        probe_interval: the base probe interval in seconds.
        dynamic: Lifeguard's dynamic timeout; when false ``k`` is 0, so the
            suspicion lasts exactly ``min`` (classic SWIM).

    Returns:
        ``k``, the confirmations expected (``suspicion_mult - 2``, or 0 when
        ``n - 2 < k`` or not dynamic), and the two timeouts.
    """
    k = suspicion_mult - 2 if dynamic else 0
    if n - 2 < k:
        k = 0
    k = max(k, 0)
    low = suspicion_timeout(suspicion_mult, n, probe_interval)
    high = suspicion_max_timeout_mult * low
    return k, low, high


def remaining_suspicion_time(
    confirmations: int, k: int, elapsed: float, low: float, high: float
) -> float:
    """Return how long a suspicion has left to run (memberlist ``remainingSuspicionTime``).

    Args:
        confirmations: independent confirmations received so far.
        k: confirmations expected to reach the minimum.
        elapsed: seconds since the suspicion started.
        low: the minimum timeout.
        high: the maximum timeout.

    Returns:
        Seconds left; zero or negative means the suspicion has expired. The
        total timeout is truncated to whole milliseconds, as memberlist does.
    """
    if k <= 0:
        timeout = low
    else:
        fraction = math.log(confirmations + 1.0) / math.log(k + 1.0)
        raw = high - fraction * (high - low)
        timeout = max(math.floor(1000.0 * raw) / 1000.0, low)
    return timeout - elapsed


class Suspicion:
    """The bookkeeping of one running suspicion about one member.

    Attributes:
        started_at: engine time the member became suspect.
        k: confirmations that reach the minimum timeout.
        low: minimum timeout.
        high: maximum timeout.
        confirmations: independent confirmations counted so far.
    """

    __slots__ = ("_confirmers", "confirmations", "high", "k", "low", "started_at")

    def __init__(self, *, accuser: str, started_at: float, k: int, low: float, high: float) -> None:
        self.started_at = started_at
        self.k = k
        self.low = low
        self.high = high
        self.confirmations = 0
        # The original accuser never counts as a confirmation of itself.
        self._confirmers = {accuser}

    @property
    def deadline(self) -> float:
        """The engine time at which the member is declared dead."""
        return self.started_at + remaining_suspicion_time(
            self.confirmations, self.k, 0.0, self.low, self.high
        )

    def confirm(self, accuser: str) -> bool:
        """Count a suspect message from ``accuser``.

        Returns:
            True if it is a new independent confirmation (the caller re-gossips
            it and re-reads `deadline`); False for a repeat, the original
            accuser, or once ``k`` confirmations are in.
        """
        if self.confirmations >= self.k or accuser in self._confirmers:
            return False
        self._confirmers.add(accuser)
        self.confirmations += 1
        return True
