"""The inbound stream budget and the plaintext-gossip warning."""

from __future__ import annotations

import logging
import random

import pytest
import trio
import trio.testing

from shoal.cluster.gossip_guard import InboundBudget, unkeyed_exposure_warning
from shoal.cluster.membership_driver import (
    FRAME_HEADER,
    MembershipDriver,
    MessageStream,
    StreamError,
)
from shoal.membership import MembershipConfig
from shoal.membership.keyring import Keyring


async def test_budget_grants_whole_reservations_and_waits_for_releases() -> None:
    budget = InboundBudget(100)
    order: list[str] = []
    first_in = trio.Event()
    release_first = trio.Event()

    async def holder() -> None:
        async with budget.reserve(70):
            first_in.set()
            await release_first.wait()
        order.append("first out")

    async def waiter() -> None:
        await first_in.wait()
        async with budget.reserve(50):
            order.append("second in")
            assert budget.free == 50

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder)
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert budget.free == 30  # the second waits: 50 > 30
            assert order == []
            release_first.set()
    assert order == ["first out", "second in"]
    assert budget.free == 100


async def test_budget_refuses_more_than_it_holds() -> None:
    budget = InboundBudget(10)
    with pytest.raises(ValueError, match="budget"):
        async with budget.reserve(11):
            pass  # pragma: no cover
    assert budget.free == 10


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        InboundBudget(0)


async def test_stream_messages_beyond_the_budget_are_refused_from_the_header() -> None:
    budget = InboundBudget(64)
    left, right = trio.testing.memory_stream_pair()
    receiver = MessageStream(
        right, keyring=None, label=b"", max_message_size=1 << 20, budget=budget
    )
    with trio.fail_after(1):
        await left.send_all(FRAME_HEADER.pack(65))
        with pytest.raises(StreamError) as info:
            await receiver.receive_message()
    assert info.value.reason == "oversize"
    assert budget.free == 64


async def test_incomplete_messages_hold_the_budget_until_read_whole() -> None:
    budget = InboundBudget(100)
    pairs = [trio.testing.memory_stream_pair() for _ in range(3)]
    receivers = [
        MessageStream(right, keyring=None, label=b"", max_message_size=1000, budget=budget)
        for _, right in pairs
    ]
    received: list[bytes] = []

    async def read(stream: MessageStream) -> None:
        received.append(await stream.receive_message())

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for (left, _), receiver in zip(pairs, receivers, strict=True):
                await left.send_all(FRAME_HEADER.pack(40) + b"x")  # announced, barely sent
                nursery.start_soon(read, receiver)
            await trio.testing.wait_all_tasks_blocked()
            assert budget.free == 20  # two hold 40 each; the third waits
            await pairs[2][0].send_all(b"y" * 39)
            await trio.testing.wait_all_tasks_blocked()
            assert received == []  # its bytes sit in the socket, unread
            await pairs[0][0].send_all(b"z" * 39)
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(received) == [b"x" + b"y" * 39, b"x" + b"z" * 39]
            await pairs[1][0].send_all(b"w" * 39)
    assert budget.free == 100


@pytest.mark.parametrize(
    ("host", "keyed", "warns"),
    [
        ("127.0.0.1", False, False),
        ("::1", False, False),
        ("localhost", False, False),
        ("0.0.0.0", False, True),
        ("10.1.2.3", False, True),
        ("node-1.example", False, True),
        ("10.1.2.3", True, False),
    ],
)
def test_unkeyed_exposure_warning(host: str, keyed: bool, warns: bool) -> None:
    warning = unkeyed_exposure_warning(host, keyed)
    assert (warning is not None) is warns
    if warning is not None:
        assert host in warning
        assert "anyone" in warning


@pytest.mark.parametrize(
    ("bind", "keyed", "warnings"),
    [("0.0.0.0:0", False, 1), ("127.0.0.1:0", False, 0), ("0.0.0.0:0", True, 0)],
)
async def test_driver_warns_once_about_plaintext_gossip_on_a_reachable_address(
    caplog: pytest.LogCaptureFixture, bind: str, keyed: bool, warnings: int
) -> None:
    driver = MembershipDriver(
        MembershipConfig.local(),
        name="a",
        bind=bind,
        keyring=Keyring([bytes(32)]) if keyed else None,
        rng=random.Random(1),
    )
    with trio.fail_after(10), caplog.at_level(logging.WARNING, logger="shoal.gossip"):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.serve)
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    found = [r for r in caplog.records if "not encrypted" in r.getMessage()]
    assert len(found) == warnings
