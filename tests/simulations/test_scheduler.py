"""The virtual clock: order, ties, bounds."""

import pytest

from shoal.simulations.scheduler import Scheduler, SchedulerOverrun


def test_scheduler_runs_callbacks_in_time_order() -> None:
    scheduler = Scheduler()
    seen: list[tuple[float, str]] = []
    scheduler.call_at(2.0, lambda: seen.append((scheduler.now, "b")))
    scheduler.call_at(1.0, lambda: seen.append((scheduler.now, "a")))
    scheduler.call_later(3.0, lambda: seen.append((scheduler.now, "c")))
    scheduler.run_until(10.0)
    assert seen == [(1.0, "a"), (2.0, "b"), (3.0, "c")]
    assert scheduler.now == 10.0
    assert scheduler.steps == 3


def test_scheduler_ties_run_in_scheduling_order() -> None:
    scheduler = Scheduler()
    seen: list[int] = []
    for i in range(5):
        scheduler.call_at(1.0, seen.append, i)
    scheduler.run_until(1.0)
    assert seen == [0, 1, 2, 3, 4]


def test_scheduler_callbacks_may_schedule_more_within_the_deadline() -> None:
    scheduler = Scheduler()
    seen: list[float] = []

    def tick() -> None:
        seen.append(scheduler.now)
        scheduler.call_later(1.0, tick)

    scheduler.call_at(0.0, tick)
    scheduler.run_until(3.5)
    assert seen == [0.0, 1.0, 2.0, 3.0]
    assert scheduler.next_time() == 4.0


def test_scheduler_past_times_run_now_and_clock_never_goes_back() -> None:
    scheduler = Scheduler(now=5.0)
    seen: list[float] = []
    scheduler.call_at(1.0, lambda: seen.append(scheduler.now))
    scheduler.run_until(2.0)
    assert seen == []
    assert scheduler.now == 5.0
    scheduler.run_until(5.0)
    assert seen == [5.0]


def test_scheduler_overrun_raises_instead_of_hanging() -> None:
    scheduler = Scheduler(max_steps=100)

    def forever() -> None:
        scheduler.call_later(0.0, forever)

    scheduler.call_at(0.0, forever)
    with pytest.raises(SchedulerOverrun):
        scheduler.run_until(1.0)
