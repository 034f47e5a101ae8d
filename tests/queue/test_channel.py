"""Channel rules: delivery, FIN/REQ/TOUCH, timeouts, deferral, overflow, admin."""

from __future__ import annotations

import dataclasses

import pytest

from shoal.queue.backend import MemoryBackend
from shoal.queue.channel import Channel, InFlightError
from shoal.queue.config import QueueConfig
from shoal.queue.message import Message, decode_message, encode_message

T0 = 1_700_000_000.0
CONFIG = QueueConfig(mem_queue_size=100, msg_timeout=10.0, max_msg_timeout=30.0)


def make_channel(name: str = "ch", config: QueueConfig = CONFIG) -> tuple[Channel, MemoryBackend]:
    backend = MemoryBackend()
    return Channel("topic", name, config, backend), backend


def msg(n: int, defer: float = 0.0) -> Message:
    return Message(b"%016x" % n, b"body-%d" % n, int(T0 * 1e9), 0, defer)


def fill(channel: Channel, count: int, now: float = T0) -> None:
    for n in range(count):
        channel.put(msg(n), now)


def test_channel_deliver_increments_attempts_and_tracks_in_flight() -> None:
    channel, _ = make_channel()
    fill(channel, 3)
    out = channel.deliver(1, T0, 10.0, 2)
    assert [m.id for m in out] == [msg(0).id, msg(1).id]
    assert [m.attempts for m in out] == [1, 1]
    assert channel.in_flight_count == 2
    assert channel.depth == 1
    assert channel.message_count == 3


def test_channel_deliver_splits_load_between_clients() -> None:
    channel, _ = make_channel()
    channel.add_client(1)
    channel.add_client(2)
    fill(channel, 4)
    got: dict[int, list[bytes]] = {1: [], 2: []}
    for client in (1, 2, 1, 2):
        got[client] += [m.id for m in channel.deliver(client, T0, 10.0, 1)]
    assert got == {1: [msg(0).id, msg(2).id], 2: [msg(1).id, msg(3).id]}
    assert channel.deliver(1, T0, 10.0, 5) == []


def test_channel_finish_removes_message_for_good() -> None:
    channel, _ = make_channel()
    fill(channel, 1)
    (m,) = channel.deliver(1, T0, 10.0, 1)
    channel.finish(1, m.id)
    assert channel.in_flight_count == 0
    assert channel.process_in_flight(T0 + 100) == []
    assert channel.depth == 0
    assert channel.next_deadline() is None


def test_channel_finish_unknown_id_raises_not_in_flight() -> None:
    channel, _ = make_channel()
    with pytest.raises(InFlightError, match=r"^ID not in flight$"):
        channel.finish(1, b"0" * 16)


def test_channel_finish_by_other_client_raises_not_owner() -> None:
    channel, _ = make_channel()
    fill(channel, 1)
    (m,) = channel.deliver(1, T0, 10.0, 1)
    with pytest.raises(InFlightError, match=r"^client does not own message$"):
        channel.finish(2, m.id)
    with pytest.raises(InFlightError, match=r"^client does not own message$"):
        channel.requeue(2, m.id, 0.0, T0)
    with pytest.raises(InFlightError, match=r"^client does not own message$"):
        channel.touch(2, m.id, T0, 10.0)
    assert channel.in_flight_count == 1
    channel.finish(1, m.id)


def test_channel_finish_twice_raises_not_in_flight() -> None:
    channel, _ = make_channel()
    fill(channel, 1)
    (m,) = channel.deliver(1, T0, 10.0, 1)
    channel.finish(1, m.id)
    with pytest.raises(InFlightError, match=r"^ID not in flight$"):
        channel.finish(1, m.id)


def test_channel_timeout_requeues_with_attempts_two() -> None:
    channel, _ = make_channel()
    fill(channel, 1)
    (m,) = channel.deliver(7, T0, 10.0, 1)
    assert channel.process_in_flight(T0 + 9.999) == []
    assert channel.process_in_flight(T0 + 10.0) == [7]
    assert channel.timeout_count == 1
    assert channel.depth == 1
    with pytest.raises(InFlightError, match="not in flight"):
        channel.finish(7, m.id)
    (again,) = channel.deliver(8, T0 + 10.0, 10.0, 1)
    assert again.id == m.id
    assert again.attempts == 2


def test_channel_timeout_returns_one_owner_per_message() -> None:
    channel, _ = make_channel()
    fill(channel, 3)
    channel.deliver(1, T0, 5.0, 2)
    channel.deliver(2, T0, 5.0, 1)
    assert sorted(channel.process_in_flight(T0 + 5.0)) == [1, 1, 2]


def test_channel_disconnect_keeps_in_flight_until_deadline() -> None:
    channel, _ = make_channel()
    channel.add_client(1)
    fill(channel, 1)
    channel.deliver(1, T0, 10.0, 1)
    assert channel.remove_client(1) is False
    assert channel.in_flight_count == 1
    assert channel.depth == 0
    assert channel.process_in_flight(T0 + 10.0) == [1]
    assert channel.depth == 1


def test_channel_requeue_without_delay_is_ready_at_once() -> None:
    channel, _ = make_channel()
    fill(channel, 1)
    (m,) = channel.deliver(1, T0, 10.0, 1)
    channel.requeue(1, m.id, 0.0, T0 + 1)
    assert channel.requeue_count == 1
    assert channel.deferred_count == 0
    (again,) = channel.deliver(2, T0 + 1, 10.0, 1)
    assert (again.id, again.attempts) == (m.id, 2)


def test_channel_requeue_delay_respected() -> None:
    channel, _ = make_channel()
    fill(channel, 1)
    (m,) = channel.deliver(1, T0, 10.0, 1)
    channel.requeue(1, m.id, 5.0, T0 + 1)
    assert channel.deferred_count == 1
    assert channel.depth == 0
    assert channel.next_deadline() == T0 + 6
    assert channel.process_deferred(T0 + 5.999) == 0
    assert channel.deliver(1, T0 + 5.999, 10.0, 1) == []
    assert channel.process_deferred(T0 + 6) == 1
    assert [x.id for x in channel.deliver(1, T0 + 6, 10.0, 1)] == [m.id]


def test_channel_put_deferred_counts_at_once_and_waits() -> None:
    channel, _ = make_channel()
    channel.put(msg(1, defer=3.0), T0)
    assert channel.message_count == 1
    assert channel.deferred_count == 1
    assert channel.depth == 0
    assert channel.deliver(1, T0 + 2.9, 10.0, 1) == []
    assert channel.process_deferred(T0 + 2.9) == 0
    assert channel.process_deferred(T0 + 3.0) == 1
    assert [m.id for m in channel.deliver(1, T0 + 3, 10.0, 1)] == [msg(1).id]


def test_channel_touch_extends_deadline() -> None:
    channel, _ = make_channel()
    fill(channel, 1)
    (m,) = channel.deliver(1, T0, 10.0, 1)
    channel.touch(1, m.id, T0 + 8, 10.0)
    assert channel.next_deadline() == T0 + 18
    assert channel.process_in_flight(T0 + 17.9) == []
    assert channel.process_in_flight(T0 + 18) == [1]


def test_channel_touch_capped_by_max_msg_timeout() -> None:
    channel, _ = make_channel()
    fill(channel, 1)
    (m,) = channel.deliver(1, T0, 10.0, 1)
    channel.touch(1, m.id, T0 + 9, 10.0)
    channel.touch(1, m.id, T0 + 18, 10.0)
    channel.touch(1, m.id, T0 + 27, 10.0)
    assert channel.next_deadline() == T0 + CONFIG.max_msg_timeout
    assert channel.process_in_flight(T0 + 29.9) == []
    assert channel.process_in_flight(T0 + 30) == [1]


def test_channel_mem_queue_overflow_goes_to_backend_and_returns_in_order() -> None:
    channel, backend = make_channel(config=dataclasses.replace(CONFIG, mem_queue_size=2))
    fill(channel, 5)
    assert channel.depth == 5
    assert channel.backend_depth == backend.depth == 3
    out = channel.deliver(1, T0, 10.0, 10)
    assert [m.id for m in out] == [msg(n).id for n in range(5)]
    assert [m.body for m in out] == [msg(n).body for n in range(5)]
    assert all(m.attempts == 1 for m in out)
    assert backend.depth == 0


def test_channel_mem_queue_size_zero_sends_everything_to_backend() -> None:
    channel, backend = make_channel(config=dataclasses.replace(CONFIG, mem_queue_size=0))
    channel.put_many([msg(0), msg(1)], T0)
    assert backend.depth == 2
    assert [m.id for m in channel.deliver(1, T0, 10.0, 5)] == [msg(0).id, msg(1).id]


def test_channel_requeue_into_full_memory_keeps_attempts_through_backend() -> None:
    channel, backend = make_channel(config=dataclasses.replace(CONFIG, mem_queue_size=1))
    fill(channel, 1)
    (m,) = channel.deliver(1, T0, 10.0, 1)
    channel.put(msg(2), T0)
    channel.requeue(1, m.id, 0.0, T0)
    assert backend.depth == 1
    out = channel.deliver(1, T0, 10.0, 2)
    assert [(x.id, x.attempts) for x in out] == [(msg(2).id, 1), (m.id, 2)]


def test_channel_put_many_splits_deferred_from_ready() -> None:
    channel, _ = make_channel()
    woken: list[int] = []
    channel.on_wake = woken.append
    channel.want(1, 5)
    channel.put_many([msg(0), msg(1, defer=4.0), msg(2)], T0)
    assert channel.message_count == 3
    assert (channel.depth, channel.deferred_count) == (2, 1)
    assert woken == [1]


def test_channel_pause_stops_deliver() -> None:
    channel, _ = make_channel()
    fill(channel, 2)
    (m,) = channel.deliver(1, T0, 10.0, 1)
    channel.pause()
    assert channel.deliver(1, T0, 10.0, 5) == []
    channel.finish(1, m.id)
    woken: list[int] = []
    channel.on_wake = woken.append
    channel.want(1, 5)
    channel.put(msg(2), T0)
    assert woken == []  # paused: the waiter stays in line
    channel.unpause()
    assert woken == [1]
    assert [x.id for x in channel.deliver(1, T0, 10.0, 5)] == [msg(1).id, msg(2).id]


def test_channel_wakes_a_waiter_when_messages_become_deliverable() -> None:
    channel, _ = make_channel()
    woken: list[int] = []
    channel.on_wake = woken.append
    channel.want(9, 1)
    channel.put(msg(1, defer=1.0), T0)
    assert woken == []  # deferred: nothing deliverable yet
    channel.put(msg(2), T0)
    assert woken == [9]
    (a,) = channel.deliver(9, T0, 5.0, 1)
    channel.want(9, 1)
    channel.requeue(9, a.id, 0.0, T0)  # REQ without delay
    assert woken == [9, 9]
    (b,) = channel.deliver(9, T0, 5.0, 1)
    channel.requeue(9, b.id, 2.0, T0)
    channel.want(9, 1)
    channel.process_deferred(T0 + 2.0)  # both deferred copies come due
    assert woken == [9] * 3
    channel.deliver(9, T0 + 2, 1.0, 5)
    channel.want(9, 3)
    channel.process_in_flight(T0 + 3)  # their delivery times out
    assert woken == [9] * 4


def test_channel_publish_wakes_no_subscriber_with_rdy_zero() -> None:
    channel, _ = make_channel(config=dataclasses.replace(CONFIG, mem_queue_size=10_000))
    woken: list[int] = []
    channel.on_wake = woken.append
    for client in range(1000):
        channel.add_client(client)
        channel.want(client, 0)  # an idle pump with RDY 0
    channel.put(msg(0), T0)
    channel.put_batch((b"%016x" % 1,), (b"b",), 0, T0)
    assert woken == []
    assert channel.waiting == ()


def test_channel_wakes_one_waiter_per_message_round_robin() -> None:
    channel, _ = make_channel(config=dataclasses.replace(CONFIG, mem_queue_size=10_000))
    woken: list[int] = []
    channel.on_wake = woken.append
    for client in range(1000):
        channel.want(client, 1)
    served: list[int] = []
    for n in range(2000):
        channel.put(msg(n), T0)
        (client,) = woken[len(served) :]  # exactly one waiter per message
        (m,) = channel.deliver(client, T0, 10.0, 1)
        channel.finish(client, m.id)
        served.append(client)
        channel.want(client, 1)  # its pump goes idle again, at the back
    assert served == list(range(1000)) * 2


def test_channel_wakes_waiters_until_their_room_covers_the_batch() -> None:
    channel, _ = make_channel()
    woken: list[int] = []
    channel.on_wake = woken.append
    for client, room in ((1, 3), (2, 3), (3, 3)):
        channel.want(client, room)
    channel.put_many([msg(n) for n in range(5)], T0)
    assert woken == [1, 2]
    assert list(channel.waiting) == [3]


def test_channel_waiter_keeps_its_place_and_leaves_without_room() -> None:
    channel, _ = make_channel()
    woken: list[int] = []
    channel.on_wake = woken.append
    channel.want(1, 1)
    channel.want(2, 1)
    channel.want(1, 4)  # new room, same place
    assert list(channel.waiting) == [1, 2]
    channel.want(1, 0)
    channel.add_client(2)
    channel.remove_client(2)
    assert not channel.waiting
    channel.put(msg(0), T0)
    assert woken == []


def test_channel_client_served_while_waiting_goes_to_the_back() -> None:
    channel, _ = make_channel()
    woken: list[int] = []
    channel.on_wake = woken.append
    for client in (1, 2, 3):
        channel.want(client, 1)
    channel.put(msg(0), T0)
    assert woken == [1]
    # Client 2's own reader woke its pump, which took the message first:
    # served, it leaves its place in the line.
    assert [m.id for m in channel.deliver(2, T0, 10.0, 1)] == [msg(0).id]
    channel.want(2, 1)
    channel.want(1, 1)  # woken, found nothing: back of the line
    assert list(channel.waiting) == [3, 2, 1]


def test_channel_idle_client_without_room_passes_the_wake_on() -> None:
    channel, _ = make_channel()
    woken: list[int] = []
    channel.on_wake = woken.append
    channel.want(1, 1)
    channel.want(2, 1)
    channel.put_many([msg(0), msg(1)], T0)
    assert woken == [1, 2]
    channel.want(3, 5)
    # Client 1 lost its room (RDY 0) before taking anything: its idle pump
    # says so, and the messages go to the next waiter instead of stranding.
    channel.want(1, 0)
    assert woken == [1, 2, 3]
    # A waiter that arrives while messages are ready is woken at once.
    channel.want(4, 1)
    assert woken == [1, 2, 3, 4]


def test_channel_empty_drops_everything() -> None:
    channel, backend = make_channel(config=dataclasses.replace(CONFIG, mem_queue_size=1))
    fill(channel, 4)
    a, b = channel.deliver(1, T0, 10.0, 2)
    channel.requeue(1, b.id, 5.0, T0)
    channel.put(msg(9, defer=2.0), T0)
    assert channel.empty() == [1]
    assert (channel.depth, channel.in_flight_count, channel.deferred_count) == (0, 0, 0)
    assert backend.depth == 0
    assert channel.next_deadline() is None
    with pytest.raises(InFlightError, match="not in flight"):
        channel.finish(1, a.id)
    assert channel.process_in_flight(T0 + 60) == []
    assert channel.process_deferred(T0 + 60) == 0
    assert channel.deliver(1, T0 + 60, 10.0, 10) == []


def test_channel_next_deadline_is_earliest_of_in_flight_and_deferred() -> None:
    channel, _ = make_channel()
    assert channel.next_deadline() is None
    fill(channel, 2)
    channel.deliver(1, T0, 10.0, 1)
    channel.put(msg(5, defer=4.0), T0)
    assert channel.next_deadline() == T0 + 4
    channel.process_deferred(T0 + 4)
    assert channel.next_deadline() == T0 + 10


def test_channel_next_deadline_skips_finished_messages() -> None:
    channel, _ = make_channel()
    fill(channel, 2)
    (a,) = channel.deliver(1, T0, 5.0, 1)
    channel.deliver(1, T0 + 1, 5.0, 1)
    channel.finish(1, a.id)
    assert channel.next_deadline() == T0 + 6


def test_channel_ephemeral_remove_last_client_asks_for_deletion() -> None:
    channel, _ = make_channel("ch#ephemeral")
    assert channel.ephemeral
    channel.add_client(1)
    channel.add_client(2)
    assert channel.remove_client(1) is False
    assert channel.remove_client(2) is True
    durable, _ = make_channel("ch")
    durable.add_client(1)
    assert durable.remove_client(1) is False


def test_channel_flush_writes_everything_to_backend_ready_on_restart() -> None:
    channel, backend = make_channel()
    fill(channel, 4)
    a, b = channel.deliver(1, T0, 10.0, 2)
    channel.requeue(1, b.id, 30.0, T0)
    channel.flush(T0 + 1)
    assert (channel.depth, channel.in_flight_count, channel.deferred_count) == (4, 0, 0)
    assert backend.depth == 4
    channel.close()
    restarted = Channel("topic", "ch", CONFIG, backend)
    out = restarted.deliver(1, T0 + 2, 10.0, 10)
    assert [m.id for m in out] == [msg(2).id, msg(3).id, a.id, b.id]
    assert [m.attempts for m in out] == [1, 1, 2, 2]


def test_channel_delete_drops_backend_and_marks_deleted() -> None:
    channel, backend = make_channel(config=dataclasses.replace(CONFIG, mem_queue_size=0))
    fill(channel, 2)
    channel.delete()
    assert channel.deleted
    assert backend.depth == 0


def test_channel_deliver_decodes_backend_records() -> None:
    channel, backend = make_channel()
    stored = Message(b"a" * 16, b"payload", 123, 3)
    backend.put(encode_message(stored))
    (m,) = channel.deliver(1, T0, 10.0, 1)
    assert (m.id, m.body, m.timestamp, m.attempts) == (b"a" * 16, b"payload", 123, 4)


def test_channel_many_touches_keep_deadline_index_bounded() -> None:
    channel, _ = make_channel()
    fill(channel, 1)
    (m,) = channel.deliver(1, T0, 10.0, 1)
    for step in range(5000):
        channel.touch(1, m.id, T0 + step * 0.001, 10.0)
    assert channel.next_deadline() == T0 + 4999 * 0.001 + 10.0
    assert len(channel._heap) <= 2 + 1024 + 1


# --- batches: put_batch, deliver_batches, finish_many and the batch deadline keys ---


def ids_of(count: int, start: int = 0) -> tuple[bytes, ...]:
    return tuple(b"%016x" % n for n in range(start, start + count))


def bodies_of(ids: tuple[bytes, ...]) -> tuple[bytes, ...]:
    return tuple(b"body-" + i for i in ids)


def put_batch(channel: Channel, count: int, start: int = 0, now: float = T0) -> tuple[bytes, ...]:
    ids = ids_of(count, start)
    channel.put_batch(ids, bodies_of(ids), int(T0 * 1e9), now)
    return ids


def test_channel_put_batch_is_put_many_without_message_objects() -> None:
    by_batch, _ = make_channel()
    by_many, _ = make_channel()
    ids = put_batch(by_batch, 5)
    by_many.put_many(
        [Message(i, b, int(T0 * 1e9)) for i, b in zip(ids, bodies_of(ids), strict=True)], T0
    )
    assert (
        (by_batch.depth, by_batch.message_count) == (by_many.depth, by_many.message_count) == (5, 5)
    )
    for limit in (2, 1, 5):
        got = [
            (m.id, m.body, m.timestamp, m.attempts) for m in by_batch.deliver(1, T0, 10.0, limit)
        ]
        assert got == [
            (m.id, m.body, m.timestamp, m.attempts) for m in by_many.deliver(1, T0, 10.0, limit)
        ]


def test_channel_put_batch_overflows_to_backend_in_order() -> None:
    channel, backend = make_channel(config=dataclasses.replace(CONFIG, mem_queue_size=3))
    put_batch(channel, 2)
    ids = put_batch(channel, 4, start=2)
    assert (channel.depth, backend.depth) == (6, 3)
    out = channel.deliver(1, T0, 10.0, 10)
    assert [m.id for m in out] == list(ids_of(6))
    assert [m.body for m in out] == list(bodies_of(ids_of(6)))
    assert all(m.attempts == 1 for m in out)
    assert ids[-1] in [m.id for m in out]


def test_channel_put_batch_with_defer_holds_every_message() -> None:
    channel, _ = make_channel()
    ids = ids_of(3)
    channel.put_batch(ids, bodies_of(ids), int(T0 * 1e9), T0, defer=5.0)
    assert (channel.depth, channel.deferred_count, channel.message_count) == (0, 3, 3)
    assert channel.next_deadline() == T0 + 5.0
    assert channel.process_deferred(T0 + 5.0) == 3
    assert [m.id for m in channel.deliver(1, T0 + 5.0, 10.0, 5)] == list(ids)


def test_channel_deliver_batches_names_what_deliver_would() -> None:
    a, _ = make_channel()
    b, _ = make_channel()
    for channel in (a, b):
        put_batch(channel, 4, start=100)
        fill(channel, 2)  # single puts after a batch
        (first,) = channel.deliver(9, T0, 10.0, 1)
        channel.requeue(9, first.id, 0, T0)  # back at the end with attempts 1
    expected = [(m.id, m.body, m.timestamp, m.attempts) for m in a.deliver(1, T0, 10.0, 6)]
    batches = b.deliver_batches(1, T0, 10.0, 6)
    got = [
        (i, body, timestamp, attempts)
        for ids, bodies, timestamp, attempts in batches
        for i, body in zip(ids, bodies, strict=True)
    ]
    assert got == expected
    assert b.in_flight_count == a.in_flight_count == 6
    assert b.deliver_batches(1, T0, 10.0, 5) == []


def test_channel_finish_many_reports_refusals_in_order_and_finishes_the_rest() -> None:
    channel, _ = make_channel()
    ids = put_batch(channel, 4)
    channel.deliver(1, T0, 10.0, 3)
    channel.deliver(2, T0, 10.0, 1)
    unknown = b"f" * 16
    failed = channel.finish_many(1, [ids[0], unknown, ids[3], ids[1], ids[0]])
    assert failed == [
        (unknown, "ID not in flight"),
        (ids[3], "client does not own message"),
        (ids[0], "ID not in flight"),
    ]
    assert channel.in_flight_count == 2  # ids[2] of client 1, ids[3] of client 2
    channel.finish(2, ids[3])
    channel.finish(1, ids[2])
    assert channel.in_flight_count == 0


def test_channel_partly_answered_batch_times_out_only_the_rest() -> None:
    channel, _ = make_channel()
    ids = put_batch(channel, 5)
    channel.deliver(1, T0, 10.0, 5)
    assert channel.finish_many(1, [ids[0], ids[2], ids[4]]) == []
    assert channel.process_in_flight(T0 + 9.9) == []
    assert channel.process_in_flight(T0 + 10.0) == [1, 1]
    assert channel.timeout_count == 2
    again = channel.deliver(1, T0 + 10.0, 10.0, 5)
    assert [(m.id, m.attempts) for m in again] == [(ids[1], 2), (ids[3], 2)]


def test_channel_touch_moves_one_message_of_a_batch() -> None:
    channel, _ = make_channel()
    ids = put_batch(channel, 3)
    channel.deliver(1, T0, 10.0, 3)
    channel.touch(1, ids[1], T0 + 5.0, 10.0)
    assert channel.process_in_flight(T0 + 10.0) == [1, 1]
    assert channel.next_deadline() == T0 + 15.0
    assert channel.process_in_flight(T0 + 15.0) == [1]
    assert [m.id for m in channel.deliver(1, T0 + 15.0, 10.0, 5)] == [ids[0], ids[2], ids[1]]


def test_channel_index_rebuild_keeps_every_deadline() -> None:
    channel, _ = make_channel(config=dataclasses.replace(CONFIG, mem_queue_size=5000))
    ids = put_batch(channel, 3000)
    channel.deliver(1, T0, 10.0, 3000)
    # Leave 10 of the batch in flight; the index still names all 3000 IDs...
    assert channel.finish_many(1, ids[10:]) == []
    # ...until the next change rebuilds it from the 10 live ones.
    channel.touch(1, ids[0], T0 + 1.0, 10.0)
    assert len(channel._heap) <= 2
    assert channel.next_deadline() == T0 + 10.0
    assert channel.process_in_flight(T0 + 10.0) == [1] * 9
    assert channel.process_in_flight(T0 + 11.0) == [1]
    assert channel.next_deadline() is None


def test_channel_steady_deliver_and_finish_keeps_deadline_index_bounded() -> None:
    channel, _ = make_channel(config=dataclasses.replace(CONFIG, mem_queue_size=100_000))
    for round_ in range(200):
        ids = put_batch(channel, 50, start=round_ * 50)
        channel.deliver(1, T0 + round_, 10.0, 50)
        # Answer all but one: the index must not keep the answered ones.
        assert channel.finish_many(1, ids[1:]) == []
        # (Rebuilt on deliver, so 49 answered since then may still be named.)
        named = sum(len(key[2]) for key in channel._heap)
        assert named <= 2 * (channel.in_flight_count + 49) + 1024 + 50
    assert channel.in_flight_count == 200


def test_channel_flush_after_a_partial_take_writes_ready_then_in_flight() -> None:
    channel, backend = make_channel()
    ids = put_batch(channel, 5)
    channel.deliver(1, T0, 10.0, 2)
    channel.flush(T0)
    assert (channel.depth, channel.in_flight_count) == (backend.depth, 0) == (5, 0)
    records = []
    while (record := backend.get()) is not None:
        records.append(decode_message(record))
    assert [(m.id, m.attempts) for m in records] == [
        (ids[2], 0),
        (ids[3], 0),
        (ids[4], 0),
        (ids[0], 1),
        (ids[1], 1),
    ]
    assert [m.body for m in records] == [bodies_of(ids)[i] for i in (2, 3, 4, 0, 1)]
