"""Replicated topics in the simulator: the promise checked, and shown to be checkable."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from shoal.cli.simulate import simulate as simulate_command
from shoal.errors import ConfigError
from shoal.replication.placement import replicas
from shoal.simulations.replication import (
    Ledger,
    ReplicatedChurn,
    ReplicatedCrash,
    ReplicatedSplit,
    ReplicationModel,
    Workload,
)
from shoal.simulations.runner import RunSettings, simulate

if TYPE_CHECKING:
    from collections.abc import Callable

    from shoal.simulations.report import RunReport
    from shoal.simulations.runner import Simulation


def figures(run: RunReport) -> dict[str, Any]:
    return run.sections["replication"]


# ---------------------------------------------------------------------- the ledger


def test_ledger_counts_a_second_delivery_on_a_channel_as_a_duplicate() -> None:
    ledger = Ledger()
    ledger.acknowledge([b"a", b"b"], ["c1", "c2"])
    ledger.deliver(b"a", "c1")
    ledger.deliver(b"a", "c2")  # another channel: not a duplicate
    ledger.deliver(b"a", "c1")
    assert (ledger.duplicated, ledger.redeliveries) == (1, 1)


def test_ledger_finishes_a_message_once_every_channel_fins_it() -> None:
    ledger = Ledger()
    ledger.acknowledge([b"a"], ["c1", "c2"])
    ledger.finish(b"a", "c1")
    assert ledger.finished == 0
    ledger.finish(b"a", "c2")
    ledger.finish(b"a", "c2")
    assert ledger.finished == 1
    assert not ledger.unfinished


def test_ledger_counts_deliveries_of_unacknowledged_messages() -> None:
    ledger = Ledger()
    ledger.deliver(b"never-answered-ok", "c1")
    assert ledger.delivered_unacknowledged == 1


# ---------------------------------------------------------------------- the model, by hand


def _owner_cut_off_then_crashed(
    make_sim: Callable[..., Simulation], *, skip_quorum: bool
) -> tuple[dict[str, Any], list[str]]:
    """One topic; its owner is cut off while publishing, crashes, and the cut heals."""
    sim = make_sim(6, duration=60.0)
    workload = Workload(
        topics=1, factors=(2,), publish_every=0.2, quiet=20.0, skip_quorum=skip_quorum
    )
    model = ReplicationModel(sim, workload)
    _, owner, _ = model.topics[0]
    sim.scheduler.run_until(10.0)
    others = [name for name in sim.names if name != owner]
    sim.partition([[owner], others], "cut")
    sim.scheduler.run_until(12.0)  # publishes go on, their replica out of reach
    sim.crash(owner)
    sim.heal("cut")
    sim.scheduler.run_until(sim.duration)
    return model.finish(sim.now)


def test_owner_crash_loses_no_acknowledged_message(make_sim: Callable[..., Simulation]) -> None:
    result, problems = _owner_cut_off_then_crashed(make_sim, skip_quorum=False)
    assert problems == []
    assert result["lost"] == 0
    assert result["acknowledged"] > 0
    assert result["adoptions"] == 1  # the replica served the dead owner's backlog
    assert result["finished"] == result["acknowledged"]


def test_skipping_the_quorum_loses_acknowledged_messages(
    make_sim: Callable[..., Simulation],
) -> None:
    # The same run with publishes answered before any replica holds them:
    # what the owner acknowledged while cut off died with it.
    result, problems = _owner_cut_off_then_crashed(make_sim, skip_quorum=True)
    assert result["lost"] > 0
    assert problems
    assert "acknowledged message(s) lost" in problems[0]


def _owner_then_first_replica_die(
    make_sim: Callable[..., Simulation], *, adopt_on_failure_event: bool
) -> tuple[dict[str, Any], list[str], str | None]:
    """Factor 3: the owner's host dies, then its first replica's, a second apart.

    Silent hosts are detected by suspicion, so the second replica hears of
    the owner's death first, while the first replica still looks alive.
    """
    sim = make_sim(8, duration=60.0)
    workload = Workload(
        topics=1,
        factors=(3,),
        publish_every=0.2,
        quiet=20.0,
        adopt_on_failure_event=adopt_on_failure_event,
    )
    model = ReplicationModel(sim, workload)
    topic, owner, _ = model.topics[0]
    first, second = replicas(owner, topic, sim.names, 3)
    sim.scheduler.run_until(10.0)
    sim.crash(owner, host_down=True)
    sim.scheduler.run_until(11.0)
    sim.crash(first, host_down=True)
    sim.scheduler.run_until(sim.duration)
    result, problems = model.finish(sim.now)
    node = model.nodes.get(second)
    adopter = second if node is not None and node.adopted else None
    return result, problems, adopter


def test_second_replica_adopts_when_the_first_dies_after_the_owner(
    make_sim: Callable[..., Simulation],
) -> None:
    result, problems, adopter = _owner_then_first_replica_die(
        make_sim, adopt_on_failure_event=False
    )
    assert problems == []
    assert adopter is not None
    assert result["adoptions"] == 1
    assert result["acknowledged"] > 0


def test_adopting_only_on_the_owners_failure_event_strands_the_copy(
    make_sim: Callable[..., Simulation],
) -> None:
    result, problems, adopter = _owner_then_first_replica_die(make_sim, adopt_on_failure_event=True)
    assert adopter is None
    assert result["stranded"] > 0
    assert problems


# ---------------------------------------------------------------------- the scenarios


SMALL: dict[str, Any] = {"topics": 16, "publish_every": 0.5, "quiet": 15.0}


@pytest.mark.slow
def test_crash_scenario_keeps_every_acknowledged_message() -> None:
    scenario = ReplicatedCrash(kill=3, at=15.0, interval=10.0, **SMALL)
    report = simulate(scenario, RunSettings(nodes=24, seed=1))
    run = report.runs[0]
    result = figures(run)
    assert run.violations == ()
    assert result["lost"] == 0
    assert result["acknowledged"] > 0
    assert result["adopted_messages"] > 0
    assert result["finished"] + result["pending"] == result["acknowledged"]


@pytest.mark.slow
def test_split_scenario_keeps_every_acknowledged_message() -> None:
    scenario = ReplicatedSplit(at=15.0, duration=20.0, **SMALL)
    report = simulate(scenario, RunSettings(nodes=20, seed=2))
    run = report.runs[0]
    result = figures(run)
    assert run.violations == ()
    assert result["lost"] == 0
    assert result["acknowledged"] > 0
    # Each side declares the other dead: replicas adopt across the split.
    assert result["adoptions"] > 0


@pytest.mark.slow
def test_churn_scenario_keeps_every_acknowledged_message() -> None:
    scenario = ReplicatedChurn(join_rate=4.0, leave_rate=2.0, crash_rate=4.0, length=60.0, **SMALL)
    report = simulate(scenario, RunSettings(nodes=20, seed=3))
    run = report.runs[0]
    result = figures(run)
    assert run.violations == ()
    assert result["lost"] == 0
    assert result["acknowledged"] > 0
    assert result["adopted_messages"] > 0


def test_workload_rejects_a_factor_of_one() -> None:
    with pytest.raises(ConfigError):
        ReplicatedCrash(factors=(1,))


@pytest.mark.slow
def test_cli_reports_replication_figures_byte_identically() -> None:
    args = [
        "replication-crash", "-n", "10", "--profile", "local", "--kill", "1",
        "--topics", "6", "--duration", "45s", "--json",
    ]  # fmt: skip
    first = CliRunner().invoke(simulate_command, args, catch_exceptions=False)
    second = CliRunner().invoke(simulate_command, args, catch_exceptions=False)
    assert first.exit_code == 0
    assert first.stdout == second.stdout
    section = json.loads(first.stdout)["runs"][0]["sections"]["replication"]
    assert section["lost"] == 0
    assert section["acknowledged"] > 0
