"""The optional plot: a clear error without matplotlib, one panel per run with it."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.simulations import Crash, Loss, RunSettings, plot, simulate


class FakeAxes:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.visible = True

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append(name)

        return record

    def set_visible(self, visible: bool) -> None:
        self.visible = visible


class FakeFigure:
    def __init__(self) -> None:
        self.saved: list[str] = []

    def suptitle(self, *args: Any, **kwargs: Any) -> None:
        pass

    def tight_layout(self) -> None:
        pass

    def savefig(self, path: str, **kwargs: Any) -> None:
        self.saved.append(path)


class FakePyplot:
    def __init__(self) -> None:
        self.figure = FakeFigure()
        self.grid: list[list[FakeAxes]] = []
        self.closed = False

    def subplots(self, rows: int, columns: int, **kwargs: Any) -> tuple[FakeFigure, Any]:
        self.grid = [[FakeAxes() for _ in range(columns)] for _ in range(rows)]
        return self.figure, self.grid

    def close(self, figure: FakeFigure) -> None:
        self.closed = True


class FakeMatplotlib:
    backend = ""

    def use(self, backend: str) -> None:
        self.backend = backend


def install_fake(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeMatplotlib, FakePyplot]:
    matplotlib = FakeMatplotlib()
    pyplot = FakePyplot()
    modules = {"matplotlib": matplotlib, "matplotlib.pyplot": pyplot}

    def fake_import(name: str) -> Any:
        return modules[name]

    monkeypatch.setattr(plot, "_import", fake_import)
    return matplotlib, pyplot


def test_require_names_the_extra_when_matplotlib_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(name: str) -> Any:
        raise ImportError(name)

    monkeypatch.setattr(plot, "_import", missing)
    with pytest.raises(plot.PlotUnavailable, match=r"shoal\[plot\]"):
        plot.require()


def test_plot_draws_one_panel_per_run_into_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    matplotlib, pyplot = install_fake(monkeypatch)
    report = simulate(
        Loss(rates=(0.0, 0.1, 0.2)), RunSettings(nodes=4, profile="local", duration=20)
    )
    plot.plot_report(report, "sweep.png")
    assert matplotlib.backend == "Agg"
    assert pyplot.figure.saved == ["sweep.png"]
    assert pyplot.closed
    panels = [axes for row in pyplot.grid for axes in row]
    assert len(panels) == 4
    assert [axes.visible for axes in panels] == [True, True, True, False]
    assert all("plot" in axes.calls for axes in panels[:3])


def test_plot_marks_suspicions_and_deaths(monkeypatch: pytest.MonkeyPatch) -> None:
    _, pyplot = install_fake(monkeypatch)
    report = simulate(Crash(), RunSettings(nodes=4, profile="local"))
    plot.plot_report(report, "crash.png")
    (axes,) = pyplot.grid[0]
    assert axes.calls.count("scatter") == 2  # suspicions and deaths
