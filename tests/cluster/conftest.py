"""Fixtures that start real ``shoal node`` processes on loopback."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from shoal.testing.process import NodeProcess

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    """One node shared by a module's tests; it must never print a traceback."""
    with NodeProcess() as proc:
        yield proc
        assert proc.proc is not None
        assert proc.proc.poll() is None, f"node died:\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, proc.stderr
