"""Shared parts of the benchmarks: a node to measure and raw V2 client loops.

The client loops mirror nsq's ``bench_writer`` and ``bench_reader``: raw
sockets, pre-encoded commands, one process per connection so the client side
is not what limits the figure (on a 2-core machine the clients still compete
with the node for CPU; the figures say so).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.testing.process import NodeProcess

if TYPE_CHECKING:
    from collections.abc import Iterator

MAGIC = b"  V2"


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib(pid: int) -> float:
    """The process's current resident set size in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def target(address: str | None, *node_args: str) -> Iterator[tuple[tuple[str, int], int | None]]:
    """Yield ``(tcp address, node pid)``: an existing node, or one started here."""
    if address:
        host, _, port = address.rpartition(":")
        yield (host, int(port)), None
        return
    with NodeProcess(*node_args) as node:
        assert node.proc is not None
        yield node.tcp, node.proc.pid


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(MAGIC)
    return sock


def mpub_command(topic: str, bodies: list[bytes]) -> bytes:
    payload = struct.pack(">i", len(bodies)) + b"".join(
        struct.pack(">i", len(b)) + b for b in bodies
    )
    return b"MPUB %s\n" % topic.encode() + struct.pack(">i", len(payload)) + payload


def pub_command(topic: str, body: bytes) -> bytes:
    return b"PUB %s\n" % topic.encode() + struct.pack(">i", len(body)) + body


class FrameReader:
    """Reads frames through one preallocated buffer (``recv_into``, no per-read bytes).

    Frames are handed out as memoryview slices of the buffer, valid until the
    next `fill`; the client loops are cheap so the node, not the client, is
    what the figures measure.
    """

    def __init__(self, sock: socket.socket, size: int = 4 * 1024 * 1024) -> None:
        self.sock = sock
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0

    def fill(self) -> int:
        """Receive more bytes after the unread ones; returns how many (0 on EOF)."""
        if self.start == self.end:
            self.start = self.end = 0
        elif self.start > len(self.buf) // 2:
            left = self.end - self.start
            self.buf[:left] = self.buf[self.start : self.end]
            self.start, self.end = 0, left
        got = self.sock.recv_into(self.view[self.end :])
        self.end += got
        return got


def read_frames(sock: socket.socket, reader: FrameReader, count: int) -> int:
    """Read ``count`` non-heartbeat frames, answering heartbeats; returns how many."""
    got = 0
    buf = reader.buf
    unpack = _FRAME_HEAD.unpack_from
    while got < count:
        start, end = reader.start, reader.end
        while end - start >= 8:
            size, ftype = unpack(buf, start)
            if end - start < 4 + size:
                break
            if ftype == 1:
                raise RuntimeError(f"error frame: {bytes(buf[start + 8 : start + 4 + size])!r}")
            if ftype == 0 and buf[start + 8 : start + 4 + size] == b"_heartbeat_":
                sock.sendall(b"NOP\n")
            else:
                got += 1
            start += 4 + size
            if got == count:
                break
        reader.start = start
        if got < count and not reader.fill():
            raise ConnectionError("node closed the connection")
    return got


_FRAME_HEAD = struct.Struct(">ii")


def writer_loop(
    address: tuple[str, int],
    topic: str,
    size: int,
    batch: int,
    duration: float,
    start_at: float,
    pipeline: int = 1,
    mpub: bool = False,
) -> int:
    """Publish for ``duration`` seconds as bench_writer does; return messages sent.

    With ``pipeline`` > 1 that many commands are written before their ``OK``s
    are read, as asynchronous publishers (pynsq's Writer, go-nsq's
    PublishAsync) do; 1 is bench_writer's strict request and response. A
    batch of one is a PUB, or with ``mpub`` an MPUB of one, which is what
    bench_writer sends.
    """
    sock = connect(address)
    body = b"a" * size
    many = batch > 1 or mpub
    one = mpub_command(topic, [body] * batch) if many else pub_command(topic, body)
    command = one * pipeline
    reader = FrameReader(sock)
    while time.time() < start_at:
        time.sleep(0.001)
    sent = 0
    end = time.monotonic() + duration
    while time.monotonic() < end:
        sock.sendall(command)
        read_frames(sock, reader, pipeline)
        sent += batch * pipeline
    sock.close()
    return sent


#: Messages received by every reader of one run (set by `init_shared_count`).
_received: Any = None


def init_shared_count(counter: Any) -> None:
    """Pool initializer: share one received-messages counter between readers."""
    global _received
    _received = counter


def reader_loop(
    address: tuple[str, int], topic: str, channel: str, rdy: int, total: int, start_at: float
) -> tuple[int, float]:
    """Consume until ``total`` messages arrived or the node goes quiet; FIN each one.

    ``total`` counts what every reader of the run received when the pool was
    set up with `init_shared_count`, else this reader alone: a reader must
    not stop at a share of its own while messages it was sent are still in
    flight to it, or its siblings wait for them until the message timeout.

    Returns:
        (messages received, seconds from start to the last one).
    """
    sock = connect(address)
    sock.sendall(b"SUB %s %s\n" % (topic.encode(), channel.encode()))
    reader = FrameReader(sock)
    read_frames(sock, reader, 1)
    while time.time() < start_at:
        time.sleep(0.001)
    started = time.monotonic()
    sock.sendall(b"RDY %d\n" % rdy)
    got = 0
    last = started
    quiet_since = started
    buf = reader.buf
    view = reader.view
    unpack = _FRAME_HEAD.unpack_from
    sock.settimeout(0.05)

    def done() -> bool:
        return (_received.value if _received is not None else got) >= total

    while not done():
        try:
            if not reader.fill():
                break
        except TimeoutError:
            if time.monotonic() - quiet_since > 2.0:
                break
            continue
        ids: list[memoryview] = []
        nops = 0
        start, end = reader.start, reader.end
        while end - start >= 8:
            size, ftype = unpack(buf, start)
            if end - start < 4 + size:
                break
            if ftype == 2:
                ids.append(view[start + 18 : start + 34])
            elif ftype == 0 and buf[start + 8 : start + 4 + size] == b"_heartbeat_":
                nops += 1
            start += 4 + size
        reader.start = start
        if ids or nops:
            # One write per read: every FIN (and NOP) of what arrived.
            out = b"FIN " + b"\nFIN ".join(ids) + b"\n" if ids else b""
            sock.sendall(out + b"NOP\n" * nops)
            got += len(ids)
            if _received is not None:
                with _received.get_lock():
                    _received.value += len(ids)
            ids.clear()
            last = quiet_since = time.monotonic()
    sock.close()
    return got, last - started


def report(label: str, messages: int, seconds: float, size: int, pid: int | None) -> str:
    """One line of figures, as nsq's bench tools print them."""
    rate = messages / seconds if seconds > 0 else 0.0
    mbs = rate * size / 1e6
    rss = f" - node peak RSS {peak_rss_mib(pid):.1f} MiB" if pid else ""
    return f"{label}: {messages} msgs in {seconds:.2f}s - {mbs:.2f} MB/s - {rate:,.0f} msgs/s{rss}"


def cpu_count() -> int:
    return os.cpu_count() or 1
