"""Figures and invariant checks, from summaries to broken-invariant reports."""

from __future__ import annotations

import dataclasses
import json
import math

from shoal.simulations import Crash, Idle, RunSettings, check_run, simulate
from shoal.simulations.invariants import faultless
from shoal.simulations.metrics import HealTime, Summary


def test_summary_uses_nearest_rank_percentiles() -> None:
    summary = Summary.of(float(i) for i in range(1, 101))
    assert (summary.count, summary.p50, summary.p99, summary.max) == (100, 50.0, 99.0, 100.0)
    assert summary.mean == 50.5
    small = Summary.of([3.0, 1.0, 2.0])
    assert (small.p50, small.p99, small.max) == (2.0, 3.0, 3.0)


def test_summary_of_nothing_is_empty() -> None:
    empty = Summary.of([])
    assert empty.count == 0
    assert empty.to_json() == {"count": 0, "p50": None, "p99": None, "max": None, "mean": None}


def test_metrics_json_is_plain_data() -> None:
    report = simulate(Crash(), RunSettings(nodes=6, profile="local", seed=4))
    data = json.loads(report.dumps())
    metrics = data["runs"][0]["metrics"]
    assert metrics["detection"]["count"] == 5
    assert metrics["nodes"] == 6
    assert "wall_time" not in data["runs"][0]
    assert "wall_time" in json.loads(report.dumps(wall_time=True))["runs"][0]


def test_crash_deaths_are_not_false_deaths() -> None:
    metrics = simulate(Crash(), RunSettings(nodes=6, profile="local", seed=4)).runs[0].metrics
    assert metrics.deaths == 5
    assert metrics.false_deaths == 0
    assert metrics.false_suspicions == 0


def test_check_run_reports_suspicions_without_faults() -> None:
    run = simulate(Idle(), RunSettings(nodes=4, profile="local", duration=10.0)).runs[0]
    assert check_run(run, no_faults=True) == []
    noisy = dataclasses.replace(run, metrics=dataclasses.replace(run.metrics, suspicions=3))
    assert check_run(noisy, no_faults=True) == ["3 suspicions in a run without faults"]
    assert check_run(noisy, no_faults=False) == []


def test_check_run_reports_heals_that_never_converged() -> None:
    run = simulate(Idle(), RunSettings(nodes=4, profile="local", duration=10.0)).runs[0]
    stuck = HealTime(label="split", healed_at=5.0, view=None, full=None)
    half = HealTime(label="cut", healed_at=6.0, view=1.0, full=None)
    broken = dataclasses.replace(run, metrics=dataclasses.replace(run.metrics, heals=(stuck, half)))
    assert check_run(broken, no_faults=False) == [
        "views never converged after split healed",
        "registries never converged after cut healed",
    ]


def test_check_run_passes_recorded_violations_through() -> None:
    run = simulate(Idle(), RunSettings(nodes=4, profile="local", duration=10.0)).runs[0]
    bad = dataclasses.replace(run, violations=("t=1.000 node-1 holds itself as DEAD",))
    assert check_run(bad, no_faults=False) == ["t=1.000 node-1 holds itself as DEAD"]


def test_faultless_means_a_fault_free_scenario_without_loss() -> None:
    run = simulate(Idle(), RunSettings(nodes=4, profile="local", duration=10.0)).runs[0]
    assert faultless(Idle(), run)
    assert not faultless(Crash(), run)
    lossy = dataclasses.replace(run, settings={**run.settings, "loss": 0.1})
    assert not faultless(Idle(), lossy)


def test_traffic_counts_only_running_node_seconds() -> None:
    metrics = simulate(Idle(), RunSettings(nodes=5, profile="local", duration=60.0)).runs[0].metrics
    assert math.isfinite(metrics.bytes_per_node_per_s)
    assert metrics.bytes_per_node_per_s > metrics.stream_bytes_per_node_per_s > 0
