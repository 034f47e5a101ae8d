"""A node claiming a live member's name is refused at join, on both sides."""

from __future__ import annotations

import random

from shoal.membership import Membership, MembershipConfig, MemberState, NameConflict
from shoal.membership.codec import encode_message, encode_packet
from shoal.membership.messages import Address, Dead

CONFIG = MembershipConfig.local()
SEED: Address = ("10.0.0.1", 4160)
REAL: Address = ("10.0.0.2", 4160)
IMPOSTOR: Address = ("10.0.0.9", 4160)


def engine(name: str, address: Address, *, now: float = 0.0) -> Membership:
    return Membership(
        CONFIG, name=name, address=address, meta={"g": name}, rng=random.Random(1), now=now
    )


def exchange(joiner: Membership, seed: Membership, now: float) -> None:
    """Run the joiner's push-pull with the seed through both engines."""
    for address, request in joiner.streams_to_open():
        reply = seed.receive_stream(request, joiner.address, now)
        assert reply is not None
        joiner.receive_stream_reply(reply, address, now)


def conflicts(node: Membership) -> list[NameConflict]:
    return [e for e in node.events() if isinstance(e, NameConflict)]


def cluster() -> tuple[Membership, Membership]:
    seed, real = engine("seed", SEED), engine("real", REAL)
    real.join([SEED], 0.0)
    exchange(real, seed, 0.0)
    assert {m.name for m in seed.members()} == {"seed", "real"}
    seed.events()
    real.events()
    return seed, real


def test_a_join_claiming_a_live_members_name_is_refused_on_both_sides() -> None:
    seed, _real = cluster()
    impostor = engine("real", IMPOSTOR, now=1.0)
    before = impostor.incarnation
    impostor.join([SEED], 1.0)
    exchange(impostor, seed, 1.0)

    (theirs,) = conflicts(seed)
    assert (theirs.name, theirs.known_address, theirs.claimed_address) == ("real", REAL, IMPOSTOR)
    assert theirs.refused
    (mine,) = conflicts(impostor)
    assert (mine.name, mine.known_address, mine.claimed_address) == ("real", REAL, IMPOSTOR)
    assert mine.refused
    # Neither side merged anything of the other.
    member = seed.member("real")
    assert member is not None
    assert (member.address, member.state) == (REAL, MemberState.ALIVE)
    assert [m.name for m in impostor.members()] == ["real"]
    assert impostor.incarnation == before  # no refutation war with the real node
    assert seed.statistics().name_conflicts == impostor.statistics().name_conflicts == 1


def test_a_join_through_the_real_node_itself_is_refused() -> None:
    _seed, real = cluster()
    before = real.incarnation
    impostor = engine("real", IMPOSTOR, now=1.0)
    impostor.join([REAL], 1.0)
    exchange(impostor, real, 1.0)
    (theirs,) = conflicts(real)
    assert (theirs.known_address, theirs.claimed_address, theirs.refused) == (REAL, IMPOSTOR, True)
    assert conflicts(impostor)[0].refused
    assert real.incarnation == before
    assert {m.name for m in impostor.members()} == {"real"}


def test_the_name_moves_once_its_holder_is_dead_past_the_reclaim_time() -> None:
    seed, _real = cluster()
    # The real node crashed and the seed declared it dead (reclaim time 0 here).
    held = seed.member("real")
    assert held is not None
    dead = Dead(incarnation=held.incarnation, name="real", source="seed")
    seed.receive_packet(encode_packet([encode_message(dead)]), ("10.0.0.3", 4160), 5.0)
    assert seed.member("real").state is MemberState.DEAD  # type: ignore[union-attr]
    restarted = engine("real", IMPOSTOR, now=10.0)
    restarted.join([SEED], 10.0)
    exchange(restarted, seed, 10.0)  # learns it is held dead, and refutes
    restarted.join([SEED], 11.0)
    exchange(restarted, seed, 11.0)
    assert conflicts(seed) == []
    assert conflicts(restarted) == []
    member = seed.member("real")
    assert member is not None
    assert (member.address, member.state) == (IMPOSTOR, MemberState.ALIVE)


def advance(node: Membership, until: float) -> float:
    """Run ``node``'s timers up to ``until``; return the engine time reached."""
    now = node.next_deadline()
    while now <= until:
        node.tick(now)
        now = node.next_deadline()
    return until


def test_a_refused_join_is_retried_soon_and_gets_in_once_the_old_self_is_dead() -> None:
    seed, _real = cluster()
    # Restarted at a new address while the seed still holds its old self alive.
    restarted = engine("real", IMPOSTOR, now=10.0)
    restarted.join([SEED], 10.0)
    exchange(restarted, seed, 10.0)
    assert conflicts(restarted)[0].refused
    # Asked again after one probe interval, not a whole reconnect interval:
    # refused again, the old self still being alive there.
    assert CONFIG.probe_interval < CONFIG.reconnect_interval
    advance(restarted, 10.0 + CONFIG.probe_interval * 0.99)
    assert restarted.streams_to_open() == []
    first = advance(restarted, 10.0 + CONFIG.probe_interval)
    exchange(restarted, seed, first)
    assert [c.refused for c in conflicts(restarted)] == [True]
    # Then the seed declares the old self dead: the next retry, two probe
    # intervals later, gets in.
    held = seed.member("real")
    assert held is not None
    dead = Dead(incarnation=held.incarnation, name="real", source="seed")
    seed.receive_packet(encode_packet([encode_message(dead)]), ("10.0.0.3", 4160), first + 0.1)
    second = advance(restarted, first + 2 * CONFIG.probe_interval)
    exchange(restarted, seed, second)  # learns it is held dead, and refutes
    assert conflicts(restarted) == []
    # Its refutation (a higher incarnation) reaches the seed by gossip.
    gossip = advance(restarted, second + CONFIG.probe_interval)
    for address, packet in restarted.packets_to_send():
        if address == SEED:
            seed.receive_packet(packet, IMPOSTOR, gossip)
    member = seed.member("real")
    assert member is not None
    assert (member.address, member.state) == (IMPOSTOR, MemberState.ALIVE)


def test_refusals_keep_one_retry_per_peer() -> None:
    seed, _real = cluster()  # the real node stays alive: every retry is refused
    impostor = engine("real", IMPOSTOR, now=1.0)
    impostor.join([SEED], 1.0)
    exchange(impostor, seed, 1.0)
    intervals = 10
    asked_at: list[float] = []
    now = 1.0
    while now < 1.0 + CONFIG.reconnect_interval * intervals:
        now = impostor.next_deadline()
        impostor.tick(now)
        for address, request in impostor.streams_to_open():
            if address == SEED:
                asked_at.append(now)
                reply = seed.receive_stream(request, IMPOSTOR, now)
                assert reply is not None
                impostor.receive_stream_reply(reply, SEED, now)
        impostor.packets_to_send()
        seed.packets_to_send()
    # Soon after the first refusal, then at doubling delays.
    assert asked_at[:2] == [1.0 + CONFIG.probe_interval, 1.0 + 3 * CONFIG.probe_interval]
    # The retries and the healing loop's asks each keep to about one per
    # reconnect interval: refusals never pile up timers.
    assert len(asked_at) <= 3 * intervals
