"""Node ordering strategies: pure, so checked exactly."""

from __future__ import annotations

import collections
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.client.discovery import Endpoint
from shoal.client.strategies import (
    STRATEGY_NAMES,
    ConsistentHash,
    RandomOrder,
    RoundRobin,
    Weighted,
    make_strategy,
)
from shoal.errors import ConfigError


def endpoints(count: int) -> list[Endpoint]:
    return [
        Endpoint(
            name=f"node-{i}", host="127.0.0.1", tcp_port=4150 + 10 * i, http_port=4151 + 10 * i
        )
        for i in range(count)
    ]


NODES = endpoints(4)


def test_round_robin_starts_one_further_each_call() -> None:
    strategy = RoundRobin()
    firsts = [strategy.order(NODES, b"k")[0].name for _ in range(6)]
    assert firsts == ["node-0", "node-1", "node-2", "node-3", "node-0", "node-1"]


def test_round_robin_order_is_a_rotation() -> None:
    strategy = RoundRobin()
    strategy.order(NODES, b"")
    assert [e.name for e in strategy.order(NODES, b"")] == ["node-1", "node-2", "node-3", "node-0"]


def test_round_robin_survives_a_shrinking_list() -> None:
    strategy = RoundRobin()
    for _ in range(3):
        strategy.order(NODES, b"")
    assert strategy.order(NODES[:2], b"")[0] in NODES[:2]
    assert strategy.order([], b"") == []


@pytest.mark.parametrize("name", STRATEGY_NAMES)
@given(count=st.integers(0, 8), key=st.binary(max_size=16))
def test_every_strategy_returns_each_endpoint_once(name: str, count: int, key: bytes) -> None:
    strategy = make_strategy(name, rng=random.Random(0))
    nodes = endpoints(count)
    ordered = strategy.order(nodes, key)
    assert sorted(e.name for e in ordered) == sorted(e.name for e in nodes)


def test_random_order_is_seedable_and_varies() -> None:
    a = RandomOrder(random.Random(7))
    b = RandomOrder(random.Random(7))
    orders_a = [tuple(e.name for e in a.order(NODES, b"")) for _ in range(20)]
    orders_b = [tuple(e.name for e in b.order(NODES, b"")) for _ in range(20)]
    assert orders_a == orders_b
    assert len(set(orders_a)) > 1


def test_weighted_first_choice_follows_the_weights() -> None:
    strategy = Weighted({"node-0": 3.0, "node-1": 1.0}, default=0.0, rng=random.Random(1))
    firsts = collections.Counter(strategy.order(NODES[:2], b"")[0].name for _ in range(4000))
    assert 0.70 < firsts["node-0"] / 4000 < 0.80


def test_weighted_zero_weight_goes_last() -> None:
    strategy = Weighted({"node-2": 0.0}, rng=random.Random(3))
    for _ in range(50):
        assert strategy.order(NODES, b"")[-1].name == "node-2"


def test_weighted_accepts_tcp_address_keys() -> None:
    strategy = Weighted({NODES[1].tcp_address: 5.0})
    assert strategy.weight(NODES[1]) == 5.0
    assert strategy.weight(NODES[0]) == 1.0


@pytest.mark.parametrize("weight", [-1.0, float("inf"), float("nan")])
def test_weighted_refuses_bad_weights(weight: float) -> None:
    with pytest.raises(ConfigError):
        Weighted({"node-0": weight})


def test_consistent_hash_is_stable_for_a_key() -> None:
    strategy = ConsistentHash()
    first = strategy.order(NODES, b"user-42")
    for _ in range(10):
        assert strategy.order(list(reversed(NODES)), b"user-42") == first


def test_consistent_hash_spreads_keys() -> None:
    strategy = ConsistentHash()
    counts = collections.Counter(strategy.order(NODES, b"key-%d" % i)[0].name for i in range(2000))
    assert set(counts) == {e.name for e in NODES}
    assert min(counts.values()) > 350  # 500 each on average


def test_consistent_hash_removing_a_node_moves_only_its_keys() -> None:
    strategy = ConsistentHash()
    keys = [b"key-%d" % i for i in range(1000)]
    before = {k: strategy.order(NODES, k)[0].name for k in keys}
    after = {k: strategy.order(NODES[:3], k)[0].name for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved
    assert all(before[k] == "node-3" for k in moved)


def test_consistent_hash_fallback_is_the_next_choice() -> None:
    strategy = ConsistentHash()
    order = strategy.order(NODES, b"k")
    without_first = [e for e in NODES if e != order[0]]
    assert strategy.order(without_first, b"k") == order[1:]


def test_make_strategy_refuses_unknown_names() -> None:
    with pytest.raises(ConfigError, match="unknown strategy"):
        make_strategy("fastest")


def test_make_strategy_refuses_weights_for_other_strategies() -> None:
    with pytest.raises(ConfigError, match="weighted"):
        make_strategy("round-robin", weights={"node-0": 2.0})
