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
from typing import TYPE_CHECKING

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


def read_frames(sock: socket.socket, buf: bytearray, count: int) -> list[tuple[int, bytes]]:
    """Read ``count`` frames, answering heartbeats."""
    frames: list[tuple[int, bytes]] = []
    while len(frames) < count:
        while len(buf) >= 8:
            size, ftype = struct.unpack_from(">ii", buf)
            if len(buf) < 4 + size:
                break
            data = bytes(buf[8 : 4 + size])
            del buf[: 4 + size]
            if ftype == 0 and data == b"_heartbeat_":
                sock.sendall(b"NOP\n")
                continue
            if ftype == 1:
                raise RuntimeError(f"error frame: {data!r}")
            frames.append((ftype, data))
            if len(frames) == count:
                break
        if len(frames) < count:
            chunk = sock.recv(262144)
            if not chunk:
                raise ConnectionError("node closed the connection")
            buf += chunk
    return frames


def writer_loop(
    address: tuple[str, int],
    topic: str,
    size: int,
    batch: int,
    duration: float,
    start_at: float,
    pipeline: int = 1,
) -> int:
    """Publish for ``duration`` seconds as bench_writer does; return messages sent.

    With ``pipeline`` > 1 that many commands are written before their ``OK``s
    are read, as asynchronous publishers (pynsq's Writer, go-nsq's
    PublishAsync) do; 1 is bench_writer's strict request and response.
    """
    sock = connect(address)
    body = b"a" * size
    one = mpub_command(topic, [body] * batch) if batch > 1 else pub_command(topic, body)
    command = one * pipeline
    buf = bytearray()
    while time.time() < start_at:
        time.sleep(0.001)
    sent = 0
    end = time.monotonic() + duration
    while time.monotonic() < end:
        sock.sendall(command)
        read_frames(sock, buf, pipeline)
        sent += batch * pipeline
    sock.close()
    return sent


def reader_loop(
    address: tuple[str, int], topic: str, channel: str, rdy: int, total: int, start_at: float
) -> tuple[int, float]:
    """Consume until ``total`` messages arrived or the node goes quiet; FIN each one.

    Returns:
        (messages received, seconds from start to the last one).
    """
    sock = connect(address)
    sock.sendall(b"SUB %s %s\n" % (topic.encode(), channel.encode()))
    buf = bytearray()
    read_frames(sock, buf, 1)
    while time.time() < start_at:
        time.sleep(0.001)
    started = time.monotonic()
    sock.sendall(b"RDY %d\n" % rdy)
    got = 0
    last = started
    fins: list[bytes] = []
    flush_at = max(1, rdy * 3 // 4)
    sock.settimeout(2.0)
    try:
        while got < total:
            chunk = sock.recv(262144)
            if not chunk:
                break
            buf += chunk
            pos = 0
            while len(buf) - pos >= 8:
                size, ftype = struct.unpack_from(">ii", buf, pos)
                if len(buf) - pos < 4 + size:
                    break
                if ftype == 2:
                    fins.append(b"FIN " + bytes(buf[pos + 18 : pos + 34]) + b"\n")
                    got += 1
                elif ftype == 0 and buf[pos + 8 : pos + 4 + size] == b"_heartbeat_":
                    fins.append(b"NOP\n")
                pos += 4 + size
            del buf[:pos]
            if len(fins) >= flush_at or (fins and len(buf) < 8):
                sock.sendall(b"".join(fins))
                fins.clear()
                last = time.monotonic()
    except TimeoutError:
        pass
    sock.close()
    return got, last - started


def report(label: str, messages: int, seconds: float, size: int, pid: int | None) -> None:
    rate = messages / seconds if seconds > 0 else 0.0
    mbs = rate * size / 1e6
    rss = f" - node peak RSS {peak_rss_mib(pid):.1f} MiB" if pid else ""
    print(f"{label}: {messages} msgs in {seconds:.2f}s - {mbs:.2f} MB/s - {rate:,.0f} msgs/s{rss}")


def cpu_count() -> int:
    return os.cpu_count() or 1
