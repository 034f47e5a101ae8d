"""The SWIM invariants every simulated run must keep.

Checked while the run goes (by `shoal.simulations.metrics.Recorder`, on every
event and every sample) and at its end (here):

1. **A node never declares itself dead.** No engine raises an event about
   itself, and every running member that is not leaving holds itself alive.
2. **Incarnations never decrease.** Neither a node's own, nor any node's
   record of another (until the record is reaped).
3. **No fault, no suspicion.** With no injected fault and no loss, no member
   is ever suspected.
4. **Partitions heal.** After every partition ends, all live members come to
   see exactly the live members alive and to hold the same registry, within
   the run.

`check_run` returns the broken ones, one line each; an empty list means the
run kept them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shoal.simulations.report import RunReport, SimulationReport
    from shoal.simulations.scenarios import Scenario

__all__ = ["check_report", "check_run", "faultless"]


def faultless(scenario: Scenario, run: RunReport) -> bool:
    """Say whether ``run`` injected no fault at all (so nobody may be suspected)."""
    return not scenario.faults and run.settings["loss"] == 0


def check_run(run: RunReport, *, no_faults: bool) -> list[str]:
    """Return the invariants ``run`` broke (empty when it kept them all).

    Args:
        run: the run's report.
        no_faults: the run injected no fault, so any suspicion is a violation.
    """
    problems = list(run.violations)
    metrics = run.metrics
    if no_faults and metrics.suspicions:
        problems.append(f"{metrics.suspicions} suspicions in a run without faults")
    if no_faults and metrics.deaths:
        problems.append(f"{metrics.deaths} deaths in a run without faults")
    for heal in metrics.heals:
        if heal.view is None:
            problems.append(f"views never converged after {heal.label} healed")
        elif heal.full is None:
            problems.append(f"registries never converged after {heal.label} healed")
    return problems


def check_report(report: SimulationReport, scenario: Scenario) -> list[str]:
    """Return the invariants any run of ``report`` broke, prefixed with its label."""
    return [
        f"{run.label}: {problem}"
        for run in report.runs
        for problem in check_run(run, no_faults=faultless(scenario, run))
    ]
