"""SWIM with Lifeguard as a pure state machine, fed packets and time.

`Membership` is the engine; `MembershipConfig` its tuning; the events it
raises are in `shoal.membership.events`; the wire format in
`shoal.membership.codec`.
"""

from shoal.membership.config import MembershipConfig
from shoal.membership.engine import (
    Membership,
    MembershipDelegate,
    MembershipStatistics,
    push_pull_scale,
)
from shoal.membership.events import (
    Event,
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MemberReaped,
    MemberRecovered,
    MemberSuspected,
    MemberUpdated,
    NameConflict,
)
from shoal.membership.messages import Address
from shoal.membership.state import Member, MemberState

__all__ = [
    "Address",
    "Event",
    "Member",
    "MemberFailed",
    "MemberJoined",
    "MemberLeft",
    "MemberReaped",
    "MemberRecovered",
    "MemberState",
    "MemberSuspected",
    "MemberUpdated",
    "Membership",
    "MembershipConfig",
    "MembershipDelegate",
    "MembershipStatistics",
    "NameConflict",
    "push_pull_scale",
]
