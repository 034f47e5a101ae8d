"""Shared builders for the simulator tests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from shoal.simulations.runner import RunSettings, Simulation

if TYPE_CHECKING:
    from collections.abc import Callable


@pytest.fixture
def make_sim() -> Callable[..., Simulation]:
    """Build a small simulation on the local profile: ``make_sim(5, loss=0.1)``.

    Drive it with ``sim.scheduler.run_until(t)`` and the fault actions.
    """

    def build(nodes: int = 5, *, duration: float = 600.0, **settings: Any) -> Simulation:
        settings.setdefault("profile", "local")
        return Simulation(RunSettings(nodes=nodes, **settings), duration=duration)

    return build
