"""`Channel.discard`: adopted messages are finished at delivery instead of handed out."""

from __future__ import annotations

import dataclasses

from tests.queue.test_channel import CONFIG, T0, fill, make_channel, msg


def test_discarded_messages_are_finished_and_the_rest_delivered_in_their_place() -> None:
    channel, _ = make_channel()
    fill(channel, 10)
    finished: list[bytes] = []
    channel.on_finish = finished.append
    gone = {msg(n).id for n in (0, 1, 2, 5)}
    channel.discard = gone.__contains__
    out = channel.deliver(1, T0, 10.0, 4)
    # Four asked, four handed out: the dropped ones were replaced from the queue.
    assert [m.id for m in out] == [msg(n).id for n in (3, 4, 6, 7)]
    assert finished == [msg(n).id for n in (0, 1, 2, 5)]
    assert (channel.depth, channel.in_flight_count) == (2, 4)


def test_discarded_messages_on_the_backend_are_acknowledged_there() -> None:
    channel, backend = make_channel(config=dataclasses.replace(CONFIG, mem_queue_size=0))
    fill(channel, 6)
    assert backend.depth == 6
    channel.discard = lambda msg_id: msg_id <= msg(3).id
    out = channel.deliver(1, T0, 10.0, 10)
    assert [m.id for m in out] == [msg(4).id, msg(5).id]
    assert backend.depth == 0
    for m in out:
        channel.finish(1, m.id)
    assert (channel.depth, channel.in_flight_count) == (0, 0)


def test_a_channel_of_only_discarded_messages_delivers_nothing_and_empties() -> None:
    channel, _ = make_channel()
    fill(channel, 5)
    channel.discard = lambda msg_id: True
    assert channel.deliver(1, T0, 10.0, 2) == []
    assert channel.depth == 0


def test_a_requeued_message_adopted_meanwhile_is_dropped_at_its_next_delivery() -> None:
    channel, _ = make_channel()
    fill(channel, 2)
    first, second = channel.deliver(1, T0, 10.0, 2)
    channel.discard = {first.id}.__contains__
    channel.requeue(1, first.id, 0.0, T0)
    channel.requeue(1, second.id, 0.0, T0)
    (again,) = channel.deliver(1, T0, 10.0, 5)
    assert again.id == second.id
    assert again.attempts == 2


def test_without_discard_nothing_changes() -> None:
    channel, _ = make_channel()
    fill(channel, 3)
    assert [m.id for m in channel.deliver(1, T0, 10.0, 3)] == [msg(n).id for n in range(3)]
