import pytest

from shoal.errors import LocalProtocolError
from shoal.replication import Quorum


def test_quorum_required_zero_commits_at_once() -> None:
    q = Quorum(required=0, timeout=1.0)
    assert q.append(0.0) == 1
    assert q.committed == 1
    assert q.next_deadline() is None


def test_quorum_commits_when_enough_replicas_ack() -> None:
    q = Quorum(required=2, timeout=5.0)
    assert q.set_replicas(["a", "b", "c"]) == ["a", "b", "c"]
    for _ in range(3):
        q.append(0.0)
    assert q.ack("a", 3) == 0
    assert q.ack("b", 2) == 2
    assert q.ack("c", 3) == 3
    assert q.next_deadline() is None


def test_quorum_ignores_unknown_replicas_and_backward_acks() -> None:
    q = Quorum(required=1, timeout=5.0)
    q.set_replicas(["a"])
    q.append(0.0)
    q.append(0.0)
    assert q.ack("stranger", 2) == 0
    assert q.ack("a", 7) == 0  # never handed out
    assert q.ack("a", 2) == 2
    assert q.ack("a", 1) == 2
    assert q.statistics().watermarks == {"a": 2}


def test_quorum_expire_fails_the_uncommitted_prefix() -> None:
    q = Quorum(required=1, timeout=2.0)
    q.set_replicas(["a"])
    q.append(0.0)
    q.append(1.0)
    q.append(1.5)
    q.ack("a", 1)
    assert q.next_deadline() == 3.0
    assert q.expire(2.9) == []
    assert q.expire(3.2) == [2]
    assert q.expire(10.0) == [3]
    assert q.statistics().failed == 2
    assert q.next_deadline() is None


def test_quorum_without_enough_replicas_never_commits() -> None:
    q = Quorum(required=2, timeout=1.0)
    q.set_replicas(["a"])
    q.append(0.0)
    q.ack("a", 1)
    assert q.committed == 0
    assert q.expire(1.0) == [1]


def test_quorum_new_replica_starts_at_zero_and_removed_forgets() -> None:
    q = Quorum(required=1, timeout=5.0)
    q.set_replicas(["a"])
    q.append(0.0)
    q.ack("a", 1)
    assert q.set_replicas(["b"]) == ["b"]
    assert q.committed == 1  # never goes back
    q.append(0.0)
    stats = q.statistics()
    assert stats.watermarks == {"b": 0}
    assert stats.lag("b") == 2
    q.ack("b", 2)
    assert q.committed == 2


def test_quorum_rejects_bad_settings() -> None:
    with pytest.raises(LocalProtocolError):
        Quorum(required=-1, timeout=1.0)
    with pytest.raises(LocalProtocolError):
        Quorum(required=1, timeout=0.0)


def test_quorum_unawaited_records_never_fail() -> None:
    q = Quorum(required=1, timeout=1.0)
    q.set_replicas(["a"])
    q.append(0.0, awaited=False)
    assert q.next_deadline() is None
    assert q.expire(5.0) == []
    q.ack("a", 1)
    assert q.committed == 1
