"""Real clusters of ``shoal node`` processes on loopback for client tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from shoal.testing.fake_node import running_cluster

if TYPE_CHECKING:
    from collections.abc import Iterator

    from shoal.testing.process import NodeProcess


def _check_healthy(nodes: list[NodeProcess]) -> None:
    for node in nodes:
        assert "Traceback" not in node.stderr, node.stderr


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[NodeProcess]]:
    """Three nodes shared by a module's tests, which must not stop any."""
    with running_cluster(3) as nodes:
        yield nodes
        _check_healthy(nodes)


@pytest.fixture
def own_cluster() -> Iterator[list[NodeProcess]]:
    """Three nodes for one test, which may kill some."""
    with running_cluster(3) as nodes:
        yield nodes
        _check_healthy(nodes)
