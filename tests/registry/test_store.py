from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.errors import RemoteProtocolError
from shoal.registry.store import (
    Entry,
    NodeInfo,
    Registry,
    decode_delta,
    decode_digest,
    encode_delta,
    encode_digest,
)

WALL = 1_795_000_000.0


def info(n: int) -> NodeInfo:
    return NodeInfo(
        broadcast_address=f"10.0.0.{n}",
        hostname=f"h{n}",
        tcp_port=4150,
        http_port=4151,
        version="0.1.0",
    )


def registry(name: str, n: int, generation: int = 1) -> Registry:
    return Registry(name, generation=generation, info=info(n), now=0.0)


def everyone(_name: str) -> bool:
    return True


def exchange(a: Registry, b: Registry) -> None:
    """One push-pull: a sends its digest, b answers with a's delta and its digest, a answers."""
    for_a = decode_delta(encode_delta(b.delta(decode_digest(encode_digest(a.digest())))))
    for delta in for_a:
        a.apply_delta(delta, 1.0)
    for delta in a.delta(b.digest()):
        b.apply_delta(delta, 1.0)


def test_registry_lookup_lists_a_producer_with_its_addresses() -> None:
    a, c = registry("a", 1), registry("c", 3)
    a.set_topic("t", ["ch"], wall=WALL, now=1)
    exchange(c, a)
    result = c.lookup("t", everyone, wall=WALL)
    assert result is not None
    channels, producers = result
    assert channels == ["ch"]
    assert [(p.node, p.info.broadcast_address, p.info.tcp_port) for p in producers] == [
        ("a", "10.0.0.1", 4150)
    ]


def test_registry_unknown_topic_is_none_and_known_without_producer_is_empty() -> None:
    a, b = registry("a", 1), registry("b", 2)
    a.set_topic("t", [], wall=WALL, now=1)
    exchange(b, a)
    assert b.lookup("nope", everyone, wall=WALL) is None
    assert b.lookup("t", lambda n: n != "a", wall=WALL) == ([], [])


def test_registry_apply_ignores_older_versions() -> None:
    b = registry("b", 2)
    b.apply("a", 1, False, [Entry("t:x", {"c": ["new"], "at": 2}, 5)], 0)
    b.apply("a", 1, False, [Entry("t:x", {"c": ["old"], "at": 1}, 3)], 0)
    assert b.channels("x", everyone) == ["new"]


def test_registry_apply_is_idempotent() -> None:
    a, b = registry("a", 1), registry("b", 2)
    a.set_topic("t", ["c1"], wall=WALL, now=1)
    parts = a.delta({})
    for delta in parts:
        assert b.apply_delta(delta, 0) is True
    once = b.snapshot()
    for delta in parts:
        assert b.apply_delta(delta, 0) is False
    assert b.snapshot() == once


def test_registry_merges_commute() -> None:
    a = registry("a", 1)
    updates = [a.set_topic("t", ["c1"], wall=WALL, now=1), a.set_topic("u", [], wall=WALL, now=1),
               a.remove_topic("t", 2)]  # fmt: skip
    forward, backward = registry("b", 2), registry("c", 3)
    for entry in updates:
        assert entry is not None
        forward.apply("a", 1, False, [entry], 0)
    for entry in reversed(updates):
        assert entry is not None
        backward.apply("a", 1, False, [entry], 0)
    assert forward.snapshot()["a"] == backward.snapshot()["a"]
    assert forward.topics(everyone) == ["u"]


def test_registry_digest_exchange_converges_in_one_round() -> None:
    a, b = registry("a", 1), registry("b", 2)
    for i in range(20):
        a.set_topic(f"a{i}", ["x"], wall=WALL, now=1)
        b.set_topic(f"b{i}", ["y"], wall=WALL, now=1)
    exchange(a, b)
    assert a.snapshot() == b.snapshot()


def test_registry_delta_sends_only_what_the_peer_lacks() -> None:
    a, b = registry("a", 1), registry("b", 2)
    for i in range(50):
        a.set_topic(f"t{i}", [], wall=WALL, now=1)
    exchange(b, a)
    a.set_topic("late", [], wall=WALL, now=2)
    parts = a.delta(b.digest())
    assert [(d.owner, [e.key for e in d.entries]) for d in parts] == [("a", ["t:late"])]


def test_registry_newer_generation_replaces_a_restarted_node() -> None:
    old, b = registry("a", 1, generation=1), registry("b", 2)
    old.set_topic("gone", [], wall=WALL, now=1)
    exchange(b, old)
    new = registry("a", 1, generation=2)
    new.set_topic("fresh", [], wall=WALL, now=1)
    exchange(b, new)
    assert b.lookup("gone", everyone, wall=WALL) is None
    assert b.topics(everyone) == ["fresh"]


def test_registry_dead_producer_hidden_but_its_key_remains() -> None:
    a, b = registry("a", 1), registry("b", 2)
    a.set_topic("t", ["ch"], wall=WALL, now=1)
    exchange(b, a)
    assert b.lookup("t", lambda n: n != "a", wall=WALL) == (["ch"], [])
    assert b.topics(lambda n: n != "a") == ["t"]


def test_registry_ephemeral_keys_vanish_with_their_producer() -> None:
    a, b = registry("a", 1), registry("b", 2)
    a.set_topic("t#ephemeral", ["c#ephemeral"], wall=WALL, now=1)
    a.set_topic("u", ["c#ephemeral", "keep"], wall=WALL, now=1)
    exchange(b, a)
    alive_not_a = lambda n: n != "a"  # noqa: E731
    assert b.topics(alive_not_a) == ["u"]
    assert b.channels("u", alive_not_a) == ["keep"]


def test_registry_delete_order_hides_older_registrations_everywhere() -> None:
    a, c = registry("a", 1), registry("c", 3)
    a.set_topic("t", ["ch"], wall=WALL, now=1)
    c.register("t", "other", wall=WALL, now=1)
    exchange(c, a)
    c.order_delete("t", None, wall=WALL + 1, now=2)
    exchange(a, c)
    assert a.topics(everyone) == []
    assert c.topics(everyone) == []
    a.set_topic("t", ["ch"], wall=WALL + 2, now=3)  # re-created later: visible again
    exchange(c, a)
    assert c.topics(everyone) == ["t"]


def test_registry_tombstone_hides_a_producer_from_lookup_not_nodes() -> None:
    a, b = registry("a", 1), registry("b", 2)
    a.set_topic("t", [], wall=WALL, now=1)
    exchange(b, a)
    b.tombstone("t", "10.0.0.1:4151", until=WALL + 45, now=1)
    assert b.lookup("t", everyone, wall=WALL) == ([], [])
    assert b.lookup("t", everyone, wall=WALL + 46) is not None
    assert b.lookup("t", everyone, wall=WALL + 46)[1][0].node == "a"  # type: ignore[index]
    nodes = {
        producer.node: (topics, flags) for producer, topics, flags in b.nodes(everyone, wall=WALL)
    }
    assert nodes == {"a": (["t"], [True]), "b": ([], [])}


def test_registry_gap_is_reported_until_filled() -> None:
    a, b = registry("a", 1), registry("b", 2)
    exchange(b, a)
    e1 = a.set_topic("t1", [], wall=WALL, now=1)
    e2 = a.set_topic("t2", [], wall=WALL, now=1)
    b.apply("a", 1, False, [e2], 0)
    assert b.behind() == ["a"]
    b.apply("a", 1, False, [e1], 0)
    assert b.behind() == []


def test_registry_collected_tombstones_force_a_reset() -> None:
    a, b = registry("a", 1), registry("b", 2)
    a.set_topic("t", [], wall=WALL, now=1)
    stale = b.digest()
    a.remove_topic("t", 2)
    a.collect(now=2 + 4000)
    (delta,) = [d for d in a.delta(stale) if d.owner == "a"]
    assert delta.reset
    assert all(e.key != "t:t" for e in delta.entries)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        b"\x80\x01",
        b"\xa1\x61a\x82\x01",
        b"\x81\x85\x61a\x01\x01\xf5\x81\x83\x61k\x00\x00",
    ],
)
def test_registry_decoders_refuse_malformed_input(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_delta(data)
    with pytest.raises(RemoteProtocolError):
        decode_digest(data)


@given(st.binary(max_size=200))
def test_registry_decoders_raise_only_protocol_errors(data: bytes) -> None:
    for decode in (decode_delta, decode_digest):
        with contextlib.suppress(RemoteProtocolError):
            decode(data)


ops = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["set", "remove", "register", "delete"]),
        st.sampled_from(["t1", "t2", "t3"]),
        st.sampled_from(["x", "y", "z#ephemeral"]),
    ),
    max_size=25,
)


@settings(max_examples=60)
@given(ops=ops, seed=st.integers(0, 2**32 - 1))
def test_registry_random_gossip_with_drops_and_duplicates_converges(
    ops: list[tuple[str, str, str, str]], seed: int
) -> None:
    rng = random.Random(seed)
    regs = {n: registry(n, i) for i, n in enumerate("abc", 1)}
    wall = WALL
    in_flight: list[tuple[str, Entry]] = []
    for owner, op, topic, channel in ops:
        wall += 1
        reg = regs[owner]
        if op == "set":
            entry: Entry | None = reg.set_topic(topic, [channel], wall=wall, now=wall)
        elif op == "remove":
            entry = reg.remove_topic(topic, wall)
        elif op == "register":
            entry = reg.register(topic, channel, wall=wall, now=wall)
        else:
            entry = reg.order_delete(topic, None, wall=wall, now=wall)
        if entry is not None:
            in_flight.append((owner, entry))
        # Broadcast delivery: each receiver may get it late, twice, or never.
        rng.shuffle(in_flight)
        for src, e in list(in_flight):
            for dst in regs.values():
                if dst.name != src and rng.random() < 0.5:
                    dst.apply(src, 1, False, [e], wall)
            if rng.random() < 0.6:
                in_flight.remove((src, e))
    # Anti-entropy: a round of push-pull between every pair.
    names = list(regs)
    for x in names:
        for y in names:
            if x != y:
                exchange(regs[x], regs[y])
    snapshots = [r.snapshot() for r in regs.values()]
    assert snapshots[0] == snapshots[1] == snapshots[2]
    views = [
        (r.topics(everyone), [r.lookup(t, everyone, wall=wall) for t in ("t1", "t2", "t3")])
        for r in regs.values()
    ]
    assert views[0] == views[1] == views[2]
    assert not any(r.behind() for r in regs.values())
