"""Hypothesis properties of the engine: peer input never breaks it, SWIM invariants hold."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.membership import Membership, MembershipConfig, MemberState
from shoal.membership.codec import encode_message, encode_packet, encode_stream
from shoal.membership.messages import (
    Address,
    Alive,
    Dead,
    Message,
    PushPull,
    Suspect,
)
from shoal.testing.strategies import message_strategies

CONFIG = MembershipConfig.local()
NAMES = ["a", "b", "c", "d"]
ADDR: dict[str, Address] = {name: (f"10.0.0.{i}", 4160) for i, name in enumerate(NAMES, start=1)}
SRC = ADDR["b"]

names = st.sampled_from(NAMES)
incarnations = st.integers(0, 6)
addresses = st.one_of(names.map(ADDR.__getitem__), st.just(("10.9.9.9", 1)))
metas = st.sampled_from([{}, {"k": "v"}, {"k": "w"}])

MESSAGES = message_strategies(
    names=names,
    addresses=addresses,
    incarnations=incarnations,
    metas=metas,
    app_states=st.just(b""),
    user_data=st.binary(max_size=20),
    max_members=4,
)
gossip = MESSAGES.gossip
push_pulls = MESSAGES.push_pulls
any_packet_message = MESSAGES.packet_messages
steps = st.lists(st.one_of(gossip, push_pulls), max_size=25)


def make(seed: int = 0) -> Membership:
    return Membership(CONFIG, name="a", address=ADDR["a"], rng=random.Random(seed), now=0.0)


def apply(engine: Membership, message: Message, now: float = 0.0) -> None:
    if isinstance(message, PushPull):
        engine.receive_stream(encode_stream(message), SRC, now)
    else:
        engine.receive_packet(encode_packet([encode_message(message)]), SRC, now)


def table(engine: Membership) -> dict[str, tuple[MemberState, int, Address, dict[str, str]]]:
    return {m.name: (m.state, m.incarnation, m.address, dict(m.meta)) for m in engine.members()}


@pytest.mark.slow
@given(
    st.lists(
        st.tuples(st.sampled_from(["packet", "stream", "reply"]), st.binary(max_size=120)),
        max_size=20,
    )
)
def test_engine_never_raises_on_arbitrary_bytes(inputs: list[tuple[str, bytes]]) -> None:
    engine = make()
    handled = 0
    for now, (kind, data) in enumerate(inputs):
        if kind == "packet":
            engine.receive_packet(data, SRC, float(now))
        elif kind == "stream":
            engine.receive_stream(data, SRC, float(now))
        else:
            engine.receive_stream_reply(data, SRC, float(now))
        engine.tick(float(now))
        stats = engine.statistics()
        # Every input was either decoded or counted as dropped.
        progress = stats.messages_received + sum(stats.dropped.values())
        assert progress > handled
        handled = progress


@pytest.mark.slow
@settings(max_examples=60)
@given(st.lists(st.lists(any_packet_message, min_size=1, max_size=5), max_size=15))
def test_engine_never_raises_on_arbitrary_messages(packets: list[list[Message]]) -> None:
    engine = make()
    now = 0.0
    for messages in packets:
        engine.receive_packet(encode_packet([encode_message(m) for m in messages]), SRC, now)
        now += 0.3
        engine.tick(now)
        engine.packets_to_send()
        engine.streams_to_open()
        engine.events()
    engine.tick(now + 100.0)
    assert engine.member("a") is not None


@pytest.mark.slow
@given(steps)
def test_gossip_applied_twice_equals_once(messages: list[Message]) -> None:
    once, twice = make(), make()
    for message in messages:
        apply(once, message)
        apply(twice, message)
        apply(twice, message)
    assert table(once) == table(twice)


@pytest.mark.slow
@given(steps)
def test_node_never_declares_itself_dead_and_refutes(messages: list[Message]) -> None:
    engine = make()
    previous = engine.incarnation
    for message in messages:
        apply(engine, message)
        me = engine.member("a")
        assert me is not None
        assert me.state is MemberState.ALIVE
        assert engine.incarnation >= previous  # never decreases
        if isinstance(message, Suspect | Dead) and message.name == "a":
            assert engine.incarnation > message.incarnation  # refuted
        previous = engine.incarnation


@pytest.mark.slow
@given(
    st.lists(
        st.builds(
            Alive,
            incarnation=incarnations,
            name=st.sampled_from(NAMES[1:]),
            address=addresses,
            meta=metas,
        ),
        max_size=8,
        unique_by=lambda m: m.name,
    ),
    st.randoms(use_true_random=False),
)
def test_alive_news_about_different_members_commutes(news: list[Alive], rng: random.Random) -> None:
    shuffled = list(news)
    rng.shuffle(shuffled)
    forward, backward = make(), make()
    for message in news:
        apply(forward, message)
    for message in shuffled:
        apply(backward, message)
    assert table(forward) == table(backward)
