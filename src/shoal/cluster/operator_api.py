"""Serf's agent operations on a node's HTTP port: join, force-leave, keys.

Serf users expect ``serf join``, ``serf force-leave`` and ``serf keys`` to
act on a running agent; these routes are what ``shoal join``,
``shoal force-leave`` and ``shoal keys`` call. Each acts on *this* node
only. The cluster-wide operations (``force-leave``, every ``keys``
operation) are a fan-out by the caller to every live member, as Serf's own
key manager queries every member and counts the replies
(reference/membership.md §1.9): a member that does not answer is named in
the caller's report, and the operation is safe to repeat.

Routes (errors are nsqd-style ``{"message": CODE}``):

- ``POST /join?address=HOST:PORT`` (repeatable): join through those gossip
  addresses, as ``--seed`` does at start-up; retried in the background
  while they do not answer. 400 ``MISSING_ARG_ADDRESS``,
  ``INVALID_ADDRESS``.
- ``POST /force-leave?name=NAME``: forget a failed or left member now
  instead of after ``dead_retention``, and stop reconnecting to it. 404
  ``MEMBER_NOT_FOUND``, 400 ``MEMBER_NOT_FAILED``.
- ``GET /keys``: ``{"primary": KEY, "keys": [KEY, ...]}`` (base64). 400
  ``ENCRYPTION_DISABLED`` on a node started without ``--gossip-key``.
- ``POST /keys/install``, ``/keys/use``, ``/keys/remove``, the base64 key as
  the body (kept out of URLs and so out of access logs): change the
  keyring in place, effective for the next packet. 400 ``INVALID_KEY``,
  ``KEY_NOT_INSTALLED``, ``PRIMARY_KEY``, ``ENCRYPTION_DISABLED``.

Rotation without restarts is then Serf's three steps: install the new key
on every member (all still seal with the old primary, all can open the
new), use it on every member (each seals with the new key, which every
member can open), remove the old one.

Like ``/leave``, these routes trust whoever reaches the HTTP port: bind it
to a private address.
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING

from shoal.cluster.http_server import Request, Response
from shoal.config import parse_address
from shoal.errors import ConfigError, LocalProtocolError
from shoal.membership.keyring import parse_key

if TYPE_CHECKING:
    from collections.abc import Callable

    from shoal.cluster.http_server import Router
    from shoal.cluster.membership_driver import MembershipDriver
    from shoal.membership.keyring import Keyring

__all__ = ["OperatorAPI"]

log = logging.getLogger(__name__)

#: Largest body a key operation accepts: a base64 AES-256 key is 44 bytes.
MAX_KEY_BODY = 1024


class OperatorAPI:
    """The join, force-leave and keyring routes of one node.

    Args:
        driver: the node's membership driver.
    """

    def __init__(self, driver: MembershipDriver) -> None:
        self._driver = driver

    def add_routes(self, router: Router) -> None:
        """Add every route of the module docstring to ``router``."""
        router.add("POST", "/join", self.join)
        router.add("POST", "/force-leave", self.force_leave)
        router.add("GET", "/keys", self.keys)
        for verb, change in (
            ("install", _install),
            ("use", _use),
            ("remove", _remove),
        ):
            router.add(
                "POST",
                f"/keys/{verb}",
                self._key_change(verb, change),
                max_body_size=MAX_KEY_BODY,
                too_big="INVALID_KEY",
            )

    async def join(self, request: Request) -> Response:
        """POST /join: join through the given gossip addresses."""
        addresses = request.query.get("address") or []
        if not addresses:
            return Response.error(400, "MISSING_ARG_ADDRESS")
        try:
            for address in addresses:
                parse_address(address, what="address")
            resolved = await self._driver.join(addresses)
        except (ConfigError, OSError):
            return Response.error(400, "INVALID_ADDRESS")
        log.info("join requested over HTTP by %s: %s", request.remote, ", ".join(addresses))
        return Response.json({"resolved": [f"{host}:{port}" for host, port in resolved]})

    def force_leave(self, request: Request) -> Response:
        """POST /force-leave: forget a failed or left member now."""
        name = request.arg("name")
        if not name:
            return Response.error(400, "MISSING_ARG_NAME")
        try:
            forgotten = self._driver.forget(name)
        except LocalProtocolError:
            return Response.error(400, "MEMBER_NOT_FAILED")
        if not forgotten:
            return Response.error(404, "MEMBER_NOT_FOUND")
        log.info("force-leave of %s requested over HTTP by %s", name, request.remote)
        return Response.text("OK")

    def keys(self, request: Request) -> Response:
        """GET /keys: the keyring, primary first."""
        keyring = self._driver.keyring
        if keyring is None:
            return Response.error(400, "ENCRYPTION_DISABLED")
        encoded = [_encode(key) for key in keyring.keys]
        return Response.json({"primary": encoded[0], "keys": encoded})

    def _key_change(
        self, verb: str, change: Callable[[Keyring, bytes], Keyring]
    ) -> Callable[[Request], Response]:
        def handle(request: Request) -> Response:
            keyring = self._driver.keyring
            if keyring is None:
                return Response.error(400, "ENCRYPTION_DISABLED")
            try:
                key = parse_key(request.body.decode("ascii", errors="replace"))
            except ConfigError:
                return Response.error(400, "INVALID_KEY")
            try:
                updated = change(keyring, key)
            except _Refused as refused:
                return Response.error(400, refused.code)
            self._driver.set_keyring(updated)
            log.info("gossip keyring: %s by %s (%d keys)", verb, request.remote, len(updated.keys))
            return Response.text("OK")

        handle.__name__ = f"keys_{verb}"
        return handle


class _Refused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _install(keyring: Keyring, key: bytes) -> Keyring:
    return keyring.installing(key)


def _use(keyring: Keyring, key: bytes) -> Keyring:
    if key not in keyring.keys:
        raise _Refused("KEY_NOT_INSTALLED")
    return keyring.using(key)


def _remove(keyring: Keyring, key: bytes) -> Keyring:
    if key not in keyring.keys:
        raise _Refused("KEY_NOT_INSTALLED")
    if key == keyring.primary:
        raise _Refused("PRIMARY_KEY")
    return keyring.removing(key)


def _encode(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")
