"""AES-GCM sealing with a keyring: round trips, refusals, rotation and key parsing."""

from __future__ import annotations

import base64
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import ConfigError, RemoteProtocolError
from shoal.membership.keyring import (
    SEAL_OVERHEAD,
    SEAL_VERSION,
    Keyring,
    generate_key,
    parse_key,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


def test_keyring_round_trip() -> None:
    ring = Keyring([KEY_A])
    sealed = ring.seal(b"hello gossip", label=b"shoal")
    assert ring.open(sealed, label=b"shoal") == b"hello gossip"
    assert len(sealed) == len(b"hello gossip") + SEAL_OVERHEAD
    assert sealed[0] == SEAL_VERSION
    assert b"hello gossip" not in sealed


@pytest.mark.parametrize("size", [16, 24, 32])
def test_keyring_accepts_every_aes_key_size(size: int) -> None:
    ring = Keyring([bytes(size)])
    assert ring.open(ring.seal(b"x")) == b"x"


def test_keyring_round_trips_empty_plaintext() -> None:
    ring = Keyring([KEY_A])
    assert ring.open(ring.seal(b"")) == b""


@given(st.binary(max_size=2048), st.binary(max_size=64))
def test_keyring_round_trip_any_bytes(plaintext: bytes, label: bytes) -> None:
    ring = Keyring([KEY_A])
    assert ring.open(ring.seal(plaintext, label=label), label=label) == plaintext


def test_keyring_uses_a_fresh_nonce_per_message() -> None:
    ring = Keyring([KEY_A])
    assert ring.seal(b"same") != ring.seal(b"same")


def test_keyring_takes_nonces_from_injected_source() -> None:
    counter = itertools.count()

    def nonces(n: int) -> bytes:
        return next(counter).to_bytes(n, "big")

    ring = Keyring([KEY_A], nonce_source=nonces)
    first = ring.seal(b"m")
    second = ring.seal(b"m")
    assert first[1:13] == bytes(12)
    assert second[1:13] == (1).to_bytes(12, "big")
    assert ring.open(second) == b"m"


def test_keyring_refuses_wrong_key() -> None:
    sealed = Keyring([KEY_A]).seal(b"secret")
    with pytest.raises(RemoteProtocolError):
        Keyring([KEY_B]).open(sealed)


@pytest.mark.parametrize("index", [0, 1, 12, 13, -1])
def test_keyring_refuses_tampered_byte(index: int) -> None:
    ring = Keyring([KEY_A])
    sealed = bytearray(ring.seal(b"a message worth protecting"))
    sealed[index] ^= 0x01
    with pytest.raises(RemoteProtocolError):
        ring.open(bytes(sealed))


@pytest.mark.parametrize("length", [0, 1, 13, SEAL_OVERHEAD - 1])
def test_keyring_refuses_truncated(length: int) -> None:
    ring = Keyring([KEY_A])
    sealed = ring.seal(b"")
    with pytest.raises(RemoteProtocolError, match="truncated"):
        ring.open(sealed[:length])


def test_keyring_refuses_truncated_ciphertext() -> None:
    ring = Keyring([KEY_A])
    sealed = ring.seal(b"some longer plaintext")
    with pytest.raises(RemoteProtocolError):
        ring.open(sealed[:-1])


def test_keyring_refuses_label_mismatch() -> None:
    ring = Keyring([KEY_A])
    sealed = ring.seal(b"gossip", label=b"cluster-a")
    with pytest.raises(RemoteProtocolError):
        ring.open(sealed, label=b"cluster-b")
    with pytest.raises(RemoteProtocolError):
        ring.open(sealed)


def test_keyring_refuses_plaintext() -> None:
    with pytest.raises(RemoteProtocolError, match="version"):
        Keyring([KEY_A]).open(b"\x01" + bytes(40))


@given(st.binary(max_size=200))
def test_keyring_open_raises_only_remote_protocol_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        Keyring([KEY_A, KEY_B]).open(data)


def test_keyring_rotation_old_key_decrypts_primary_encrypts() -> None:
    old = Keyring([KEY_A])
    rotated = Keyring([KEY_B, KEY_A])
    # Messages from nodes still on the old key open on a rotated node...
    assert rotated.open(old.seal(b"from old")) == b"from old"
    # ...and the rotated node seals with its new primary only.
    sealed = rotated.seal(b"from new")
    assert Keyring([KEY_B]).open(sealed) == b"from new"
    with pytest.raises(RemoteProtocolError):
        old.open(sealed)
    assert rotated.primary == KEY_B
    assert rotated.keys == (KEY_B, KEY_A)


def test_keyring_drops_duplicate_keys() -> None:
    assert Keyring([KEY_A, KEY_B, KEY_A]).keys == (KEY_A, KEY_B)


def test_keyring_repr_hides_keys() -> None:
    assert KEY_A.hex() not in repr(Keyring([KEY_A]))
    assert "1 key" in repr(Keyring([KEY_A]))


@pytest.mark.parametrize("keys", [[], [b"short"], [bytes(33)], [KEY_A, bytes(8)]])
def test_keyring_refuses_bad_keys(keys: list[bytes]) -> None:
    with pytest.raises(ConfigError):
        Keyring(keys)


def test_parse_key_round_trips_generated_key() -> None:
    text = generate_key()
    key = parse_key(text)
    assert len(key) == 32
    assert base64.b64encode(key).decode() == text
    assert generate_key() != text


def test_parse_key_ignores_surrounding_whitespace() -> None:
    text = base64.b64encode(KEY_A).decode()
    assert parse_key(f"  {text}\n") == KEY_A


@pytest.mark.parametrize("size", [16, 24])
def test_parse_key_accepts_shorter_aes_keys(size: int) -> None:
    assert parse_key(base64.b64encode(bytes(size)).decode()) == bytes(size)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not base64!!", "base64"),
        ("abc", "base64"),  # bad padding
        ("é" * 44, "base64"),
        (base64.b64encode(bytes(20)).decode(), "20 bytes"),
        ("", "0 bytes"),
    ],
)
def test_parse_key_refuses_bad_input_with_one_line_error(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        parse_key(text)
    assert "\n" not in str(info.value)
