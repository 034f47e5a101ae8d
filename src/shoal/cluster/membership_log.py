"""Membership in the operator's log: one line per transition, rate-limited warnings.

The engine reports transitions as events (`shoal.membership.events`) and the
driver reports who sent what it could not authenticate and which seed failed
a join (`MembershipDriver.add_notice_listener`); this module turns both into
log lines, so the core stays free of logging and the node wires one
subscriber.

Levels: a transition an operator acts on (joined, suspect, refuted, failed,
left) is INFO; updates and reaping are DEBUG, so ``--log-level debug`` shows
them. A name conflict is an ERROR on each node involved, and a peer whose
gossip fails authentication or a seed that fails a join is a WARNING. Those
three repeat for as long as their cause lasts (a node with the wrong key
sends every probe period; a refused seed is retried every
``reconnect_interval``), so each is written at most once per
`REPEAT_INTERVAL` per (kind, peer), with the count of lines held back.

Every line carries ``shoal`` fields (event, member, address) as the record's
``shoal`` attribute, which ``--log-format json`` writes as JSON fields.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from shoal.membership.events import (
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MemberReaped,
    MemberRecovered,
    MemberSuspected,
    MemberUpdated,
    NameConflict,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from shoal.membership import Address, Event

__all__ = ["REPEAT_INTERVAL", "MembershipLog", "RateLimiter"]

#: Seconds between two lines about the same (kind, peer) of a repeating problem.
REPEAT_INTERVAL: Final = 60.0


#: Event type -> (level, ``event`` field, line); the line is formatted with the
#: member's name, address and incarnation, and ``by`` (accuser, declarer).
_TRANSITIONS: Final[dict[type, tuple[int, str, str]]] = {
    MemberJoined: (
        logging.INFO,
        "joined",
        "{name} joined at {address} (incarnation {incarnation})",
    ),
    MemberSuspected: (
        logging.INFO,
        "suspect",
        "{name} at {address} is suspect (accused by {by}, incarnation {incarnation})",
    ),
    MemberRecovered: (
        logging.INFO,
        "refuted",
        "{name} refuted the suspicion and is alive (incarnation {incarnation})",
    ),
    MemberFailed: (logging.INFO, "dead", "{name} at {address} is dead (declared by {by})"),
    MemberLeft: (logging.INFO, "left", "{name} at {address} left the cluster"),
    MemberUpdated: (
        logging.DEBUG,
        "updated",
        "{name} updated its address or metadata ({address}, incarnation {incarnation})",
    ),
    MemberReaped: (logging.DEBUG, "reaped", "{name} forgotten after its dead retention"),
}


def _addr(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class RateLimiter:
    """At most one pass per key per ``interval``; counts what it held back.

    Args:
        interval: seconds between two passes of the same key.
        max_keys: keys remembered at most; beyond it the oldest are forgotten
            (so a flood of spoofed source addresses cannot grow it).
    """

    def __init__(self, interval: float, *, max_keys: int = 1024) -> None:
        self.interval = interval
        self._max_keys = max_keys
        self._last: dict[object, tuple[float, int]] = {}

    def allow(self, key: object, now: float) -> int | None:
        """None to hold this one back, else how many were held back since the last pass."""
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval:
            self._last[key] = (last[0], last[1] + 1)
            return None
        self._last.pop(key, None)
        if len(self._last) >= self._max_keys:
            del self._last[next(iter(self._last))]
        self._last[key] = (now, 0)
        return 0 if last is None else last[1]


class MembershipLog:
    """Writes membership events and driver notices to ``logger``.

    Args:
        name: this node's member name (to tell our own conflicts apart).
        clock: seconds, for rate limiting.
        logger: where lines go.
        repeat_interval: see `REPEAT_INTERVAL`.
    """

    def __init__(
        self,
        name: str,
        *,
        clock: Callable[[], float],
        logger: logging.Logger | None = None,
        repeat_interval: float = REPEAT_INTERVAL,
    ) -> None:
        self._name = name
        self._clock = clock
        self._log = logger if logger is not None else logging.getLogger("shoal.membership")
        self._limiter = RateLimiter(repeat_interval)
        self._address: Address | None = None

    def _emit(self, level: int, fields: dict[str, Any], message: str, *args: object) -> None:
        if self._log.isEnabledFor(level):
            self._log.log(level, "MEMBERSHIP: " + message, *args, extra={"shoal": fields})

    def _limited(
        self, key: tuple[str, ...], level: int, fields: dict[str, Any], message: str, *args: object
    ) -> None:
        held = self._limiter.allow(key, self._clock())
        if held is None:
            return
        if held:
            message += " (%d more since the last line)"
            args = (*args, held)
        self._emit(level, fields, message, *args)

    def on_event(self, event: Event) -> None:
        """Log one engine event (a driver listener)."""
        if isinstance(event, NameConflict):
            self._conflict(event)
            return
        level, tag, template = _TRANSITIONS[type(event)]
        if not self._log.isEnabledFor(level):
            return
        m = event.member
        text = template.format(
            name=m.name,
            address=_addr(m.address),
            incarnation=m.incarnation,
            by=getattr(event, "accuser", None) or getattr(event, "declared_by", ""),
        )
        self._emit(level, _fields(tag, m.name, m.address, m.incarnation), "%s", text)

    def _conflict(self, event: NameConflict) -> None:
        fields = {
            "event": "name_conflict",
            "member": event.name,
            "address": _addr(event.known_address),
            "claimed_by": _addr(event.claimed_address),
        }
        key = ("conflict", event.name, _addr(event.claimed_address))
        error = logging.ERROR
        if event.refused and event.name == self._name and event.claimed_address == self._address:
            self._limited(
                key,
                error,
                fields,
                "name conflict: the name %r is held by the live member at %s; "
                "this node (%s) was refused and stays out of the cluster: "
                "give it another --node-name",
                event.name,
                _addr(event.known_address),
                _addr(event.claimed_address),
            )
            return
        if event.refused:
            self._limited(
                key,
                error,
                fields,
                "name conflict: refused %s claiming the name %r of the live member at %s",
                _addr(event.claimed_address),
                event.name,
                _addr(event.known_address),
            )
        else:
            self._limited(
                key,
                error,
                fields,
                "name conflict: %s claims the name %r of the member at %s; ignored",
                _addr(event.claimed_address),
                event.name,
                _addr(event.known_address),
            )

    def set_address(self, address: Address) -> None:
        """Our advertised gossip address, known once the driver is bound.

        A refused claimant's `NameConflict` names our own address as the
        claimed one; that is how we tell "we were refused" from "we refused".
        """
        self._address = address

    def on_notice(self, kind: str, peer: Address, detail: str) -> None:
        """Log one driver notice (see `MembershipDriver.add_notice_listener`)."""
        fields = {"event": kind, "address": _addr(peer), "detail": detail}
        if kind == "decrypt":
            self._limited(
                (kind, _addr(peer)),
                logging.WARNING,
                fields,
                "gossip from %s fails authentication (%s dropped): is its --gossip-key different?",
                _addr(peer),
                detail,
            )
        elif kind == "seed":
            self._limited(
                (kind, _addr(peer)),
                logging.WARNING,
                fields,
                "seed %s failed the join (%s); retrying",
                _addr(peer),
                detail,
            )


def _fields(event: str, name: str, address: Address, incarnation: int) -> dict[str, Any]:
    return {"event": event, "member": name, "address": _addr(address), "incarnation": incarnation}
