import pytest

from shoal.membership.broadcast import TransmitLimitedQueue, retransmit_limit


@pytest.mark.parametrize(
    ("n", "limit"), [(1, 4), (9, 4), (10, 8), (99, 8), (100, 12), (1000, 16), (10_000, 20)]
)
def test_retransmit_limit_is_mult_times_ceil_log10(n: int, limit: int) -> None:
    assert retransmit_limit(4, n) == limit


def test_queue_newer_message_with_same_key_replaces_older() -> None:
    queue = TransmitLimitedQueue()
    queue.queue("node-a", b"old")
    queue.queue("node-a", b"new")
    assert len(queue) == 1
    assert queue.get_broadcasts(100, 3, 10) == [b"new"]


def test_queue_prefers_fewest_transmits_then_largest_then_newest() -> None:
    queue = TransmitLimitedQueue()
    queue.queue("a", b"aa")
    queue.get_broadcasts(100, 10, 10)  # "a" now has one transmission
    queue.queue("b", b"b")
    queue.queue("c", b"ccc")
    queue.queue("d", b"ddd")
    # Fresh tier first, largest first, newest first among equal sizes.
    assert queue.get_broadcasts(100, 10, 10) == [b"ddd", b"ccc", b"b", b"aa"]


def test_queue_takes_only_what_fits() -> None:
    queue = TransmitLimitedQueue()
    queue.queue("big", b"x" * 10)
    queue.queue("small", b"y" * 3)
    assert queue.get_broadcasts(5, 10, 10) == [b"yyy"]
    assert queue.get_broadcasts(20, 10, 10) == [b"x" * 10, b"yyy"]


def test_queue_drops_message_after_transmit_limit() -> None:
    queue = TransmitLimitedQueue()
    queue.queue("a", b"a")
    sent = [queue.get_broadcasts(100, 3, 10) for _ in range(5)]
    assert sent == [[b"a"], [b"a"], [b"a"], [], []]
    assert "a" not in queue


def test_queue_never_repeats_an_item_within_one_packet() -> None:
    queue = TransmitLimitedQueue()
    queue.queue("a", b"a")
    assert queue.get_broadcasts(100, 10, 10) == [b"a"]


def test_queue_respects_max_count() -> None:
    queue = TransmitLimitedQueue()
    for i in range(5):
        queue.queue(str(i), b"m")
    assert len(queue.get_broadcasts(100, 10, 2)) == 2


def test_queue_discard_removes_key() -> None:
    queue = TransmitLimitedQueue()
    queue.queue("a", b"a")
    queue.discard("a")
    queue.discard("missing")
    assert len(queue) == 0
    assert queue.get_broadcasts(100, 10, 10) == []


def test_queue_take_then_release_never_repeats_within_a_packet() -> None:
    queue = TransmitLimitedQueue()
    queue.queue("a", b"a")
    first = queue.take(100, 10)
    second = queue.take(100, 10)  # filling the same packet in a second turn
    assert [b.message for b in first] == [b"a"]
    assert second == []
    queue.release(first + second, 10)
    assert queue.get_broadcasts(100, 10, 10) == [b"a"]


def test_queue_message_replaced_while_taken_stays_replaced() -> None:
    queue = TransmitLimitedQueue()
    queue.queue("a", b"old")
    taken = queue.take(100, 10)
    queue.queue("a", b"new")
    queue.release(taken, 10)
    assert queue.get_broadcasts(100, 10, 10) == [b"new"]
    assert queue.get_broadcasts(100, 10, 10) == [b"new"]


def test_queue_repeats_multiply_the_transmit_limit() -> None:
    queue = TransmitLimitedQueue()
    queue.queue("dead", b"d", repeats=2)
    queue.queue("alive", b"a")
    sent = [queue.get_broadcasts(100, 3, 10) for _ in range(7)]
    assert [b"d" in packet for packet in sent] == [True] * 6 + [False]
    assert [b"a" in packet for packet in sent] == [True] * 3 + [False] * 4
