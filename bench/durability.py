"""Disk-backed figures with real node processes (issue: HTTP API, disk queues, persistence).

python bench/durability.py http        # /pub and /mpub msgs/s
python bench/durability.py disk        # TCP MPUB msgs/s, --mem-queue-size 0 vs default
python bench/durability.py backlog     # RSS with 200,000 queued and --mem-queue-size 1000
python bench/durability.py recovery --gib 1   # restart time with a 1 GiB backlog on disk
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import time
from pathlib import Path

import nsqbench

from shoal.testing.process import NodeProcess


def http_bench(seconds: float) -> None:
    root = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    with NodeProcess("--data-path", str(root / "d"), workdir=root) as node:
        host, port = node.http
        conn = http.client.HTTPConnection(host, port)
        body = b"a" * 200
        count, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            conn.request("POST", "/pub?topic=hbench", body)
            conn.getresponse().read()
            count += 1
        print(f"HTTP /pub, one keep-alive connection: {count / seconds:,.0f} msgs/s")
        batch = b"\n".join([body] * 200)
        count, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            conn.request("POST", "/mpub?topic=hbench", batch)
            conn.getresponse().read()
            count += 200
        print(f"HTTP /mpub (200 x 200 B, text), one connection: {count / seconds:,.0f} msgs/s")


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
        rate, rss = tcp_rate(*args)
        print(
            f"TCP MPUB batch 200, 1 connection, {label}: {rate:,.0f} msgs/s, peak RSS {rss:.0f} MiB"
        )


def backlog_bench() -> None:
    root = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    with NodeProcess(
        "--data-path", str(root / "d"), "--mem-queue-size", "1000", workdir=root
    ) as node:
        assert node.proc is not None
        sock = nsqbench.connect(node.tcp)
        reader = nsqbench.FrameReader(sock)
        command = nsqbench.mpub_command("backlog", [b"x" * 200] * 200)
        for _ in range(1000):
            sock.sendall(command)
            nsqbench.read_frames(sock, reader, 1)
        sock.close()
        rss, peak = nsqbench.rss_mib(node.proc.pid), nsqbench.peak_rss_mib(node.proc.pid)
        print(f"200,000 x 200 B queued with --mem-queue-size 1000: node RSS {rss:.0f} MiB "
              f"(peak {peak:.0f} MiB)")  # fmt: skip


def recovery_bench(gib: float) -> None:
    root = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    data = root / "d"
    size = 4096
    total = int(gib * (1 << 30) / size)
    with NodeProcess("--data-path", str(data), "--mem-queue-size", "0", workdir=root) as node:
        sock = nsqbench.connect(node.tcp)
        reader = nsqbench.FrameReader(sock)
        command = nsqbench.mpub_command("big", [b"r" * size] * 200)
        for _ in range(total // 200):
            sock.sendall(command)
            nsqbench.read_frames(sock, reader, 1)
        sock.close()
        assert node.stop() == 0
    on_disk = sum(p.stat().st_size for p in data.glob("big.diskqueue.*.dat")) / (1 << 30)
    started = time.monotonic()
    with NodeProcess("--data-path", str(data), workdir=root) as node:
        ready = time.monotonic() - started
        host, port = node.http
        conn = http.client.HTTPConnection(host, port)
        conn.request("GET", "/stats?format=json&topic=big")
        depth = json.loads(conn.getresponse().read())["topics"][0]["depth"]
    print(
        f"recovery: {depth} messages ({on_disk:.2f} GiB of {size}-byte records) verified and "
        f"the node listening {ready:.1f}s after start"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("http").add_argument("--seconds", type=float, default=4.0)
    sub.add_parser("disk")
    sub.add_parser("backlog")
    sub.add_parser("recovery").add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()
    if args.mode == "http":
        http_bench(args.seconds)
    elif args.mode == "disk":
        disk_bench()
    elif args.mode == "backlog":
        backlog_bench()
    else:
        recovery_bench(args.gib)


if __name__ == "__main__":
    main()
