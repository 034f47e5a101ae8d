"""Shared owner states (`Registry.image` / `install`): copy on write, never a leak."""

from __future__ import annotations

import random

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.registry.store import (
    TOMBSTONE_GC,
    Entry,
    NodeInfo,
    OwnerDelta,
    Registry,
    _map_header,
    decode_digest,
    encode_digest,
)

WALL = 1_795_000_000.0
NAMES = "abcd"


def info(n: int) -> NodeInfo:
    return NodeInfo(
        broadcast_address=f"10.0.0.{n}",
        hostname=f"h{n}",
        tcp_port=4150,
        http_port=4151,
        version="0.1.0",
    )


def cluster() -> dict[str, Registry]:
    regs = {n: Registry(n, generation=1, info=info(i), now=0.0) for i, n in enumerate(NAMES, 1)}
    regs["a"].set_topic("t1", ["c"], wall=WALL, now=0.0)
    regs["b"].set_topic("t2", [], wall=WALL, now=0.0)
    regs["b"].remove_topic("t2", 0.0)  # a tombstone in b's image
    return regs


def preformed_by_merge() -> dict[str, Registry]:
    regs = cluster()
    deltas = [d for r in regs.values() for d in r.delta({})]
    for reg in regs.values():
        for d in deltas:
            reg.apply_delta(d, 0.0)
    return regs


def preformed_by_install() -> dict[str, Registry]:
    regs = cluster()
    images = [r.image() for r in regs.values()]
    for reg in regs.values():
        reg.install(images)
    return regs


def test_install_holds_what_merging_whole_states_holds() -> None:
    merged, installed = preformed_by_merge(), preformed_by_install()
    for name in NAMES:
        assert installed[name].snapshot() == merged[name].snapshot()
        assert installed[name].digest() == merged[name].digest()
        assert installed[name].behind() == []


def test_installed_states_are_one_object_until_a_registry_changes_one() -> None:
    regs = preformed_by_install()
    c, d = regs["c"], regs["d"]
    shared = c._states["a"]
    assert d._states["a"] is shared
    # The digests of sharing registries share their (generation, watermark) too.
    assert c.digest()["a"] is d.digest()["a"]
    before = d.snapshot()

    entry = regs["a"].set_topic("t3", [], wall=WALL + 1, now=1.0)
    assert c.apply("a", 1, False, [entry], 1.0)

    assert c._states["a"] is not shared
    assert d._states["a"] is shared
    assert d.snapshot() == before
    assert "t:t3" in c.snapshot()["a"][1]
    assert "t:t3" not in shared.entries


def test_duplicate_gossip_keeps_a_state_shared() -> None:
    regs = preformed_by_install()
    c, d = regs["c"], regs["d"]
    entry = regs["a"].own_entry("t:t1")
    assert entry is not None
    assert not c.apply("a", 1, False, [entry], 1.0)
    assert c._states["a"] is d._states["a"]


def test_a_raised_watermark_copies_before_it_writes() -> None:
    regs = preformed_by_install()
    c, d = regs["c"], regs["d"]
    shared = d._states["a"]
    (delta,) = [x for x in regs["a"].delta({}) if x.owner == "a"]
    regs["a"].set_topic("t9", [], wall=WALL + 2, now=2.0)
    (newer,) = [x for x in regs["a"].delta(c.digest()) if x.owner == "a"]
    c.apply_delta(newer, 2.0)
    assert c.digest()["a"] == (1, newer.watermark)
    assert d.digest()["a"] == (1, delta.watermark)
    assert d._states["a"] is shared


def test_collect_of_a_shared_tombstone_copies_and_looks_only_at_graves() -> None:
    regs = preformed_by_install()
    c, d = regs["c"], regs["d"]
    shared = d._states["b"]
    assert c._graves == {"b"}
    c.collect(now=TOMBSTONE_GC + 1.0)
    assert c._graves == set()
    assert "t:t2" not in c.snapshot()["b"][1]
    assert d._states["b"] is shared
    assert "t:t2" in d.snapshot()["b"][1]
    # The floor of what was collected forces a reset for a peer below it.
    (delta,) = [x for x in c.delta({"b": (1, 0)}) if x.owner == "b"]
    assert delta.reset


ops = st.lists(
    st.tuples(
        st.sampled_from(NAMES),
        st.sampled_from(["set", "remove", "register", "collect"]),
        st.sampled_from(["t1", "t2", "t3"]),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(ops=ops, seed=st.integers(0, 2**32 - 1))
def test_shared_and_copied_states_evolve_alike(ops: list[tuple[str, str, str]], seed: int) -> None:
    """The same lossy gossip on a preformed-by-merge and a preformed-by-install cluster."""
    worlds = [preformed_by_merge(), preformed_by_install()]
    rngs = [random.Random(seed), random.Random(seed)]
    wall = WALL
    for owner, op, topic in ops:
        wall += 1
        for regs, rng in zip(worlds, rngs, strict=True):
            reg = regs[owner]
            entry: Entry | None
            if op == "set":
                entry = reg.set_topic(topic, ["c"], wall=wall, now=wall)
            elif op == "remove":
                entry = reg.remove_topic(topic, wall)
            elif op == "register":
                entry = reg.register(topic, "c", wall=wall, now=wall)
            else:
                reg.collect(now=wall + TOMBSTONE_GC * rng.random() * 2)
                entry = None
            if entry is None:
                continue
            for dst in regs.values():
                if dst.name != owner and rng.random() < 0.6:
                    dst.apply_delta(
                        next(d for d in reg.delta(dst.digest()) if d.owner == owner)
                        if rng.random() < 0.5
                        else _lone(reg, entry),
                        wall,
                    )
        merged, installed = worlds
        for name in NAMES:
            assert installed[name].snapshot() == merged[name].snapshot()
            assert installed[name].digest() == merged[name].digest()
            assert installed[name].behind() == merged[name].behind()
            digest, encoded = installed[name].digest_and_encoding()
            assert encoded == encode_digest(digest)


def _lone(reg: Registry, entry: Entry) -> OwnerDelta:
    """A broadcast: one entry, watermark 0."""
    return OwnerDelta(reg.name, reg.generation, 0, False, [entry])


@pytest.mark.parametrize("length", [0, 1, 23, 24, 255, 256, 65535, 65536])
def test_map_header_is_cbor2s(length: int) -> None:
    header = _map_header(length)
    assert cbor2.dumps(dict.fromkeys(range(length)))[: len(header)] == header


def test_encoded_digest_is_the_digest_encoded_and_follows_changes() -> None:
    regs = {f"n{i}": Registry(f"n{i}", generation=i + 1, info=info(1), now=0.0) for i in range(300)}
    images = [r.image() for r in regs.values()]
    first = regs["n0"]
    first.install(images)
    assert first.digest_and_encoding()[1] == encode_digest(first.digest())
    assert regs["n7"].set_topic("t", [], wall=WALL, now=1.0) is not None
    for delta in regs["n7"].delta(first.digest()):
        first.apply_delta(delta, 1.0)
    assert first.digest()["n7"] == (8, 2)
    digest, encoded = first.digest_and_encoding()
    assert encoded == encode_digest(digest)
    assert decode_digest(encoded) == digest
