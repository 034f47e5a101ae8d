"""Frames per replicated publish, counted: one batch out and one acknowledgement back.

Two ``shoal node`` processes at factor 2; one client publishes MPUBs one at
a time, each waiting for its ``OK``. On an idle link each publish's round
trip must be one batch carrying its one record and one acknowledgement
(``/stats`` ``replication.frames``): more frames per publish would put
more wake-ups and syscalls on every round trip. Batches that carry only
the committed watermark (a membership event woke the link) are counted
apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from shoal.testing.process import NodeProcess, get_json, statuses
from shoal.testing.waiting import wait_for
from shoal.testing.wire import NsqConnection

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARGS = ("--replication-factor", "2", "--replication-timeout", "10s")
PUBLISHES = 30


def frames(node: NodeProcess) -> dict[str, int]:
    stats: dict[str, Any] = get_json(node.http, "/stats?format=json")
    return dict(stats["replication"]["frames"])


def test_an_idle_link_carries_one_batch_and_one_ack_per_publish(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with NodeProcess(*ARGS, workdir=tmp_path / "a") as owner:
        seed = owner.gossip
        with NodeProcess(*ARGS, "--seed", seed, workdir=tmp_path / "b") as replica:
            wait_for(lambda: list(statuses(owner).values()).count("alive") == 2, limit=30)
            with NsqConnection(owner.tcp, timeout=30) as conn:
                # The first publish opens the topic's stream (factor, snapshot).
                conn.mpub("counted", [b"warm-up"])
                before, held_before = frames(owner), frames(replica)
                for index in range(PUBLISHES):
                    conn.mpub("counted", [b"m%d-%d" % (index, n) for n in range(10)])
            after, held_after = frames(owner), frames(replica)
    sent = after["batches_sent"] - before["batches_sent"]
    commits = after["commits_sent"] - before["commits_sent"]
    assert after["records_sent"] - before["records_sent"] == PUBLISHES
    assert sent - commits == PUBLISHES
    # Every batch answered once before its publish was: no ack is coalesced away.
    assert after["acks_received"] - before["acks_received"] >= PUBLISHES
    assert held_after["batches_received"] - held_before["batches_received"] >= PUBLISHES
    assert held_after["acks_sent"] - held_before["acks_sent"] >= PUBLISHES
    # The owner never applies batches; the replica never sends them.
    assert after["batches_received"] == 0
    assert held_after["batches_sent"] == 0
