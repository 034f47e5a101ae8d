"""Large publishes run in slices with checkpoints between them."""

from __future__ import annotations

import random

import pytest
import trio
import trio.lowlevel

from shoal.cluster.slices import (
    PARSE_SLICE_BYTES,
    PUBLISH_SLICE,
    LineTooLongError,
    execute_mpub,
    slice_bounds,
    split_lines,
)
from shoal.queue.broker import Broker
from shoal.queue.commands import Command, Mpub
from shoal.queue.config import QueueConfig
from shoal.queue.errors import FatalClientError
from shoal.queue.protocol import AuthQuery, ClientV2


class Ticker:
    """Counts how often it got to run while something else was busy."""

    def __init__(self) -> None:
        self.turns = 0

    async def run(self) -> None:
        while True:
            await trio.lowlevel.checkpoint()
            self.turns += 1


async def _no_auth(command: Command, query: AuthQuery) -> bytes | None:
    raise AssertionError("no AUTH configured")


def client(broker: Broker) -> ClientV2:
    return ClientV2(
        broker,
        QueueConfig(),
        client_id=1,
        remote_address="127.0.0.1:1",
        version="0",
        now=0.0,
        rng=random.Random(1),
    )


def test_slice_bounds_cover_everything_in_order() -> None:
    assert slice_bounds(0) == []
    assert slice_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert slice_bounds(4, 2) == [(0, 2), (2, 4)]


async def test_a_big_mpub_lets_other_tasks_run_between_slices() -> None:
    broker = Broker(QueueConfig())
    count = 20 * PUBLISH_SLICE + 7
    bodies = [b"%d" % i for i in range(count)]
    ticker = Ticker()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker.run)
        await trio.lowlevel.checkpoint()
        before = ticker.turns
        reply = await execute_mpub(client(broker), Mpub("t", bodies), _no_auth)
        assert reply is not None
        assert reply.endswith(b"OK")
        # A turn per checkpoint (21 slices, 20 checkpoints), give or take the
        # order trio picks among runnable tasks.
        assert ticker.turns - before >= 10
        nursery.cancel_scope.cancel()
    assert broker.topics["t"].message_count == count


async def test_a_failing_slice_raises_like_one_execute() -> None:
    broker = Broker(QueueConfig())
    topic, _ = broker.get_or_create_topic("t", 0.0)
    topic.delete()  # still listed: a delete racing the publish
    with pytest.raises(FatalClientError) as info:
        await execute_mpub(client(broker), Mpub("t", [b"x"] * (PUBLISH_SLICE + 1)), _no_auth)
    assert info.value.code == "E_MPUB_FAILED"
    assert topic.message_count == 0


async def test_split_lines_matches_a_plain_split_and_yields() -> None:
    rng = random.Random(3)
    lines = [
        bytes(rng.randrange(97, 123) for _ in range(rng.randrange(0, 30))) for _ in range(40_000)
    ]
    body = b"\n".join(lines)
    assert len(body) > 4 * PARSE_SLICE_BYTES
    ticker = Ticker()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker.run)
        await trio.lowlevel.checkpoint()
        before = ticker.turns
        assert await split_lines(body, 64) == [line for line in lines if line]
        assert ticker.turns - before >= 4
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("body", [b"", b"\n\n", b"a", b"a\n", b"\nb\n\nc"])
async def test_split_lines_edges(body: bytes) -> None:
    assert await split_lines(body, 10) == [line for line in body.split(b"\n") if line]


async def test_split_lines_refuses_a_long_line_anywhere() -> None:
    body = b"x\n" * PARSE_SLICE_BYTES + b"y" * 11 + b"\nz"
    with pytest.raises(LineTooLongError):
        await split_lines(body, 10)


async def test_an_expired_auth_answer_mid_batch_repeats_only_its_slice() -> None:
    broker = Broker(QueueConfig())
    real = client(broker)
    asked: list[int] = []

    class ExpiringOnce:
        """Raises AuthQuery for the third slice, once, as an expired answer would."""

        calls = 0

        def execute(self, command: Command, now: float) -> bytes | None:
            self.calls += 1
            if self.calls == 3:
                raise AuthQuery("secret")
            return real.execute(command, now)

    async def authenticate(command: Command, query: AuthQuery) -> bytes | None:
        assert isinstance(command, Mpub)
        asked.append(len(command.bodies))
        return real.execute(command, 0.0)

    count = 4 * PUBLISH_SLICE
    reply = await execute_mpub(ExpiringOnce(), Mpub("t", [b"m"] * count), authenticate)  # type: ignore[arg-type]
    assert reply is not None
    assert asked == [PUBLISH_SLICE]
    assert broker.topics["t"].message_count == count
