"""The gossip protocol's messages, as frozen `msgspec.Struct` types, and their wire numbers.

Rules:

1. `MessageType` values are on the wire: **only append** to the enum, never
   renumber or reuse a value, or nodes of different versions will misread each
   other.
2. Messages are plain data with no behaviour; `shoal.membership.codec` turns
   them into bytes and back, and validates every field of a decoded message.
3. Names follow SWIM and memberlist (docs/membership.md §1.1): ``Ping``,
   ``PingReq`` (memberlist's indirect ping), ``Ack``, ``Nack``, ``Alive``,
   ``Suspect``, ``Dead``, ``PushPull``; ``UserMsg`` carries application data.

Which transport carries what:

* packets (best effort, several messages per datagram): ``Ping``, ``PingReq``,
  ``Ack``, ``Nack``, ``Alive``, ``Suspect``, ``Dead``, ``UserMsg``;
* stream requests (reliable, one message, answered by one reply): ``Ping``
  (the TCP fallback probe, answered by ``Ack``), ``PushPull`` (answered by a
  ``PushPull``), ``UserMsg`` (an application message too large for a packet,
  answered by nothing).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

import msgspec

if TYPE_CHECKING:
    from shoal.membership.state import MemberState

__all__ = [
    "Ack",
    "Address",
    "Alive",
    "Dead",
    "Message",
    "MessageType",
    "Nack",
    "Ping",
    "PingReq",
    "PushPull",
    "PushPullEntry",
    "Refused",
    "Suspect",
    "UserMsg",
]

#: A transport address: (host, port). Hosts are opaque strings to the engine.
Address = tuple[str, int]


class MessageType(enum.IntEnum):
    """Wire number of each message type. On the wire: ONLY APPEND TO THIS ENUM."""

    PING = 0
    PING_REQ = 1
    ACK = 2
    NACK = 3
    ALIVE = 4
    SUSPECT = 5
    DEAD = 6
    PUSH_PULL = 7
    USER = 8
    REFUSED = 9


class Ping(msgspec.Struct, frozen=True, kw_only=True):
    """A probe; the receiver answers with ``Ack(seq)`` if it is ``target``.

    Attributes:
        seq: sequence number chosen by the prober, echoed in the ack.
        target: name of the member the prober means to reach; a different node
            now living at that address (a restart under another name) ignores it.
        source: name of the prober.
    """

    seq: int
    target: str
    source: str


class PingReq(msgspec.Struct, frozen=True, kw_only=True):
    """Ask the receiver to probe ``target`` on the sender's behalf (SWIM ping-req).

    Attributes:
        seq: the original prober's sequence number; acks and nacks relayed back
            carry it.
        target: name of the member to probe.
        target_address: where to probe it.
        nack: whether the prober wants a ``Nack`` if the target stays silent
            for a probe timeout (Lifeguard).
        source: name of the original prober.
    """

    seq: int
    target: str
    target_address: Address
    nack: bool
    source: str


class Ack(msgspec.Struct, frozen=True, kw_only=True):
    """Answer to a ``Ping``, or relayed answer to a ``PingReq``."""

    seq: int


class Nack(msgspec.Struct, frozen=True, kw_only=True):
    """An indirect helper's report that the target did not answer in time."""

    seq: int


class Alive(msgspec.Struct, frozen=True, kw_only=True):
    """Member ``name`` is alive at ``address`` with this incarnation and metadata."""

    incarnation: int
    name: str
    address: Address
    meta: Mapping[str, str]


class Suspect(msgspec.Struct, frozen=True, kw_only=True):
    """``source`` suspects member ``name`` at this incarnation."""

    incarnation: int
    name: str
    source: str


class Refused(msgspec.Struct, frozen=True, kw_only=True):
    """``source``'s probe of member ``name`` was refused by the member's host.

    A suspicion with evidence: a host that answers a probe with an ICMP port
    unreachable, or refuses the TCP fallback, is up while the member's process
    is gone (crash, OOM kill, deploy). Receivers treat it as a ``Suspect``
    from ``source`` and probe the member themselves; once refusals from
    ``MembershipConfig.refusal_confirmations`` distinct members agree, the
    member is declared dead without waiting out the suspicion timeout.
    """

    incarnation: int
    name: str
    source: str


class Dead(msgspec.Struct, frozen=True, kw_only=True):
    """``source`` declares member ``name`` dead; ``source == name`` means it left."""

    incarnation: int
    name: str
    source: str


class PushPullEntry(NamedTuple):
    """One member record of a push-pull table.

    A named tuple rather than a struct like the messages: a table carries a
    record per member, thousands in a large cluster, on every push-pull.

    Attributes:
        name: member name.
        address: member address.
        incarnation: the incarnation the sender holds.
        state: the state the sender holds.
        meta: the member's metadata.
    """

    name: str
    address: Address
    incarnation: int
    state: MemberState
    meta: Mapping[str, str]


class PushPull(msgspec.Struct, frozen=True, kw_only=True):
    """A full-state exchange: the sender's member table and application state.

    Attributes:
        source: name of the sender.
        join: the sender is joining through this exchange (a seed or a
            reconnect attempt), not running its periodic anti-entropy.
        reply: this is the answer to a push-pull request.
        members: every member record the sender holds, itself included.
        app_state: the application delegate's ``local_state()``.
    """

    source: str
    join: bool
    reply: bool
    members: tuple[PushPullEntry, ...]
    app_state: bytes


class UserMsg(msgspec.Struct, frozen=True, kw_only=True):
    """An application broadcast; a newer one with the same ``key`` supersedes it."""

    key: str
    data: bytes


Message = Ping | PingReq | Ack | Nack | Alive | Suspect | Dead | PushPull | UserMsg | Refused
