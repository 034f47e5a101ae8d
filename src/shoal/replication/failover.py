"""What a member holding a copy of another owner's topic does when membership changes.

Rules:
1. The decision is a pure function of the holder's own membership view
   (each member's state), the owner, the topic and the topic's factor; no
   coordination, so every holder decides alone and, with the same view,
   all agree on who adopts.
2. **Adopt** when the owner was declared dead (or left gracefully, where
   a leave hands the topics over: ``leave_hands_over``) and the holder
   ranks first among the alive members in the topic's rendezvous order
   (`shoal.replication.placement.replicas`). The ranking ignores the
   owner, so the owner's death moves no replica: the first replica of the
   live owner is the one that adopts.
3. **Keep** while the owner is alive and the holder is one of its replicas;
   while the owner left gracefully and keeps its messages (it flushed them
   to its own disk and serves them when it returns: without
   ``leave_hands_over``); while the owner is dead but another alive member
   ranks first; and when the holder no longer knows the owner at all
   (reaped): a copy is never dropped on missing news.
4. **Drop** only when the owner is alive and the holder is outside its
   replica set: the owner keeps every message and catches the members of
   the set up itself. Known gap (docs/replication.md, "Not built yet"):
   the holder drops before the owner has caught the new member up, so an
   owner dying in that window loses what only it and this holder had.

Theory of operation:
    The decision is level-triggered: the shell (and the simulator) asks it
    for every held copy after *every* membership event, not only on the
    owner's failure. A holder that heard of the owner's death while a
    better-ranked replica still looked alive to it adopts as soon as it
    hears that one died too, instead of keeping a copy nobody serves.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from shoal.membership.state import MemberState
from shoal.replication.placement import replicas

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["HolderAction", "holder_action"]

_LIVE = (MemberState.ALIVE, MemberState.SUSPECT)


class HolderAction(enum.Enum):
    """What a holder does with its copy of one owner's topic."""

    KEEP = "keep"
    ADOPT = "adopt"
    DROP = "drop"


def holder_action(
    me: str,
    owner: str,
    topic: str,
    states: Mapping[str, MemberState],
    factor: int,
    *,
    leave_hands_over: bool = False,
) -> HolderAction:
    """Decide what ``me`` does with its copy of ``owner``'s ``topic``.

    Args:
        me: the holder's member name.
        owner: the topic's owner.
        topic: the topic name.
        states: the holder's view: every member it knows, with its state
            (the holder itself included, alive). Members that cannot hold
            copies (no broker) must be left out.
        factor: the topic's factor, as its owner announced it.
        leave_hands_over: a graceful leave hands the owner's topics to its
            replicas (the node does, `shoal.cluster.replication`: a final
            flush, then the owner drops them), so a left owner's copy is
            adopted as a dead one's. False models an owner that keeps
            them on its disk across the leave.

    Returns:
        `HolderAction.ADOPT`, `HolderAction.DROP` or `HolderAction.KEEP`
        (see the module rules).
    """
    owner_state = states.get(owner)
    if owner_state is None or (owner_state is MemberState.LEFT and not leave_hands_over):
        return HolderAction.KEEP
    alive = [name for name, state in states.items() if state in _LIVE]
    chosen = replicas(owner, topic, alive, max(factor, 2))
    if owner_state in (MemberState.DEAD, MemberState.LEFT):
        return HolderAction.ADOPT if chosen and chosen[0] == me else HolderAction.KEEP
    return HolderAction.KEEP if me in chosen else HolderAction.DROP
