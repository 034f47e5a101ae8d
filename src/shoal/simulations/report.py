"""What a simulation returns, and how it reads: a summary, a comparison table, JSON.

`SimulationReport.to_json` is deterministic for a seed (virtual-time figures
only), so two runs with the same seed print byte-identical JSON; the wall time
is added only on request.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from shoal.simulations.metrics import Marker, RunMetrics, Summary, Timeline

__all__ = ["RunReport", "SimulationReport", "format_comparison", "format_summary"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunReport:
    """One run: its settings, figures, timeline and any broken invariant.

    Attributes:
        label: the run's name (the scenario, a loss rate, a profile...).
        settings: the run settings as JSON-ready data.
        parameters: the scenario's parameters.
        metrics: the figures.
        timeline: alive-view sizes per group over time.
        markers: suspicions and deaths over time (capped).
        violations: broken invariants, one line each (empty when all hold).
        wall_time: real seconds the run took (not deterministic).
        sections: figures of the models riding on the run (``replication``),
            by section name; empty for a membership-only run.
    """

    label: str
    settings: dict[str, Any]
    parameters: dict[str, Any]
    metrics: RunMetrics
    timeline: Timeline
    markers: tuple[Marker, ...]
    violations: tuple[str, ...]
    wall_time: float
    sections: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def to_json(self, *, wall_time: bool = False) -> dict[str, Any]:
        """Return the run as JSON-ready data (with the wall time if asked)."""
        out: dict[str, Any] = {
            "label": self.label,
            "settings": self.settings,
            "metrics": self.metrics.to_json(),
            "violations": list(self.violations),
        }
        if self.sections:
            out["sections"] = self.sections
        if wall_time:
            out["wall_time"] = round(self.wall_time, 3)
        return out


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SimulationReport:
    """A scenario's runs: one, one per loss rate, or one per compared setting."""

    scenario: str
    parameters: dict[str, Any]
    runs: tuple[RunReport, ...]

    def to_json(self, *, wall_time: bool = False) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        return {
            "scenario": self.scenario,
            "parameters": self.parameters,
            "runs": [run.to_json(wall_time=wall_time) for run in self.runs],
        }

    def dumps(self, *, wall_time: bool = False) -> str:
        """Return the report as indented JSON text (byte-identical for a seed)."""
        return json.dumps(self.to_json(wall_time=wall_time), indent=2, sort_keys=True)

    @property
    def violations(self) -> list[str]:
        """Every broken invariant of every run, prefixed with the run's label."""
        return [f"{run.label}: {v}" for run in self.runs for v in run.violations]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _distribution(summary: Summary, unit: str = "s") -> str:
    if summary.count == 0:
        return "-"
    assert summary.p50 is not None
    assert summary.p99 is not None
    assert summary.max is not None
    return (
        f"p50 {summary.p50:.2f} {unit}  p99 {summary.p99:.2f} {unit}  "
        f"max {summary.max:.2f} {unit}  (n={summary.count})"
    )


def _header(run: RunReport) -> str:
    s = run.settings
    parts = [
        f"{s['nodes']} nodes",
        f"{s['profile']} profile",
        f"seed {s['seed']}",
        f"loss {s['loss']:.0%}",
        f"lifeguard {'on' if s['lifeguard'] else 'off'}",
        f"{s['duration']:g} s virtual",
    ]
    return f"{run.label}: " + ", ".join(parts)


def format_summary(report: SimulationReport) -> str:
    """Return a readable summary of every run, a block each."""
    lines = [f"scenario {report.scenario}"]
    for run in report.runs:
        m = run.metrics
        lines.append("")
        lines.append(_header(run))
        rows: list[tuple[str, str]] = []
        if m.detection.count or m.undetected:
            rows.append(("crash detection", _distribution(m.detection)))
            rows.append(("  all observers", _distribution(m.detection_all)))
            if m.undetected:
                rows.append(("  undetected", f"{m.undetected} (crash, observer) pairs"))
        rows.append(
            (
                "false suspicions",
                f"{m.false_suspicions} incidents ({m.false_suspicion_events} events)"
                f" of {m.suspicions} suspicion events",
            )
        )
        rows.append(
            (
                "false deaths",
                f"{m.false_deaths} incidents ({m.false_death_events} events)"
                f" of {m.deaths} death events",
            )
        )
        rows.extend(
            (
                f"heal {heal.label}",
                f"view {_seconds(heal.view)}, view and registry {_seconds(heal.full)}"
                f" (healed at t={heal.healed_at:.2f} s)",
            )
            for heal in m.heals
        )
        if m.dissemination.count or m.dissemination_incomplete:
            text = _distribution(m.dissemination)
            if m.dissemination_incomplete:
                text += f", {m.dissemination_incomplete} incomplete"
            rows.append(("dissemination", text))
        if m.topic_propagation.count or m.topics_incomplete:
            text = _distribution(m.topic_propagation)
            if m.topics_incomplete:
                text += f", {m.topics_incomplete} incomplete"
            rows.append(("topic to lookup", text))
        rows.append(
            (
                "traffic per node",
                f"{m.bytes_per_node_per_s:,.0f} B/s ({m.stream_bytes_per_node_per_s:,.0f} B/s"
                f" streams), {m.packets_per_node_per_s:.2f} packets/s, in+out",
            )
        )
        rows.append(("converged at end", "yes" if m.converged_at_end else "no"))
        for section, figures in run.sections.items():
            rows.extend(
                (f"{section} {key.replace('_', ' ')}", str(value)) for key, value in figures.items()
            )
        if run.violations:
            rows.append(("INVARIANTS BROKEN", f"{len(run.violations)}: {run.violations[0]}"))
        else:
            rows.append(("invariants", "hold"))
        rows.append(("cost", f"{m.events_processed:,} events in {run.wall_time:.1f} s wall"))
        width = max(len(name) for name, _ in rows)
        lines.extend(f"  {name:<{width}}  {text}" for name, text in rows)
    return "\n".join(lines)


def _cell(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


_ROWS: list[tuple[str, Callable[[RunReport], str]]] = [
    ("detection p50 (s)", lambda r: _cell(r.metrics.detection.p50)),
    ("detection p99 (s)", lambda r: _cell(r.metrics.detection.p99)),
    ("all know p99 (s)", lambda r: _cell(r.metrics.detection_all.p99)),
    ("suspicion events", lambda r: str(r.metrics.suspicions)),
    ("false suspicions", lambda r: str(r.metrics.false_suspicions)),
    ("false deaths", lambda r: str(r.metrics.false_deaths)),
    ("heal view (s)", lambda r: _cell(r.metrics.heals[0].view if r.metrics.heals else None)),
    ("heal full (s)", lambda r: _cell(r.metrics.heals[0].full if r.metrics.heals else None)),
    ("dissemination p99 (s)", lambda r: _cell(r.metrics.dissemination.p99)),
    ("topic lookup p99 (s)", lambda r: _cell(r.metrics.topic_propagation.p99)),
    ("bytes/node/s", lambda r: _cell(r.metrics.bytes_per_node_per_s, "{:,.0f}")),
    ("packets/node/s", lambda r: _cell(r.metrics.packets_per_node_per_s)),
    ("invariants", lambda r: "hold" if not r.violations else f"{len(r.violations)} broken"),
    ("wall time (s)", lambda r: _cell(r.wall_time, "{:.1f}")),
]


def format_comparison(report: SimulationReport) -> str:
    """Return the runs side by side: one column per run, one row per figure."""
    labels = [run.label for run in report.runs]
    first = report.runs[0].settings if report.runs else {}
    title = (
        f"scenario {report.scenario}: {first.get('nodes')} nodes, seed {first.get('seed')},"
        f" loss {first.get('loss', 0):.0%}"
    )
    name_width = max(len(name) for name, _ in _ROWS)
    cells = [[fn(run) for run in report.runs] for _, fn in _ROWS]
    widths = [max(len(label), *(len(row[i]) for row in cells)) for i, label in enumerate(labels)]
    lines = [title, ""]
    lines.append(
        " " * name_width
        + "  "
        + "  ".join(f"{lab:>{w}}" for lab, w in zip(labels, widths, strict=True))
    )
    for (name, _), row in zip(_ROWS, cells, strict=True):
        lines.append(
            f"{name:<{name_width}}  "
            + "  ".join(f"{cell:>{w}}" for cell, w in zip(row, widths, strict=True))
        )
    return "\n".join(lines)
