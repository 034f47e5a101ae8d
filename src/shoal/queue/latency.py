"""End-to-end processing latency of a channel: publish to FIN, as quantiles.

nsqd keeps a biased-quantile stream per channel over two rotating halves of
``--e2e-processing-latency-window-time`` (docs/nsq.md §4.9). This keeps, per half
window, a bounded sample of latencies instead: every sample until the half
holds `CAPACITY`, then every second one of those, then every fourth, and so
on (deterministic decimation, no randomness), so memory stays bounded and
the sample stays spread over the whole half. Quantiles are read off the two
halves merged. Values are nanoseconds, as nsqd reports them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CAPACITY", "LatencyWindow"]

#: Samples kept per half window before decimation.
CAPACITY = 2048


class _Half:
    __slots__ = ("count", "samples", "skip", "started", "stride")

    def __init__(self, started: float) -> None:
        self.started = started
        self.samples: list[int] = []
        self.count = 0
        self.stride = 1
        self.skip = 0

    def add(self, value: int) -> None:
        self.count += 1
        if self.skip:
            self.skip -= 1
            return
        self.skip = self.stride - 1
        self.samples.append(value)
        if len(self.samples) >= CAPACITY:
            self.samples = self.samples[::2]
            self.stride *= 2


class LatencyWindow:
    """Quantiles of recent latencies.

    Args:
        quantiles: the quantiles to report, each in (0, 1].
        window: seconds covered (two halves of ``window / 2``).
        now: the current time.
    """

    __slots__ = ("_current", "_previous", "quantiles", "window")

    def __init__(self, quantiles: tuple[float, ...], window: float, now: float) -> None:
        self.quantiles = quantiles
        self.window = window
        self._current = _Half(now)
        self._previous: _Half | None = None

    def _rotate(self, now: float) -> None:
        half = self.window / 2
        if now - self._current.started < half:
            return
        if now - self._current.started < self.window:
            self._previous = self._current
        else:
            self._previous = None  # nothing recorded for a whole window
        self._current = _Half(now)

    def record(self, latency_ns: int, now: float) -> None:
        """Add one publish-to-FIN latency."""
        self._rotate(now)
        self._current.add(max(latency_ns, 0))

    def snapshot(self, now: float) -> dict[str, Any]:
        """Return the ``e2e_processing_latency`` object of nsqd: count and quantile values."""
        self._rotate(now)
        halves = [h for h in (self._previous, self._current) if h is not None]
        samples = sorted(v for h in halves for v in h.samples)
        count = sum(h.count for h in halves)
        if not samples:
            return {"count": count, "percentiles": None}
        top = len(samples) - 1
        return {
            "count": count,
            "percentiles": [
                {"quantile": q, "value": samples[min(int(q * len(samples)), top)]}
                for q in self.quantiles
            ],
        }
