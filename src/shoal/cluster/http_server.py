"""A small HTTP/1.1 server: h11 for the protocol, trio for the sockets.

Every HTTP port of a node (the nsqd API, the lookup API) is one `Router`
served by `serve_http`. The server knows nothing of NSQ beyond the error
convention both NSQ APIs share: an error is ``{"message": CODE}`` with the
status, and every reply carries the router's default headers (the NSQ APIs
put ``X-NSQ-Content-Type`` there, docs/nsq.md §2.1).

Rules:
1. One request at a time per connection, read completely before its handler
   runs (the body is bytes, bounded); keep-alive is HTTP/1.1's default,
   ``Connection: close`` and HTTP/1.0 end the connection after the reply.
2. Every input is bounded: the request head by `HTTPConfig.max_header_size`
   (h11's ``max_incomplete_event_size``, 431 beyond it), the body by the
   route's or the server's limit (413, sent before a byte of an announced
   oversize body is read), the wait for a request by `HTTPConfig.idle_timeout`
   and the time to receive it once it started by `HTTPConfig.request_timeout`
   (408), the time a reply may take to leave by `HTTPConfig.write_timeout`,
   and the number of connections by `HTTPConfig.max_connections`.
3. A handler never takes the server down: an exception becomes a logged 500
   ``INTERNAL_ERROR``; a malformed request gets 400 and its connection is
   closed, while every other connection carries on.
4. Requests a proxy in front could read differently are malformed: both
   ``Content-Length`` and ``Transfer-Encoding``, or a header continued on the
   next line (obs-fold, which h11 would join), get 400 (RFC 9112 §6.1 and
   §5.2 allow a server to refuse them; a proxy that framed the request by the
   other header would smuggle a second request past it).
5. The connection cap never locks a new client out while connections sit
   idle: when every slot is taken, the connection idle the longest (waiting
   for its next request, nothing received) is closed to make room.

Theory of operation:
    `HTTPServer.handle` owns one stream and one ``h11.Connection``. Each cycle
    waits for a request head (idle deadline; once the first byte arrives the
    request deadline applies), routes it, checks ``Content-Length`` against the
    route's limit, answers ``100 Continue`` if the client waits for it, reads
    the body, calls the handler, and writes the whole reply (head, body, end)
    in one ``send_all``. Then ``start_next_cycle`` for keep-alive, or close.

    Closing after a reply sent before the request was fully read (413, 400,
    408) half-closes first and drains what the client is still sending, for at
    most `LINGER_TIMEOUT` and `LINGER_BYTES`: closing a socket with unread
    input makes the kernel send a reset, which can destroy the reply before
    the client reads it.

    Handlers may be async and may wait (long polls): no deadline applies to a
    handler, only to reading the request and writing the reply.
"""

from __future__ import annotations

import dataclasses
import http
import inspect
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import h11
import msgspec
import trio

from shoal.errors import ConfigError, LocalProtocolError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "JSON_CONTENT_TYPE",
    "LINGER_BYTES",
    "LINGER_TIMEOUT",
    "TEXT_CONTENT_TYPE",
    "HTTPConfig",
    "HTTPServer",
    "Handler",
    "Request",
    "Response",
    "Route",
    "Router",
    "serve_http",
]

log = logging.getLogger("shoal.http")

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"

#: Bytes asked of the socket per read.
RECEIVE_SIZE = 64 * 1024
#: Longest a closing connection keeps draining a client's unread input.
LINGER_TIMEOUT = 1.0
#: Most bytes a closing connection drains before it closes anyway.
LINGER_BYTES = 256 * 1024


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HTTPConfig:
    """Limits of one HTTP server.

    Attributes:
        max_header_size: largest request head (request line plus headers) in
            bytes; a larger one gets 431. Also bounds chunk headers.
        max_body_size: largest request body of a route that sets no limit of
            its own; a larger one gets 413 ``BODY_TOO_BIG``.
        idle_timeout: how long a connection may wait for its next request
            (keep-alive) before it is closed quietly.
        request_timeout: how long a client may take to send a whole request
            once its first byte arrived; then 408 and close. Stops slow
            clients from pinning a connection.
        write_timeout: how long a reply may take to be written before the
            client is dropped (a client that stops reading).
        max_connections: connections served at once; at the cap the server
            closes the longest-idle keep-alive connection to serve the next
            one; with none idle the next one waits for a slot and the
            kernel's listen backlog holds the rest.
    """

    max_header_size: int = 16 * 1024
    max_body_size: int = 5_242_880
    idle_timeout: float = 30.0
    request_timeout: float = 10.0
    write_timeout: float = 10.0
    max_connections: int = 1024

    def __post_init__(self) -> None:
        if self.max_header_size < 1024:
            raise ConfigError("max-header-size must be at least 1024 bytes")
        if self.max_body_size < 0:
            raise ConfigError("max-body-size must not be negative")
        for name in ("idle_timeout", "request_timeout", "write_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.replace('_', '-')} must be positive")
        if self.max_connections < 1:
            raise ConfigError("max-connections must be at least 1")


class Request(msgspec.Struct, frozen=True, kw_only=True):
    """One complete HTTP request.

    Attributes:
        method: upper-case method, e.g. ``POST``.
        target: the request target as sent (path and query).
        path: the percent-decoded path, e.g. ``/topic/create``.
        query: query parameters, every value kept in order; a key without a
            value maps to ``[""]`` (Go's ``url.ParseQuery`` agrees).
        headers: ``(lower-case name, value)`` pairs in order.
        body: the whole body.
        params: values of the route's ``:name`` path segments.
        remote: the peer as ``ip:port``.
    """

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: list[tuple[str, str]]
    body: bytes = b""
    params: dict[str, str] = msgspec.field(default_factory=dict)
    remote: str = ""

    def arg(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None when absent."""
        values = self.query.get(name)
        return values[0] if values else None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        lower = name.lower()
        for key, value in self.headers:
            if key == lower:
                return value
        return None


class Response(msgspec.Struct, frozen=True, kw_only=True):
    """What a handler answers.

    ``Content-Length`` is always set by the server, so bodies are never
    chunked; ``content_type`` None sends no ``Content-Type``.
    """

    status: int = 200
    body: bytes = b""
    content_type: str | None = TEXT_CONTENT_TYPE
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def text(cls, text: str | bytes, status: int = 200) -> Response:
        """A plain-text reply (NSQ writes string results raw)."""
        body = text.encode() if isinstance(text, str) else text
        return cls(status=status, body=body, content_type=TEXT_CONTENT_TYPE)

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Response:
        """A compact JSON reply with ``application/json; charset=utf-8``."""
        body = json.dumps(data, separators=(",", ":")).encode()
        return cls(status=status, body=body, content_type=JSON_CONTENT_TYPE)

    @classmethod
    def error(
        cls, status: int, message: str, *, headers: Sequence[tuple[str, str]] = ()
    ) -> Response:
        """An error in NSQ's convention: ``{"message": message}`` with ``status``."""
        body = json.dumps({"message": message}, separators=(",", ":")).encode()
        return cls(status=status, body=body, content_type=JSON_CONTENT_TYPE, headers=tuple(headers))


#: A request handler: plain functions for quick answers, coroutines to wait.
Handler: TypeAlias = Callable[[Request], Response | Awaitable[Response]]


class Route(msgspec.Struct, frozen=True, kw_only=True):
    """One (method, path) entry of a `Router`.

    Attributes:
        method: the method served.
        path: the path pattern; a segment ``:name`` matches any one non-empty
            segment and is passed as ``request.params[name]``.
        handler: called with the `Request`; may be async.
        max_body_size: largest body accepted; None uses the server's limit.
        too_big: the 413 message for a larger body (nsqd says
            ``MSG_TOO_BIG`` on /pub, ``BODY_TOO_BIG`` on /mpub).
        log: log each request at INFO (nsqd logs every endpoint but /pub and
            /mpub); otherwise at DEBUG.
    """

    method: str
    path: str
    handler: Handler
    max_body_size: int | None = None
    too_big: str = "BODY_TOO_BIG"
    log: bool = True


class _Match(msgspec.Struct, eq=False):
    route: Route | None
    params: dict[str, str]
    reply: Response | None  # 404, 405 or OPTIONS answered by the router itself


class Router:
    """A route table: (method, path) to handler, plus the replies that need no handler.

    Unknown paths get 404 ``NOT_FOUND``; a known path with another method gets
    405 ``METHOD_NOT_ALLOWED`` with an ``Allow`` header, and ``OPTIONS`` on a
    known path gets 200 with ``Allow`` (as nsqd's router does).

    Args:
        headers: added to every reply this router's server sends, errors
            included (the NSQ APIs add ``X-NSQ-Content-Type``).
    """

    def __init__(self, *, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.headers: tuple[tuple[str, str], ...] = tuple(headers)
        self._exact: dict[str, dict[str, Route]] = {}
        self._patterns: list[tuple[tuple[str, ...], dict[str, Route]]] = []

    def add(
        self,
        methods: str | Iterable[str],
        path: str,
        handler: Handler,
        *,
        max_body_size: int | None = None,
        too_big: str = "BODY_TOO_BIG",
        log: bool = True,
    ) -> None:
        """Serve ``path`` with ``handler`` for each of ``methods``.

        Raises:
            LocalProtocolError: the path does not start with ``/``, or one of
                the (method, path) pairs is already routed; nothing was added.
        """
        if not path.startswith("/"):
            raise LocalProtocolError(f"route path {path!r} must start with '/'")
        names = [methods] if isinstance(methods, str) else list(methods)
        table = self._table_for(path)
        for method in names:
            if method.upper() in table:
                raise LocalProtocolError(f"{method.upper()} {path} is already routed")
        for method in names:
            upper = method.upper()
            table[upper] = Route(
                method=upper,
                path=path,
                handler=handler,
                max_body_size=max_body_size,
                too_big=too_big,
                log=log,
            )

    def _table_for(self, path: str) -> dict[str, Route]:
        segments = tuple(path.split("/"))
        if not any(s.startswith(":") for s in segments):
            return self._exact.setdefault(path, {})
        for known, table in self._patterns:
            if known == segments:
                return table
        table = {}
        self._patterns.append((segments, table))
        return table

    def routes(self) -> list[Route]:
        """Every route, for introspection and documentation."""
        out = [r for table in self._exact.values() for r in table.values()]
        out.extend(r for _, table in self._patterns for r in table.values())
        return out

    def match(self, method: str, path: str) -> _Match:
        """Find the route for a request, or the reply the router gives itself."""
        params: dict[str, str] = {}
        table = self._exact.get(path)
        if table is None:
            parts = path.split("/")
            for segments, candidate in self._patterns:
                found = _match_segments(segments, parts)
                if found is not None:
                    table, params = candidate, found
                    break
        if table is None or not table:
            return _Match(None, params, Response.error(404, "NOT_FOUND"))
        route = table.get(method)
        if route is not None:
            return _Match(route, params, None)
        allow = ", ".join(sorted({*table, "OPTIONS"}))
        if method == "OPTIONS":
            return _Match(None, params, Response(content_type=None, headers=(("Allow", allow),)))
        return _Match(
            None, params, Response.error(405, "METHOD_NOT_ALLOWED", headers=(("Allow", allow),))
        )


def _match_segments(pattern: tuple[str, ...], parts: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(parts):
        return None
    params: dict[str, str] = {}
    for want, got in zip(pattern, parts, strict=True):
        if want.startswith(":"):
            if not got:
                return None
            params[want[1:]] = got
        elif want != got:
            return None
    return params


class _Timeout(Exception):
    """The client was too slow; ``started`` says whether a request had begun."""

    def __init__(self, started: bool) -> None:
        super().__init__(started)
        self.started = started


class _BodyTooBig(Exception):
    """A body without ``Content-Length`` went past the route's limit."""


class _Exchange:
    """One connection's stream, h11 state and read deadline."""

    __slots__ = ("config", "conn", "deadline", "head", "idle", "started", "stream")

    def __init__(
        self,
        stream: trio.abc.Stream,
        config: HTTPConfig,
        idle: dict[_Exchange, trio.CancelScope] | None = None,
    ) -> None:
        self.stream = stream
        self.config = config
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_header_size)
        self.deadline = 0.0
        self.started = False
        #: The raw bytes of the request head being read (h11 hides obs-folds).
        self.head = bytearray()
        #: The server's idle connections, each with the scope that closes it.
        self.idle = idle

    def begin_cycle(self) -> None:
        """Arm the idle deadline, or the request deadline if bytes are already buffered."""
        buffered = self.conn.trailing_data[0]
        self.started = bool(buffered)
        self.head = bytearray(buffered[: self.config.max_header_size + 4])
        timeout = self.config.request_timeout if self.started else self.config.idle_timeout
        self.deadline = trio.current_time() + timeout

    def head_is_folded(self) -> bool:
        """Say whether the request head just read continues a header on a new line."""
        head = bytes(self.head)
        end = head.find(b"\n\r\n")
        if end < 0:
            end = head.find(b"\n\n")
        if end >= 0:
            head = head[:end]
        return b"\n " in head or b"\n\t" in head

    async def next_event(self) -> object:
        """The next h11 event, reading as needed before the deadline.

        Raises:
            _Timeout: the deadline passed.
            h11.RemoteProtocolError: the client broke HTTP/1.1.
        """
        conn = self.conn
        # Bounded: every pass either returns or reads; reads stop at the
        # deadline, at EOF (h11 then yields ConnectionClosed or raises), or
        # when h11's buffer limit raises.
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data: bytes | bytearray = b""
            with trio.move_on_at(self.deadline) as scope:
                idle = self.idle if not self.started else None
                if idle is not None:
                    idle[self] = scope
                try:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                finally:
                    if idle is not None:
                        idle.pop(self, None)
            if scope.cancelled_caught:
                raise _Timeout(self.started)
            if data and not self.started:
                self.started = True
                self.deadline = trio.current_time() + self.config.request_timeout
            if conn.their_state is h11.IDLE and len(self.head) <= self.config.max_header_size:
                self.head += data
            conn.receive_data(data if isinstance(data, bytes) else bytes(data))

    async def send(self, data: bytes) -> None:
        """Write ``data`` within the write timeout.

        Raises:
            trio.TooSlowError: the client did not take it in time.
        """
        with trio.fail_after(self.config.write_timeout):
            await self.stream.send_all(data)


class HTTPServer:
    """Serves one `Router` on any number of listeners.

    Args:
        router: the routes.
        config: limits; the defaults suit a public API port.

    Attributes:
        connections: connections being served right now.
    """

    def __init__(self, router: Router, config: HTTPConfig | None = None) -> None:
        self.router = router
        self.config = config if config is not None else HTTPConfig()
        self.connections = 0
        self._slots = trio.Semaphore(self.config.max_connections)
        # Insertion order is the order connections went idle: oldest first.
        self._idle: dict[_Exchange, trio.CancelScope] = {}

    async def serve(
        self,
        listeners: Sequence[trio.abc.Listener[Any]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept and serve connections on ``listeners`` until cancelled.

        Supports ``await nursery.start(server.serve, listeners)``: it reports
        started once every accept loop runs.

        Resource handling:
            The listeners and every accepted connection are closed when this
            returns (cancellation included).

        Error handling:
            Accept errors such as running out of file descriptors are logged
            and retried after a short pause; errors of one connection end that
            connection only.
        """
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, nursery)
            task_status.started()

    async def _accept_loop(self, listener: trio.abc.Listener[Any], nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    # Out of file descriptors and the like: back off, keep serving.
                    log.warning("HTTP: accept failed: %s", exc)
                    await trio.sleep(0.1)
                    continue
                if self._slots.value == 0 and self._idle:
                    # Rule 5: make room by closing the longest-idle connection.
                    oldest = next(iter(self._idle))
                    self._idle.pop(oldest).cancel()
                try:
                    # With every connection busy, this one waits (and the
                    # kernel's backlog holds the rest) until a slot frees.
                    await self._slots.acquire()
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
                nursery.start_soon(self._handle_slot, stream)

    async def _handle_slot(self, stream: trio.abc.Stream) -> None:
        try:
            await self.handle(stream)
        finally:
            self._slots.release()

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve every request of one accepted stream, then close it.

        Usable directly with in-memory streams (tests); `serve` calls it for
        each accepted connection.
        """
        self.connections += 1
        ex = _Exchange(stream, self.config, self._idle)
        remote = _peer_of(stream)
        linger = False
        try:
            # Bounded: each cycle ends by a deadline, or the connection ends.
            while True:
                keep, linger = await self._cycle(ex, remote)
                if not keep:
                    break
                ex.conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
            log.debug("HTTP: connection from %s ended: %r", remote, exc)
        except Exception:
            # A bug in the server itself: lose this connection, keep serving.
            log.exception("HTTP: connection from %s failed", remote)
        finally:
            self.connections -= 1
            await _close(stream, linger)

    async def _cycle(self, ex: _Exchange, remote: str) -> tuple[bool, bool]:
        """Serve one request; returns (keep the connection, linger on close)."""
        ex.begin_cycle()
        try:
            event = await ex.next_event()
        except _Timeout as exc:
            if exc.started:
                await self._send_error(ex, 408, "REQUEST_TIMEOUT")
            return False, exc.started
        except h11.RemoteProtocolError as exc:
            await self._protocol_error(ex, remote, exc)
            return False, True
        if not isinstance(event, h11.Request):
            return False, False  # ConnectionClosed: the client is done
        started = time.perf_counter()
        # h11 bounds what it buffers while a head is incomplete; a large head
        # that arrives in one read is complete at once, so measure it too.
        head_size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
        if head_size > self.config.max_header_size:
            await self._send_error(ex, 431, "REQUEST_HEADER_FIELDS_TOO_LARGE")
            return False, True
        method = event.method.decode("ascii", "replace").upper()
        target = event.target.decode("ascii", "replace")
        path, query = _split_target(target)
        match = self.router.match(method, path)
        route = match.route
        limit = self.config.max_body_size
        too_big = "BODY_TOO_BIG"
        if route is not None:
            if route.max_body_size is not None:
                limit = route.max_body_size
            too_big = route.too_big
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
        names = {k for k, _ in headers}
        if ("content-length" in names and "transfer-encoding" in names) or ex.head_is_folded():
            log.info("HTTP: ambiguous request framing from %s refused", remote)
            await self._send_error(ex, 400, "BAD_REQUEST")
            return False, True
        declared = _content_length(headers)
        if declared is not None and declared > limit:
            await self._send_error(ex, 413, too_big)
            return False, True
        if ex.conn.they_are_waiting_for_100_continue:
            await ex.send(ex.conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        try:
            body = await self._read_body(ex, limit)
        except _Timeout:
            await self._send_error(ex, 408, "REQUEST_TIMEOUT")
            return False, True
        except _BodyTooBig:
            await self._send_error(ex, 413, too_big)
            return False, True
        except h11.RemoteProtocolError as exc:
            await self._protocol_error(ex, remote, exc)
            return False, True
        request = Request(
            method=method,
            target=target,
            path=path,
            query=query,
            headers=headers,
            body=body,
            params=match.params,
            remote=remote,
        )
        if match.reply is not None:
            response = match.reply
        else:
            assert route is not None
            response = await self._call(route, request)
        await self._send_response(ex, response, head_only=method == "HEAD")
        level = logging.INFO if route is None or route.log else logging.DEBUG
        if log.isEnabledFor(level):
            elapsed = time.perf_counter() - started
            log.log(
                level,
                "%d %s %s (%s) %.3fms",
                response.status,
                method,
                target,
                remote,
                elapsed * 1e3,
            )
        keep = ex.conn.our_state is h11.DONE and ex.conn.their_state is h11.DONE
        return keep, False

    async def _read_body(self, ex: _Exchange, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        # Bounded by the request deadline and by ``limit``.
        while True:
            event = await ex.next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise _BodyTooBig
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                # ConnectionClosed mid-body cannot happen: h11 raises instead.
                raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} in a body")

    async def _call(self, route: Route, request: Request) -> Response:
        try:
            result = route.handler(request)
            if inspect.isawaitable(result):
                result = await result
        except Exception:
            log.exception("HTTP: %s %s failed", request.method, request.target)
            return Response.error(500, "INTERNAL_ERROR")
        return result

    async def _protocol_error(
        self, ex: _Exchange, remote: str, exc: h11.RemoteProtocolError
    ) -> None:
        log.info("HTTP: bad request from %s: %s", remote, exc)
        status = exc.error_status_hint
        message = "REQUEST_HEADER_FIELDS_TOO_LARGE" if status == 431 else "BAD_REQUEST"
        await self._send_error(ex, status, message)

    async def _send_error(self, ex: _Exchange, status: int, message: str) -> None:
        """Answer an error and mark the connection closing, if h11 still allows a reply."""
        if ex.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        response = Response.error(status, message, headers=(("Connection", "close"),))
        await self._send_response(ex, response, head_only=False)

    async def _send_response(self, ex: _Exchange, response: Response, *, head_only: bool) -> None:
        headers: list[tuple[str, str]] = [("Content-Length", str(len(response.body)))]
        if response.content_type is not None:
            headers.append(("Content-Type", response.content_type))
        headers.extend(self.router.headers)
        headers.extend(response.headers)
        conn = ex.conn
        try:
            reason = http.HTTPStatus(response.status).phrase.encode()
        except ValueError:
            reason = b""
        data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        assert data is not None
        if response.body and not head_only:
            more = conn.send(h11.Data(data=response.body))
            assert more is not None
            data += more
        end = conn.send(h11.EndOfMessage())
        assert end is not None
        await ex.send(data + end)


async def serve_http(
    listeners: Sequence[trio.abc.Listener[Any]],
    router: Router,
    *,
    config: HTTPConfig | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``router`` on ``listeners`` until cancelled (see `HTTPServer.serve`)."""
    await HTTPServer(router, config).serve(listeners, task_status=task_status)


def _split_target(target: str) -> tuple[str, dict[str, list[str]]]:
    """Path (percent-decoded) and query of a request target, origin or absolute form."""
    parts = urllib.parse.urlsplit(target)
    path = urllib.parse.unquote(parts.path) or "/"
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    return path, query


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    """The declared body length; h11 has already checked the header's syntax."""
    for key, value in headers:
        if key == "content-length":
            return int(value)
    return None


def _peer_of(stream: trio.abc.Stream) -> str:
    socket = getattr(stream, "socket", None)
    if socket is None:
        return "unknown:0"
    try:
        peer = socket.getpeername()
    except OSError:
        return "unknown:0"
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _close(stream: trio.abc.Stream, linger: bool) -> None:
    """Close the stream; with ``linger``, half-close and drain the client's input first."""
    try:
        if linger and isinstance(stream, trio.abc.HalfCloseableStream):
            with trio.move_on_after(LINGER_TIMEOUT):
                await stream.send_eof()
                drained = 0
                # Bounded by LINGER_BYTES and the deadline.
                while drained < LINGER_BYTES:
                    data = await stream.receive_some(RECEIVE_SIZE)
                    if not data:
                        break
                    drained += len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        log.debug("HTTP: peer went away while the connection was closing")
    finally:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            await stream.aclose()
