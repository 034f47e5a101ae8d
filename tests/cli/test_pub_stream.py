"""``shoal pub`` streams: a line is published when it is read, not when a batch fills.

The process tests write to a real ``shoal pub``'s stdin and watch the node's
counters while the pipe is still open; the unit tests drive the publishing
loop with a recording producer under trio's autojump clock, so ``--rate``
is checked in virtual time.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from typing import TYPE_CHECKING, Any, cast

import pytest
import trio

from shoal.cli.commands import _publish_stream, _PubSettings, _Splitter
from shoal.client.testing import http_address

if TYPE_CHECKING:
    from shoal.testing.process import NodeProcess

pytestmark = pytest.mark.timeout(60)


def message_count(node: NodeProcess, topic: str) -> int:
    url = f"http://{http_address(node)}/stats?format=json&topic={topic}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        topics = json.loads(reply.read())["topics"]
    return int(topics[0]["message_count"]) if topics else 0


def wait_for_count(node: NodeProcess, topic: str, count: int) -> None:
    deadline = time.monotonic() + 20
    while message_count(node, topic) < count:
        assert time.monotonic() < deadline, f"{topic} never reached {count} messages"
        time.sleep(0.05)


def start_pub(shoal_argv: list[str], node: NodeProcess, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*shoal_argv, "pub", "--node", http_address(node), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.integration
@pytest.mark.slow
def test_each_line_is_published_while_stdin_stays_open_and_ctrl_c_flushes(
    shoal_argv: list[str], node: NodeProcess
) -> None:
    proc = start_pub(shoal_argv, node, "pub_stream")
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"first\n")
        proc.stdin.flush()
        # Published with the pipe still open: no waiting for 200 lines or EOF.
        wait_for_count(node, "pub_stream", 1)
        proc.stdin.write(b"second\nthird")  # the last one has no newline yet
        proc.stdin.flush()
        wait_for_count(node, "pub_stream", 2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Ctrl-C published what had been read, the partial line too, then said so.
    assert message_count(node, "pub_stream") == 3
    assert proc.returncode == 130, stderr
    assert stderr.decode().splitlines() == ["shoal: interrupted"]


@pytest.mark.integration
@pytest.mark.slow
def test_delimiter_splits_stdin(shoal_argv: list[str], node: NodeProcess) -> None:
    result = subprocess.run(
        [*shoal_argv, "pub", "--node", http_address(node), "--delimiter", "\\0", "pub_nul"],
        input=b"one\0two\nstill two\0three",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert message_count(node, "pub_nul") == 3


class RecordingProducer:
    """Stands in for `Producer`: records what is published, and when."""

    def __init__(self, nodes: int = 1) -> None:
        self.calls: list[tuple[float, list[bytes]]] = []
        self._nodes = nodes

    def statistics(self) -> Any:
        return type("Stats", (), {"nodes": self._nodes})()

    async def publish(self, topic: str, body: bytes, **_: Any) -> None:
        self.calls.append((trio.current_time(), [body]))

    async def mpublish(self, topic: str, bodies: list[bytes], **_: Any) -> None:
        self.calls.append((trio.current_time(), list(bodies)))


class Progress:
    def __init__(self) -> None:
        self.count = 0

    def add(self, count: int) -> None:
        self.count += count


def settings(**changes: Any) -> _PubSettings:
    values: dict[str, Any] = {"topic": "t", "key": None, "defer": 0.0, "rate": None,
                              "delimiter": b"\n", "spread": True} | changes  # fmt: skip
    return _PubSettings(**values)


async def test_what_is_buffered_goes_at_once_and_later_lines_when_they_come(
    autojump_clock: trio.abc.Clock,
) -> None:
    producer: Any = RecordingProducer()
    send, receive = trio.open_memory_channel[list[bytes]](16)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_publish_stream, producer, settings(), receive, cast("Any", Progress()))
        await send.send([b"a"])
        await send.send([b"b", b"c"])
        await trio.sleep(1)
        # Everything already buffered went together, as one MPUB.
        assert [bodies for _, bodies in producer.calls] == [[b"a", b"b", b"c"]]
        await trio.sleep(8)  # like (echo a; sleep 8; echo b)
        await send.send([b"d"])
        await trio.sleep(0.1)
        # Published when it came, with the input still open.
        assert [bodies for _, bodies in producer.calls][-1] == [b"d"]
        assert producer.calls[-1][0] == pytest.approx(9.0)
        await send.aclose()


async def test_round_robin_is_dealt_message_by_message(autojump_clock: trio.abc.Clock) -> None:
    producer: Any = RecordingProducer(nodes=3)
    send, receive = trio.open_memory_channel[list[bytes]](16)
    await send.send([str(i).encode() for i in range(7)])
    await send.aclose()
    await _publish_stream(producer, settings(), receive, cast("Any", Progress()))
    # One MPUB per node, interleaved: the strategy's next node gets each part.
    assert [bodies for _, bodies in producer.calls] == [
        [b"0", b"3", b"6"],
        [b"1", b"4"],
        [b"2", b"5"],
    ]


async def test_rate_spaces_messages_in_virtual_time(autojump_clock: trio.abc.Clock) -> None:
    producer: Any = RecordingProducer()
    send, receive = trio.open_memory_channel[list[bytes]](16)
    await send.send([b"1", b"2", b"3", b"4"])
    await send.aclose()
    started = trio.current_time()
    await _publish_stream(producer, settings(rate=4.0), receive, cast("Any", Progress()))
    times = [at - started for at, _ in producer.calls]
    assert times == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert all(len(bodies) == 1 for _, bodies in producer.calls)


def test_splitter_keeps_the_partial_tail_until_finished() -> None:
    splitter = _Splitter(b"\n")
    assert splitter.feed(b"a\r\nb\n\nc") == [b"a", b"b"]
    assert splitter.feed(b"d") == []
    assert splitter.finish() == [b"cd"]
    nul = _Splitter(b"\0")
    assert nul.feed(b"x\r\0y") == [b"x\r"]  # only newline splitting strips \r
