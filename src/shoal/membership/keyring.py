"""Gossip encryption: AES-GCM with a keyring, the cluster label as associated data.

Rules:

1. Pure: no sockets, no clock. Nonces come from ``os.urandom`` unless a
   ``nonce_source`` is injected (tests inject a deterministic one).
2. Index 0 of the keyring is the *primary* key, the only one that encrypts;
   every key is tried when decrypting. That is how a key is rotated without
   splitting the cluster (Serf ``keys -install``, ``-use``, ``-remove``;
   reference/membership.md §1.9, §2.8): install the new key everywhere as a
   secondary, make it primary everywhere, then remove the old one.
3. Anything that does not authenticate under some key, for the given label,
   raises `RemoteProtocolError`; callers count it and drop it.

Sealed format (on the wire; the version byte is append-only)::

    version (1 byte, SEAL_VERSION) || nonce (12 bytes) || ciphertext || tag (16 bytes)

The associated data is ``version || label``: a message sealed for a cluster
labelled ``a`` does not open in a cluster labelled ``b``, so two clusters
sharing a key and a network cannot cross-talk (memberlist's label, PR #246).
The version byte differs from the plaintext codec's (1), so plaintext reaching
a keyed node is refused before any key is tried.

Nonces are 96 random bits, as memberlist draws them. With random nonces a key
should seal fewer than 2**32 messages (NIST SP 800-38D §8.3): about four
years at 30 datagrams a second; rotate keys well before that.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import TYPE_CHECKING, Final

from shoal.errors import ConfigError, RemoteProtocolError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "KEY_SIZES",
    "NONCE_SIZE",
    "SEAL_OVERHEAD",
    "SEAL_VERSION",
    "TAG_SIZE",
    "Keyring",
    "generate_key",
    "parse_key",
]

#: First byte of every sealed message. On the wire: never reuse a value.
SEAL_VERSION: Final = 0x80
#: AES-GCM nonce length in bytes.
NONCE_SIZE: Final = 12
#: AES-GCM authentication tag length in bytes.
TAG_SIZE: Final = 16
#: Bytes a sealed message has beyond its plaintext.
SEAL_OVERHEAD: Final = 1 + NONCE_SIZE + TAG_SIZE
#: Accepted key lengths: AES-128, AES-192, AES-256.
KEY_SIZES: Final = (16, 24, 32)

_VERSION_BYTE = bytes((SEAL_VERSION,))


class Keyring:
    """An ordered set of AES keys; the first encrypts, all decrypt.

    A keyring is immutable: to rotate, build a new one (for instance
    ``Keyring([new, old])``, later ``Keyring([new])``) and hand it to the
    driver.

    Args:
        keys: raw AES keys of 16, 24 or 32 bytes, primary first. Duplicates
            are ignored after their first occurrence.
        nonce_source: returns ``n`` random bytes; defaults to ``os.urandom``.
            Inject a deterministic one in tests only: a repeated nonce under
            one key breaks AES-GCM's confidentiality and authenticity.

    Raises:
        ConfigError: no key is given, or a key has the wrong length or type.
    """

    __slots__ = ("_ciphers", "_invalid_tag", "_keys", "_nonce_source")

    def __init__(
        self,
        keys: Sequence[bytes],
        *,
        nonce_source: Callable[[int], bytes] | None = None,
    ) -> None:
        unique: list[bytes] = []
        for key in keys:
            # Typed as bytes, but keys come from user configuration: check.
            candidate: object = key
            if not isinstance(candidate, bytes) or len(key) not in KEY_SIZES:
                raise ConfigError("gossip keys must be 16, 24 or 32 bytes (AES-128/192/256)")
            if key not in unique:
                unique.append(key)
        if not unique:
            raise ConfigError("a keyring needs at least one key")
        self._keys = tuple(unique)
        # Imported here: most nodes run without a key, and the cryptography
        # bindings would add tens of milliseconds to every start-up.
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._invalid_tag = InvalidTag
        self._ciphers = tuple(AESGCM(key) for key in unique)
        self._nonce_source = os.urandom if nonce_source is None else nonce_source

    @property
    def keys(self) -> tuple[bytes, ...]:
        """The keys, primary first."""
        return self._keys

    @property
    def primary(self) -> bytes:
        """The key that encrypts."""
        return self._keys[0]

    def installing(self, key: bytes) -> Keyring:
        """This keyring with ``key`` added as a secondary (Serf ``keys -install``).

        Installing a key already held changes nothing.

        Raises:
            ConfigError: the key has the wrong length.
        """
        return Keyring([*self._keys, key], nonce_source=self._nonce_source)

    def using(self, key: bytes) -> Keyring:
        """This keyring with ``key``, already installed, as the primary (``keys -use``).

        Raises:
            ConfigError: the key is not installed: making an unknown key
                primary would seal for peers that cannot open it.
        """
        if key not in self._keys:
            raise ConfigError("the key is not installed; install it everywhere first")
        return Keyring([key, *self._keys], nonce_source=self._nonce_source)

    def removing(self, key: bytes) -> Keyring:
        """This keyring without ``key`` (``keys -remove``).

        Raises:
            ConfigError: the key is the primary (make another key primary
                first), or is not installed.
        """
        if key not in self._keys:
            raise ConfigError("the key is not installed")
        if key == self._keys[0]:
            raise ConfigError("the primary key cannot be removed; use another key first")
        return Keyring([k for k in self._keys if k != key], nonce_source=self._nonce_source)

    def __repr__(self) -> str:
        # Never print key material.
        return f"<Keyring with {len(self._keys)} key(s)>"

    def seal(self, plaintext: bytes, *, label: bytes = b"") -> bytes:
        """Encrypt and authenticate ``plaintext`` with the primary key.

        Args:
            plaintext: the bytes to protect (may be empty).
            label: the cluster label, authenticated but not sent.

        Returns:
            ``SEAL_OVERHEAD`` bytes more than ``plaintext``, in the sealed format.
        """
        nonce = self._nonce_source(NONCE_SIZE)
        sealed = self._ciphers[0].encrypt(nonce, plaintext, _VERSION_BYTE + label)
        return b"".join((_VERSION_BYTE, nonce, sealed))

    def open(self, data: bytes, *, label: bytes = b"") -> bytes:
        """Authenticate and decrypt ``data`` with whichever key sealed it.

        Args:
            data: a sealed message, as `seal` returns it.
            label: the cluster label it must have been sealed with.

        Returns:
            The plaintext.

        Raises:
            RemoteProtocolError: ``data`` is truncated, has another version
                byte (plaintext, for instance), was tampered with, or was sealed
                with a key or a label we do not hold. Nothing else is raised.
        """
        if len(data) < SEAL_OVERHEAD:
            raise RemoteProtocolError(f"sealed message of {len(data)} bytes is truncated")
        if data[0] != SEAL_VERSION:
            raise RemoteProtocolError(
                f"sealed message has version {data[0]}, expected {SEAL_VERSION}"
            )
        nonce = data[1 : 1 + NONCE_SIZE]
        sealed = data[1 + NONCE_SIZE :]
        aad = _VERSION_BYTE + label
        invalid_tag = self._invalid_tag
        for cipher in self._ciphers:
            try:
                return cipher.decrypt(nonce, sealed, aad)
            except invalid_tag:
                continue
        raise RemoteProtocolError("no key in the keyring authenticates the message")


def parse_key(text: str) -> bytes:
    """Decode a base64 gossip key, as ``shoal keygen`` prints it.

    Surrounding whitespace is ignored.

    Raises:
        ConfigError: the text is not base64, or does not decode to 16, 24 or
            32 bytes.
    """
    try:
        key = base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ConfigError("gossip key is not valid base64") from None
    if len(key) not in KEY_SIZES:
        raise ConfigError(
            f"gossip key decodes to {len(key)} bytes; AES needs 16, 24 or 32 (32 recommended)"
        )
    return key


def generate_key() -> str:
    """Return a fresh AES-256 gossip key (32 random bytes), base64 encoded."""
    return base64.b64encode(os.urandom(32)).decode("ascii")
