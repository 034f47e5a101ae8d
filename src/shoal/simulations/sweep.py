"""Many seeds of one scenario, in parallel processes: distributions over seeds.

One seed is one draw of everything random in a run (where a failure falls in
the probe round, which packets a lossy link drops), so a single run's figure
says little about a tail. `sweep` runs a scenario for ``seeds`` consecutive
seeds and reports, for every numeric figure of `RunMetrics.to_json` (nested
ones flattened to dotted names such as ``detection_all.max`` or
``heals.0.view``), the median, p90 and p99 over the seeds that have it.

Runs are independent and deterministic, so they go to a
`concurrent.futures.ProcessPoolExecutor` (``jobs`` worker processes; the
simulator is pure Python and one process uses one core) and the result is the
same for any ``jobs``: only the wall time differs.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import time
from typing import TYPE_CHECKING, Any

from shoal.errors import ConfigError
from shoal.simulations.runner import simulate
from shoal.simulations.scenarios import SCENARIOS

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from shoal.simulations.runner import RunSettings

__all__ = ["FigureDistribution", "SweepReport", "flatten", "format_sweep", "nearest_rank", "sweep"]

#: The percentiles reported for every figure.
QUANTILES = (0.5, 0.9, 0.99)


def nearest_rank(values: Sequence[float], q: float) -> float:
    """Return the nearest-rank ``q`` quantile of ``values`` (sorted or not)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def flatten(value: Any, prefix: str = "") -> dict[str, float]:
    """Return the numeric leaves of JSON-ready data, named by their dotted paths.

    Booleans and strings are not figures and are left out; so are nulls (a
    figure a run did not produce, such as a heal that never happened).
    """
    out: dict[str, float] = {}
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return out
    if isinstance(value, int | float):
        out[prefix] = float(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}.{i}" if prefix else str(i)))
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class FigureDistribution:
    """One figure over the seeds: how many seeds had it, and its percentiles."""

    name: str
    count: int
    p50: float
    p90: float
    p99: float


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SweepReport:
    """A scenario over many seeds.

    Attributes:
        scenario: the scenario's name.
        seeds: the seeds run, in order.
        runs: per run label (a scenario may run several variants, such as
            one per loss rate), the distribution of every figure.
        violations: broken invariants, each prefixed with its seed.
        wall_time: real seconds the sweep took (not deterministic).
    """

    scenario: str
    seeds: tuple[int, ...]
    runs: dict[str, tuple[FigureDistribution, ...]]
    violations: tuple[str, ...]
    wall_time: float

    def to_json(self, *, wall_time: bool = False) -> dict[str, Any]:
        """Return the sweep as JSON-ready data (deterministic without the wall time)."""
        out: dict[str, Any] = {
            "scenario": self.scenario,
            "seeds": list(self.seeds),
            "runs": {
                label: {
                    f.name: {"count": f.count, "p50": f.p50, "p90": f.p90, "p99": f.p99}
                    for f in figures
                }
                for label, figures in self.runs.items()
            },
            "violations": list(self.violations),
        }
        if wall_time:
            out["wall_time"] = round(self.wall_time, 3)
        return out

    def dumps(self, *, wall_time: bool = False) -> str:
        """Return the sweep as indented JSON text."""
        return json.dumps(self.to_json(wall_time=wall_time), indent=2, sort_keys=True)


_RunFigures = list[tuple[str, dict[str, float], list[str]]]


def _run_seed(scenario: str, settings: RunSettings) -> _RunFigures:
    """Run one seed (in a worker process) and return plain, picklable figures."""
    report = simulate(SCENARIOS[scenario](), settings)
    return [
        (
            run.label,
            flatten(run.metrics.to_json()) | flatten(run.sections),
            list(run.violations),
        )
        for run in report.runs
    ]


def sweep(scenario: str, settings: RunSettings, *, seeds: int, jobs: int = 1) -> SweepReport:
    """Run ``scenario`` (with its defaults) for seeds ``settings.seed .. + seeds - 1``.

    Args:
        scenario: a name in `SCENARIOS`.
        settings: everything but the seed, which counts up from ``settings.seed``.
        seeds: how many seeds.
        jobs: worker processes (1 runs in this process).

    Raises:
        ConfigError: an unknown scenario, or ``seeds`` or ``jobs`` below 1.
    """
    if scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario!r}")
    if seeds < 1 or jobs < 1:
        raise ConfigError("seeds and jobs must be at least 1")
    started = time.perf_counter()
    chosen = tuple(range(settings.seed, settings.seed + seeds))
    variants = [dataclasses.replace(settings, seed=seed) for seed in chosen]
    if jobs == 1:
        results = [_run_seed(scenario, v) for v in variants]
    else:
        with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, seeds)) as pool:
            results = list(pool.map(_run_seed, [scenario] * len(variants), variants))
    return SweepReport(
        scenario=scenario,
        seeds=chosen,
        runs=_distributions(results),
        violations=tuple(
            f"seed {seed}: {line}"
            for seed, runs in zip(chosen, results, strict=True)
            for _, _, lines in runs
            for line in lines
        ),
        wall_time=time.perf_counter() - started,
    )


def _distributions(results: Iterable[_RunFigures]) -> dict[str, tuple[FigureDistribution, ...]]:
    values: dict[str, dict[str, list[float]]] = {}
    for runs in results:
        for label, figures, _ in runs:
            per_label = values.setdefault(label, {})
            for name, value in figures.items():
                per_label.setdefault(name, []).append(value)
    return {label: _summaries(figures) for label, figures in values.items()}


def _summaries(figures: Mapping[str, list[float]]) -> tuple[FigureDistribution, ...]:
    return tuple(
        FigureDistribution(name, len(v), *(nearest_rank(v, q) for q in QUANTILES))
        for name, v in sorted(figures.items())
    )


def format_sweep(report: SweepReport) -> str:
    """Return the sweep as a table: one line per figure, p50 / p90 / p99 over seeds."""
    first, last = report.seeds[0], report.seeds[-1]
    lines = [f"{report.scenario}: {len(report.seeds)} seeds ({first}..{last})"]
    width = max((len(f.name) for figures in report.runs.values() for f in figures), default=10)
    for label, figures in report.runs.items():
        lines.append(f"\n{label}")
        lines.append(f"  {'figure':<{width}}  {'seeds':>5}  {'p50':>12}  {'p90':>12}  {'p99':>12}")
        lines.extend(
            f"  {f.name:<{width}}  {f.count:>5}  {f.p50:>12.6g}  {f.p90:>12.6g}  {f.p99:>12.6g}"
            for f in figures
        )
    if report.violations:
        lines.append(
            f"\n{len(report.violations)} invariant(s) broken, first: {report.violations[0]}"
        )
    return "\n".join(lines)
