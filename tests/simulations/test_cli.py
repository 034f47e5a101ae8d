"""``shoal simulate``: summaries, JSON, usage errors, the optional plot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner, Result

from shoal.cli.simulate import simulate
from shoal.simulations import plot


def run(*args: str) -> Result:
    return CliRunner().invoke(simulate, list(args), catch_exceptions=False)


def test_simulate_prints_a_readable_summary() -> None:
    result = run("crash", "--nodes", "6", "--profile", "local")
    assert result.exit_code == 0
    assert "crash: 6 nodes, local profile, seed 0" in result.stdout
    assert "crash detection" in result.stdout
    assert "invariants        hold" in result.stdout


def test_simulate_json_is_byte_identical_for_a_seed() -> None:
    args = ("split", "-n", "6", "--profile", "local", "--seed", "3", "--json")
    first = run(*args)
    second = run(*args)
    assert first.exit_code == second.exit_code == 0
    assert first.stdout == second.stdout
    data = json.loads(first.stdout)
    assert data["scenario"] == "split"
    assert data["runs"][0]["metrics"]["heals"][0]["view"] is not None
    other = run("split", "-n", "6", "--profile", "local", "--seed", "4", "--json")
    assert other.stdout != first.stdout


def test_simulate_loss_takes_rates_in_percent() -> None:
    result = run("loss", "-n", "5", "--profile", "local", "--rates", "0,20%", "--duration", "40s")
    assert result.exit_code == 0
    assert "loss=0%" in result.stdout
    assert "loss=20%" in result.stdout


def test_simulate_compare_puts_runs_side_by_side() -> None:
    result = run("compare", "crash", "-n", "5", "--profiles", "local,lan")
    assert result.exit_code == 0
    header = result.stdout.splitlines()[2]
    for label in ("local lifeguard=on", "local lifeguard=off", "lan lifeguard=on"):
        assert label in header
    assert "detection p50 (s)" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("split", "-n", "5", "--sizes", "2,2"),
        ("split", "-n", "5", "--sizes", "two"),
        ("crash", "-n", "5", "--set", "no_such_field=1"),
        ("crash", "-n", "5", "--set", "probe_timeout=5"),
        ("crash", "-n", "5", "--set", "dead_retention=soon"),
        ("crash", "-n", "5", "--set", "lifeguard_nack=maybe"),
        ("crash", "-n", "5", "--set", "indirect_checks=1.5"),
        ("crash", "-n", "5", "--loss", "150%"),
        ("crash", "-n", "1"),
        ("crash", "-n", "5", "--kill", "5"),
        ("compare", "crash", "--profiles", "moon"),
        ("isolate", "-n", "5", "--node", "nobody"),
    ],
)
def test_simulate_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_simulate_set_takes_durations_for_times() -> None:
    result = run(
        "crash", "-n", "5", "--set", "dead_retention=2m", "--set", "probe_timeout=200ms", "--json"
    )
    assert result.exit_code == 0
    overrides = json.loads(result.stdout)["runs"][0]["settings"]["overrides"]
    assert overrides == {"dead_retention": 120.0, "probe_timeout": 0.2}


def test_simulate_plot_without_matplotlib_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_matplotlib(name: str) -> Any:
        raise ImportError(name)

    monkeypatch.setattr(plot, "_import", no_matplotlib)
    result = run("idle", "-n", "3", "--plot", "out.png")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "shoal[plot]" in result.stderr


@pytest.mark.slow
def test_simulate_json_does_not_depend_on_the_hash_seed() -> None:
    code = (
        "from shoal.cli.simulate import simulate; "
        "simulate(['split', '-n', '12', '--profile', 'local', '--json'], prog_name='x')"
    )
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, check=False, timeout=120
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
