"""pynsq, the official Python client, against a real node, unchanged."""

from __future__ import annotations

import asyncio
import collections
import uuid
from typing import TYPE_CHECKING, Any, TypeVar

import nsq
import pytest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from shoal.testing.process import NodeProcess

pytestmark = pytest.mark.integration

T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    """Run a pynsq scenario on a fresh event loop (pynsq is tornado, i.e. asyncio)."""

    async def main() -> T:
        return await asyncio.wait_for(scenario(), timeout)

    return asyncio.run(main())


async def wait_for(condition: Callable[[], bool], limit: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


async def connected_writer(node: NodeProcess) -> Any:
    host, port = node.tcp
    writer = nsq.Writer([f"{host}:{port}"])
    await wait_for(lambda: bool(writer.conns))
    return writer


async def publish(writer: Any, topic: str, bodies: list[bytes], batch: int = 100) -> None:
    """MPUB ``bodies`` and wait until every batch is acknowledged with OK."""
    pending = 0
    failures: list[object] = []

    def done(_conn: object, data: object) -> None:
        nonlocal pending
        pending -= 1
        if data != b"OK":
            failures.append(data)

    for start in range(0, len(bodies), batch):
        pending += 1
        writer.mpub(topic, bodies[start : start + batch], callback=done)
    await wait_for(lambda: pending == 0)
    assert not failures


def reader(
    node: NodeProcess, topic: str, channel: str, handler: Callable[[Any], bool], **kw: Any
) -> Any:
    host, port = node.tcp
    return nsq.Reader(
        topic=topic,
        channel=channel,
        message_handler=handler,
        nsqd_tcp_addresses=[f"{host}:{port}"],
        **kw,
    )


def topic_name() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def test_pynsq_consumes_10000_messages_exactly_once(node: NodeProcess) -> None:
    topic = topic_name()
    bodies = [b"message %d" % i for i in range(10_000)]
    counts: collections.Counter[bytes] = collections.Counter()

    def handle(message: Any) -> bool:
        counts[message.body] += 1
        return True

    async def scenario() -> None:
        writer = await connected_writer(node)
        await publish(writer, topic, bodies)
        r = reader(node, topic, "archive", handle, max_in_flight=200)
        await wait_for(lambda: sum(counts.values()) >= len(bodies), limit=45)
        await asyncio.sleep(0.3)  # a duplicate would show up here
        r.close()
        writer.close() if hasattr(writer, "close") else None

    run(scenario)
    assert set(counts) == set(bodies)
    assert max(counts.values()) == 1


def test_pynsq_two_consumers_on_one_channel_split_the_load(node: NodeProcess) -> None:
    topic = topic_name()
    per_reader: dict[str, collections.Counter[bytes]] = {
        "a": collections.Counter(),
        "b": collections.Counter(),
    }

    def handler(name: str) -> Callable[[Any], bool]:
        def handle(message: Any) -> bool:
            per_reader[name][message.body] += 1
            return True

        return handle

    async def scenario() -> None:
        writer = await connected_writer(node)
        ra = reader(node, topic, "shared", handler("a"), max_in_flight=1)
        rb = reader(node, topic, "shared", handler("b"), max_in_flight=1)
        await wait_for(lambda: bool(ra.conns) and bool(rb.conns))
        await asyncio.sleep(0.3)  # both subscribed with RDY 1
        await publish(writer, topic, [b"%d" % i for i in range(400)], batch=20)
        await wait_for(lambda: sum(map(sum, (c.values() for c in per_reader.values()))) >= 400)
        ra.close()
        rb.close()

    run(scenario)
    a, b = per_reader["a"], per_reader["b"]
    assert not set(a) & set(b)
    assert len(a) + len(b) == 400
    assert len(a) > 40
    assert len(b) > 40


def test_pynsq_requeued_message_comes_back_with_more_attempts(node: NodeProcess) -> None:
    topic = topic_name()
    attempts: list[int] = []

    def handle(message: Any) -> bool:
        attempts.append(message.attempts)
        if message.attempts < 3:
            message.requeue(backoff=False, delay=0)
            return None  # type: ignore[return-value]
        return True

    async def scenario() -> None:
        writer = await connected_writer(node)
        r = reader(node, topic, "ch", handle, max_in_flight=1)
        await publish(writer, topic, [b"retry me"])
        await wait_for(lambda: len(attempts) >= 3)
        r.close()

    run(scenario)
    assert attempts[:3] == [1, 2, 3]
