"""What a holder does with its copy: adopt, keep or drop, from its own view."""

from __future__ import annotations

from shoal.membership.state import MemberState
from shoal.replication.failover import HolderAction, holder_action
from shoal.replication.placement import rank

ALIVE = MemberState.ALIVE
DEAD = MemberState.DEAD
LEFT = MemberState.LEFT
SUSPECT = MemberState.SUSPECT

MEMBERS = [f"node-{i}" for i in range(8)]
OWNER = "node-0"
TOPIC = "orders"
ORDER = rank(OWNER, TOPIC, MEMBERS)  # the replicas' order, best first


def states_with(changes: dict[str, MemberState]) -> dict[str, MemberState]:
    out = dict.fromkeys(MEMBERS, ALIVE)
    out.update(changes)
    return out


def test_first_replica_adopts_when_the_owner_is_dead() -> None:
    states = states_with({OWNER: DEAD})
    assert holder_action(ORDER[0], OWNER, TOPIC, states, 3) is HolderAction.ADOPT


def test_second_replica_keeps_while_the_first_is_alive() -> None:
    states = states_with({OWNER: DEAD})
    assert holder_action(ORDER[1], OWNER, TOPIC, states, 3) is HolderAction.KEEP


def test_second_replica_adopts_once_it_hears_the_first_died_too() -> None:
    # Level-triggered: the news that decides may be the first replica's
    # death, heard after the owner's.
    states = states_with({OWNER: DEAD, ORDER[0]: DEAD})
    assert holder_action(ORDER[1], OWNER, TOPIC, states, 3) is HolderAction.ADOPT


def test_suspect_first_replica_still_ranks_first() -> None:
    states = states_with({OWNER: DEAD, ORDER[0]: SUSPECT})
    assert holder_action(ORDER[1], OWNER, TOPIC, states, 3) is HolderAction.KEEP


def test_copy_of_a_gracefully_left_owner_is_kept() -> None:
    states = states_with({OWNER: LEFT})
    assert holder_action(ORDER[0], OWNER, TOPIC, states, 2) is HolderAction.KEEP


def test_copy_of_an_owner_whose_leave_hands_over_is_adopted_by_the_first_replica() -> None:
    states = states_with({OWNER: LEFT})
    first = holder_action(ORDER[0], OWNER, TOPIC, states, 3, leave_hands_over=True)
    second = holder_action(ORDER[1], OWNER, TOPIC, states, 3, leave_hands_over=True)
    assert (first, second) == (HolderAction.ADOPT, HolderAction.KEEP)


def test_copy_of_a_forgotten_owner_is_kept() -> None:
    states = states_with({})
    del states[OWNER]
    assert holder_action(ORDER[0], OWNER, TOPIC, states, 2) is HolderAction.KEEP


def test_replica_of_a_live_owner_keeps_its_copy() -> None:
    assert holder_action(ORDER[0], OWNER, TOPIC, states_with({}), 2) is HolderAction.KEEP


def test_member_outside_a_live_owners_set_drops_its_copy() -> None:
    states = states_with({})
    assert holder_action(ORDER[1], OWNER, TOPIC, states, 2) is HolderAction.DROP
    assert holder_action(ORDER[1], OWNER, TOPIC, states, 3) is HolderAction.KEEP


def test_factor_below_two_counts_as_two() -> None:
    states = states_with({OWNER: DEAD})
    assert holder_action(ORDER[0], OWNER, TOPIC, states, 1) is HolderAction.ADOPT
