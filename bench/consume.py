"""Consume benchmark: a pre-filled topic drained by N subscribers with RDY.

    python bench/consume.py --messages 1000000 --size 200 --connections 1 --rdy 2500

Starts a node on loopback unless --nsqd-tcp-address names one, fills the
topic with MPUB batches (no channel yet, so the backlog waits at the topic,
as in nsq's bench.sh), then subscribes N raw connections that FIN every
message, and prints msgs/s, MB/s and the node's peak RSS (which, with
nothing consumed yet, is the memory cost of the queued messages).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import nsqbench

from shoal.testing.progress import StatusLine


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--nsqd-tcp-address", default=None, help="existing node (default: start one)"
    )
    parser.add_argument("--topic", default="sub_bench")
    parser.add_argument("--channel", default="ch")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--rdy", type=int, default=2500)
    parser.add_argument("--mem-queue-size", type=int, default=100_000_000)
    args = parser.parse_args()

    node_args = ("--mem-queue-size", str(args.mem_queue_size))
    status = StatusLine("bench/consume.py")  # on a terminal only: stdout is the figures
    with status.ticking(), nsqbench.target(args.nsqd_tcp_address, *node_args) as (address, pid):
        status.show(f"queueing {args.messages:,} messages")
        sock = nsqbench.connect(address)
        reader = nsqbench.FrameReader(sock)
        command = nsqbench.mpub_command(args.topic, [b"a" * args.size] * 200)
        fill_start = time.monotonic()
        for _ in range(args.messages // 200):
            sock.sendall(command)
            nsqbench.read_frames(sock, reader, 1)
        sock.close()
        fill = time.monotonic() - fill_start
        total = args.messages // 200 * 200
        if pid:
            status.say(
                f"filled {total} msgs in {fill:.2f}s; node RSS {nsqbench.rss_mib(pid):.1f} MiB "
                f"({nsqbench.rss_mib(pid) / (total / 1e6):.0f} MiB per million queued)"
            )
        status.show(f"consuming {total:,} messages on {args.connections} connection(s)")
        start_at = time.time() + 0.5
        # The readers stop together once all of them received ``total``.
        received = multiprocessing.Value("q", 0)
        with multiprocessing.Pool(
            args.connections, initializer=nsqbench.init_shared_count, initargs=(received,)
        ) as pool:
            results = pool.starmap(
                nsqbench.reader_loop,
                [(address, args.topic, args.channel, args.rdy, total, start_at)] * args.connections,
            )
        got = sum(r[0] for r in results)
        seconds = max(r[1] for r in results)
        label = f"consume size={args.size} connections={args.connections} rdy={args.rdy}"
        status.say(nsqbench.report(label, got, seconds, args.size, pid))


if __name__ == "__main__":
    main()
