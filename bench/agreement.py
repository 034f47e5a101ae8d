"""Does the simulator agree with real nodes? The 5-node namespace test, both ways.

    python bench/agreement.py                 # 5 real runs, 50 simulated seeds
    python bench/agreement.py --runs 3 --seeds 20

Real: five `shoal node` processes, each in its own network namespace (root
only), joined through node0. The links of 2 nodes to the other 3 are cut for
``--split-for`` seconds (60 by default), then restored; then node4 is
SIGKILLed. Measured: time from the start of the restore until all five list
five alive, and from the SIGKILL until the four others list node4 dead.

Simulated: the same cluster (5 nodes, lan, joined through node-0) over the
modelled network, the same split and the same crash, one run per seed.

Both are distributions (where the failure falls in the probe round, when a
connection attempt is in flight), so medians are compared: the simulator
agrees when its median is within 30% of the measured one.
"""

from __future__ import annotations

import argparse
import statistics

from membership import netns_run
from shoal.simulations import Crash, RunSettings, Split, simulate
from shoal.testing.progress import StatusLine
from simulations import nearest_rank

TOLERANCE = 0.30


def predict(seeds: int, split_for: float) -> tuple[list[float], list[float]]:
    kills: list[float] = []
    heals: list[float] = []
    for seed in range(seeds):
        settings = RunSettings(nodes=5, seed=seed, bootstrap="join")
        crash = simulate(Crash(), settings).runs[0].metrics.detection_all.max
        if crash is not None:
            kills.append(crash)
        (heal,) = simulate(Split(sizes=(2, 3), duration=split_for), settings).runs[0].metrics.heals
        if heal.view is not None:
            heals.append(heal.view)
    return kills, heals


def compare(label: str, simulated: list[float], measured: list[float]) -> bool:
    sim = statistics.median(simulated)
    real = statistics.median(measured)
    ratio = sim / real
    ok = abs(ratio - 1.0) <= TOLERANCE
    print(f"{label}")
    print(
        f"  simulated  median {sim:5.2f} s  p10 {nearest_rank(simulated, 0.1):5.2f} s  "
        f"p90 {nearest_rank(simulated, 0.9):5.2f} s  (n={len(simulated)})"
    )
    runs = " ".join(f"{v:.2f}" for v in measured)
    print(f"  measured   median {real:5.2f} s  runs: {runs}")
    verdict = "agrees" if ok else "DISAGREES"
    print(f"  simulated / measured = {ratio:.2f}: {verdict} (tolerance {TOLERANCE:.0%})")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="real namespace runs")
    parser.add_argument("--seeds", type=int, default=50, help="simulated seeds")
    parser.add_argument("--split-for", type=float, default=60.0, help="seconds the split lasts")
    args = parser.parse_args()
    status = StatusLine("bench/agreement.py")  # on a terminal only: stdout is the figures
    with status.ticking():
        status.show(f"simulating {args.seeds} seeds")
        kills, heals = predict(args.seeds, args.split_for)
        measured = []
        for run in range(args.runs):
            status.show(f"real run {run + 1} of {args.runs} (a {args.split_for:.0f} s split)")
            figures = netns_run(args.split_for)
            status.say(
                f"real run {run + 1}: restore -> full view {figures.heal:.2f} s, "
                f"SIGKILL -> dead {figures.kill_detected:.2f} s"
            )
            measured.append(figures)
    print()
    agree = compare(
        "SIGKILL of one node -> the four others list it dead",
        kills,
        [f.kill_detected for f in measured],
    )
    agree &= compare(
        f"split 2|3 for {args.split_for:.0f} s -> restore -> all five see five alive",
        heals,
        [f.heal for f in measured],
    )
    print("\nverdict:", "the simulator agrees" if agree else "the simulator disagrees")


if __name__ == "__main__":
    main()
