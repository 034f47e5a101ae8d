"""`shoal simulate sweep`: many seeds, distributions, the same for any number of jobs."""

import json

import pytest
from click.testing import CliRunner

from shoal.cli.main import cli
from shoal.errors import ConfigError
from shoal.simulations import RunSettings
from shoal.simulations.sweep import flatten, nearest_rank, sweep

SMALL = RunSettings(nodes=6, duration=30.0, registry=False)


def test_nearest_rank_matches_the_definition() -> None:
    values = [float(v) for v in range(1, 101)]
    assert nearest_rank(values, 0.5) == 50.0
    assert nearest_rank(values, 0.9) == 90.0
    assert nearest_rank(values, 0.99) == 99.0
    assert nearest_rank([3.0, 1.0, 2.0], 0.99) == 3.0
    with pytest.raises(ValueError, match="no values"):
        nearest_rank([], 0.5)


def test_flatten_names_numeric_leaves_by_path() -> None:
    data = {"a": 1, "b": {"c": 2.5, "d": None, "e": "x", "f": True}, "g": [{"h": 3}]}
    assert flatten(data) == {"a": 1.0, "b.c": 2.5, "g.0.h": 3.0}


@pytest.mark.slow
def test_sweep_reports_every_figure_over_the_seeds_and_ignores_jobs() -> None:
    one = sweep("crash", SMALL, seeds=4, jobs=1)
    two = sweep("crash", SMALL, seeds=4, jobs=2)
    assert one.to_json() == two.to_json()
    assert one.seeds == (0, 1, 2, 3)
    figures = {f.name: f for f in one.runs["crash"]}
    detection = figures["detection_all.max"]
    assert detection.count == 4
    assert detection.p50 <= detection.p90 <= detection.p99
    assert figures["nodes"].p50 == 6.0
    assert one.violations == ()


def test_sweep_refuses_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        sweep("no-such-scenario", SMALL, seeds=2)
    with pytest.raises(ConfigError):
        sweep("crash", SMALL, seeds=0)


@pytest.mark.slow
def test_sweep_command_prints_percentiles_and_json() -> None:
    runner = CliRunner()
    args = ["simulate", "sweep", "idle", "-n", "4", "--duration", "10s", "--seeds", "2"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "p50" in result.output
    assert "p99" in result.output
    assert "packets_per_node_per_s" in result.output
    result = runner.invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["seeds"] == [0, 1]
    assert data["runs"]["idle"]["false_deaths"]["p99"] == 0
    result = runner.invoke(cli, [*args, "--plot", "x.png"])
    assert result.exit_code == 2
