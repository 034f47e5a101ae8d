"""Draw a simulation: alive-view size per group over time, with suspicions and deaths.

matplotlib is optional (the ``plot`` extra). It is imported only here and
only when asked, so the simulator itself never needs it; without it,
`require` raises `PlotUnavailable` naming the extra.
"""

from __future__ import annotations

import bisect
import importlib
from typing import TYPE_CHECKING, Any

from shoal.errors import ShoalError

if TYPE_CHECKING:
    from shoal.simulations.report import RunReport, SimulationReport

__all__ = ["PlotUnavailable", "plot_report", "require"]

#: Most runs drawn in one figure (one panel each).
MAX_PANELS = 12


class PlotUnavailable(ShoalError):
    """matplotlib is not installed."""


def _import(name: str) -> Any:
    return importlib.import_module(name)


def require() -> Any:
    """Return ``matplotlib.pyplot`` set up for files, or raise `PlotUnavailable`."""
    try:
        matplotlib = _import("matplotlib")
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib: install the plot extra (pip install 'shoal[plot]')"
        ) from None
    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    return _import("matplotlib.pyplot")


def _value_at(times: tuple[float, ...], values: tuple[float, ...], at: float) -> float:
    """The sampled value at or just before ``at``."""
    if not times:
        return 0.0
    index = max(0, bisect.bisect_right(times, at) - 1)
    return values[index]


def _panel(axes: Any, run: RunReport) -> None:
    timeline = run.timeline
    for position, group in enumerate(timeline.groups):
        axes.plot(
            timeline.times, timeline.sizes[position], label=f"{group} (mean alive view)", lw=1.2
        )
    for kind, marker, color, label in (
        ("suspect", "x", "tab:orange", "suspicion"),
        ("dead", "v", "tab:red", "death"),
    ):
        xs: list[float] = []
        ys: list[float] = []
        for item in run.markers:
            if item.kind != kind:
                continue
            sizes = timeline.sizes[item.group] if item.group < len(timeline.sizes) else ()
            xs.append(item.at)
            ys.append(_value_at(timeline.times, sizes, item.at))
        if xs:
            axes.scatter(xs, ys, marker=marker, color=color, s=14, label=label, zorder=3)
    for heal in run.metrics.heals:
        axes.axvline(heal.healed_at, color="tab:green", ls="--", lw=0.8)
    axes.set_title(run.label, fontsize=9)
    axes.set_xlabel("virtual time (s)")
    axes.set_ylabel("members seen alive")
    axes.legend(fontsize=7, loc="lower left")
    axes.grid(alpha=0.3)


def plot_report(report: SimulationReport, path: str) -> None:
    """Draw every run of ``report`` (up to `MAX_PANELS`) into the image file ``path``.

    Raises:
        PlotUnavailable: matplotlib is not installed.
        OSError: the file cannot be written.
    """
    pyplot = require()
    runs = report.runs[:MAX_PANELS]
    columns = 1 if len(runs) == 1 else 2
    rows = max(1, -(-len(runs) // columns))
    figure, axes = pyplot.subplots(rows, columns, figsize=(7 * columns, 3.6 * rows), squeeze=False)
    for position, run in enumerate(runs):
        _panel(axes[position // columns][position % columns], run)
    for position in range(len(runs), rows * columns):
        axes[position // columns][position % columns].set_visible(False)
    figure.suptitle(f"shoal simulate {report.scenario}", fontsize=11)
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=110)
    finally:
        pyplot.close(figure)
