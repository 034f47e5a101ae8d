"""Disk-backed figures with real node processes (issue: HTTP API, disk queues, persistence).

python bench/durability.py http        # /pub and /mpub msgs/s
python bench/durability.py disk        # TCP MPUB msgs/s, --mem-queue-size 0 vs default
python bench/durability.py backlog     # RSS with 200,000 queued and --mem-queue-size 1000
python bench/durability.py recovery --gib 1   # restart time with a 1 GiB backlog on disk
python bench/durability.py durable     # publish and consume msgs/s, durable beside default
python bench/durability.py recovery --gib 1 --durable   # the same in durable mode
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import tempfile
import time
import urllib.request
from pathlib import Path

import nsqbench

from shoal.testing.process import NodeProcess
from shoal.testing.progress import StatusLine

#: On a terminal only: stdout is the figures.
status = StatusLine("bench/durability.py")


def http_bench(seconds: float) -> None:
    root = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    with NodeProcess("--data-path", str(root / "d"), workdir=root) as node:
        status.show(f"HTTP /pub and /mpub, {seconds:.0f}s each")
        host, port = node.http
        conn = http.client.HTTPConnection(host, port)
        body = b"a" * 200
        count, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            conn.request("POST", "/pub?topic=hbench", body)
            conn.getresponse().read()
            count += 1
        status.say(f"HTTP /pub, one keep-alive connection: {count / seconds:,.0f} msgs/s")
        batch = b"\n".join([body] * 200)
        count, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            conn.request("POST", "/mpub?topic=hbench", batch)
            conn.getresponse().read()
            count += 200
        status.say(f"HTTP /mpub (200 x 200 B, text), one connection: {count / seconds:,.0f} msgs/s")


def tcp_rate(*node_args: str, seconds: float = 4.0) -> tuple[float, float]:
    root = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    with NodeProcess("--data-path", str(root / "d"), *node_args, workdir=root) as node:
        assert node.proc is not None
        sent = nsqbench.writer_loop(node.tcp, "dbench", 200, 200, seconds, time.time())
        return sent / seconds, nsqbench.peak_rss_mib(node.proc.pid)


def disk_bench() -> None:
    for label, args in (
        ("--mem-queue-size 0 (every message on disk)", ("--mem-queue-size", "0")),
        ("default --mem-queue-size 10000", ()),
        ("--sync-every 1 (durable: fsync before OK)", ("--sync-every", "1")),
    ):
        status.show(f"TCP MPUB, {label}")
        rate, rss = tcp_rate(*args)
        status.say(
            f"TCP MPUB batch 200, 1 connection, {label}: {rate:,.0f} msgs/s, peak RSS {rss:.0f} MiB"
        )


def _create_channel(node: NodeProcess, topic: str, channel: str) -> None:
    host, port = node.http
    paths = (f"/topic/create?topic={topic}", f"/channel/create?topic={topic}&channel={channel}")
    for path in paths:
        request = urllib.request.Request(f"http://{host}:{port}{path}", method="POST")
        urllib.request.urlopen(request, timeout=10).read()


def durable_bench(seconds: float, messages: int) -> None:
    """Publish and consume rates with and without --sync-every 1, on one data path each.

    The channel exists before publishing, so every message lands in the
    channel's queue (on disk in durable mode, where nothing waits in memory)
    and the consumer reads what the publishers stored.
    """
    for label, args in (
        ("default (--mem-queue-size 10000)", ()),
        ("durable (--sync-every 1)", ("--sync-every", "1")),
    ):
        root = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
        with NodeProcess("--data-path", str(root / "d"), *args, workdir=root) as node:
            status.show(f"{label}: PUB, then MPUB, then consume {messages:,}")
            _create_channel(node, "pbench", "ch")
            sent = nsqbench.writer_loop(node.tcp, "pbench", 200, 1, seconds, time.time())
            status.say(f"{label}: PUB 200 B, 1 connection: {sent / seconds:,.0f} msgs/s")
            start = time.time()
            with multiprocessing.Pool(4) as pool:
                counts = pool.starmap(
                    nsqbench.writer_loop,
                    [(node.tcp, "pbench", 200, 1, seconds, start + 0.3)] * 4,
                )
            status.say(f"{label}: PUB 200 B, 4 connections: {sum(counts) / seconds:,.0f} msgs/s")
            _create_channel(node, "mbench", "ch")
            sent = nsqbench.writer_loop(node.tcp, "mbench", 200, 200, seconds, time.time())
            status.say(f"{label}: MPUB 200 x 200 B, 1 connection: {sent / seconds:,.0f} msgs/s")
            _create_channel(node, "cbench", "ch")
            sock = nsqbench.connect(node.tcp)
            reader = nsqbench.FrameReader(sock)
            command = nsqbench.mpub_command("cbench", [b"c" * 200] * 200)
            for _ in range(messages // 200):
                sock.sendall(command)
                nsqbench.read_frames(sock, reader, 1)
            sock.close()
            total = messages // 200 * 200
            got, took = nsqbench.reader_loop(node.tcp, "cbench", "ch", 2500, total, time.time())
            status.say(
                f"{label}: consume {got:,} of {total:,} queued, RDY 2500, FIN each:"
                f" {got / took if took > 0 else 0:,.0f} msgs/s"
            )


def backlog_bench() -> None:
    root = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    with NodeProcess(
        "--data-path", str(root / "d"), "--mem-queue-size", "1000", workdir=root
    ) as node:
        assert node.proc is not None
        status.show("queueing 200,000 messages")
        sock = nsqbench.connect(node.tcp)
        reader = nsqbench.FrameReader(sock)
        command = nsqbench.mpub_command("backlog", [b"x" * 200] * 200)
        for _ in range(1000):
            sock.sendall(command)
            nsqbench.read_frames(sock, reader, 1)
        sock.close()
        rss, peak = nsqbench.rss_mib(node.proc.pid), nsqbench.peak_rss_mib(node.proc.pid)
        status.say(f"200,000 x 200 B queued with --mem-queue-size 1000: node RSS {rss:.0f} MiB "
              f"(peak {peak:.0f} MiB)")  # fmt: skip


def recovery_bench(gib: float, *, durable: bool) -> None:
    root = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    data = root / "d"
    size = 4096
    total = int(gib * (1 << 30) / size)
    mode = ("--sync-every", "1") if durable else ("--mem-queue-size", "0")
    with NodeProcess("--data-path", str(data), *mode, workdir=root) as node:
        status.show(f"writing {gib:g} GiB")
        sock = nsqbench.connect(node.tcp)
        reader = nsqbench.FrameReader(sock)
        command = nsqbench.mpub_command("big", [b"r" * size] * 200)
        for _ in range(total // 200):
            sock.sendall(command)
            nsqbench.read_frames(sock, reader, 1)
        sock.close()
        assert node.stop() == 0
    on_disk = sum(p.stat().st_size for p in data.glob("big.diskqueue.*.dat")) / (1 << 30)
    status.show("restarting on the backlog")
    started = time.monotonic()
    with NodeProcess("--data-path", str(data), *mode, workdir=root) as node:
        ready = time.monotonic() - started
        host, port = node.http
        conn = http.client.HTTPConnection(host, port)
        conn.request("GET", "/stats?format=json&topic=big")
        depth = json.loads(conn.getresponse().read())["topics"][0]["depth"]
    status.say(
        f"recovery{' (durable)' if durable else ''}: {depth} messages ({on_disk:.2f} GiB of"
        f" {size}-byte records) verified and the node listening {ready:.1f}s after start"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("http").add_argument("--seconds", type=float, default=4.0)
    sub.add_parser("disk")
    sub.add_parser("backlog")
    recovery = sub.add_parser("recovery")
    recovery.add_argument("--gib", type=float, default=1.0)
    recovery.add_argument("--durable", action="store_true")
    durable = sub.add_parser("durable")
    durable.add_argument("--seconds", type=float, default=4.0)
    durable.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    with status.ticking():
        run(args)


def run(args: argparse.Namespace) -> None:
    if args.mode == "http":
        http_bench(args.seconds)
    elif args.mode == "disk":
        disk_bench()
    elif args.mode == "backlog":
        backlog_bench()
    elif args.mode == "durable":
        durable_bench(args.seconds, args.messages)
    else:
        recovery_bench(args.gib, durable=args.durable)


if __name__ == "__main__":
    main()
