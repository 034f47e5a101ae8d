"""The registry's replication keys: the factor gossiped with a topic, and adoptions."""

from __future__ import annotations

import cbor2

from shoal.registry import ADOPTION_TTL, NodeInfo, Registry, RegistryGossip
from shoal.registry.store import MAX_ADOPTION_RANGES, Entry, decode_delta, encode_delta

INFO = NodeInfo(
    broadcast_address="127.0.0.1", hostname="h", tcp_port=4150, http_port=4151, version="v"
)
WALL = 1_800_000_000.0


def registry(name: str) -> Registry:
    return Registry(name, generation=1, info=INFO, now=0.0)


def sync(src: Registry, dst: Registry) -> None:
    """Everything ``dst`` lacks of ``src``, through the wire encoding."""
    for part in decode_delta(encode_delta(src.delta(dst.digest()))):
        dst.apply_delta(part, 0.0)


def ident(n: int) -> bytes:
    return b"%016x" % n


def test_the_factor_travels_with_the_topic() -> None:
    a, b = registry("a"), registry("b")
    a.set_topic("orders", ["work"], wall=WALL, now=0.0, factor=3)
    a.set_topic("plain", [], wall=WALL, now=0.0)
    sync(a, b)
    assert (b.factor("a", "orders"), b.factor("a", "plain")) == (3, 1)
    assert b.factor("a", "unknown") == 1
    assert b.lookup("orders", lambda _o: True, wall=WALL) is not None
    # An unreplicated topic's value is nsqlookupd-sized: no factor key.
    assert "f" not in (a.own_entry("t:plain") or Entry("", {}, 0)).value


def test_a_malformed_factor_reads_as_unreplicated() -> None:
    b = registry("b")
    for bad in ("3", -2, 0, True, None):
        b.apply("a", 1, False, [Entry("t:x", {"c": [], "at": 1, "f": bad}, 1)], 0.0)
        assert b.factor("a", "x") == 1
        b.forget("a")


def test_an_adoption_reaches_the_owner_and_covers_exactly_its_range() -> None:
    adopter, owner = registry("r"), registry("a")
    adopter.adopt("orders", "a", ident(10), ident(20), 7, wall=WALL, now=0.0)
    adopter.adopt("other", "b", ident(1), ident(2), 2, wall=WALL, now=0.0)
    before = owner.adoption_changes
    sync(adopter, owner)
    assert owner.adoption_changes > before
    (found,) = owner.adoptions("a")
    assert (found.adopter, found.owner, found.topic, found.count) == ("r", "a", "orders", 7)
    assert found.at == int(WALL * 1e9)
    assert [found.covers(ident(n)) for n in (9, 10, 15, 20, 21)] == [
        False,
        True,
        True,
        True,
        False,
    ]
    assert len(owner.adoptions()) == 2


def test_other_keys_do_not_count_as_adoption_changes() -> None:
    a, b = registry("a"), registry("b")
    a.set_topic("t", ["c"], wall=WALL, now=0.0, factor=2)
    before = b.adoption_changes
    sync(a, b)
    assert b.adoption_changes == before


def test_a_topic_adopted_again_keeps_both_ranges_up_to_the_bound() -> None:
    r = registry("r")
    for n in range(MAX_ADOPTION_RANGES + 3):
        r.adopt("t", "a", ident(100 * n), ident(100 * n + 50), 1, wall=WALL + n, now=0.0)
    ranges = r.adoptions("a")
    assert len(ranges) == MAX_ADOPTION_RANGES
    # The newest are kept.
    assert ranges[-1].lo == ident(100 * (MAX_ADOPTION_RANGES + 2))
    assert ranges[0].lo == ident(300)


def test_old_adoptions_expire_and_the_expiry_spreads() -> None:
    r, a = registry("r"), registry("a")
    r.adopt("t", "a", ident(1), ident(5), 5, wall=WALL, now=0.0)
    r.adopt("t", "a", ident(10), ident(15), 5, wall=WALL + 100, now=0.0)
    r.adopt("u", "a", ident(1), ident(2), 2, wall=WALL, now=0.0)
    sync(r, a)
    assert len(a.adoptions("a")) == 3
    assert r.expire_adoptions(wall=WALL + ADOPTION_TTL - 1, now=1.0) == []
    written = r.expire_adoptions(wall=WALL + ADOPTION_TTL + 1, now=1.0)
    assert sorted(e.key for e in written) == ["a:t@a", "a:u@a"]
    assert [e.value for e in written if e.key == "a:u@a"] == [None]  # a tombstone
    sync(r, a)
    (left,) = a.adoptions("a")
    assert (left.topic, left.lo) == ("t", ident(10))
    assert r.expire_adoptions(wall=WALL + ADOPTION_TTL + 1, now=2.0) == []


def test_malformed_adoption_values_are_ignored() -> None:
    a = registry("a")
    bad = [
        {"r": [[ident(5), ident(1), 1, 1]]},  # lo above hi
        {"r": [[b"short", ident(1), 1, 1]]},
        {"r": [[ident(1), ident(2), -1, 1]]},
        {"r": [[ident(1), ident(2), 1]]},
        {"r": "nope"},
        ["r"],
        17,
    ]
    for version, value in enumerate(bad, start=1):
        a.apply("r", 1, False, [Entry(f"a:t{version}@a", value, version)], 0.0)
    assert a.adoptions("a") == []


def test_an_adoption_broadcast_survives_the_wire() -> None:
    r = registry("r")
    entry = r.adopt("t", "a", ident(1), ident(9), 9, wall=WALL, now=0.0)
    a = registry("a")
    gossip = RegistryGossip(a, clock=lambda: 0.0)
    delta = cbor2.dumps([["r", 1, 0, False, [[entry.key, entry.value, entry.version]]]])
    assert gossip.notify_message(delta)
    assert [x.hi for x in a.adoptions("a")] == [ident(9)]


def test_exchange_listeners_hear_every_applied_delta() -> None:
    a, b = registry("a"), registry("b")
    ga = RegistryGossip(a, clock=lambda: 0.0)
    gb = RegistryGossip(b, clock=lambda: 0.0)
    heard: list[int] = []
    ga.add_exchange_listener(lambda: heard.append(ga.exchanges_applied))
    delta, digest = gb.answer_exchange(ga.open_exchange())
    ga.apply_exchange(delta, 0.0)
    gb.apply_exchange(ga.delta_for(digest), 0.0)
    assert heard == [1]
    assert (ga.exchanges_applied, gb.exchanges_applied) == (1, 1)
