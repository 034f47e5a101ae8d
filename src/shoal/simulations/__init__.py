"""A deterministic discrete-event simulator driving the real membership engine.

`simulate` runs a scenario (`SCENARIOS`) with `RunSettings` and returns a
`SimulationReport`; `compare` runs one under each profile with Lifeguard on
and off. Every node is a real `shoal.membership.Membership` carrying a real
topic registry; the simulator plays only the network and the clock, so a
seed replays a run bit for bit.
"""

from shoal.simulations.invariants import check_report, check_run
from shoal.simulations.metrics import HealTime, RunMetrics, Summary
from shoal.simulations.report import RunReport, SimulationReport, format_comparison, format_summary
from shoal.simulations.runner import LIFEGUARD_OFF, RunSettings, Simulation, compare, simulate
from shoal.simulations.scenarios import (
    SCENARIOS,
    Churn,
    Crash,
    Idle,
    Isolate,
    Loss,
    Scenario,
    Slow,
    Split,
    Stall,
    Topics,
)

__all__ = [
    "LIFEGUARD_OFF",
    "SCENARIOS",
    "Churn",
    "Crash",
    "HealTime",
    "Idle",
    "Isolate",
    "Loss",
    "RunMetrics",
    "RunReport",
    "RunSettings",
    "Scenario",
    "Simulation",
    "SimulationReport",
    "Slow",
    "Split",
    "Stall",
    "Summary",
    "Topics",
    "check_report",
    "check_run",
    "compare",
    "format_comparison",
    "format_summary",
    "simulate",
]
