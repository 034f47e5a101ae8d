"""What the engine tells its driver about other members.

Events are frozen, keyword-only `msgspec.Struct` types; never subclass them, and
dispatch on ``type(event)`` (or ``match``). Each carries a `Member` snapshot
taken when the event happened. The engine queues them in order; the driver
drains them with ``Membership.events()``.

Which transition raises which event:

================================  ====================
transition                        event
================================  ====================
unknown -> alive                  `MemberJoined`
dead or left -> alive             `MemberJoined` (again)
suspect -> alive (refuted)        `MemberRecovered`
alive, new address or metadata    `MemberUpdated`
alive -> suspect                  `MemberSuspected`
alive or suspect -> dead          `MemberFailed`
alive or suspect -> left          `MemberLeft`
dead or left -> forgotten         `MemberReaped`
a second address claims a name    `NameConflict`
================================  ====================

A recovered member whose metadata also changed gives `MemberRecovered` only;
its ``member`` carries the new metadata.
"""

from __future__ import annotations

import msgspec

from shoal.membership.messages import Address
from shoal.membership.state import Member

__all__ = [
    "Event",
    "MemberFailed",
    "MemberJoined",
    "MemberLeft",
    "MemberReaped",
    "MemberRecovered",
    "MemberSuspected",
    "MemberUpdated",
    "NameConflict",
]


class MemberJoined(msgspec.Struct, frozen=True, kw_only=True):
    """A member became alive: first seen, or back after being dead or having left."""

    member: Member


class MemberUpdated(msgspec.Struct, frozen=True, kw_only=True):
    """An alive member announced a new address or new metadata."""

    member: Member


class MemberSuspected(msgspec.Struct, frozen=True, kw_only=True):
    """A member is suspected of having failed; it may still refute.

    Attributes:
        member: the member, now suspect.
        accuser: the member whose suspicion we adopted (ourselves after a failed
            probe).
    """

    member: Member
    accuser: str


class MemberRecovered(msgspec.Struct, frozen=True, kw_only=True):
    """A suspect member refuted the suspicion and is alive again."""

    member: Member


class MemberFailed(msgspec.Struct, frozen=True, kw_only=True):
    """A member was declared dead.

    Attributes:
        member: the member, now dead.
        declared_by: the member whose suspicion timed out first (ourselves when
            our own timer fired).
    """

    member: Member
    declared_by: str


class MemberLeft(msgspec.Struct, frozen=True, kw_only=True):
    """A member left the cluster gracefully."""

    member: Member


class MemberReaped(msgspec.Struct, frozen=True, kw_only=True):
    """A dead or left member was forgotten after ``dead_retention``."""

    member: Member


class NameConflict(msgspec.Struct, frozen=True, kw_only=True):
    """A node at another address claimed the name of a member we still hold.

    The claim was ignored (docs/membership.md §1.3). For our own name the
    engine refutes instead, and this event tells the operator two nodes share
    a name.

    A push-pull from a node claiming a name held at another address is
    refused whole (``refused``): the claimant is not merged, and learns from
    the reply that it was refused, which raises this event on its side too.

    Attributes:
        name: the contested name.
        known_address: the address we keep for it (on a refused claimant's
            side, the address of the member holding the name).
        claimed_address: the address of the rejected claim (ours, on a
            refused claimant's side).
        refused: the claimant's push-pull (a join, typically) was refused,
            rather than one alive message ignored or refuted.
    """

    name: str
    known_address: Address
    claimed_address: Address
    refused: bool = False


Event = (
    MemberJoined
    | MemberUpdated
    | MemberSuspected
    | MemberRecovered
    | MemberFailed
    | MemberLeft
    | MemberReaped
    | NameConflict
)
