"""Neighbour watch streams: the socket side of `shoal.membership.watch`.

Each member holds one long-lived TCP stream on the gossip port to each of
the members `Membership.watch_targets` names (its successors on a hashed
ring of the live members). Nothing flows on it in steady state; it exists so
that the kernel of the watched member's host tells us the moment its process
dies: a dead process's connections are closed at once (FIN, or RST), within a
loopback or LAN round trip. That is how nsqlookupd drops a SIGKILLed nsqd's
producers in milliseconds, and here it costs ``watch_successors`` idle
connections per member.

The protocol, after the driver's one-byte tag message (``WATCH_TAG``):

* the watched side answers ``HELLO`` once it has taken the stream (so a
  stream refused for want of a slot, or cut before it was set up, is not
  mistaken for a crash), then sends nothing;
* when the watched member leaves gracefully it sends ``GOODBYE`` before its
  process stops, so the close that follows is not evidence;
* the watcher sends nothing after the tag; when the ring changes it simply
  closes the stream, which the watched side takes as the end of the watch.

A stream that ends without ``GOODBYE`` after ``HELLO`` is reported through
``closed`` (the driver hands it to `Membership.watch_closed`, which weighs
it as a refused probe: suspect at once, dead only when another member's
probe is refused too). A refused dial is reported through ``refused``, as
any refused connection is. A stalled process (SIGSTOP) keeps its
connections open and a vanished host sends nothing, so neither ever looks
like a crash; both are left to SWIM's timing.

A watch that failed for any other reason (dial timeout, a stream that did
not authenticate, no slot at the other end) is dialled again every
``retry_interval`` while the member stays on the ring. So is one that ended
with evidence: a crashed member leaves the ring (and its watch task ends)
long before that, while one that was alive after all (a connection reset by
something in between) refutes the suspicion and is watched again. A watch
that ended with a goodbye waits for the member to leave the ring.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Final, TypeAlias

import msgspec
import trio

from shoal.cluster.refusals import is_refused
from shoal.errors import RemoteProtocolError

if TYPE_CHECKING:
    from shoal.cluster.transport import MessageStream
    from shoal.membership import Address

__all__ = ["GOODBYE", "HELLO", "WATCH_TAG", "NeighbourWatch", "WatchStatistics"]

log = logging.getLogger(__name__)

#: The stream tag of a watch stream ("W").
WATCH_TAG: Final = 0x57
#: The watched side's first message: the watch is set up.
HELLO: Final = b"watching"
#: The watched side's last message before a graceful leave.
GOODBYE: Final = b"leaving"

#: Opens a tagged message stream (`MembershipDriver.open_stream`).
Dial: TypeAlias = Callable[["Address", int], AbstractAsyncContextManager["MessageStream"]]


class _Outcome(enum.Enum):
    EVIDENCE = "evidence"  # closed without a goodbye, or refused: reported
    GOODBYE = "goodbye"  # the member is leaving gracefully
    RETRY = "retry"  # no watch was set up; dial again later


class WatchStatistics(msgspec.Struct, frozen=True, eq=False):
    """A snapshot of the watch counters (monotonic, except the two gauges).

    Attributes:
        established: watch streams set up (``HELLO`` received).
        closures: watch streams that ended without a goodbye (reported).
        goodbyes: watch streams ended by a graceful leave.
        failures: dials or set-ups that failed and were retried.
        refused: watched members that refused the watch dial (reported).
        busy: inbound watch streams turned away for want of a slot.
        watching: outbound watches currently wanted.
        watchers: inbound watch streams currently held.
    """

    established: int
    closures: int
    goodbyes: int
    failures: int
    refused: int
    busy: int
    watching: int
    watchers: int


class _Counters(msgspec.Struct, eq=False):
    established: int = 0
    closures: int = 0
    goodbyes: int = 0
    failures: int = 0
    refused: int = 0
    busy: int = 0


class NeighbourWatch:
    """Holds this member's watch streams and serves those of its watchers.

    The driver calls `update` with `Membership.watch_targets` after every
    input that produced events, `leave` when a graceful leave starts, runs
    `run` in its nursery, and registers `serve` as the ``WATCH_TAG``
    handler (one that outlives ``stream_timeout``).

    Args:
        dial: opens a tagged stream to an address.
        closed: called with ``(name, address)`` when a watch stream ends
            without a goodbye.
        refused: called with the address when a watch dial is refused.
        setup_timeout: how long a dial plus the ``HELLO`` may take.
        retry_interval: pause before dialling a failed watch again.
        max_watchers: inbound watch streams held at once; more are closed
            before ``HELLO`` (each member expects about ``watch_successors``).
    """

    def __init__(
        self,
        *,
        dial: Dial,
        closed: Callable[[str, Address], None],
        refused: Callable[[Address], None],
        setup_timeout: float,
        retry_interval: float,
        max_watchers: int = 16,
    ) -> None:
        self._dial = dial
        self._closed = closed
        self._refused = refused
        self._setup_timeout = setup_timeout
        self._retry_interval = retry_interval
        self._max_watchers = max_watchers
        self._wanted: frozenset[tuple[str, Address]] = frozenset()
        self._watches: dict[tuple[str, Address], trio.CancelScope] = {}
        self._changed = trio.Event()
        self._leaving = trio.Event()
        self._watchers = 0
        self._counters = _Counters()

    def statistics(self) -> WatchStatistics:
        """Return a snapshot of the counters."""
        c = self._counters
        return WatchStatistics(
            established=c.established,
            closures=c.closures,
            goodbyes=c.goodbyes,
            failures=c.failures,
            refused=c.refused,
            busy=c.busy,
            watching=len(self._wanted),
            watchers=self._watchers,
        )

    def update(self, targets: Sequence[tuple[str, Address]]) -> None:
        """Set the members to watch; `run` dials new ones and hangs up on the rest."""
        wanted = frozenset(targets)
        if wanted != self._wanted:
            self._wanted = wanted
            self._changed.set()

    def leave(self) -> None:
        """Say goodbye on every inbound watch stream (now and from now on)."""
        self._leaving.set()

    async def run(self) -> None:
        """Keep one watch task per wanted member until cancelled."""
        async with trio.open_nursery() as nursery:
            while True:
                await self._changed.wait()
                self._changed = trio.Event()
                wanted = self._wanted
                for key in [key for key in self._watches if key not in wanted]:
                    self._watches.pop(key).cancel()
                for key in wanted:
                    if key not in self._watches:
                        scope = trio.CancelScope()
                        self._watches[key] = scope
                        nursery.start_soon(self._watch, key, scope)

    async def _watch(self, key: tuple[str, Address], scope: trio.CancelScope) -> None:
        name, address = key
        with scope:
            while True:
                outcome = await self._watch_once(name, address)
                if outcome is _Outcome.GOODBYE:
                    await trio.sleep_forever()  # until it leaves the ring
                if outcome is _Outcome.RETRY:
                    self._counters.failures += 1
                # After evidence the member normally leaves the ring (and this
                # task is cancelled) well within the pause; if it refuted
                # instead (a stray reset), the watch is set up again.
                await trio.sleep(self._retry_interval)

    async def _watch_once(self, name: str, address: Address) -> _Outcome:
        """Dial, wait for ``HELLO``, then wait for the stream to end."""
        async with contextlib.AsyncExitStack() as stack:
            try:
                with trio.fail_after(self._setup_timeout):
                    stream = await stack.enter_async_context(self._dial(address, WATCH_TAG))
                    first = await stream.receive_message()
            except (OSError, trio.TooSlowError) as exc:
                if isinstance(exc, OSError) and is_refused(exc):
                    self._counters.refused += 1
                    self._refused(address)
                    return _Outcome.EVIDENCE
                log.debug("gossip: watch of %s failed: %s", name, exc)
                return _Outcome.RETRY
            except (trio.EndOfChannel, trio.BrokenResourceError, RemoteProtocolError):
                return _Outcome.RETRY  # turned away or cut before the watch was set up
            if first != HELLO:
                return _Outcome.RETRY
            self._counters.established += 1
            try:
                last: bytes | None = await stream.receive_message()
            except RemoteProtocolError as exc:  # a StreamError
                if getattr(exc, "reason", None) != "truncated":
                    return _Outcome.RETRY  # garbage, not a crash
                last = None  # cut inside a message: the process is gone
            except (trio.EndOfChannel, trio.BrokenResourceError):
                last = None
            if last == GOODBYE:
                self._counters.goodbyes += 1
                return _Outcome.GOODBYE
            if last is not None:
                return _Outcome.RETRY  # not our protocol
            self._counters.closures += 1
            log.info("gossip: watch stream to %s closed: its process is gone", name)
            self._closed(name, address)
            return _Outcome.EVIDENCE

    async def serve(self, stream: MessageStream, peer: Address) -> None:
        """Serve one watcher: ``HELLO``, then silence until it hangs up or we leave."""
        if self._watchers >= self._max_watchers:
            self._counters.busy += 1
            return  # closed before HELLO: the watcher retries, and suspects no one
        self._watchers += 1
        try:
            try:
                await stream.send_message(HELLO)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            async with trio.open_nursery() as nursery:
                # Started after HELLO: one sender at a time on the stream.
                nursery.start_soon(self._say_goodbye, stream)
                # The watcher sends nothing: this returns when it hangs up
                # (or breaks the protocol), holding no inbound budget while
                # it waits, since a watch stream has no deadline.
                await stream.wait_silence_ends()
                nursery.cancel_scope.cancel()
        finally:
            self._watchers -= 1

    async def _say_goodbye(self, stream: MessageStream) -> None:
        await self._leaving.wait()
        try:
            await stream.send_message(GOODBYE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        await trio.sleep_forever()  # hold the stream until the process stops
