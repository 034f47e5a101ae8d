"""Member records and SWIM's incarnation precedence rules, as pure functions.

Rules (docs/membership.md §1.2-1.3; memberlist ``aliveNode``,
``suspectNode``, ``deadNode``):

1. Only a member itself raises its incarnation number. Everyone else just
   compares incarnations.
2. About **another** member: ``alive`` applies only with a strictly greater
   incarnation than known; ``suspect`` applies to an alive member with an
   incarnation greater or equal; ``dead`` (or ``left``) applies to an alive or
   suspect member with an incarnation greater or equal. Dead and left are final
   for their incarnation: only a newer ``alive`` brings the member back.
3. About **ourselves**: any ``suspect`` or ``dead`` (while we have not left),
   an ``alive`` with a newer incarnation, or an equal one with other
   metadata or address, is refuted by announcing ``alive`` with incarnation
   ``max(own + 1, accused + 1)``. A node never declares itself dead.
4. A name may move to another address only when its record is ``left``, or
   ``dead`` for at least ``dead_node_reclaim_time``; otherwise the second
   claimant is a conflict and is ignored. A push-pull from such a claimant
   (its join) is refused whole, and the claimant, seeing its name held
   alive elsewhere in the reply, merges nothing either.
5. An ``alive``, ``suspect`` or ``dead`` about a member we know (ourselves
   included) whose incarnation is more than `MAX_INCARNATION_STEP` beyond
   the one we hold is ignored. Incarnations only ever grow by one per
   refutation or update, so no honest message jumps that far; a forged one
   (``dead`` at 2**64 - 1, say) would otherwise push the member to the top
   of the range, where it could never refute again. Within the step, each
   forged message costs the member at most one step, so exhausting 64 bits
   takes 2**44 messages. The one exception is our own record in the reply
   to a push-pull we asked for: that is how a restarted member learns the
   incarnation its previous life reached (`shoal.membership.engine`).

Nothing here mutates anything: the engine asks these functions and applies the
answer, so every transition rule has one home and one table-driven test.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import msgspec

from shoal.membership.messages import Address

__all__ = [
    "MAX_INCARNATION",
    "Member",
    "MemberState",
    "address_change_allowed",
    "alive_applies",
    "dead_applies",
    "incarnation_in_reach",
    "refute_incarnation",
    "self_alive_needs_refute",
    "suspect_applies",
]


class MemberState(enum.StrEnum):
    """Where a member stands in our view. The string values appear in push-pull tables."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


class Member(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one member as this node sees it.

    Attributes:
        name: unique member name.
        address: where its gossip (UDP and stream) endpoint listens.
        state: alive, suspect, dead or left.
        incarnation: its incarnation number as we know it.
        meta: its metadata (string tags); read-only by convention.
        state_changed_at: the engine time of the last state change we saw.
    """

    name: str
    address: Address
    state: MemberState
    incarnation: int
    meta: Mapping[str, str]
    state_changed_at: float

    def __hash__(self) -> int:
        # ``meta`` is an unhashable mapping: hash the rest (equal members hash equal).
        return hash((self.name, self.address, self.state, self.incarnation, self.state_changed_at))


def alive_applies(known_incarnation: int, incoming_incarnation: int) -> bool:
    """Say whether an ``alive`` about another member replaces what we hold.

    Only a strictly newer incarnation does: an equal one is a replay (memberlist
    ignores it, so an old alive can never resurrect a member declared dead at
    the same incarnation).
    """
    return incoming_incarnation > known_incarnation


def suspect_applies(
    known_state: MemberState, known_incarnation: int, incoming_incarnation: int
) -> bool:
    """Say whether a ``suspect`` turns a member suspect (rule 2).

    An already-suspect member is not changed (the message may only confirm the
    running suspicion); dead and left members are final for their incarnation.
    """
    return known_state is MemberState.ALIVE and incoming_incarnation >= known_incarnation


def dead_applies(
    known_state: MemberState, known_incarnation: int, incoming_incarnation: int
) -> bool:
    """Say whether a ``dead`` (or leave) about another member applies (rule 2)."""
    return (
        known_state in (MemberState.ALIVE, MemberState.SUSPECT)
        and incoming_incarnation >= known_incarnation
    )


def self_alive_needs_refute(
    own_incarnation: int,
    own_address: Address,
    own_meta: Mapping[str, str],
    incoming_incarnation: int,
    incoming_address: Address,
    incoming_meta: Mapping[str, str],
) -> bool:
    """Say whether an ``alive`` about ourselves must be refuted (rule 3).

    An older one is stale and an identical one is our own echo; anything else
    (newer, e.g. remembered from before a restart, or equal but with other
    metadata or address) would let others hold a wrong record, so we announce
    a newer incarnation.
    """
    if incoming_incarnation < own_incarnation:
        return False
    if incoming_incarnation == own_incarnation:
        return incoming_address != own_address or dict(incoming_meta) != dict(own_meta)
    return True


#: Largest incarnation the wire format carries (an unsigned 64-bit integer).
MAX_INCARNATION = (1 << 64) - 1


#: Farthest an incarnation may jump beyond the one held (rule 5).
MAX_INCARNATION_STEP = 1 << 20


def incarnation_in_reach(known_incarnation: int, incoming_incarnation: int) -> bool:
    """Say whether a message's incarnation is close enough to be believed (rule 5)."""
    return incoming_incarnation - known_incarnation <= MAX_INCARNATION_STEP


def refute_incarnation(own_incarnation: int, accused_incarnation: int) -> int:
    """Return the incarnation that refutes an accusation (rule 3).

    Saturates at `MAX_INCARNATION`: a peer that accuses us at the largest
    incarnation cannot push us past what the wire can carry (it can only keep
    us from refuting, which any peer able to send gossip could do anyway).
    """
    return min(max(own_incarnation, accused_incarnation) + 1, MAX_INCARNATION)


def address_change_allowed(
    known_state: MemberState,
    known_state_changed_at: float,
    now: float,
    reclaim_time: float,
) -> bool:
    """Say whether a member's name may move to another address (rule 4)."""
    if known_state is MemberState.LEFT:
        return True
    return known_state is MemberState.DEAD and now - known_state_changed_at >= reclaim_time
