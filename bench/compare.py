"""Side-by-side benchmark: shoal against nsqd, same clients, interleaved.

    python bench/compare.py                        # every workload, shoal alone
    python bench/compare.py --nsqd /usr/local/bin/nsqd --pairs 3
    python bench/compare.py --workload idle-subscribers --idle 1000
    python bench/compare.py --workload pub-1 --floor --pairs 3

Each workload runs against a fresh server per measurement, on loopback,
with the raw V2 client loops of `nsqbench` (nsq's ``bench_writer`` and
``bench_reader`` in Python, one process per connection). With ``--nsqd``
every pair runs shoal then nsqd back to back, so both see the same machine
load, and the table gives each side's range over the pairs and the ratio
shoal / nsqd (for rates, above 1 means shoal is faster; for CPU and latency,
below 1 means shoal spends less). Without ``--nsqd`` the table compares
shoal's figures with the nsqd figures measured on a 2-core machine for
issue 15 (nsqd v1.3.0), labelled "quoted".

Workloads (rates are messages per second, 200-byte bodies by default):

- ``pub-200``: MPUB of 200, memory queue large enough to hold everything.
- ``pub-200-disk``: MPUB of 200, default ``--mem-queue-size`` (spills).
- ``pub-1``: one PUB per round trip; also the server's CPU time per
  message (utime + stime of the server process over the run).
- ``mpub-1``: one MPUB of one message per round trip (what nsq's
  ``bench_writer`` sends with a batch size of 1, the issue's figures), with
  the same two figures.
- ``consume-mem``, ``consume-disk``: a pre-filled topic drained by one
  connection at RDY 2500 that FINs every message (memory / default queue);
  also the server's CPU time per message drained.
- ``idle-subscribers``: MPUB of 200 and PUB to a channel with ``--idle``
  subscribers at RDY 0, each also as a ratio to the same server's rate to
  a channel without them (same run, alternating, best of three each, every
  run on memory a warm-up touched, so neither side pays the first touch).
- ``latency``: PUBs at a fixed ``--rate`` to a consumer at RDY 100 with the
  default output buffer; p50 and p99 publish-to-receive time.

With ``--floor``, the single-message workloads (``pub-1``, ``mpub-1``) also
run against the reference responders of `floor` in every pair: servers that
answer each publish with ``OK`` and do nothing else, in C and in Go (each
when its compiler is there), in Python over epoll, and in Python under trio
as shoal's reader waits. A second table gives their figures and shoal's
ratio to each: what a round trip itself costs on this machine in the same
window, against what shoal spends on it.

Figures from a shared or busy machine are noisy; the pairs show how much.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import floor
import nsqbench

from shoal.testing.process import NodeProcess

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: nsqd v1.3.0 and shoal as measured for issue 15 on a 2-core machine
#: (``bench_writer`` / ``bench_reader``, 200-byte messages): the comparison
#: when no nsqd binary is at hand. Keys are ``(workload, figure)``.
QUOTED_NSQD: dict[tuple[str, str], float] = {
    ("pub-200", "msgs/s"): 508_000,
    ("pub-200-disk", "msgs/s"): 104_000,
    ("pub-1", "msgs/s"): 16_900,
    ("pub-1", "server CPU us/msg"): 36.0,
    ("mpub-1", "msgs/s"): 16_900,
    ("mpub-1", "server CPU us/msg"): 36.0,
    ("consume-mem", "msgs/s"): 153_000,
    ("consume-disk", "msgs/s"): 88_000,
    ("idle-subscribers", "MPUB 200 msgs/s"): 387_000,
    ("idle-subscribers", "PUB msgs/s"): 7_200,
    ("latency", "p99 ms"): 24.8,
}
QUOTED_SHOAL_BEFORE: dict[tuple[str, str], float] = {
    ("pub-200", "msgs/s"): 410_000,
    ("pub-200-disk", "msgs/s"): 168_000,
    ("pub-1", "msgs/s"): 4_960,
    ("pub-1", "server CPU us/msg"): 127.0,
    ("mpub-1", "msgs/s"): 4_960,
    ("mpub-1", "server CPU us/msg"): 127.0,
    ("consume-mem", "msgs/s"): 260_000,
    ("consume-disk", "msgs/s"): 44_000,
    ("idle-subscribers", "MPUB 200 msgs/s"): 9_900,
    ("idle-subscribers", "PUB msgs/s"): 64,
    ("latency", "p99 ms"): 8.0,
}

#: The workloads `--floor` also runs against the reference responders.
FLOOR_WORKLOADS = ("pub-1", "mpub-1")

BIG_QUEUE = 100_000_000
DEFAULT_QUEUE = 10_000


@dataclass
class Server:
    """A running server under test."""

    kind: str
    tcp: tuple[str, int]
    http: tuple[str, int]
    pid: int

    def cpu_seconds(self) -> float:
        """utime + stime of the server process so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def post(self, path: str) -> None:
        host, port = self.http
        request = urllib.request.Request(f"http://{host}:{port}{path}", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10) as reply:
            reply.read()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(address: tuple[str, int], proc: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(address, timeout=1):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{name} did not listen in 20 s")


@contextlib.contextmanager
def _running(
    kind: str, argv: list[str], tcp: tuple[str, int], http: tuple[str, int]
) -> Iterator[Server]:
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_listening(tcp, proc, kind)
        yield Server(kind, tcp, http, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def start(
    kind: str,
    nsqd: str | None,
    mem_queue_size: int,
    built: dict[str, list[str]] | None = None,
) -> Iterator[Server]:
    """A fresh shoal node, nsqd or reference responder on loopback."""
    if kind == "shoal":
        with NodeProcess("--mem-queue-size", str(mem_queue_size)) as node:
            assert node.proc is not None
            yield Server("shoal", node.tcp, node.http, node.proc.pid)
        return
    if kind.startswith("floor-"):
        tcp = ("127.0.0.1", _free_port())
        responder = kind.removeprefix("floor-")
        prefix = (built or {}).get(responder) or floor.command(responder)
        with _running(kind, [*prefix, str(tcp[1])], tcp, tcp) as server:
            yield server
        return
    assert nsqd is not None
    with tempfile.TemporaryDirectory(prefix="nsqd-bench-") as data:
        tcp = ("127.0.0.1", _free_port())
        http = ("127.0.0.1", _free_port())
        argv = [
            nsqd,
            f"--tcp-address={tcp[0]}:{tcp[1]}",
            f"--http-address={http[0]}:{http[1]}",
            f"--data-path={data}",
            f"--mem-queue-size={mem_queue_size}",
        ]
        with _running("nsqd", argv, tcp, http) as server:
            yield server


# -- workloads ----------------------------------------------------------------


@dataclass
class Options:
    size: int
    runfor: float
    messages: int
    idle: int
    rate: int


def _publish(
    server: Server, topic: str, batch: int, opts: Options, *, mpub: bool = False
) -> tuple[float, float]:
    """Publish from one connection for ``runfor``; returns (msgs/s, server CPU us/msg)."""
    cpu = server.cpu_seconds()
    with multiprocessing.Pool(1) as pool:
        start_at = time.time() + 0.3
        (sent,) = pool.starmap(
            nsqbench.writer_loop,
            [(server.tcp, topic, opts.size, batch, opts.runfor, start_at, 1, mpub)],
        )
    cpu = server.cpu_seconds() - cpu
    return sent / opts.runfor, cpu / sent * 1e6 if sent else float("nan")


def _fill(server: Server, topic: str, count: int, size: int) -> int:
    sock = nsqbench.connect(server.tcp)
    reader = nsqbench.FrameReader(sock)
    command = nsqbench.mpub_command(topic, [b"a" * size] * 200)
    for _ in range(count // 200):
        sock.sendall(command)
        nsqbench.read_frames(sock, reader, 1)
    sock.close()
    return count // 200 * 200


def _consume(server: Server, opts: Options) -> dict[str, float]:
    total = _fill(server, "bench", opts.messages, opts.size)
    cpu = server.cpu_seconds()
    received = multiprocessing.Value("q", 0)
    with multiprocessing.Pool(
        1, initializer=nsqbench.init_shared_count, initargs=(received,)
    ) as pool:
        ((got, seconds),) = pool.starmap(
            nsqbench.reader_loop,
            [(server.tcp, "bench", "ch", 2500, total, time.time() + 0.3)],
        )
    cpu = server.cpu_seconds() - cpu
    return {
        "msgs/s": got / seconds if seconds else 0.0,
        # The server's own cost, which a loaded machine moves less than the rate.
        "server CPU us/msg": cpu / got * 1e6 if got else math.nan,
    }


def pub_200(server: Server, opts: Options) -> dict[str, float]:
    rate, _ = _publish(server, "bench", 200, opts)
    return {"msgs/s": rate}


def pub_1(server: Server, opts: Options) -> dict[str, float]:
    rate, cpu = _publish(server, "bench", 1, opts)
    return {"msgs/s": rate, "server CPU us/msg": cpu}


def mpub_1(server: Server, opts: Options) -> dict[str, float]:
    rate, cpu = _publish(server, "bench", 1, opts, mpub=True)
    return {"msgs/s": rate, "server CPU us/msg": cpu}


def _idle_subscribers(server: Server, topic: str, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = nsqbench.connect(server.tcp)
        sock.sendall(b"SUB %s ch\nRDY 0\n" % topic.encode())
        socks.append(sock)
    for sock in socks:
        nsqbench.read_frames(sock, nsqbench.FrameReader(sock, 4096), 1)
    return socks


def idle_subscribers(server: Server, opts: Options) -> dict[str, float]:
    """Publish to a channel without subscribers and to one with ``idle`` at RDY 0.

    The two alternate for three rounds each on the same server and the best
    of each side is compared, so a burst of load from elsewhere on the
    machine does not pass for a cost of the subscribers.

    Every run starts with the same memory: nobody consumes, so a run leaves
    its messages in the channel, and a machine whose pages cost a fault the
    first time they are touched (a virtual machine's guest, where that fault
    goes to the host) would make each later run pay for memory the earlier
    ones did not. So a warm-up publish to a scratch topic touches the
    memory of one run (its topic is deleted after), and each measured run's
    channel is emptied after it.
    """
    figures: dict[str, float] = {}
    rounds = Options(opts.size, opts.runfor / 3, opts.messages, opts.idle, opts.rate)
    warm_up = Options(opts.size, 2 * rounds.runfor, opts.messages, opts.idle, opts.rate)
    for label, batch in (("MPUB 200", 200), ("PUB", 1)):
        base_topic, idle_topic, warm_topic = f"base{batch}", f"idle{batch}", f"warm{batch}"
        for topic in (base_topic, idle_topic, warm_topic):
            server.post(f"/topic/create?topic={topic}")
            server.post(f"/channel/create?topic={topic}&channel=ch")
        _publish(server, warm_topic, batch, warm_up)
        server.post(f"/topic/delete?topic={warm_topic}")
        socks = _idle_subscribers(server, idle_topic, opts.idle)

        def run(topic: str, batch: int = batch) -> tuple[float, float]:
            measured = _publish(server, topic, batch, rounds)
            server.post(f"/channel/empty?topic={topic}&channel=ch")
            return measured

        try:
            base, loaded = 0.0, 0.0
            base_cpu, loaded_cpu = math.inf, math.inf
            for _ in range(3):
                rate, cpu = run(base_topic)
                base, base_cpu = max(base, rate), min(base_cpu, cpu)
                rate, cpu = run(idle_topic)
                loaded, loaded_cpu = max(loaded, rate), min(loaded_cpu, cpu)
        finally:
            for sock in socks:
                sock.close()
        figures[f"{label} msgs/s"] = loaded
        figures[f"{label} with/without"] = loaded / base if base else math.nan
        # Server CPU per message moves less with the machine's other load.
        figures[f"{label} CPU us/msg with/without"] = loaded_cpu / base_cpu
    return figures


def _latency_publisher(address: tuple[str, int], rate: int, duration: float) -> int:
    sock = nsqbench.connect(address)
    reader = nsqbench.FrameReader(sock)
    head = b"PUB lat\n" + struct.pack(">i", 200)
    pad = b"a" * 192
    sent = 0
    start = time.monotonic()
    end = start + duration
    while (now := time.monotonic()) < end:
        due = int((now - start) * rate) - sent
        if due > 0:
            stamp = struct.pack(">q", time.time_ns())
            sock.sendall((head + stamp + pad) * due)
            nsqbench.read_frames(sock, reader, due)
            sent += due
        else:
            time.sleep(0.0002)
    sock.close()
    return sent


def latency(server: Server, opts: Options) -> dict[str, float]:
    """p50/p99 from PUB to the consumer's read, at ``rate`` msgs/s."""
    sock = nsqbench.connect(server.tcp)
    sock.sendall(b"SUB lat ch\n")
    reader = nsqbench.FrameReader(sock)
    nsqbench.read_frames(sock, reader, 1)
    sock.sendall(b"RDY 100\n")
    with multiprocessing.Pool(1) as pool:
        result = pool.apply_async(_latency_publisher, (server.tcp, opts.rate, opts.runfor))
        samples: list[float] = []
        sock.settimeout(0.2)
        frame = struct.Struct(">ii")
        quiet = 0
        while quiet < 10:
            try:
                if not reader.fill():
                    break
            except TimeoutError:
                quiet = quiet + 1 if result.ready() else 0
                continue
            now = time.time_ns()
            buf, start, end = reader.buf, reader.start, reader.end
            fins = []
            while end - start >= 8:
                size, ftype = frame.unpack_from(buf, start)
                if end - start < 4 + size:
                    break
                if ftype == 2:
                    # frame: size, type, ts(8), attempts(2), id(16), body
                    (stamp,) = struct.unpack_from(">q", buf, start + 8 + 26)
                    samples.append((now - stamp) / 1e6)
                    fins.append(bytes(buf[start + 18 : start + 34]))
                elif ftype == 0:
                    fins.append(b"")  # heartbeat: answer with NOP
                start += 4 + size
            reader.start = start
            if fins:
                sock.sendall(b"".join(b"FIN " + i + b"\n" if i else b"NOP\n" for i in fins))
        result.get(timeout=30)
    sock.close()
    samples.sort()
    if not samples:
        return {"p50 ms": float("nan"), "p99 ms": float("nan")}
    return {
        "p50 ms": samples[len(samples) // 2],
        "p99 ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
    }


@dataclass
class Workload:
    run: Callable[[Server, Options], dict[str, float]]
    mem_queue_size: int
    lower_is_better: set[str] = field(default_factory=set)


WORKLOADS: dict[str, Workload] = {
    "pub-200": Workload(pub_200, BIG_QUEUE),
    "pub-200-disk": Workload(pub_200, DEFAULT_QUEUE),
    "pub-1": Workload(pub_1, BIG_QUEUE, {"server CPU us/msg"}),
    "mpub-1": Workload(mpub_1, BIG_QUEUE, {"server CPU us/msg"}),
    "consume-mem": Workload(_consume, BIG_QUEUE, {"server CPU us/msg"}),
    "consume-disk": Workload(_consume, DEFAULT_QUEUE, {"server CPU us/msg"}),
    "idle-subscribers": Workload(idle_subscribers, BIG_QUEUE),
    "latency": Workload(latency, DEFAULT_QUEUE, {"p50 ms", "p99 ms"}),
}


def _span(values: list[float]) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)

    def fmt(v: float) -> str:
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"

    return fmt(low) if low == high else f"{fmt(low)}-{fmt(high)}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nsqd", default=None, help="path to an nsqd binary to compare with")
    parser.add_argument(
        "--workload", action="append", choices=sorted(WORKLOADS), help="default: all"
    )
    parser.add_argument("--pairs", type=int, default=1, help="interleaved runs of each")
    parser.add_argument("--size", type=int, default=200, help="message size in bytes")
    parser.add_argument("--runfor", type=float, default=3.0, help="seconds per publish run")
    parser.add_argument("--messages", type=int, default=1_000_000, help="queued for consume")
    parser.add_argument("--idle", type=int, default=1000, help="idle subscribers (RDY 0)")
    parser.add_argument("--rate", type=int, default=5000, help="latency workload msgs/s")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run pub-1 and mpub-1 against the reference responders (bench/floor.py)",
    )
    args = parser.parse_args()
    if args.nsqd and not shutil.which(args.nsqd):
        parser.error(f"--nsqd: {args.nsqd} is not an executable")
    opts = Options(args.size, args.runfor, args.messages, args.idle, args.rate)
    kinds = ["shoal", "nsqd"] if args.nsqd else ["shoal"]
    names = args.workload or list(WORKLOADS)
    results: dict[tuple[str, str, str], list[float]] = {}
    with contextlib.ExitStack() as stack:
        built: dict[str, list[str]] = {}
        for kind in floor.COMPILED if args.floor else ():
            argv = stack.enter_context(floor.compiled(kind))
            if argv is None:
                print(f"compare.py: no {floor.COMPILED[kind][0]}: no floor-{kind}", file=sys.stderr)
            else:
                built[kind] = argv
        floors = [f"floor-{k}" for k in floor.KINDS if k in built or k not in floor.COMPILED]
        for name in names:
            workload = WORKLOADS[name]
            runs = kinds + floors if args.floor and name in FLOOR_WORKLOADS else kinds
            for pair in range(args.pairs):
                for kind in runs:
                    with start(kind, args.nsqd, workload.mem_queue_size, built) as server:
                        figures = workload.run(server, opts)
                    shown = ", ".join(f"{k} {v:,.3g}" for k, v in figures.items())
                    print(f"[{name} #{pair + 1} {kind}] {shown}", file=sys.stderr, flush=True)
                    for key, value in figures.items():
                        results.setdefault((name, key, kind), []).append(value)
    other = "nsqd" if args.nsqd else "nsqd (quoted)"
    print(f"\n| workload | figure | shoal | {other} | ratio shoal/nsqd | shoal before (quoted) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in names:
        keys = [k for (n, k, kind) in results if n == name and kind == "shoal"]
        for key in keys:
            mine = results[(name, key, "shoal")]
            if args.nsqd:
                theirs = results.get((name, key, "nsqd"), [])
                ratios = [a / b for a, b in zip(mine, theirs, strict=False) if b]
            else:
                quoted = QUOTED_NSQD.get((name, key))
                theirs = [quoted] if quoted is not None else []
                ratios = [a / quoted for a in mine] if quoted else []
            if "with/without" in key:
                ratios = []
            before = QUOTED_SHOAL_BEFORE.get((name, key))
            print(
                f"| {name} | {key} | {_span(mine)} | {_span(theirs)} | {_span(ratios)} "
                f"| {_span([before]) if before is not None else '-'} |"
            )
    if args.floor:
        _print_floors(results, names)
    print(f"\n({os.cpu_count()} CPUs; each cell is the min-max over the pairs)")


def _print_floors(results: dict[tuple[str, str, str], list[float]], names: list[str]) -> None:
    """The reference responders' figures, and shoal's ratio to each, pair by pair."""
    print("\n| workload | figure | responder | responder's figure | ratio shoal/responder |")
    print("| --- | --- | --- | --- | --- |")
    for name in names:
        for (n, key, kind), theirs in results.items():
            if n != name or not kind.startswith("floor-"):
                continue
            mine = results.get((name, key, "shoal"), [])
            ratios = [a / b for a, b in zip(mine, theirs, strict=False) if b]
            print(f"| {name} | {key} | {kind} | {_span(theirs)} | {_span(ratios)} |")


if __name__ == "__main__":
    main()
