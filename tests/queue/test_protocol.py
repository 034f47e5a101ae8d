"""ClientV2's batch paths: a run of FINs and framed delivery, against the one-by-one paths."""

from __future__ import annotations

import random

import pytest

from shoal.queue import errors
from shoal.queue.broker import Broker
from shoal.queue.commands import Fin, Identify, Pub, Rdy, Sub
from shoal.queue.config import QueueConfig
from shoal.queue.errors import ClientError, FatalClientError
from shoal.queue.frames import FrameDecoder, FrameType, decode_message_frame, encode_message_frame
from shoal.queue.protocol import ClientV2

NOW = 1_700_000_000.0


def make_client(broker: Broker, client_id: int = 1) -> ClientV2:
    return ClientV2(
        broker,
        QueueConfig(),
        client_id=client_id,
        remote_address=f"10.0.0.{client_id}:5000",
        version="0.1.0",
        now=NOW,
        rng=random.Random(7),
    )


def subscribed(broker: Broker, client_id: int = 1, rdy: int = 100) -> ClientV2:
    client = make_client(broker, client_id)
    client.execute(Sub("t", "c"), NOW)
    client.execute(Rdy(rdy), NOW)
    return client


def publish(broker: Broker, count: int) -> None:
    publisher = make_client(broker, 99)
    for n in range(count):
        publisher.execute(Pub("t", b"m%d" % n), NOW)


def frames(data: bytes) -> list[tuple[FrameType, bytes]]:
    decoder = FrameDecoder()
    decoder.receive_data(data)
    out = []
    while (frame := decoder.next_frame()) is not None:
        out.append(frame)
    return out


def test_deliver_frames_are_the_frames_of_what_deliver_returns() -> None:
    one, many = Broker(QueueConfig()), Broker(QueueConfig())
    by_frames, by_messages = subscribed(one, rdy=3), subscribed(many, rdy=3)
    for broker in (one, many):
        publish(broker, 5)
    # Same node ID and clock, so both brokers made the same IDs.
    data = by_frames.deliver_frames(NOW)
    assert data == b"".join(encode_message_frame(m) for m in by_messages.deliver(NOW))
    assert [decode_message_frame(d).body for _, d in frames(data)] == [b"m0", b"m1", b"m2"]
    for client in (by_frames, by_messages):
        assert (client.in_flight, client.message_count) == (3, 3)
    assert by_frames.deliver_frames(NOW) == b""  # RDY 3 reached


def test_deliver_frames_with_sample_rate_keeps_only_the_sampled() -> None:
    broker = Broker(QueueConfig())
    client = make_client(broker)
    client.execute(Identify(b'{"sample_rate": 50}'), NOW)
    client.execute(Sub("t", "c"), NOW)
    client.execute(Rdy(100), NOW)
    publish(broker, 40)
    got = frames(client.deliver_frames(NOW))
    channel = broker.get_channel("t", "c")
    assert channel is not None
    assert 0 < len(got) < 40
    assert client.in_flight == channel.in_flight_count == len(got)
    assert channel.depth == 0  # the unsampled ones were discarded


def test_finish_many_equals_fin_one_by_one() -> None:
    one, many = Broker(QueueConfig()), Broker(QueueConfig())
    batch, single = subscribed(one), subscribed(many)
    for broker in (one, many):
        publish(broker, 4)
    ids = [decode_message_frame(d).id for _, d in frames(batch.deliver_frames(NOW))]
    assert [m.id for m in single.deliver(NOW)] == ids
    run = [ids[0], b"f" * 16, ids[2], ids[0]]
    refused: list[ClientError] = []
    for msg_id in run:
        try:
            single.execute(Fin(msg_id), NOW)
        except ClientError as err:
            refused.append(err)
    assert not any(err.fatal for err in refused)
    refusals = [err.frame() for err in refused]
    assert batch.finish_many(run) == refusals
    assert [f.split(b" ", 1)[0][8:] for f in refusals] == [b"E_FIN_FAILED", b"E_FIN_FAILED"]
    for client in (batch, single):
        assert (client.in_flight, client.finish_count) == (2, 2)


def test_finish_many_of_another_clients_message_is_refused() -> None:
    broker = Broker(QueueConfig())
    owner, other = subscribed(broker, 1, rdy=1), subscribed(broker, 2, rdy=1)
    publish(broker, 1)
    (msg,) = owner.deliver(NOW)
    (refusal,) = other.finish_many([msg.id])
    assert refusal.endswith(b"E_FIN_FAILED FIN " + msg.id + b" failed client does not own message")
    assert owner.finish_many([msg.id]) == []
    assert (owner.in_flight, other.in_flight) == (0, 0)


def test_finish_many_before_sub_is_fatal() -> None:
    client = make_client(Broker(QueueConfig()))
    with pytest.raises(FatalClientError) as info:
        client.finish_many([b"0" * 16])
    assert (info.value.code, info.value.description) == (
        errors.E_INVALID,
        "cannot FIN in current state",
    )
    assert client.finish_many([]) == []
