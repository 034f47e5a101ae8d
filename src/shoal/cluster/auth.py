"""Asks nsqd-style auth servers what a connection's secret grants.

nsqd's ``--auth-http-address`` (repeatable) names the servers; each query
starts at a random one and takes the first valid answer
(``QueryAnyAuthd``). An address is ``host:port`` (then the path is
``/auth``) or a full ``http://`` URL. The answer's meaning lives in the
pure `shoal.queue.auth`; this is the I/O around it.
"""

from __future__ import annotations

import logging
import random
import time
import urllib.parse

import trio

from shoal.errors import ConfigError
from shoal.queue.auth import AuthState, InvalidAuthResponse, parse_auth_response

__all__ = ["AuthClient", "parse_auth_address"]

log = logging.getLogger("shoal.auth")

#: nsqd's ``--http-client-connect-timeout`` plus ``--http-client-request-timeout``.
QUERY_TIMEOUT = 7.0
#: An auth answer is small; anything larger is refused.
MAX_ANSWER = 1024 * 1024


def parse_auth_address(text: str) -> tuple[str, str]:
    """Split an auth server address into (``host:port``, path).

    Raises:
        ConfigError: a URL that is not ``http://host:port/...``.
    """
    if "://" not in text:
        return text, "/auth"
    url = urllib.parse.urlsplit(text)
    if url.scheme != "http" or not url.netloc:
        raise ConfigError(f"auth-http-address {text!r}: only http:// URLs are supported")
    netloc = url.netloc if url.port else f"{url.netloc}:80"
    return netloc, url.path or "/"


class AuthClient:
    """The node's auth servers.

    Args:
        addresses: ``--auth-http-address`` values.
        rng: picks the first server to ask.
    """

    def __init__(self, addresses: tuple[str, ...], rng: random.Random | None = None) -> None:
        self.servers = [parse_auth_address(address) for address in addresses]
        self._rng = rng if rng is not None else random.Random()

    async def query(
        self, *, remote_ip: str, tls: bool, secret: str, common_name: str
    ) -> AuthState | None:
        """Ask the servers in turn; the first valid answer wins.

        Returns:
            The answer, or None when none gave one (each failure is logged,
            never shown to the client, as in nsqd).
        """
        params = {
            "remote_ip": remote_ip,
            "tls": "true" if tls else "false",
            "secret": secret,
            "common_name": common_name,
        }
        # Imported here: importing shoal.client loads the whole client
        # library, which a node without auth servers never uses (start-up).
        from shoal.client.errors import NodeUnavailable
        from shoal.client.httpclient import request

        count = len(self.servers)
        start = self._rng.randrange(count) if count else 0
        for i in range(count):
            address, path = self.servers[(start + i) % count]
            try:
                with trio.fail_after(QUERY_TIMEOUT):
                    response = await request(
                        address, "GET", path, params=params, max_size=MAX_ANSWER
                    )
            except NodeUnavailable as exc:
                log.warning("auth: failed auth against %s: %s", address, exc)
                continue
            except trio.TooSlowError:
                log.warning("auth: failed auth against %s: no answer in time", address)
                continue
            if response.status != 200:
                log.warning("auth: failed auth against %s: status %d", address, response.status)
                continue
            try:
                return parse_auth_response(response.body, time.time())
            except InvalidAuthResponse as exc:
                log.warning("auth: failed auth against %s: %s", address, exc)
        return None
