"""Hypothesis strategies for membership messages, shared by the codec and engine tests.

The codec's tests draw from wide domains (any text, any 64-bit
incarnation) to exercise encoding; the engine's tests draw from a handful
of member names and small incarnations so that messages collide and the
precedence rules are exercised. Both build the same message shapes here,
from the domains they pass in. Needs Hypothesis (the ``test`` extra).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from hypothesis import strategies as st

from shoal.membership.messages import (
    Ack,
    Alive,
    Dead,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    PushPullEntry,
    Suspect,
    UserMsg,
)
from shoal.membership.state import MemberState

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shoal.membership.messages import Address

__all__ = ["MessageStrategies", "message_strategies"]


@dataclasses.dataclass(frozen=True, slots=True)
class MessageStrategies:
    """One strategy per membership message type, and the usual mixes of them."""

    pings: st.SearchStrategy[Ping]
    ping_reqs: st.SearchStrategy[PingReq]
    acks: st.SearchStrategy[Ack]
    nacks: st.SearchStrategy[Nack]
    alives: st.SearchStrategy[Alive]
    suspects: st.SearchStrategy[Suspect]
    deads: st.SearchStrategy[Dead]
    users: st.SearchStrategy[UserMsg]
    entries: st.SearchStrategy[PushPullEntry]
    push_pulls: st.SearchStrategy[PushPull]
    #: Alive, suspect and dead: the messages that change what a node believes.
    gossip: st.SearchStrategy[Message]
    #: Everything that may travel in a datagram.
    packet_messages: st.SearchStrategy[Message]


def message_strategies(
    *,
    names: st.SearchStrategy[str],
    addresses: st.SearchStrategy[Address],
    incarnations: st.SearchStrategy[int],
    metas: st.SearchStrategy[Mapping[str, str]],
    app_states: st.SearchStrategy[bytes],
    user_data: st.SearchStrategy[bytes],
    max_members: int = 8,
) -> MessageStrategies:
    """Strategies for every message, drawing fields from the given domains."""
    seqs = st.integers(0, 2**32 - 1)
    alives = st.builds(Alive, incarnation=incarnations, name=names, address=addresses, meta=metas)
    suspects = st.builds(Suspect, incarnation=incarnations, name=names, source=names)
    deads = st.builds(Dead, incarnation=incarnations, name=names, source=names)
    entries = st.builds(
        PushPullEntry,
        name=names,
        address=addresses,
        incarnation=incarnations,
        state=st.sampled_from(MemberState),
        meta=metas,
    )
    pings = st.builds(Ping, seq=seqs, target=names, source=names)
    ping_reqs = st.builds(
        PingReq, seq=seqs, target=names, target_address=addresses, nack=st.booleans(), source=names
    )
    acks = st.builds(Ack, seq=seqs)
    nacks = st.builds(Nack, seq=seqs)
    users = st.builds(UserMsg, key=names, data=user_data)
    gossip: st.SearchStrategy[Message] = st.one_of(alives, suspects, deads)
    return MessageStrategies(
        pings=pings,
        ping_reqs=ping_reqs,
        acks=acks,
        nacks=nacks,
        alives=alives,
        suspects=suspects,
        deads=deads,
        users=users,
        entries=entries,
        push_pulls=st.builds(
            PushPull,
            source=names,
            join=st.booleans(),
            reply=st.booleans(),
            members=st.lists(entries, max_size=max_members, unique_by=lambda e: e.name).map(tuple),
            app_state=app_states,
        ),
        gossip=gossip,
        packet_messages=st.one_of(pings, ping_reqs, acks, nacks, alives, suspects, deads, users),
    )
