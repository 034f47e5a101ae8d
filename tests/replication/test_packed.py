"""A replica cuts a publish's IDs and bodies out of the frame only when it reads them."""

import pytest

from shoal.replication import receive
from shoal.replication.codec import decode_frame, encode_frame
from shoal.replication.packed import PackedField
from shoal.replication.records import Batch, ChannelCreated, Finish, Publish
from shoal.replication.replica import RETAINED_FACTOR, RETAINED_SLACK, ReplicaTopic


def message_id(n: int) -> bytes:
    return b"%016d" % n


def publish_batch(first: int, start: int, count: int, size: int = 10) -> Batch:
    ids = tuple(message_id(n) for n in range(start, start + count))
    bodies = tuple(b"%0*d" % (size, n) for n in range(start, start + count))
    record = Publish(ids=ids, bodies=bodies, timestamp=5, channels=("c",))
    return Batch(topic="t", first=first, records=(record,), commit=first - 1)


def decoded(batch: Batch, *, wire: bool = True) -> Batch:
    if not wire:
        return batch
    frame = decode_frame(encode_frame(batch))
    assert isinstance(frame, Batch)
    return frame


def packed(batch: Batch) -> tuple[PackedField, PackedField]:
    (record,) = batch.records
    assert isinstance(record, Publish)
    assert type(record.ids) is PackedField
    assert type(record.bodies) is PackedField
    return record.ids, record.bodies


def test_a_decoded_publish_is_cut_only_when_read() -> None:
    batch = decoded(publish_batch(1, 0, 3))
    ids, bodies = packed(batch)
    assert (ids.is_cut, bodies.is_cut) == (False, False)
    assert len(bodies) == 3
    assert bodies.size == 30
    assert bodies.lengths == (10, 10, 10)
    assert bytes(ids.block()) == b"".join(message_id(n) for n in range(3))
    assert [bodies.is_cut, bodies[1], bodies.is_cut] == [False, b"0000000001", True]
    assert tuple(ids) == tuple(message_id(n) for n in range(3))


def test_a_decoded_publish_encodes_to_the_same_bytes_without_cutting() -> None:
    original = publish_batch(1, 0, 4)
    data = encode_frame(original)
    again = decode_frame(data)
    assert isinstance(again, Batch)
    assert encode_frame(again) == data
    ids, bodies = packed(again)
    assert (ids.is_cut, bodies.is_cut) == (False, False)
    assert again == original  # equal to the tuples it came from (this comparison cuts)


def test_bodies_of_unequal_sizes_are_cut_in_order() -> None:
    record = Publish(ids=(message_id(1), message_id(2)), bodies=(b"a", b"bcd"), timestamp=1)
    frame = decode_frame(encode_frame(Batch(topic="t", first=1, records=(record,), commit=0)))
    assert isinstance(frame, Batch)
    _, bodies = packed(frame)
    assert bodies.lengths == (1, 3)
    assert tuple(bodies) == (b"a", b"bcd")


def test_an_acknowledged_publish_that_is_finished_has_no_body_cut() -> None:
    replica = receive(
        None, decoded(Batch(topic="t", first=1, records=(ChannelCreated(channel="c"),), commit=0))
    )
    batches = [decoded(publish_batch(2 + n, n * 200, 200)) for n in range(3)]
    for batch in batches:
        replica = receive(replica, batch)  # applied: the replica acknowledges `applied`
    assert replica.applied == 4
    assert replica.held_bytes_bound == 600 * 10
    all_ids = tuple(message_id(n) for n in range(600))
    fin = Batch(topic="t", first=5, records=(Finish(channel="c", ids=all_ids),), commit=4)
    replica = receive(replica, decoded(fin))
    assert len(replica) == 0
    assert replica.held_bytes == 0
    bodies_cut = sum(packed(batch)[1].is_cut for batch in batches)
    assert bodies_cut == 0


def test_a_held_message_reads_its_body_from_the_frame() -> None:
    replica = ReplicaTopic("t")
    replica = receive(
        replica,
        decoded(Batch(topic="t", first=1, records=(ChannelCreated(channel="c"),), commit=0)),
    )
    batch = decoded(publish_batch(2, 0, 3))
    replica = receive(replica, batch)
    fin = Batch(topic="t", first=3, records=(Finish(channel="c", ids=(message_id(1),)),), commit=2)
    replica = receive(replica, decoded(fin))
    assert replica.held_bytes == 20
    assert not packed(batch)[1].is_cut
    assert [(m.id, m.body) for m in replica.owed()] == [
        (message_id(0), b"0000000000"),
        (message_id(2), b"0000000002"),
    ]


@pytest.mark.parametrize("wire", [True, False], ids=["replica", "mirror"])
def test_held_bodies_leave_their_publishes_once_those_could_hold_far_more(wire: bool) -> None:
    # One message of each 1,000-message publish stays unfinished: without
    # the copy pass, the frames (on a replica) or the publishes' tuples (on
    # an owner's mirror) would keep 1,000 times its bytes alive.
    size = 100
    per_frame = 1000
    frame_bytes = per_frame * size
    created = Batch(topic="t", first=1, records=(ChannelCreated(channel="c"),), commit=0)
    replica = receive(None, decoded(created))
    compactions = 0
    seq = 2
    frames = 100
    for frame in range(frames):
        before = replica.retained_bytes
        batch = publish_batch(seq, frame * per_frame, per_frame, size)
        replica = receive(replica, decoded(batch, wire=wire))
        finished = tuple(message_id(frame * per_frame + n) for n in range(1, per_frame))
        fin = Batch(
            topic="t", first=seq + 1, records=(Finish(channel="c", ids=finished),), commit=seq
        )
        replica = receive(replica, decoded(fin, wire=wire))
        seq += 2
        compactions += replica.retained_bytes < before
        # Checked as each frame is stored, when it is held whole.
        assert replica.retained_bytes <= (
            RETAINED_FACTOR * (replica.held_bytes + frame_bytes) + RETAINED_SLACK
        )
    assert compactions >= 1
    assert replica.held_bytes == frames * size
    expected = [b"%0*d" % (size, frame * per_frame) for frame in range(frames)]
    assert [message.body for message in replica.owed()] == expected
