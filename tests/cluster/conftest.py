"""Fixtures that start real ``shoal node`` processes on loopback."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from shoal.testing.process import NodeProcess, ProcessCluster

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    """One node shared by a module's tests; it must never print a traceback."""
    with NodeProcess() as proc:
        yield proc
        assert proc.proc is not None
        assert proc.proc.poll() is None, f"node died:\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, proc.stderr


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessCluster]:
    """Real nodes under ``tmp_path``, started with the module's ``CLUSTER_FLAGS``."""
    c = ProcessCluster(tmp_path, *getattr(request.module, "CLUSTER_FLAGS", ()))
    try:
        yield c
    finally:
        c.close()
