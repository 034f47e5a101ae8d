"""Draw a simulation: alive-view size per group over time, with suspicions and deaths.

matplotlib is optional (the ``plot`` extra). It is imported only here and
only when asked, so the simulator itself never needs it; without it,
`require` raises `PlotUnavailable` naming the extra.
"""

from __future__ import annotations

import bisect
import importlib
import os
from typing import TYPE_CHECKING, Any

from shoal.errors import ShoalError

if TYPE_CHECKING:
    from shoal.simulations.report import RunReport, SimulationReport

__all__ = ["DPI", "PlotUnavailable", "check_path", "plot_report", "require"]

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


#: One style per group, so that groups whose curves coincide stay visible:
#: the first is drawn widest and underneath, the next narrower and dashed
#: on top, each with its own colour and marker.
_GROUP_STYLES = (
    {"color": "tab:blue", "ls": "-", "lw": 3.0, "marker": "o", "alpha": 0.75},
    {"color": "tab:purple", "ls": "--", "lw": 1.6, "marker": "s", "alpha": 0.95},
    {"color": "tab:olive", "ls": ":", "lw": 1.6, "marker": "^", "alpha": 0.95},
    {"color": "tab:cyan", "ls": "-.", "lw": 1.4, "marker": "D", "alpha": 0.95},
)
#: Markers per curve: enough to tell the groups apart, few enough to read.
_MARKERS_PER_CURVE = 12
#: Resolution of the image: twice matplotlib's 100 dots per inch.
DPI = 200


def check_path(path: str) -> None:
    """Refuse an image path that could not be written, before a long run.

    Raises:
        PlotUnavailable: matplotlib is missing, the extension is not a
            format it writes, or the folder is missing or not writable.
    """
    pyplot = require()
    supported = sorted(pyplot.figure().canvas.get_supported_filetypes())
    pyplot.close("all")
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    if extension not in supported:
        raise PlotUnavailable(
            f"--plot {path}: cannot draw a {extension or 'file without an extension'}; "
            f"use one of {', '.join('.' + e for e in supported)}"
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise PlotUnavailable(f"--plot {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise PlotUnavailable(f"--plot {path}: folder {folder} is not writable")
    if os.path.isdir(path):
        raise PlotUnavailable(f"--plot {path}: is a folder")


def _split_window(run: RunReport) -> tuple[float, float] | None:
    """The fault window of a split or an isolation, from its parameters."""
    at, duration = run.parameters.get("at"), run.parameters.get("duration")
    if not run.metrics.heals or not isinstance(at, int | float):
        return None
    if not isinstance(duration, int | float):
        return None
    return float(at), float(at) + float(duration)


def _panel(axes: Any, run: RunReport) -> None:
    timeline = run.timeline
    window = _split_window(run)
    if window is not None:
        axes.axvspan(*window, color="0.85", zorder=0, label="split (no connectivity)")
    every = max(1, len(timeline.times) // _MARKERS_PER_CURVE)
    for position, group in enumerate(timeline.groups):
        style = _GROUP_STYLES[position % len(_GROUP_STYLES)]
        axes.plot(
            timeline.times,
            timeline.sizes[position],
            label=f"{group}: mean alive view",
            markevery=(position * every // max(1, len(timeline.groups)), every),
            markersize=5,
            zorder=2 + position,
            **style,
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
            axes.scatter(xs, ys, marker=marker, color=color, s=22, label=label, zorder=10)
    for number, heal in enumerate(run.metrics.heals):
        axes.axvline(
            heal.healed_at, color="tab:green", ls="--", lw=1.2, zorder=1,
            label="heal (connectivity back)" if number == 0 else None,
        )  # fmt: skip
        axes.annotate(
            "heal", xy=(heal.healed_at, 0.5), xycoords=("data", "axes fraction"),
            xytext=(4, 0), textcoords="offset points", color="tab:green", fontsize=8,
        )  # fmt: skip
    if window is not None:
        axes.annotate(
            "split", xy=(window[0], 0.5), xycoords=("data", "axes fraction"),
            xytext=(4, 0), textcoords="offset points", color="0.35", fontsize=8,
        )  # fmt: skip
    axes.set_title(run.label, fontsize=9)
    axes.set_xlabel("virtual time (s)")
    axes.set_ylabel("members seen alive")
    # Outside the axes, to the right: a legend inside would cover the curves.
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
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
    figure, axes = pyplot.subplots(rows, columns, figsize=(9 * columns, 3.8 * rows), squeeze=False)
    for position, run in enumerate(runs):
        _panel(axes[position // columns][position % columns], run)
    for position in range(len(runs), rows * columns):
        axes[position // columns][position % columns].set_visible(False)
    figure.suptitle(f"shoal simulate {report.scenario}", fontsize=11)
    figure.tight_layout()
    try:
        # "tight" keeps the legends placed outside the axes inside the image.
        figure.savefig(path, dpi=DPI, bbox_inches="tight")
    finally:
        pyplot.close(figure)
