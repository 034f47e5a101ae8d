"""Refused probes as evidence: one rule per test, on a single engine fed by hand."""

import dataclasses
import random

from shoal.membership import (
    MemberFailed,
    Membership,
    MembershipConfig,
    MemberState,
    MemberSuspected,
)
from shoal.membership.codec import CodecLimits, decode_packet, encode_message, encode_packet
from shoal.membership.messages import Address, Alive, Dead, Message, Ping, Refused, Suspect

CONFIG = MembershipConfig.local()
LIMITS = CodecLimits.from_config(CONFIG)
A: Address = ("10.0.0.1", 4160)
ADDR = {name: (f"10.0.0.{i}", 4160) for i, name in enumerate("abcdefgh", start=1)}


def make(*names: str, config: MembershipConfig = CONFIG) -> Membership:
    engine = Membership(config, name="a", address=A, rng=random.Random(3), now=0.0)
    feed(engine, *(Alive(incarnation=1, name=n, address=ADDR[n], meta={}) for n in names))
    engine.events()
    engine.packets_to_send()
    return engine


def feed(
    engine: Membership, *messages: Message, now: float = 0.0, src: Address = ADDR["b"]
) -> None:
    engine.receive_packet(encode_packet([encode_message(m) for m in messages]), src, now)


def sent(engine: Membership) -> list[tuple[Address, Message]]:
    return [
        (address, message)
        for address, data in engine.packets_to_send()
        for message in decode_packet(data, LIMITS)
    ]


def state(engine: Membership, name: str) -> MemberState | None:
    member = engine.member(name)
    return None if member is None else member.state


def test_refused_probe_suspects_at_once_but_does_not_kill() -> None:
    engine = make("b", "c", "d")
    engine.probe_refused(ADDR["c"], 0.1)
    assert state(engine, "c") is MemberState.SUSPECT
    events = engine.events()
    assert [type(e) for e in events] == [MemberSuspected]
    stats = engine.statistics()
    assert stats.refusals == 1
    assert stats.refusal_deaths == 0


def test_second_members_refusal_declares_dead() -> None:
    engine = make("b", "c", "d")
    engine.probe_refused(ADDR["c"], 0.1)
    engine.events()
    feed(engine, Refused(incarnation=1, name="c", source="b"), now=0.2)
    assert state(engine, "c") is MemberState.DEAD
    (failed,) = [e for e in engine.events() if isinstance(e, MemberFailed)]
    assert failed.declared_by == "a"
    assert engine.statistics().refusal_deaths == 1


def test_refusal_evidence_is_gossiped() -> None:
    engine = make("b", "c", "d")
    engine.probe_refused(ADDR["c"], 0.1)
    engine.tick(engine.next_deadline())
    gossiped = [m for _, m in sent(engine) if isinstance(m, Refused)]
    assert Refused(incarnation=1, name="c", source="a") in gossiped


def test_others_refusal_prompts_a_verifying_ping_carrying_it() -> None:
    engine = make("b", "c", "d")
    refused = Refused(incarnation=1, name="c", source="b")
    feed(engine, refused, now=0.2)
    assert state(engine, "c") is MemberState.SUSPECT
    to_c = [m for address, m in sent(engine) if address == ADDR["c"]]
    assert refused in to_c
    assert any(isinstance(m, Ping) and m.target == "c" for m in to_c)
    # The verifying ping is refused too: our evidence joins b's, and c is dead.
    engine.probe_refused(ADDR["c"], 0.21)
    assert state(engine, "c") is MemberState.DEAD


def test_one_member_refusing_twice_is_one_piece_of_evidence() -> None:
    engine = make("b", "c", "d")
    feed(engine, Refused(incarnation=1, name="c", source="b"), now=0.2)
    feed(engine, Refused(incarnation=1, name="c", source="b"), now=0.3)
    engine.probe_refused(ADDR["c"], 0.4)
    engine.probe_refused(ADDR["c"], 0.5)
    assert state(engine, "c") is MemberState.DEAD  # a and b: two members
    engine2 = make("b", "c", "d")
    engine2.probe_refused(ADDR["c"], 0.1)
    engine2.probe_refused(ADDR["c"], 0.2)
    assert state(engine2, "c") is MemberState.SUSPECT


def test_only_one_verifying_ping_per_suspicion() -> None:
    engine = make("b", "c", "d")
    feed(engine, Refused(incarnation=1, name="c", source="b"), now=0.2)
    sent(engine)
    feed(engine, Refused(incarnation=1, name="c", source="d"), now=0.3, src=ADDR["d"])
    # d's refusal is the second piece of evidence: c is dead, no more pings.
    assert state(engine, "c") is MemberState.DEAD
    assert not [m for a, m in sent(engine) if a == ADDR["c"] and isinstance(m, Ping)]


def test_refusal_about_ourselves_is_refuted() -> None:
    engine = make("b", "c")
    feed(engine, Refused(incarnation=1, name="a", source="b"), now=0.2)
    assert engine.incarnation == 2
    assert state(engine, "a") is MemberState.ALIVE
    replies = [m for address, m in sent(engine) if address == ADDR["b"]]
    assert any(isinstance(m, Alive) and m.name == "a" and m.incarnation == 2 for m in replies)


def test_refutation_clears_the_evidence_and_old_refusals_are_ignored() -> None:
    engine = make("b", "c", "d")
    engine.probe_refused(ADDR["c"], 0.1)
    feed(engine, Alive(incarnation=2, name="c", address=ADDR["c"], meta={}), now=0.2)
    assert state(engine, "c") is MemberState.ALIVE
    feed(engine, Refused(incarnation=1, name="c", source="b"), now=0.3)
    assert state(engine, "c") is MemberState.ALIVE
    # A fresh refusal at the new incarnation starts over: one piece only.
    feed(engine, Refused(incarnation=2, name="c", source="b"), now=0.4)
    assert state(engine, "c") is MemberState.SUSPECT


def test_refusal_from_an_unknown_address_is_counted_and_ignored() -> None:
    engine = make("b", "c")
    engine.probe_refused(("10.9.9.9", 1), 0.1)
    assert engine.statistics().refusals == 1
    assert state(engine, "b") is MemberState.ALIVE
    assert state(engine, "c") is MemberState.ALIVE
    assert engine.events() == []


def test_refusals_weigh_nothing_special_when_off() -> None:
    config = dataclasses.replace(CONFIG, refusal_confirmations=0)
    engine = make("b", "c", "d", config=config)
    engine.probe_refused(ADDR["c"], 0.1)
    assert state(engine, "c") is MemberState.ALIVE
    feed(engine, Refused(incarnation=1, name="c", source="b"), now=0.2)
    feed(engine, Refused(incarnation=1, name="c", source="d"), now=0.3, src=ADDR["d"])
    # Taken as plain suspicions: the timeout decides.
    assert state(engine, "c") is MemberState.SUSPECT


def test_refused_probe_ends_without_raising_the_health_score() -> None:
    engine = make("b")
    pings: list[Message] = []
    now = 0.0
    while not pings:  # run to the first probe, which goes to b
        now = engine.next_deadline()
        engine.tick(now)
        pings = [m for _, m in sent(engine) if isinstance(m, Ping)]
    assert pings[0].target == "b"  # type: ignore[union-attr]
    engine.probe_refused(ADDR["b"], now)
    assert engine.health_score == 0
    # Only two members: no one can confirm, so the suspicion's timer decides.
    assert state(engine, "b") is MemberState.SUSPECT
    for _ in range(1000):
        deadline = engine.next_deadline()
        if deadline > 60:
            break
        engine.tick(deadline)
        engine.packets_to_send()
        engine.streams_to_open()
    assert state(engine, "b") is MemberState.DEAD


def test_plain_suspect_gets_no_verifying_ping() -> None:
    engine = make("b", "c", "d")
    feed(engine, Suspect(incarnation=1, name="c", source="b"), now=0.2)
    assert not [m for a, m in sent(engine) if a == ADDR["c"] and isinstance(m, Ping)]


def test_refusal_about_a_member_held_dead_is_answered_with_the_death() -> None:
    engine = make("b", "c", "d")
    engine.probe_refused(ADDR["c"], 0.1)
    feed(engine, Refused(incarnation=1, name="c", source="b"), now=0.2)
    assert state(engine, "c") is MemberState.DEAD
    sent(engine)
    # d missed it and is still gathering refusals.
    feed(engine, Refused(incarnation=1, name="c", source="d"), now=0.3, src=ADDR["d"])
    to_d = [m for a, m in sent(engine) if a == ADDR["d"]]
    assert any(isinstance(m, Dead) and m.name == "c" for m in to_d)


def test_refusal_at_a_newer_incarnation_is_checked_and_confirmed_for_the_peer() -> None:
    engine = make("b", "c", "d")
    engine.probe_refused(ADDR["c"], 0.1)
    feed(engine, Refused(incarnation=1, name="c", source="b"), now=0.2)
    sent(engine)
    # d holds c at incarnation 2 (a refutation we missed): we check c ourselves ...
    feed(engine, Refused(incarnation=2, name="c", source="d"), now=0.3, src=ADDR["d"])
    to_c = [m for a, m in sent(engine) if a == ADDR["c"]]
    assert any(isinstance(m, Ping) and m.target == "c" for m in to_c)
    # ... and, refused too, confirm d's refusal at the incarnation d holds.
    engine.probe_refused(ADDR["c"], 0.31)
    to_d = [m for a, m in sent(engine) if a == ADDR["d"]]
    assert Refused(incarnation=2, name="c", source="a") in to_d
    # Once only: a second refusal of ours sends nothing more.
    engine.probe_refused(ADDR["c"], 0.32)
    assert not [m for a, m in sent(engine) if a == ADDR["d"]]
