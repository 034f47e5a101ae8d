"""TLS and AUTH policies in front of the nsqd HTTP API.

Two wrappers that build a new `Router` from the API's routes, so the API
itself (`shoal.cluster.http_api`) stays unaware of them:

- `tls_required`: with nsqd's ``--tls-required=true``, the plain HTTP
  listener answers every request with 403 ``{"message": "TLS_REQUIRED",
  "https_port": N}`` (nsq.md §2.1); nsqadmin then retries on HTTPS.
- `publish_auth`: with ``--auth-http-address``, ``/pub`` and ``/mpub``
  need a secret the auth servers grant ``publish`` on the topic, sent as
  ``Authorization: Bearer <secret>``: 401 ``AUTH_REQUIRED`` without one,
  401 ``AUTH_FAILED`` when no auth server answers, 403 ``UNAUTHORIZED``
  when the grant does not cover the topic. nsqd's HTTP API does not check
  AUTH at all, which leaves an open publish path beside an authenticated
  TCP port; shoal closes it. Answers are cached per secret until their ttl.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from shoal.cluster.http_server import Request, Response, Router

if TYPE_CHECKING:
    from collections.abc import Callable

    from shoal.cluster.auth import AuthClient
    from shoal.cluster.http_server import Handler, Route
    from shoal.queue.auth import AuthState

__all__ = ["PUBLISH_PATHS", "publish_auth", "tls_required"]

#: The nsqd HTTP endpoints that publish.
PUBLISH_PATHS = frozenset({"/pub", "/mpub"})
#: Secrets whose answers are remembered; the cache is emptied when full.
MAX_CACHED_SECRETS = 1024


def _rebuild(router: Router, wrap: Callable[[Route], Handler]) -> Router:
    out = Router(headers=router.headers)
    for route in router.routes():
        out.add(
            route.method,
            route.path,
            wrap(route),
            max_body_size=route.max_body_size,
            too_big=route.too_big,
            log=route.log,
        )
    return out


def tls_required(router: Router, https_port: int) -> Router:
    """``router``'s routes, each refused with 403 TLS_REQUIRED."""

    def refuse(_request: Request) -> Response:
        return Response.json({"message": "TLS_REQUIRED", "https_port": https_port}, 403)

    return _rebuild(router, lambda _route: refuse)


def publish_auth(router: Router, auth: AuthClient, *, tls: bool) -> Router:
    """``router`` with its publish routes checked against the auth servers.

    Args:
        router: the nsqd HTTP API.
        auth: the auth servers.
        tls: whether this router is served over HTTPS (sent to the servers).
    """
    cache: dict[str, AuthState] = {}

    async def answer(secret: str, remote: str) -> AuthState | None:
        state = cache.get(secret)
        if state is not None and not state.expired(time.time()):
            return state
        state = await auth.query(
            remote_ip=remote.rpartition(":")[0].strip("[]"),
            tls=tls,
            secret=secret,
            common_name="",
        )
        if state is not None:
            if len(cache) >= MAX_CACHED_SECRETS:
                cache.clear()
            cache[secret] = state
        return state

    def wrap(route: Route) -> Handler:
        if route.path not in PUBLISH_PATHS:
            return route.handler
        inner = route.handler

        async def checked(request: Request) -> Response:
            header = request.header("authorization") or ""
            scheme, _, secret = header.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                return Response.error(401, "AUTH_REQUIRED")
            state = await answer(secret.strip(), request.remote)
            if state is None:
                return Response.error(401, "AUTH_FAILED")
            if not state.allows(request.arg("topic") or "", ""):
                return Response.error(403, "UNAUTHORIZED")
            result = inner(request)
            return result if isinstance(result, Response) else await result

        return checked

    return _rebuild(router, wrap)
