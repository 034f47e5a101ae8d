"""The runner's footprint: what simulated engines share, and views that stay exact."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.membership import MemberState

if TYPE_CHECKING:
    from collections.abc import Callable

    from shoal.simulations.runner import Simulation


def test_preformed_engines_share_member_names_and_addresses(
    make_sim: Callable[..., Simulation],
) -> None:
    nodes = 30
    sim = make_sim(nodes, registry=False)
    members = [m for name in sim.names for m in sim.engine(name).members()]  # type: ignore[union-attr]
    assert len(members) == nodes * nodes
    # One object per member between all engines (each engine's own address
    # is its own copy): memory per engine is O(n) references, not O(n) new
    # tuples and strings.
    assert len({id(m.address) for m in members}) <= 2 * nodes
    assert len({id(m.name) for m in members}) == nodes


def test_recorder_views_match_the_engines_after_a_crash(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim(12, registry=False, overrides=(("dead_retention", 20.0),))
    sim.scheduler.run_until(5.0)
    sim.crash("node-4")
    sim.scheduler.run_until(15.0)
    sim.add_node()
    sim.scheduler.run_until(60.0)
    for name in sim.live_names():
        engine = sim.engine(name)
        assert engine is not None
        held = {m.name: m.state for m in engine.members() if m.name != name}
        view = sim.recorder.view_of(sim.names.index(name))
        assert dict(view.items()) == held
        assert view.alive_count == 1 + sum(s is MemberState.ALIVE for s in held.values())
    # Everyone but the joiner reaped the victim; the joiner never knew it.
    assert all(sim.recorder.view_of(i).get("node-4") is None for i in range(len(sim.names)))
