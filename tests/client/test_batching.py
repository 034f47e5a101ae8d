"""The publish batcher as a pure core: which publishes share a command, counted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.client.batching import Batch, PublishBatcher
from shoal.errors import LocalProtocolError
from shoal.queue.commands import CommandDecoder, Mpub, Pub
from shoal.queue.frames import MAGIC_V2


def decode(data: bytes) -> object:
    decoder = CommandDecoder(
        max_msg_size=1 << 20, max_body_size=1 << 22, max_req_timeout_ms=1000, max_rdy_count=10
    )
    decoder.receive_data(MAGIC_V2 + data)
    command = decoder.next_command()
    assert decoder.next_command() is None
    return command


def test_batcher_sends_a_lone_publish_with_the_next_write_as_pub() -> None:
    batcher: PublishBatcher[int] = PublishBatcher(depth=1)
    assert batcher.add("t", b"a", 0) == []
    ready_before = batcher.ready
    (batch,) = batcher.release()
    assert batch.waiters == [0]
    assert decode(batch.encode()) == Pub("t", b"a")
    assert batcher.in_flight("t") == 1
    assert (ready_before, batcher.ready) == (True, False)
    assert batcher.release() == []


def test_batcher_next_write_takes_the_first_half_of_what_gathered() -> None:
    batcher: PublishBatcher[int] = PublishBatcher(depth=1)
    assert [batcher.add("t", b"%d" % i, i) for i in range(5)] == [[]] * 5
    (batch,) = batcher.release()
    assert decode(batch.encode()) == Mpub("t", [b"0", b"1", b"2"])
    assert batcher.gathering("t") == 2
    assert batcher.add("t", b"5", 5) == []
    assert not batcher.ready  # in flight: the rest waits for the answer
    (rest,) = batcher.answered(batch)
    assert rest.waiters == [3, 4, 5]


def sent_alone(batcher: PublishBatcher[int], topic: str, body: bytes, waiter: int) -> Batch[int]:
    """Publish into an idle topic and write: the batch of one it sends."""
    assert batcher.add(topic, body, waiter) == []
    (batch,) = batcher.release()
    return batch


def test_batcher_gathers_while_the_topic_is_in_flight() -> None:
    batcher: PublishBatcher[int] = PublishBatcher(depth=1)
    first = sent_alone(batcher, "t", b"a", 0)
    assert [batcher.add("t", b"%d" % i, i) for i in range(1, 3)] == [[]] * 2
    assert batcher.gathering("t") == 2
    (second,) = batcher.answered(first)
    assert second.waiters == [1, 2]
    assert decode(second.encode()) == Mpub("t", [b"1", b"2"])
    assert (batcher.commands, batcher.messages) == (2, 3)
    assert batcher.answered(second) == []
    assert batcher.in_flight("t") == 0


def test_batcher_sends_at_most_half_of_the_messages_in_play() -> None:
    batcher: PublishBatcher[int] = PublishBatcher(depth=1)
    first = sent_alone(batcher, "t", b"a", 0)
    for i in range(1, 6):
        batcher.add("t", b"%d" % i, i)
    # One answered and five gathering: six in play, so three leave.
    (second,) = batcher.answered(first)
    assert second.waiters == [1, 2, 3]
    assert decode(second.encode()) == Mpub("t", [b"1", b"2", b"3"])
    assert second.size == 3 * 5
    assert batcher.gathering("t") == 2
    # Two gathering behind an answered three: they leave whole.
    (third,) = batcher.answered(second)
    assert third.waiters == [4, 5]
    assert batcher.gathering("t") == 0


def closed_loop_sizes(batcher: PublishBatcher[int], in_flight: list[Batch[int]]) -> list[int]:
    """Sizes of the batches sent while each answered caller publishes again, six answers long."""
    sizes = [len(batch) for batch in in_flight]
    for _ in range(6):
        answered = in_flight.pop(0)
        released = batcher.answered(answered)
        for caller in answered.waiters:  # each caller publishes again
            released += batcher.add("t", b"x", caller)
        in_flight += released
        sizes += [len(batch) for batch in released]
    return sizes


def test_batcher_splits_publishers_that_wait_for_their_answers_in_two() -> None:
    """64 tasks that start together: two batches of 32 in turn."""
    batcher: PublishBatcher[int] = PublishBatcher(depth=1)
    for caller in range(64):
        batcher.add("t", b"x", caller)
    assert closed_loop_sizes(batcher, batcher.release()) == [32] * 7


def test_batcher_evens_out_publishers_that_wait_for_their_answers() -> None:
    """One task that wrote before 63 more came: 1 and 63 at first, then two of 32."""
    batcher: PublishBatcher[int] = PublishBatcher(depth=1)
    first = sent_alone(batcher, "t", b"x", 0)
    assert [batcher.add("t", b"x", caller) for caller in range(1, 64)] == [[]] * 63
    assert closed_loop_sizes(batcher, [first]) == [1] + [32] * 6


def test_batcher_depth_lets_that_many_leave_before_an_answer() -> None:
    batcher: PublishBatcher[int] = PublishBatcher(depth=3)
    sent = [sent_alone(batcher, "t", b"x", i) for i in range(3)]
    assert batcher.in_flight("t") == 3
    assert batcher.add("t", b"x", 3) == []
    assert batcher.add("t", b"x", 4) == []
    assert not batcher.ready
    assert batcher.gathering("t") == 2
    (fourth,) = batcher.answered(sent[0])
    assert fourth.waiters == [3, 4]


def test_batcher_topics_gather_apart() -> None:
    batcher: PublishBatcher[str] = PublishBatcher(depth=1)
    batcher.add("t", b"x", "t0")
    assert len(batcher.release()) == 1
    batcher.add("u", b"x", "u0")
    assert len(batcher.release()) == 1  # another topic is not in flight
    assert batcher.add("t", b"y", "t1") == []
    assert batcher.release() == []
    assert (batcher.gathering("t"), batcher.gathering("u")) == (1, 0)


def test_batcher_sends_a_full_batch_at_once() -> None:
    batcher: PublishBatcher[int] = PublishBatcher(max_bytes=30, depth=1)
    sent_alone(batcher, "t", b"a", 0)
    assert batcher.add("t", b"x" * 10, 1) == []  # 14 bytes
    assert batcher.add("t", b"y" * 10, 2) == []  # 28 bytes
    (full,) = batcher.add("t", b"z" * 10, 3)  # would be 42: the batch leaves
    assert full.waiters == [1, 2]
    assert full.size == 28
    assert batcher.gathering("t") == 1  # the new body starts the next batch
    assert batcher.in_flight("t") == 2


@pytest.mark.parametrize("body", [b"", b"x" * 40])
def test_batcher_sends_empty_and_oversize_bodies_alone(body: bytes) -> None:
    batcher: PublishBatcher[int] = PublishBatcher(max_bytes=30, depth=1)
    sent_alone(batcher, "t", b"a", 0)
    assert batcher.add("t", b"b", 1) == []
    (alone,) = batcher.add("t", body, 2)
    assert alone.waiters == [2]
    assert alone.encode() == b"PUB t\n" + len(body).to_bytes(4, "big") + body
    assert batcher.gathering("t") == 1


def test_batcher_with_max_bytes_zero_never_gathers() -> None:
    batcher: PublishBatcher[int] = PublishBatcher(max_bytes=0, depth=1)
    assert [len(batcher.add("t", b"x", i)) for i in range(4)] == [1, 1, 1, 1]
    assert batcher.commands == 4


def test_batcher_drain_returns_what_never_left() -> None:
    batcher: PublishBatcher[int] = PublishBatcher(depth=1)
    first = sent_alone(batcher, "t", b"a", 0)
    batcher.add("t", b"b", 1)
    (left,) = batcher.drain()
    assert left.waiters == [1]
    assert batcher.answered(first) == []  # the connection ended: nothing more leaves


def test_batcher_refuses_an_answer_for_a_batch_never_sent() -> None:
    batcher: PublishBatcher[int] = PublishBatcher()
    with pytest.raises(LocalProtocolError):
        batcher.answered(Batch("t"))


@pytest.mark.parametrize(("max_bytes", "depth"), [(-1, 1), (10, 0)])
def test_batcher_refuses_bad_limits(max_bytes: int, depth: int) -> None:
    with pytest.raises(LocalProtocolError):
        PublishBatcher(max_bytes=max_bytes, depth=depth)


@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.sampled_from("tu"), st.binary(max_size=12)),  # publish
            st.integers(min_value=0, max_value=7),  # answer the n-th oldest in flight
            st.just("write"),  # the connection writes: ready batches leave
        ),
        max_size=60,
    ),
    max_bytes=st.integers(min_value=0, max_value=40),
    depth=st.integers(min_value=1, max_value=3),
)
def test_batcher_sends_every_publish_once_within_its_limits(
    steps: list[tuple[str, bytes] | int | str], max_bytes: int, depth: int
) -> None:
    batcher: PublishBatcher[int] = PublishBatcher(max_bytes=max_bytes, depth=depth)
    bodies: dict[int, tuple[str, bytes]] = {}
    in_flight: list[Batch[int]] = []
    sent: list[int] = []
    for step in steps:
        if step == "write":
            out = batcher.release()
        elif isinstance(step, int):
            if not in_flight:
                continue
            out = batcher.answered(in_flight.pop(step % len(in_flight)))
        else:
            assert isinstance(step, tuple)
            waiter = len(bodies)
            bodies[waiter] = step
            out = batcher.add(step[0], step[1], waiter)
        for batch in out:
            assert len(batch) >= 1
            assert len(batch) == 1 or batch.size <= max_bytes
            assert batch.size == sum(len(body) + 4 for body in batch.bodies)
            assert all(
                bodies[w] == (batch.topic, b)
                for w, b in zip(batch.waiters, batch.bodies, strict=True)
            )
            sent.extend(batch.waiters)
            in_flight.append(batch)
    # Write and answer everything: what gathered leaves, nothing is left behind.
    for batch in batcher.release():
        sent.extend(batch.waiters)
        in_flight.append(batch)
    while in_flight:
        for batch in batcher.answered(in_flight.pop(0)):
            sent.extend(batch.waiters)
            in_flight.append(batch)
    assert sorted(sent) == list(bodies)
    assert batcher.messages == len(bodies)
    assert batcher.drain() == []
