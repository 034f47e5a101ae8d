"""Publish benchmark: raw TCP MPUB (or PUB) batches, as nsq's bench_writer.

    python bench/publish.py --size 200 --batch-size 200 --connections 1 --runfor 10

Starts a node on loopback unless --nsqd-tcp-address names one, publishes
from one process per connection for --runfor seconds and prints msgs/s,
MB/s and the node's peak RSS.
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
    parser.add_argument("--size", type=int, default=200, help="message size in bytes")
    parser.add_argument(
        "--batch-size", type=int, default=200, help="messages per MPUB; 1 sends PUB"
    )
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--runfor", type=float, default=10.0, help="seconds")
    parser.add_argument(
        "--pipeline",
        type=int,
        default=1,
        help="commands in flight per connection (1 = bench_writer)",
    )
    parser.add_argument("--mem-queue-size", type=int, default=100_000_000)
    args = parser.parse_args()

    node_args = ("--mem-queue-size", str(args.mem_queue_size))
    status = StatusLine("bench/publish.py")  # on a terminal only: stdout is the figures
    with status.ticking(), nsqbench.target(args.nsqd_tcp_address, *node_args) as (address, pid):
        status.show(f"publishing for {args.runfor:.0f}s from {args.connections} connection(s)")
        start_at = time.time() + 0.5
        with multiprocessing.Pool(args.connections) as pool:
            results = pool.starmap(
                nsqbench.writer_loop,
                [
                    (
                        address,
                        args.topic,
                        args.size,
                        args.batch_size,
                        args.runfor,
                        start_at,
                        args.pipeline,
                    )
                ]
                * args.connections,
            )
        label = (
            f"publish size={args.size} batch={args.batch_size} "
            f"connections={args.connections} pipeline={args.pipeline}"
        )
        status.say(nsqbench.report(label, sum(results), args.runfor, args.size, pid))


if __name__ == "__main__":
    main()
