"""A fresh joiner tells the members it learned that it is alive, directly."""

from __future__ import annotations

import random

from shoal.membership import Membership, MembershipConfig, MemberState
from shoal.membership.codec import CodecLimits, decode_packet, encode_message, encode_packet
from shoal.membership.engine import _JOIN_ANNOUNCE_MAX
from shoal.membership.messages import Address, Alive

CONFIG = MembershipConfig.local()
SEED: Address = ("10.0.0.1", 4160)
JOINER: Address = ("10.0.1.1", 4160)


def engine(name: str, address: Address, now: float = 0.0) -> Membership:
    return Membership(CONFIG, name=name, address=address, meta={}, rng=random.Random(7), now=now)


def seed_knowing(count: int) -> Membership:
    """A seed that holds ``count`` other live members (heard of by gossip)."""
    seed = engine("seed", SEED)
    alives = [
        encode_message(Alive(incarnation=1, name=f"m{i}", address=("10.0.2.1", 5000 + i), meta={}))
        for i in range(count)
    ]
    for start in range(0, count, 8):
        seed.receive_packet(encode_packet(alives[start : start + 8]), ("10.0.9.9", 1), 0.0)
    assert len(seed.members()) == count + 1
    seed.packets_to_send()
    return seed


def join(joiner: Membership, seed: Membership, now: float) -> list[tuple[Address, bytes]]:
    """Run the joiner's join through the seed; the packets it then sends."""
    joiner.join([SEED], now)
    for address, request in joiner.streams_to_open():
        reply = seed.receive_stream(request, joiner.address, now)
        assert reply is not None
        joiner.receive_stream_reply(reply, address, now)
    return joiner.packets_to_send()


def test_a_fresh_joiner_sends_its_alive_to_every_other_member() -> None:
    seed = seed_knowing(5)
    joiner = engine("new", JOINER, now=1.0)
    packets = join(joiner, seed, 1.0)
    targets = sorted(address for address, _ in packets)
    assert targets == sorted(("10.0.2.1", 5000 + i) for i in range(5))  # not the seed
    for _, packet in packets:
        (message,) = decode_packet(packet, CodecLimits())
        assert message == Alive(incarnation=joiner.incarnation, name="new", address=JOINER, meta={})
    # A member that gets it lists the joiner at once, without waiting for gossip.
    member = engine("m0", ("10.0.2.1", 5000))
    member.receive_packet(packets[0][1], JOINER, 1.0)
    listed = member.member("new")
    assert listed is not None
    assert listed.state is MemberState.ALIVE


def test_the_announcement_is_bounded_in_a_large_cluster() -> None:
    seed = seed_knowing(3 * _JOIN_ANNOUNCE_MAX)
    packets = join(engine("new", JOINER, now=1.0), seed, 1.0)
    targets = {address for address, _ in packets}
    assert len(packets) == len(targets) == _JOIN_ANNOUNCE_MAX
    assert SEED not in targets


def test_a_member_that_already_knew_peers_does_not_announce() -> None:
    seed = seed_knowing(5)
    joiner = engine("new", JOINER, now=1.0)
    join(joiner, seed, 1.0)
    # A later push-pull (a healing retry, a periodic exchange) sends nothing.
    assert join(joiner, seed, 2.0) == []
