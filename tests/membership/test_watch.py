"""Neighbour watch: the ring (a pure function of names) and the engine's rules for a closed one."""

import dataclasses
import random

from hypothesis import given
from hypothesis import strategies as st

from shoal.membership import Membership, MembershipConfig, MemberState, MemberSuspected
from shoal.membership.codec import encode_message, encode_packet
from shoal.membership.messages import Address, Alive, Dead, Message, Refused
from shoal.membership.watch import watch_targets

CONFIG = MembershipConfig.local()
A: Address = ("10.0.0.1", 4160)
ADDR = {name: (f"10.0.0.{i}", 4160) for i, name in enumerate("abcdefgh", start=1)}

names = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=40, unique=True)


@given(names, st.integers(min_value=0, max_value=4))
def test_ring_targets_are_k_distinct_others(members: list[str], k: int) -> None:
    own = members[0]
    targets = watch_targets(own, members, k)
    assert own not in targets
    assert len(set(targets)) == len(targets) == min(k, len(members) - 1)
    assert set(targets) <= set(members)


@given(names)
def test_every_member_is_watched_by_k_others(members: list[str]) -> None:
    # Every member computes the same ring, so with one view each member has
    # exactly min(k, n - 1) watchers: no one is left unwatched.
    k = 2
    watchers: dict[str, int] = dict.fromkeys(members, 0)
    for own in members:
        for target in watch_targets(own, members, k):
            watchers[target] += 1
    assert all(count == min(k, len(members) - 1) for count in watchers.values())


def test_ring_does_not_depend_on_order_or_on_including_ourselves() -> None:
    members = [f"node-{i}" for i in range(10)]
    forward = watch_targets("node-3", members, 2)
    assert watch_targets("node-3", list(reversed(members)), 2) == forward
    assert watch_targets("node-3", [m for m in members if m != "node-3"], 2) == forward


def test_one_death_moves_only_its_watchers_targets() -> None:
    members = [f"node-{i}" for i in range(20)]
    before = {own: watch_targets(own, members, 2) for own in members}
    dead = members[7]
    after = {own: watch_targets(own, [m for m in members if m != dead], 2) for own in members}
    changed = {own for own in members if own != dead and before[own] != after[own]}
    assert changed == {own for own in members if dead in before[own]}


def make(*names: str, config: MembershipConfig = CONFIG) -> Membership:
    engine = Membership(config, name="a", address=A, rng=random.Random(3), now=0.0)
    feed(engine, *(Alive(incarnation=1, name=n, address=ADDR[n], meta={}) for n in names))
    engine.events()
    engine.packets_to_send()
    return engine


def feed(engine: Membership, *messages: Message, now: float = 0.0) -> None:
    engine.receive_packet(encode_packet([encode_message(m) for m in messages]), ADDR["b"], now)


def test_engine_watches_its_successors_among_live_members() -> None:
    engine = make("b", "c", "d", "e")
    expected = watch_targets("a", ["a", "b", "c", "d", "e"], CONFIG.watch_successors)
    assert engine.watch_targets() == [(n, ADDR[n]) for n in expected]
    # A dead member leaves the ring, and the next one takes its place.
    first = expected[0]
    feed(engine, Dead(incarnation=1, name=first, source="b"), now=0.1)
    survivors = [n for n in "abcde" if n != first]
    assert [n for n, _ in engine.watch_targets()] == watch_targets("a", survivors, 2)


def test_watch_can_be_turned_off_and_stops_on_leave() -> None:
    off = make("b", "c", config=dataclasses.replace(CONFIG, watch_successors=0))
    assert off.watch_targets() == []
    engine = make("b", "c")
    assert engine.watch_targets()
    engine.leave(0.1)
    assert engine.watch_targets() == []


def test_closed_watch_suspects_at_once_but_does_not_kill() -> None:
    engine = make("b", "c", "d")
    engine.watch_closed("c", ADDR["c"], 0.1)
    assert engine.member("c").state is MemberState.SUSPECT  # type: ignore[union-attr]
    assert [type(e) for e in engine.events()] == [MemberSuspected]
    stats = engine.statistics()
    assert (stats.watch_closures, stats.refusals, stats.refusal_deaths) == (1, 0, 0)


def test_closed_watch_and_another_members_refusal_declare_dead() -> None:
    engine = make("b", "c", "d")
    engine.watch_closed("c", ADDR["c"], 0.1)
    feed(engine, Refused(incarnation=1, name="c", source="b"), now=0.2)
    assert engine.member("c").state is MemberState.DEAD  # type: ignore[union-attr]
    assert engine.statistics().refusal_deaths == 1


def test_closed_watch_on_an_alive_member_is_refuted_by_it() -> None:
    # A stray close (not a crash): the member hears the suspicion and refutes.
    engine = make("b", "c", "d")
    engine.watch_closed("c", ADDR["c"], 0.1)
    feed(engine, Alive(incarnation=2, name="c", address=ADDR["c"], meta={}), now=0.2)
    assert engine.member("c").state is MemberState.ALIVE  # type: ignore[union-attr]
    assert engine.statistics().refusal_deaths == 0


def test_closed_watch_about_a_moved_or_dead_member_is_ignored() -> None:
    engine = make("b", "c", "d")
    engine.watch_closed("c", ("10.9.9.9", 4160), 0.1)  # not where c lives
    engine.watch_closed("zz", ADDR["c"], 0.1)  # no such member
    assert engine.member("c").state is MemberState.ALIVE  # type: ignore[union-attr]
    feed(engine, Dead(incarnation=1, name="d", source="b"), now=0.2)
    engine.events()
    engine.packets_to_send()
    engine.watch_closed("d", ADDR["d"], 0.3)
    assert engine.member("d").state is MemberState.DEAD  # type: ignore[union-attr]
    assert engine.packets_to_send() == []
    assert engine.events() == []
    assert engine.statistics().watch_closures == 3
