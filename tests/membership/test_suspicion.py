import math

import pytest

from shoal.membership.suspicion import (
    Suspicion,
    remaining_suspicion_time,
    suspicion_bounds,
    suspicion_timeout,
)


# memberlist suspicion_test.go, TestSuspicion_remainingSuspicionTime.
@pytest.mark.parametrize(
    ("confirmations", "k", "elapsed", "low", "high", "expected"),
    [
        (0, 3, 0.0, 2.0, 30.0, 30.0),
        (1, 3, 2.0, 2.0, 30.0, 14.0),
        (2, 3, 3.0, 2.0, 30.0, 4.81),
        (3, 3, 4.0, 2.0, 30.0, -2.0),
        (4, 3, 5.0, 2.0, 30.0, -3.0),
        (5, 3, 10.0, 2.0, 30.0, -8.0),
    ],
)
def test_remaining_suspicion_time_matches_memberlist_table(
    confirmations: int, k: int, elapsed: float, low: float, high: float, expected: float
) -> None:
    assert remaining_suspicion_time(confirmations, k, elapsed, low, high) == pytest.approx(
        expected, abs=1e-9
    )


def test_remaining_suspicion_time_without_expected_confirmations_is_min() -> None:
    assert remaining_suspicion_time(0, 0, 1.0, 4.0, 24.0) == pytest.approx(3.0)


# docs/membership.md §1.5 worked values (LAN: interval 1 s, mult 4, max mult 6).
@pytest.mark.parametrize(
    ("n", "low", "high"),
    [(1, 4.0, 24.0), (5, 4.0, 24.0), (10, 4.0, 24.0), (100, 8.0, 48.0), (1000, 12.0, 72.0)],
)
def test_suspicion_bounds_lan_values(n: int, low: float, high: float) -> None:
    _, got_low, got_high = suspicion_bounds(4, 6, n, 1.0)
    assert got_low == pytest.approx(low)
    assert got_high == pytest.approx(high)


# docs/membership.md §1.5 table, "after 1 confirmation" column (rounded there).
@pytest.mark.parametrize(("n", "expected"), [(5, 11.38), (100, 22.76), (1000, 34.14)])
def test_suspicion_after_one_confirmation(n: int, expected: float) -> None:
    k, low, high = suspicion_bounds(4, 6, n, 1.0)
    assert k == 2
    assert remaining_suspicion_time(1, k, 0.0, low, high) == pytest.approx(expected, abs=0.01)


def test_suspicion_expects_no_confirmations_in_tiny_cluster() -> None:
    assert suspicion_bounds(4, 6, 3, 1.0)[0] == 0
    assert suspicion_bounds(4, 6, 4, 1.0)[0] == 2


def test_suspicion_bounds_fixed_timeout_when_not_dynamic() -> None:
    assert suspicion_bounds(4, 6, 100, 1.0, dynamic=False)[0] == 0


def test_suspicion_timeout_scales_with_log10_of_members() -> None:
    assert suspicion_timeout(4, 100, 0.5) == pytest.approx(4.0)
    assert suspicion_timeout(4, 31, 1.0) == pytest.approx(
        4 * math.floor(math.log10(31) * 1000) / 1000
    )


def test_suspicion_confirmations_shorten_deadline() -> None:
    suspicion = Suspicion(accuser="a", started_at=10.0, k=2, low=4.0, high=24.0)
    assert suspicion.deadline == pytest.approx(34.0)
    assert suspicion.confirm("b")
    first = suspicion.deadline
    assert 14.0 < first < 34.0
    assert suspicion.confirm("c")
    assert suspicion.deadline == pytest.approx(14.0)


def test_suspicion_ignores_original_accuser_and_repeats() -> None:
    suspicion = Suspicion(accuser="a", started_at=0.0, k=2, low=4.0, high=24.0)
    assert not suspicion.confirm("a")
    assert suspicion.confirm("b")
    assert not suspicion.confirm("b")
    assert suspicion.confirmations == 1


def test_suspicion_counts_at_most_k_confirmations() -> None:
    suspicion = Suspicion(accuser="a", started_at=0.0, k=1, low=4.0, high=24.0)
    assert suspicion.confirm("b")
    assert not suspicion.confirm("c")
    assert suspicion.deadline == pytest.approx(4.0)
