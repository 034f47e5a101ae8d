"""What an nsqd auth server grants a connection, as a pure value.

nsqd's auth protocol (nsq.md §1.4): after AUTH the node asks an auth server
``GET /auth?remote_ip=&tls=&secret=&common_name=`` and receives
``{"ttl", "identity", "identity_url", "authorizations": [{"topic",
"channels", "permissions"}]}``. The answer is cached for ``ttl`` seconds and
asked again lazily, on the first PUB or SUB after it expired.

This module parses and judges that answer; the query itself (sockets, the
list of servers) is the shell's (`shoal.cluster.auth`). Topic and channel
patterns are regular expressions matched anywhere in the name, as Go's
``regexp.MatchString`` does; a publish is checked against the empty channel
name, so a grant meant for publishing lists a channel pattern such as ``.*``.
"""

from __future__ import annotations

import dataclasses
import json
import re

from shoal.errors import ShoalError

__all__ = ["AuthGrant", "AuthState", "InvalidAuthResponse", "parse_auth_response"]

#: The only permissions nsqd knows; any other makes the whole answer invalid.
PERMISSIONS = frozenset({"subscribe", "publish"})


class InvalidAuthResponse(ShoalError):
    """The auth server's answer is not one nsqd would accept."""


@dataclasses.dataclass(frozen=True, slots=True)
class AuthGrant:
    """One authorization: topics matching ``topic``, channels matching any of ``channels``."""

    topic: re.Pattern[str]
    channels: tuple[re.Pattern[str], ...]
    permissions: frozenset[str]

    def allows(self, topic: str, channel: str) -> bool:
        """Whether this grant covers a publish (``channel`` empty) or a subscribe."""
        needed = "subscribe" if channel else "publish"
        if needed not in self.permissions:
            return False
        if self.topic.search(topic) is None:
            return False
        return any(pattern.search(channel) is not None for pattern in self.channels)


@dataclasses.dataclass(frozen=True, slots=True)
class AuthState:
    """A connection's cached authorization.

    Attributes:
        identity: who the secret belongs to, for logs and /stats.
        identity_url: where to learn more about that identity.
        grants: the authorizations; none means "authenticated, allowed nothing".
        expires: wall-clock time after which the server is asked again.
    """

    identity: str
    identity_url: str
    grants: tuple[AuthGrant, ...]
    expires: float

    def expired(self, now: float) -> bool:
        """Whether the cached answer must be asked for again before use."""
        return now >= self.expires

    def allows(self, topic: str, channel: str) -> bool:
        """Whether any grant covers ``topic`` (and ``channel``, for a subscribe)."""
        return any(grant.allows(topic, channel) for grant in self.grants)


def parse_auth_response(body: bytes, now: float) -> AuthState:
    """Turn an auth server's JSON answer into an `AuthState` valid from ``now``.

    Raises:
        InvalidAuthResponse: the body is not JSON of the expected shape, names
            an unknown permission, carries a pattern that does not compile, or
            a ttl that is not positive (nsqd refuses the same answers).
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidAuthResponse("auth server answer is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidAuthResponse("auth server answer is not a JSON object")
    ttl = data.get("ttl", 0)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
        raise InvalidAuthResponse(f"invalid TTL {ttl!r} (must be >0)")
    identity = data.get("identity", "")
    identity_url = data.get("identity_url", "")
    if not isinstance(identity, str) or not isinstance(identity_url, str):
        raise InvalidAuthResponse("identity and identity_url must be strings")
    raw_grants = data.get("authorizations") or []
    if not isinstance(raw_grants, list):
        raise InvalidAuthResponse("authorizations must be a list")
    grants = tuple(_grant(item) for item in raw_grants)
    return AuthState(identity, identity_url, grants, now + ttl)


def _grant(item: object) -> AuthGrant:
    if not isinstance(item, dict):
        raise InvalidAuthResponse("an authorization is not a JSON object")
    permissions = item.get("permissions") or []
    channels = item.get("channels") or []
    topic = item.get("topic", "")
    if not isinstance(permissions, list) or not isinstance(channels, list):
        raise InvalidAuthResponse("permissions and channels must be lists")
    for permission in permissions:
        if permission not in PERMISSIONS:
            raise InvalidAuthResponse(f"unknown permission {permission!r}")
    return AuthGrant(
        topic=_compile(topic, "topic"),
        channels=tuple(_compile(channel, "channel") for channel in channels),
        permissions=frozenset(permissions),
    )


def _compile(pattern: object, what: str) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise InvalidAuthResponse(f"{what} pattern {pattern!r} is not a string")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InvalidAuthResponse(f"unable to compile {what} {pattern!r} {exc}") from None
