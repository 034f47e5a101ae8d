"""Fixtures of the fault-injection tests: a victim and a peer (`shoal.testing.faults`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from shoal.testing.faults import Pair, check_logs, running_pair

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def pair() -> Iterator[Pair]:
    """An unkeyed victim and peer."""
    with running_pair() as made:
        yield made
        check_logs(made.victim, running=made.victim_running)


@pytest.fixture
def keyed_pair() -> Iterator[Pair]:
    """A keyed victim and peer."""
    with running_pair(keyed=True) as made:
        yield made
        check_logs(made.victim, running=made.victim_running)


@pytest.fixture
def publish_pair() -> Iterator[Pair]:
    """An unkeyed victim and peer, the victim fsyncing its disk queues on time only.

    Millions of messages spill to the disk queues, which fsync every 2,500
    writes by default, on the event loop; moving fsync off the loop is the
    disk queue's concern, and these tests are about the publish path itself.
    """
    with running_pair(victim_flags=("--sync-every", "100000000")) as made:
        yield made
        check_logs(made.victim)
