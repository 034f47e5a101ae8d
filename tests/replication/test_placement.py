import random

from hypothesis import given
from hypothesis import strategies as st

from shoal.replication import adopter, rank, replicas, weight

names = st.lists(st.text("abcdefgh:.0123456789", min_size=1, max_size=12), unique=True)


def test_weight_is_stable_across_processes() -> None:
    # blake2b of b"n1\x00t\x00n2", first 8 bytes: a fixed value, whatever the hash seed.
    assert weight("n1", "t", "n2") == weight("n1", "t", "n2")
    assert weight("n1", "t", "n2") != weight("n1", "t", "n3")
    assert weight("n1", "t", "n2") != weight("n2", "t", "n1")


def test_replicas_exclude_the_owner() -> None:
    members = [f"n{i}" for i in range(10)]
    chosen = replicas("n3", "events", members, 3)
    assert len(chosen) == 2
    assert "n3" not in chosen


def test_replicas_factor_one_is_none() -> None:
    assert replicas("n1", "t", ["n1", "n2"], 1) == ()


def test_replicas_fewer_alive_than_wanted() -> None:
    assert replicas("n1", "t", ["n1", "n2"], 3) == ("n2",)


@given(names, st.integers(min_value=2, max_value=5))
def test_replicas_agree_whatever_the_view_order(members: list[str], factor: int) -> None:
    shuffled = list(members)
    random.Random(0).shuffle(shuffled)
    assert replicas("owner", "t", members, factor) == replicas("owner", "t", shuffled, factor)


@given(names, st.integers(min_value=2, max_value=4), st.data())
def test_a_dead_replica_is_replaced_by_the_next_in_order(
    members: list[str], factor: int, data: st.DataObject
) -> None:
    chosen = replicas("owner", "t", members, factor)
    if not chosen:
        return
    dead = data.draw(st.sampled_from(chosen))
    survivors = [m for m in members if m != dead]
    after = replicas("owner", "t", survivors, factor)
    # Every surviving replica keeps its copy (minimal disruption).
    assert set(chosen) - {dead} <= set(after)
    assert dead not in after


def test_rank_spreads_topics_over_members() -> None:
    members = [f"n{i}" for i in range(8)]
    firsts = {rank("owner", f"topic-{i}", members)[0] for i in range(200)}
    assert len(firsts) == 8


def test_adopter_is_first_alive_holder() -> None:
    members = [f"n{i}" for i in range(6)]
    order = rank("n0", "t", members)
    holders = {order[1], order[3]}
    assert adopter("n0", "t", members, holders) == order[1]
    alive = [m for m in members if m != order[1]]
    assert adopter("n0", "t", alive, holders) == order[3]
    assert adopter("n0", "t", [order[0], order[2]], holders) is None
