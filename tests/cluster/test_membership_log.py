"""Membership events and driver notices as log lines: levels, text, rate limits, JSON."""

from __future__ import annotations

import json
import logging

import pytest

from shoal.cli.logs import JsonFormatter, NsqFormatter
from shoal.cluster.membership_log import MembershipLog, RateLimiter
from shoal.membership import (
    Member,
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MemberReaped,
    MemberRecovered,
    MemberState,
    MemberSuspected,
    NameConflict,
)

ME = ("10.0.0.1", 4160)
REAL = ("10.0.0.2", 4160)
OTHER = ("10.0.0.9", 4160)


def member(state: MemberState = MemberState.ALIVE) -> Member:
    return Member(name="b", address=REAL, state=state, incarnation=3, meta={},
                  state_changed_at=0.0)  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(clock: Clock) -> MembershipLog:
    out = MembershipLog("a", clock=clock, logger=logging.getLogger("membership_log_test"))
    out.set_address(ME)
    return out


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records]


def test_one_line_per_transition(log: MembershipLog, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="membership_log_test")
    log.on_event(MemberJoined(member=member()))
    log.on_event(MemberSuspected(member=member(MemberState.SUSPECT), accuser="c"))
    log.on_event(MemberRecovered(member=member()))
    log.on_event(MemberFailed(member=member(MemberState.DEAD), declared_by="c"))
    log.on_event(MemberLeft(member=member(MemberState.LEFT)))
    log.on_event(MemberReaped(member=member(MemberState.LEFT)))
    info = logging.INFO
    assert lines(caplog) == [
        (info, "MEMBERSHIP: b joined at 10.0.0.2:4160 (incarnation 3)"),
        (info, "MEMBERSHIP: b at 10.0.0.2:4160 is suspect (accused by c, incarnation 3)"),
        (info, "MEMBERSHIP: b refuted the suspicion and is alive (incarnation 3)"),
        (info, "MEMBERSHIP: b at 10.0.0.2:4160 is dead (declared by c)"),
        (info, "MEMBERSHIP: b at 10.0.0.2:4160 left the cluster"),
        (logging.DEBUG, "MEMBERSHIP: b forgotten after its dead retention"),
    ]


def test_name_conflicts_name_both_sides(
    log: MembershipLog, caplog: pytest.LogCaptureFixture
) -> None:
    log.on_event(NameConflict(name="b", known_address=REAL, claimed_address=OTHER, refused=True))
    log.on_event(NameConflict(name="a", known_address=REAL, claimed_address=ME, refused=True))
    assert lines(caplog) == [
        (logging.ERROR, "MEMBERSHIP: name conflict: refused 10.0.0.9:4160 claiming the name "
                        "'b' of the live member at 10.0.0.2:4160"),
        (logging.ERROR, "MEMBERSHIP: name conflict: the name 'a' is held by the live member at "
                        "10.0.0.2:4160; this node (10.0.0.1:4160) was refused and stays out of "
                        "the cluster: give it another --node-name"),
    ]  # fmt: skip


def test_repeats_are_rate_limited_per_peer(
    log: MembershipLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(5):
        log.on_notice("decrypt", OTHER, "datagram")
    log.on_notice("decrypt", REAL, "stream")
    clock.now = 60.0
    log.on_notice("decrypt", OTHER, "datagram")
    got = lines(caplog)
    assert [level for level, _ in got] == [logging.WARNING] * 3
    assert got[0][1].startswith("MEMBERSHIP: gossip from 10.0.0.9:4160 fails authentication")
    assert "10.0.0.2:4160" in got[1][1]
    assert got[2][1].endswith("(4 more since the last line)")


def test_rate_limiter_forgets_the_oldest_key_when_full() -> None:
    limiter = RateLimiter(60.0, max_keys=2)
    assert limiter.allow("x", 0.0) == 0
    assert limiter.allow("y", 0.0) == 0
    assert limiter.allow("z", 0.0) == 0  # forgets x
    assert limiter.allow("x", 1.0) == 0
    assert limiter.allow("z", 1.0) is None


def test_json_lines_carry_the_fields(log: MembershipLog) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("membership_log_test")
    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log.on_event(MemberFailed(member=member(MemberState.DEAD), declared_by="c"))
    finally:
        logger.removeHandler(handler)
    (record,) = records
    data = json.loads(JsonFormatter().format(record))
    assert data["level"] == "info"
    assert data["msg"] == "MEMBERSHIP: b at 10.0.0.2:4160 is dead (declared by c)"
    assert (data["event"], data["member"], data["address"]) == ("dead", "b", "10.0.0.2:4160")
    assert data["time"].endswith("Z")
    text = NsqFormatter().format(record)
    assert text.startswith("[shoal] ")
    assert text.endswith(" INFO: MEMBERSHIP: b at 10.0.0.2:4160 is dead (declared by c)")
