"""Simulator figures for the membership goals (docs/membership.md §7.2).

    python bench/simulations.py            # everything (about 20-30 minutes on 2 cores)
    python bench/simulations.py g1 g3      # some of: namespace g1 g3 g5 g7 g9 g10 scale
    python bench/simulations.py g5 --quick # shorter runs where a goal allows it

Every figure comes from the deterministic simulator (`shoal.simulations`): the
real membership engine and topic registry, LAN profile unless stated, over
the modelled LAN network, seeded so a rerun prints the same figures (wall
times aside).

namespace  predictions for the 5-node namespace test: SIGKILL of one node ->
           time until all four others mark it dead; a 2-of-5 split for 60 s ->
           time from heal until all five see five alive (50 seeds each)
g1         crash detection at N=100: time until every live node marks the
           victim dead (10 staggered crashes x 3 seeds), and per observer
g3         dissemination of a metadata update to all of N=100, p99, at 0% and
           20% loss (one update a second)
g5         heal after a split longer than dead retention (3600 s on LAN, 3 seeds;
           with --quick, retention overridden to 120 s, 10 seeds), N=100,
           three split shapes
g7         false deaths of healthy nodes per hour at 5% loss (G7) and 20%
           loss (G8), N=100, over --hours one-hour runs (one seed each)
g9         10% of N=100 stalling 2 s every 10 s, with and without Lifeguard's
           health awareness; and the same share slowed by 1.5 s, where
           awareness matters
g10        idle traffic per node at N=100, with and without the registry
scale      wall and CPU time and peak memory of a 120 s crash run at N=100,
           300, 1000 (each in a fresh process, so peaks do not mix), against
           the target of 20 s wall and 600 MB at N=1000; with --nodes 10000,
           also a 60 s run at N=10,000 without the registry (about 480 s of
           CPU and 16.3 GB), only when the machine has the memory it needs.
           Memory grows as N^2: every engine holds a record of every member
           (about 160 bytes each, names and addresses shared between
           engines), and every registry a state of every owner (about 450
           bytes each)
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from shoal.simulations import (
    Crash,
    Idle,
    Loss,
    RunSettings,
    Slow,
    Split,
    Stall,
    simulate,
)
from shoal.simulations.runner import Simulation
from shoal.testing.progress import StatusLine

#: On a terminal only: stdout is the figures.
status = StatusLine("bench/simulations.py")


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return (
        f"p50 {statistics.median(values):6.2f} s  p90 {nearest_rank(values, 0.9):6.2f} s  "
        f"p99 {nearest_rank(values, 0.99):6.2f} s  max {max(values):6.2f} s  (n={len(values)})"
    )


def line(label: str, text: str) -> None:
    status.say(f"  {label:<34} {text}")


def namespace(seeds: int) -> None:
    status.say("namespace test predictions: 5 nodes, lan profile, joined through node-0")
    crash: list[float] = []
    heal: list[float] = []
    for seed in range(seeds):
        settings = RunSettings(nodes=5, seed=seed, bootstrap="join")
        metrics = simulate(Crash(), settings).runs[0].metrics
        if metrics.detection_all.max is not None:
            crash.append(metrics.detection_all.max)
        (healed,) = simulate(Split(sizes=(2, 3)), settings).runs[0].metrics.heals
        if healed.view is not None:
            heal.append(healed.view)
    line("SIGKILL -> all 4 others see dead", spread(crash))
    line("2-of-5 split 60 s, heal -> 5 alive", spread(heal))


def g1(seeds: int) -> None:
    status.say("G1 crash detection, N=100, lan (target p50 <= 12 s, p99 <= 16 s)")
    everyone: list[float] = []
    observers: list[float] = []
    missing = 0
    scenario = Crash(kill=10, interval=30.0)
    for seed in range(seeds):
        settings = RunSettings(nodes=100, seed=seed)
        duration = scenario.default_duration(settings.membership_config(), settings.nodes)
        sim = Simulation(settings, duration=duration)
        sim.run("g1", scenario)
        for item in sim.recorder.tracked():
            if item.kind == "crash":
                observers += item.times
                missing += item.missing
                if item.all_known is not None:
                    everyone.append(item.all_known)
    line("all live nodes know (per crash)", spread(everyone))
    line("each observer", spread(observers))
    line("undetected (crash, observer) pairs", str(missing))


def g3() -> None:
    status.say("G3 dissemination to all of N=100, lan (target p99 <= 2.5 s at 0%, <= 3.0 s at 20%)")
    report = simulate(Loss(rates=(0.0, 0.2)), RunSettings(nodes=100, duration=300.0))
    for run in report.runs:
        d = run.metrics.dissemination
        line(
            run.label,
            f"p50 {d.p50:.2f} s  p99 {d.p99:.2f} s  max {d.max:.2f} s  (n={d.count}, "
            f"{run.metrics.dissemination_incomplete} incomplete)",
        )


def g5(quick: bool) -> None:
    retention = 120.0 if quick else 3600.0
    split_for = retention + 60.0
    seeds = 10 if quick else 3
    status.say(
        f"G5 heal after a split of {split_for:.0f} s, longer than dead retention "
        f"({retention:.0f} s), N=100, lan, {seeds} seeds per shape (target p99 <= 15 s)"
    )
    overrides: tuple[tuple[str, Any], ...] = (("dead_retention", retention),) if quick else ()
    everything: list[float] = []
    for sizes in ((50, 50), (90, 10), (99, 1)):
        views: list[float] = []
        never = 0
        started = time.perf_counter()
        for seed in range(seeds):
            scenario = Split(sizes=sizes, duration=split_for)
            settings = RunSettings(nodes=100, seed=seed, overrides=overrides)
            (heal,) = simulate(scenario, settings).runs[0].metrics.heals
            # "full": the views and the registries agree everywhere.
            if heal.full is None:
                never += 1
            else:
                views.append(heal.full)
        everything += views
        suffix = f", never healed: {never}" if never else ""
        line(
            f"split {sizes[0]}/{sizes[1]}",
            f"{spread(views)}{suffix}  ({time.perf_counter() - started:.0f} s wall)",
        )
    line("all shapes", spread(everything))
    status.say("  for comparison, splits shorter than retention (60 s), 50/50, 10 seeds:")
    views = []
    for seed in range(10):
        run = simulate(Split(), RunSettings(nodes=100, seed=seed)).runs[0]
        (heal,) = run.metrics.heals
        if heal.full is not None:
            views.append(heal.full)
    line("split 50/50 for 60 s", spread(views))


def g7(baseline: bool, hours: int) -> None:
    status.say(
        "G7/G8 false deaths of healthy nodes per hour, N=100, lan (targets 0 and <= 1), "
        f"{hours} one-hour run(s) each"
    )
    for loss in (0.05, 0.2):
        for lifeguard in (True, False) if baseline else (True,):
            label = f"{loss:.0%} loss, lifeguard {'on' if lifeguard else 'off'}"
            for seed in range(hours):
                started = time.perf_counter()
                settings = RunSettings(
                    nodes=100, seed=seed, duration=3600.0, loss=loss, lifeguard=lifeguard
                )
                m = simulate(Idle(), settings).runs[0].metrics
                line(
                    f"{label}, seed {seed}",
                    f"false deaths {m.false_deaths} ({m.false_death_events} events), "
                    f"false suspicions {m.false_suspicions}, refutations {m.refutations}, "
                    f"{m.bytes_per_node_per_s:,.0f} B/s per node"
                    f"  ({time.perf_counter() - started:.0f} s wall)",
                )


def g9() -> None:
    status.say(
        "G9 Lifeguard health awareness, N=100, lan, 300 s (target: >= 10x fewer false positives)"
    )
    awareness_off = (("lifeguard_awareness", False),)
    for scenario, title in ((Stall(), "10% stall 2 s every 10 s"), (Slow(), "10% slowed by 1.5 s")):
        for label, overrides in (("awareness on", ()), ("awareness off", awareness_off)):
            settings = RunSettings(nodes=100, duration=300.0, overrides=overrides)
            m = simulate(scenario, settings).runs[0].metrics
            line(
                f"{title}, {label}",
                f"false suspicions {m.false_suspicions} ({m.false_suspicion_events} events), "
                f"false deaths {m.false_deaths}, all suspicions {m.suspicions}",
            )


def g10() -> None:
    status.say("G10 idle traffic per node, N=100, lan, in+out, payload bytes (target <= 1 KB/s)")
    for registry in (True, False):
        m = simulate(Idle(), RunSettings(nodes=100, registry=registry)).runs[0].metrics
        line(
            f"registry {'on' if registry else 'off'}",
            f"{m.bytes_per_node_per_s:,.0f} B/s ({m.stream_bytes_per_node_per_s:,.0f} B/s "
            f"streams), {m.packets_per_node_per_s:.2f} packets/s",
        )


#: Peak bytes per (node, member) pair of a scale run: 16,287 MB for 10^8
#: pairs at N=10,000 without the registry, 293 MB for 10^6 at N=1000 with it.
_PAIR_BYTES = {True: 300, False: 175}


def scale_run(nodes: int, duration: float, registry: bool) -> None:
    """One scale run in this process; prints one line (see `scale`)."""
    started = time.perf_counter()
    cpu = time.process_time()
    settings = RunSettings(nodes=nodes, duration=duration, registry=registry)
    sim = Simulation(settings, duration=duration)
    built = time.perf_counter()
    report = sim.run("scale", Crash())
    done = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    line(
        f"N={nodes}, {duration:.0f} s, registry {'on' if registry else 'off'}",
        f"{done - started:6.1f} s wall (start {built - started:5.1f} s, run "
        f"{done - built:5.1f} s), {time.process_time() - cpu:5.1f} s CPU, peak RSS "
        f"{peak:,.0f} MB, {report.metrics.events_processed:,} events",
    )


def _in_child(nodes: int, duration: float, registry: bool) -> None:
    flag = "--registry" if registry else "--no-registry"
    command = [sys.executable, __file__, "_scale_one", str(nodes), str(duration), flag]
    status.show(f"scale: N={nodes}, {duration:.0f} s, registry {'on' if registry else 'off'}")
    # The child's line is printed from here, clear of the status line.
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    status.say(done.stdout.rstrip("\n"))


def _available_mb() -> float:
    with open("/proc/meminfo") as fh:
        for text in fh:
            if text.startswith("MemAvailable:"):
                return int(text.split()[1]) / 1024
    return 0.0


def scale(huge: bool) -> None:
    status.say(
        "scale: crash scenario, lan, on this machine (wall time grows with its load; "
        "CPU time does not); target at N=1000: <= 20 s wall, <= 600 MB"
    )
    for nodes in (100, 300, 1000):
        for registry in (True, False):
            _in_child(nodes, 120.0, registry)
    if huge:
        need = _PAIR_BYTES[False] * 10_000**2 / 2**20
        have = _available_mb()
        if have < need:
            line(
                "N=10000, 60 s, registry off",
                f"not run: needs about {need / 1024:,.0f} GB, {have / 1024:,.1f} GB available",
            )
        else:
            _in_child(10_000, 60.0, registry=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "goals",
        nargs="*",
        default=["namespace", "g1", "g3", "g5", "g7", "g9", "g10", "scale"],
        choices=["namespace", "g1", "g3", "g5", "g7", "g9", "g10", "scale"],
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs where allowed")
    parser.add_argument("--baseline", action="store_true", help="G7/G8 with Lifeguard off too")
    parser.add_argument("--hours", type=int, default=1, help="G7/G8 one-hour runs per rate")
    parser.add_argument(
        "--nodes", type=int, choices=[1000, 10000], default=1000, help="scale: largest size"
    )
    if sys.argv[1:2] == ["_scale_one"]:
        nodes, duration, flag = sys.argv[2:5]
        scale_run(int(nodes), float(duration), flag == "--registry")
        return
    args = parser.parse_args()
    with status.ticking():
        run_goals(args)


def run_goals(args: argparse.Namespace) -> None:
    for goal in args.goals:
        started = time.perf_counter()
        status.show(f"goal {goal} ({args.goals.index(goal) + 1} of {len(args.goals)})")
        if goal == "namespace":
            namespace(10 if args.quick else 50)
        elif goal == "g1":
            g1(1 if args.quick else 3)
        elif goal == "g3":
            g3()
        elif goal == "g5":
            g5(args.quick)
        elif goal == "g7":
            g7(args.baseline, args.hours)
        elif goal == "g9":
            g9()
        elif goal == "g10":
            g10()
        else:
            scale(huge=args.nodes == 10000)
        status.say(f"  ({time.perf_counter() - started:.0f} s wall)\n")


if __name__ == "__main__":
    main()
