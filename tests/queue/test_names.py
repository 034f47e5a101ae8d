from __future__ import annotations

import string
from collections.abc import Callable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shoal.queue.names import is_ephemeral, is_valid_channel_name, is_valid_topic_name

NAME_ALPHABET = string.ascii_letters + string.digits + "._-"
Validator = Callable[[str], bool]
VALIDATORS: list[Validator] = [is_valid_topic_name, is_valid_channel_name]


@pytest.mark.parametrize("valid", VALIDATORS)
@pytest.mark.parametrize("name", ["a", "orders", "Orders.v2", "a_b-c.d", "0", "...", "---"])
def test_name_accepts_allowed_characters(valid: Validator, name: str) -> None:
    assert valid(name)


@pytest.mark.parametrize("valid", VALIDATORS)
@pytest.mark.parametrize(
    "name",
    ["", "a b", "a*b", "a/b", "a:b", "tópico", "a\n", "a#b", "#ephemeral", "a#Ephemeral"],
)
def test_name_rejects_forbidden_characters(valid: Validator, name: str) -> None:
    assert not valid(name)


@pytest.mark.parametrize("valid", VALIDATORS)
def test_name_accepts_ephemeral_suffix(valid: Validator) -> None:
    assert valid("clicks#ephemeral")


@pytest.mark.parametrize("valid", VALIDATORS)
def test_name_rejects_doubled_ephemeral_suffix(valid: Validator) -> None:
    assert not valid("clicks#ephemeral#ephemeral")


@pytest.mark.parametrize("valid", VALIDATORS)
def test_name_length_limit_is_64(valid: Validator) -> None:
    assert valid("a" * 64)
    assert not valid("a" * 65)


@pytest.mark.parametrize("valid", VALIDATORS)
def test_name_length_limit_counts_ephemeral_suffix(valid: Validator) -> None:
    assert valid("a" * 54 + "#ephemeral")
    assert not valid("a" * 55 + "#ephemeral")


def test_is_ephemeral_detects_suffix() -> None:
    assert is_ephemeral("clicks#ephemeral")
    assert not is_ephemeral("clicks")
    assert not is_ephemeral("clicks#ephemera")


@given(st.text(NAME_ALPHABET, min_size=1, max_size=64))
def test_name_accepts_any_short_name_over_alphabet(name: str) -> None:
    assert is_valid_topic_name(name)
    assert is_valid_channel_name(name)


@given(
    st.text(NAME_ALPHABET, max_size=30),
    st.characters().filter(lambda c: c not in NAME_ALPHABET),
    st.text(NAME_ALPHABET, max_size=30),
)
def test_name_rejects_any_foreign_character(head: str, foreign: str, tail: str) -> None:
    name = head + foreign + tail
    assume(not (foreign == "#" and tail == "ephemeral" and head))
    assert not is_valid_topic_name(name)
    assert not is_valid_channel_name(name)
