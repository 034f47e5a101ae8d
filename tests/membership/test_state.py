import pytest

from shoal.membership.state import (
    MAX_INCARNATION,
    MAX_INCARNATION_STEP,
    MemberState,
    address_change_allowed,
    alive_applies,
    dead_applies,
    incarnation_in_reach,
    refute_incarnation,
    self_alive_needs_refute,
    suspect_applies,
)

A = MemberState.ALIVE
S = MemberState.SUSPECT
D = MemberState.DEAD
L = MemberState.LEFT


@pytest.mark.parametrize(
    ("known", "incoming", "applies"), [(3, 2, False), (3, 3, False), (3, 4, True)]
)
def test_alive_applies_only_to_newer_incarnation(known: int, incoming: int, applies: bool) -> None:
    assert alive_applies(known, incoming) is applies


@pytest.mark.parametrize(
    ("state", "known", "incoming", "applies"),
    [
        (A, 3, 2, False),
        (A, 3, 3, True),
        (A, 3, 4, True),
        (S, 3, 4, False),
        (D, 3, 4, False),
        (L, 3, 4, False),
    ],
)
def test_suspect_applies_to_alive_with_same_or_newer_incarnation(
    state: MemberState, known: int, incoming: int, applies: bool
) -> None:
    assert suspect_applies(state, known, incoming) is applies


@pytest.mark.parametrize(
    ("state", "known", "incoming", "applies"),
    [
        (A, 3, 2, False),
        (A, 3, 3, True),
        (S, 3, 3, True),
        (D, 3, 4, False),
        (L, 3, 3, False),
        (L, 3, 9, False),
    ],
)
def test_dead_applies_to_live_members_only(
    state: MemberState, known: int, incoming: int, applies: bool
) -> None:
    assert dead_applies(state, known, incoming) is applies


def test_refute_incarnation_exceeds_both() -> None:
    assert refute_incarnation(3, 7) == 8
    assert refute_incarnation(9, 7) == 10


def test_refute_incarnation_saturates_at_wire_maximum() -> None:
    assert refute_incarnation(1, MAX_INCARNATION) == MAX_INCARNATION


@pytest.mark.parametrize(
    ("known", "incoming", "believed"),
    [
        (1, 1, True),
        (1, 1 + MAX_INCARNATION_STEP, True),
        (1, 2 + MAX_INCARNATION_STEP, False),
        (1, MAX_INCARNATION, False),
        (MAX_INCARNATION - 5, MAX_INCARNATION, True),
        (9, 3, True),  # older: believed, then the precedence rules ignore it
    ],
)
def test_incarnation_in_reach(known: int, incoming: int, believed: bool) -> None:
    assert incarnation_in_reach(known, incoming) is believed


def test_self_alive_needs_refute_rules() -> None:
    addr = ("h", 1)
    assert not self_alive_needs_refute(5, addr, {}, 4, addr, {"x": "y"})
    assert not self_alive_needs_refute(5, addr, {"a": "b"}, 5, addr, {"a": "b"})
    assert self_alive_needs_refute(5, addr, {"a": "b"}, 5, addr, {"a": "c"})
    assert self_alive_needs_refute(5, addr, {}, 5, ("other", 1), {})
    assert self_alive_needs_refute(5, addr, {}, 6, addr, {})


def test_address_change_allowed_for_left_or_long_dead() -> None:
    assert address_change_allowed(L, 10.0, 10.0, 60.0)
    assert not address_change_allowed(A, 0.0, 100.0, 0.0)
    assert not address_change_allowed(S, 0.0, 100.0, 0.0)
    assert not address_change_allowed(D, 50.0, 100.0, 60.0)
    assert address_change_allowed(D, 40.0, 100.0, 60.0)
    assert not address_change_allowed(D, 0.0, 1e9, float("inf"))
