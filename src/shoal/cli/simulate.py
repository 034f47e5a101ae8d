"""``shoal simulate``: run the real gossip code in virtual time, at any size.

One subcommand per scenario (``shoal simulate split --nodes 100``), plus
``shoal simulate compare SCENARIO``, which runs it under each profile with
Lifeguard on and off, side by side. Every scenario takes the same run
options (size, seed, duration, loss, profile...) and its own parameters.

Output: a readable summary on stdout; ``--json`` prints the figures instead
(byte-identical for a seed; ``--wall-time`` adds the one figure that is
not); ``--plot FILE`` draws alive-view sizes over time (needs the ``plot``
extra). Errors are one line on stderr, ``shoal: ...``: exit 2 for usage
errors, 1 for a run that broke an invariant or a plot that cannot be drawn.

The main group registers `simulate` with ``cli.add_command(simulate)``.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from shoal.cli.options import DURATION, parse_membership_setting
from shoal.errors import ConfigError, ShoalError
from shoal.simulations import invariants, plot
from shoal.simulations.report import format_comparison, format_summary
from shoal.simulations.runner import PROFILE_NAMES, RunProgress, RunSettings, compare
from shoal.simulations.runner import simulate as run
from shoal.simulations.scenarios import (
    SCENARIOS,
    Churn,
    Crash,
    Idle,
    Isolate,
    Loss,
    ReplicatedChurn,
    ReplicatedCrash,
    ReplicatedSplit,
    Slow,
    Split,
    Stall,
    Topics,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from shoal.simulations.scenarios import Scenario

__all__ = ["simulate"]

F = TypeVar("F", bound="Callable[..., Any]")


class Probability(click.ParamType[float, Any]):
    """A probability written as ``0.05`` or ``5%``."""

    name = "probability"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        """Return the probability, or fail with a usage error."""
        if isinstance(value, float):
            return value
        text = str(value).strip()
        try:
            number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            self.fail(f"{value!r} is not a probability (e.g. 0.05 or 5%)", param, ctx)
        if not 0.0 <= number < 1.0:
            self.fail(f"{value!r} is not in [0, 1)", param, ctx)
        return number


PROBABILITY = Probability()


def _fail(message: str) -> NoReturn:
    click.echo(f"shoal: {message}", err=True)
    sys.exit(1)


def _parse_list(text: str, convert: Callable[[str], Any], what: str) -> tuple[Any, ...]:
    try:
        return tuple(convert(part.strip()) for part in text.split(",") if part.strip())
    except (ValueError, click.BadParameter):
        raise click.BadParameter(f"{text!r} is not a comma-separated list of {what}") from None


def _run_options(fn: F) -> F:
    """The options every scenario takes: how big, how long, which network."""
    options = [
        click.option(
            "--nodes", "-n", type=click.IntRange(2, 65536), default=100, show_default=True,
            help="Members at the start.",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help="The run's seed."),
        click.option(
            "--duration", type=DURATION, default=None,
            help="Virtual time to run (e.g. 120s, 1h) [default: the scenario's].",
        ),
        click.option(
            "--loss", type=PROBABILITY, default=0.0, show_default=True,
            help="Datagram loss probability (0.05 or 5%).",
        ),
        click.option(
            "--duplicate", type=PROBABILITY, default=0.0, show_default=True,
            help="Datagram duplication probability.",
        ),
        click.option(
            "--reorder", type=PROBABILITY, default=0.0, show_default=True,
            help="Probability that a datagram is held back up to 10 ms.",
        ),
        click.option(
            "--profile", type=click.Choice(PROFILE_NAMES), default="lan", show_default=True,
            help="Membership preset and network model.",
        ),
        click.option(
            "--lifeguard/--no-lifeguard", default=True, show_default=True,
            help="Lifeguard's health awareness, dynamic suspicion, buddy system and nacks.",
        ),
        click.option(
            "--bootstrap", type=click.Choice(["preformed", "join"]), default="preformed",
            show_default=True,
            help="Start from a warm cluster, or have everyone join through node-0.",
        ),
        click.option(
            "--registry/--no-registry", default=True, show_default=True,
            help="Carry and gossip a topic registry on every node.",
        ),
        click.option(
            "--updates-every", type=DURATION, default=None,
            help="A random node announces new metadata this often (times dissemination).",
        ),
        click.option(
            "--set", "overrides", multiple=True, metavar="FIELD=VALUE",
            help="Override a membership setting (repeatable), e.g. --set dead_retention=120.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON."),
        click.option(
            "--wall-time", is_flag=True, help="Include the wall time in the JSON (not repeatable)."
        ),
        click.option(
            "--plot", "plot_file", type=click.Path(dir_okay=False), default=None,
            help="Draw alive-view sizes over time to this file (needs shoal[plot]).",
        ),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def _settings(options: dict[str, Any]) -> RunSettings:
    overrides = tuple(parse_membership_setting(text) for text in options.pop("overrides"))
    return RunSettings(
        nodes=options.pop("nodes"),
        seed=options.pop("seed"),
        duration=options.pop("duration"),
        loss=options.pop("loss"),
        duplicate=options.pop("duplicate"),
        reorder=options.pop("reorder"),
        profile=options.pop("profile"),
        lifeguard=options.pop("lifeguard"),
        bootstrap=options.pop("bootstrap"),
        registry=options.pop("registry"),
        updates_every=options.pop("updates_every"),
        overrides=overrides,
    )


def _execute(
    options: dict[str, Any],
    build: Callable[[], Scenario],
    *,
    profiles: tuple[str, ...] | None = None,
) -> None:
    """Build the settings and scenario, run, print; the shared body of every command."""
    as_json = options.pop("as_json")
    wall_time = options.pop("wall_time")
    plot_file = options.pop("plot_file")
    if plot_file is not None:
        try:
            plot.check_path(plot_file)  # before the run, which may take minutes
        except ShoalError as exc:
            _fail(str(exc))
    try:
        settings = _settings(options)
        scenario = build()
        with _progress_bar(enabled=not as_json and sys.stderr.isatty()) as progress:
            if profiles is None:
                report = run(scenario, settings, progress=progress)
            else:
                report = compare(scenario, settings, profiles=profiles, progress=progress)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(report.dumps(wall_time=wall_time))
    elif profiles is None:
        click.echo(format_summary(report))
    else:
        click.echo(format_comparison(report))
    if plot_file is not None:
        try:
            plot.plot_report(report, plot_file)
        except (ShoalError, OSError) as exc:
            _fail(f"cannot draw the plot: {exc}")
    problems = invariants.check_report(report, scenario)
    if problems:
        _fail(f"{len(problems)} invariant(s) broken, first: {problems[0]}")


#: Steps of the progress bar over a whole simulation.
_BAR_STEPS = 1000


@contextlib.contextmanager
def _progress_bar(*, enabled: bool) -> Iterator[Callable[[RunProgress], None] | None]:
    """A progress bar on stderr (virtual time, runs done, ETA), or None when off.

    Off under ``--json`` and when stderr is not a terminal, so pipes and
    scripts see only the figures. click's bar, since click is already here.
    """
    if not enabled:
        yield None
        return
    with click.progressbar(
        length=_BAR_STEPS,
        file=sys.stderr,
        show_eta=True,
        show_percent=True,
        item_show_func=lambda text: text,
        label="simulating",
    ) as bar:
        done = 0

        def update(where: RunProgress) -> None:
            nonlocal done
            fraction = (where.run + where.virtual_now / where.duration) / where.runs
            target = min(_BAR_STEPS, int(fraction * _BAR_STEPS))
            text = (
                f"run {where.run + 1}/{where.runs} {where.label}: "
                f"{where.virtual_now:,.0f}s of {where.duration:,.0f}s virtual"
            )
            bar.update(target - done, text)
            done = target

        yield update


@click.group(
    "simulate",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
def simulate() -> None:
    """Simulate a cluster in virtual time: the real gossip code over a modelled network.

    Same seed, same run: the JSON output is byte-identical.
    """


def _command(name: str, help_text: str) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        wrapped = _run_options(fn)
        simulate.command(name, help=help_text)(wrapped)
        return fn

    return decorate


@_command("idle", "No faults: the baseline for traffic and for 'nobody is ever suspected'.")
def _idle(**options: Any) -> None:
    _execute(options, Idle)


@_command("crash", "Kill nodes without a leave and time their detection at every member.")
@click.option(
    "--kill", type=click.IntRange(min=1), default=1, show_default=True, help="Nodes to kill."
)
@click.option("--at", "at", type=DURATION, default="20s", show_default=True, help="First kill.")
@click.option("--interval", type=DURATION, default="0s", show_default=True, help="Between kills.")
@click.option("--restart-after", type=DURATION, default=None, help="Restart each killed node.")
def _crash(
    kill: int, at: float, interval: float, restart_after: float | None, **options: Any
) -> None:
    _execute(
        options,
        functools.partial(Crash, kill=kill, at=at, interval=interval, restart_after=restart_after),
    )


@_command("split", "Split the cluster into groups for a while, then heal; time the heal.")
@click.option("--sizes", default=None, help="Group sizes, e.g. 2,3 [default: two halves].")
@click.option("--at", "at", type=DURATION, default="20s", show_default=True, help="Split start.")
@click.option(
    "--for", "for_", type=DURATION, default="60s", show_default=True, help="Split length."
)
@click.option("--one-way", is_flag=True, help="Cut only the first group's outgoing traffic.")
@click.option("--topics/--no-topics", default=True, show_default=True, help="Topic per side.")
def _split(
    sizes: str | None, at: float, for_: float, one_way: bool, topics: bool, **options: Any
) -> None:
    parsed = None if sizes is None else _parse_list(sizes, int, "sizes")
    _execute(
        options,
        functools.partial(
            Split, sizes=parsed, at=at, duration=for_, one_way=one_way, topics=topics
        ),
    )


@_command("isolate", "Cut one node off and reconnect it; time the heal.")
@click.option("--node", default=None, help="The node [default: a random one].")
@click.option("--at", "at", type=DURATION, default="20s", show_default=True, help="Cut start.")
@click.option("--for", "for_", type=DURATION, default="30s", show_default=True, help="Cut length.")
@click.option("--one-way", is_flag=True, help="Cut only what reaches the node.")
def _isolate(node: str | None, at: float, for_: float, one_way: bool, **options: Any) -> None:
    _execute(options, functools.partial(Isolate, node=node, at=at, duration=for_, one_way=one_way))


@_command(
    "loss", "One run per loss rate (--rates replaces --loss): false positives, dissemination."
)
@click.option(
    "--rates", default="0,0.05,0.1,0.2", show_default=True, help="Loss rates, e.g. 0,5%,20%."
)
def _loss(rates: str, **options: Any) -> None:
    parsed = _parse_list(rates, lambda text: PROBABILITY.convert(text, None, None), "rates")
    _execute(options, functools.partial(Loss, rates=parsed))


@_command("churn", "Joins, leaves and crashes at random, then a quiet period to converge.")
@click.option("--join-rate", type=float, default=2.0, show_default=True, help="Joins per minute.")
@click.option("--leave-rate", type=float, default=1.0, show_default=True, help="Leaves per minute.")
@click.option(
    "--crash-rate", type=float, default=1.0, show_default=True, help="Crashes per minute."
)
@click.option(
    "--restart-after", type=DURATION, default="30s", show_default=True, help="Restart delay."
)
@click.option("--settle", type=DURATION, default="90s", show_default=True, help="Quiet tail.")
def _churn(
    join_rate: float,
    leave_rate: float,
    crash_rate: float,
    restart_after: float,
    settle: float,
    **options: Any,
) -> None:
    _execute(
        options,
        functools.partial(
            Churn,
            join_rate=join_rate,
            leave_rate=leave_rate,
            crash_rate=crash_rate,
            restart_after=restart_after,
            settle=settle,
        ),
    )


@_command("stall", "A share of nodes stall their event loop periodically (Lifeguard's case).")
@click.option("--share", type=PROBABILITY, default=0.1, show_default=True, help="Share stalling.")
@click.option("--stall", type=DURATION, default="2s", show_default=True, help="Stall length.")
@click.option("--every", type=DURATION, default="10s", show_default=True, help="Stall period.")
def _stall(share: float, stall: float, every: float, **options: Any) -> None:
    _execute(options, functools.partial(Stall, share=share, stall=stall, every=every))


@_command("slow", "A share of nodes read every input late (Lifeguard's slow processing).")
@click.option("--share", type=PROBABILITY, default=0.1, show_default=True, help="Share slowed.")
@click.option("--delay", type=DURATION, default="1.5s", show_default=True, help="How late.")
def _slow(share: float, delay: float, **options: Any) -> None:
    _execute(options, functools.partial(Slow, share=share, delay=delay))


@_command("topics", "Create topics on random nodes and time their way to every lookup.")
@click.option("--count", type=click.IntRange(min=1), default=20, show_default=True, help="Topics.")
@click.option("--every", type=DURATION, default="1s", show_default=True, help="Between topics.")
def _topics(count: int, every: float, **options: Any) -> None:
    _execute(options, functools.partial(Topics, count=count, every=every))


def _replication_options(fn: F) -> F:
    """The workload options of the replicated scenarios."""
    options = [
        click.option(
            "--topics", type=click.IntRange(min=1), default=40, show_default=True,
            help="Replicated topics, each on a random owner.",
        ),
        click.option(
            "--factors", default="2,3", show_default=True,
            help="Replication factors, assigned to the topics in turn.",
        ),
        click.option(
            "--publish-every", type=DURATION, default="1s", show_default=True,
            help="Mean time between two publishes to a topic.",
        ),
        click.option(
            "--consume-time", type=DURATION, default="0.5s", show_default=True,
            help="Mean time a consumer holds a message before its FIN.",
        ),
        click.option(
            "--replication-timeout", type=DURATION, default="5s", show_default=True,
            help="How long a publish waits for its replicas.",
        ),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def _workload(options: dict[str, Any]) -> dict[str, Any]:
    """Take the workload options out of ``options``, as scenario fields."""
    return {
        "topics": options.pop("topics"),
        "factors": _parse_list(options.pop("factors"), int, "factors"),
        "publish_every": options.pop("publish_every"),
        "consume_time": options.pop("consume_time"),
        "replication_timeout": options.pop("replication_timeout"),
    }


@_command(
    "replication-crash",
    "Replicated topics while members crash: acknowledged, lost and duplicated messages.",
)
@_replication_options
@click.option(
    "--kill", type=click.IntRange(min=1), default=5, show_default=True, help="Members to kill."
)
@click.option("--at", "at", type=DURATION, default="20s", show_default=True, help="First kill.")
@click.option("--interval", type=DURATION, default="15s", show_default=True, help="Between kills.")
@click.option(
    "--restart-after", type=DURATION, default="30s", show_default=True,
    help="Restart each killed member, its data lost.",
)  # fmt: skip
def _replication_crash(
    kill: int, at: float, interval: float, restart_after: float, **options: Any
) -> None:
    workload = _workload(options)
    _execute(
        options,
        functools.partial(
            ReplicatedCrash,
            kill=kill,
            at=at,
            interval=interval,
            restart_after=restart_after,
            **workload,
        ),
    )


@_command(
    "replication-split",
    "Replicated topics while the cluster splits and heals: acknowledged, lost, duplicated.",
)
@_replication_options
@click.option("--sizes", default=None, help="Group sizes, e.g. 2,3 [default: two halves].")
@click.option("--at", "at", type=DURATION, default="20s", show_default=True, help="Split start.")
@click.option(
    "--for", "for_", type=DURATION, default="60s", show_default=True, help="Split length."
)
def _replication_split(sizes: str | None, at: float, for_: float, **options: Any) -> None:
    workload = _workload(options)
    parsed = None if sizes is None else _parse_list(sizes, int, "sizes")
    _execute(
        options,
        functools.partial(ReplicatedSplit, sizes=parsed, at=at, duration=for_, **workload),
    )


@_command(
    "replication-churn",
    "Replicated topics while members join, leave and crash: acknowledged, lost, duplicated.",
)
@_replication_options
@click.option("--join-rate", type=float, default=2.0, show_default=True, help="Joins per minute.")
@click.option("--leave-rate", type=float, default=1.0, show_default=True, help="Leaves per minute.")
@click.option(
    "--crash-rate", type=float, default=2.0, show_default=True, help="Crashes per minute."
)
@click.option(
    "--restart-after", type=DURATION, default="30s", show_default=True, help="Restart delay."
)
@click.option("--length", type=DURATION, default="240s", show_default=True, help="Churn length.")
def _replication_churn(
    join_rate: float,
    leave_rate: float,
    crash_rate: float,
    restart_after: float,
    length: float,
    **options: Any,
) -> None:
    workload = _workload(options)
    _execute(
        options,
        functools.partial(
            ReplicatedChurn,
            join_rate=join_rate,
            leave_rate=leave_rate,
            crash_rate=crash_rate,
            restart_after=restart_after,
            length=length,
            **workload,
        ),
    )


@simulate.command("sweep")
@click.argument("scenario", type=click.Choice(sorted(SCENARIOS)))
@click.option(
    "--seeds",
    type=click.IntRange(1, 100_000),
    default=10,
    show_default=True,
    help="How many seeds, counting up from --seed.",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(1, 1024),
    default=1,
    show_default=True,
    help="Worker processes (the simulator uses one core per process).",
)
@_run_options
def _sweep(scenario: str, seeds: int, jobs: int, **options: Any) -> None:
    """Run SCENARIO (with its defaults) for many seeds; print p50/p90/p99 of every figure.

    The figures do not depend on --jobs, only the wall time does.
    """
    from shoal.simulations.sweep import format_sweep, sweep

    as_json = options.pop("as_json")
    wall_time = options.pop("wall_time")
    if options.pop("plot_file") is not None:
        raise click.UsageError("--plot draws one run; sweep prints distributions")
    try:
        report = sweep(scenario, _settings(options), seeds=seeds, jobs=jobs)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(report.dumps(wall_time=wall_time) if as_json else format_sweep(report))
    if report.violations:
        _fail(f"{len(report.violations)} invariant(s) broken, first: {report.violations[0]}")


@simulate.command("compare")
@click.argument("scenario", type=click.Choice(sorted(SCENARIOS)))
@click.option(
    "--profiles", default=",".join(PROFILE_NAMES), show_default=True,
    help="Profiles to compare, e.g. lan,wan.",
)  # fmt: skip
@_run_options
def _compare(scenario: str, profiles: str, **options: Any) -> None:
    """Run SCENARIO (with its defaults) under each profile, Lifeguard on and off.

    Every combination runs, so --profile and --lifeguard are ignored.
    """
    chosen = _parse_list(profiles, str, "profiles")
    unknown = [p for p in chosen if p not in PROFILE_NAMES]
    if unknown or not chosen:
        raise click.BadParameter(
            f"profiles must be among {', '.join(PROFILE_NAMES)}", param_hint="--profiles"
        )
    _execute(options, SCENARIOS[scenario], profiles=chosen)
