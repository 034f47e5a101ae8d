"""The generic HTTP/1.1 server: routing, framing, limits and timeouts.

Most tests talk to `HTTPServer.handle` over in-memory streams, so timeouts
run on trio's autojump clock in virtual seconds; a few use real sockets on
127.0.0.1 port 0 where the kernel's behaviour is the point (keep-alive, 413
before the body is read).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import h11
import pytest
import trio
import trio.testing

from shoal.cluster.http_server import (
    JSON_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    HTTPConfig,
    HTTPServer,
    Request,
    Response,
    Router,
    serve_http,
)
from shoal.errors import ConfigError, LocalProtocolError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

NSQ = ("X-NSQ-Content-Type", "nsq; version=1.0")


class Reply:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = {k.decode().lower(): v.decode() for k, v in headers}
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """An h11 client over any trio stream; reuses the connection (keep-alive)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def send_request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        hdrs = [("Host", "test"), ("Content-Length", str(len(body))), *headers]
        data = self.conn.send(h11.Request(method=method, target=target, headers=hdrs)) or b""
        if body:
            data += self.conn.send(h11.Data(data=body)) or b""
        data += self.conn.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(data)

    async def read_reply(self) -> Reply:
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        for _ in range(1000):
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(bytes(await self.stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return Reply(status, headers, b"".join(chunks))
            elif isinstance(event, h11.InformationalResponse):
                continue
            else:
                raise AssertionError(f"unexpected {event!r}")
        raise AssertionError("no complete reply")

    async def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Reply:
        await self.send_request(method, target, body, headers)
        return await self.read_reply()


async def read_until_eof(stream: trio.abc.Stream) -> bytes:
    chunks: list[bytes] = []
    for _ in range(10_000):
        data = await stream.receive_some(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(bytes(data))
    raise AssertionError("the server never closed")


def parse_raw(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, body


calls: list[str] = []


def make_router() -> Router:
    router = Router(headers=[NSQ])

    def hello(request: Request) -> Response:
        return Response.text(f"hello {request.arg('name')}")

    def echo(request: Request) -> Response:
        calls.append(request.path)
        return Response.json(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "body": request.body.decode(),
                "agent": request.header("user-agent"),
            }
        )

    def boom(request: Request) -> Response:
        raise RuntimeError("handler bug")

    async def slow(request: Request) -> Response:
        await trio.sleep(5)
        return Response.text("late")

    def param(request: Request) -> Response:
        return Response.json(request.params)

    router.add("GET", "/hello", hello)
    router.add(["POST", "PUT"], "/echo", echo, max_body_size=16, too_big="MSG_TOO_BIG")
    router.add("GET", "/boom", boom)
    router.add("GET", "/slow", slow)
    router.add("GET", "/config/:opt", param)
    return router


@pytest.fixture
async def served() -> AsyncIterator[tuple[HTTPServer, trio.Nursery]]:
    calls.clear()
    server = HTTPServer(make_router())
    async with trio.open_nursery() as nursery:
        yield server, nursery
        nursery.cancel_scope.cancel()


def connect(served: tuple[HTTPServer, trio.Nursery]) -> Client:
    server, nursery = served
    client_stream, server_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle, server_stream)
    return Client(client_stream)


def connect_raw(served: tuple[HTTPServer, trio.Nursery]) -> trio.abc.Stream:
    server, nursery = served
    client_stream, server_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle, server_stream)
    return client_stream


# -- routing ------------------------------------------------------------------


async def test_route_get_answers_text_with_router_headers(served: Any) -> None:
    reply = await connect(served).request("GET", "/hello?name=world")
    assert reply.status == 200
    assert reply.body == b"hello world"
    assert reply.headers["content-type"] == TEXT_CONTENT_TYPE
    assert reply.headers["content-length"] == "11"
    assert reply.headers["x-nsq-content-type"] == "nsq; version=1.0"


async def test_request_carries_method_path_query_headers_and_body(served: Any) -> None:
    reply = await connect(served).request(
        "POST", "/echo?a=1&a=2&flag&b=x%20y", b"payload", (("User-Agent", "t/1"),)
    )
    assert reply.status == 200
    assert reply.headers["content-type"] == JSON_CONTENT_TYPE
    assert reply.json() == {
        "method": "POST",
        "path": "/echo",
        "query": {"a": ["1", "2"], "flag": [""], "b": ["x y"]},
        "body": "payload",
        "agent": "t/1",
    }


async def test_unknown_path_is_404_not_found_json(served: Any) -> None:
    reply = await connect(served).request("GET", "/nope")
    assert reply.status == 404
    assert reply.json() == {"message": "NOT_FOUND"}
    assert reply.headers["content-type"] == JSON_CONTENT_TYPE
    assert reply.headers["x-nsq-content-type"] == "nsq; version=1.0"


async def test_known_path_wrong_method_is_405_with_allow(served: Any) -> None:
    reply = await connect(served).request("GET", "/echo")
    assert reply.status == 405
    assert reply.json() == {"message": "METHOD_NOT_ALLOWED"}
    assert reply.headers["allow"] == "OPTIONS, POST, PUT"
    assert reply.headers["x-nsq-content-type"] == "nsq; version=1.0"


async def test_options_on_known_path_lists_methods(served: Any) -> None:
    reply = await connect(served).request("OPTIONS", "/hello")
    assert reply.status == 200
    assert reply.body == b""
    assert reply.headers["allow"] == "GET, OPTIONS"


async def test_path_parameter_is_passed(served: Any) -> None:
    reply = await connect(served).request("GET", "/config/log_level")
    assert reply.json() == {"opt": "log_level"}
    assert (await connect(served).request("GET", "/config/")).status == 404
    assert (await connect(served).request("GET", "/config/a/b")).status == 404


async def test_percent_encoded_path_is_decoded_before_routing(served: Any) -> None:
    reply = await connect(served).request("GET", "/hel%6Co?name=x")
    assert reply.body == b"hello x"


async def test_router_refuses_duplicate_routes() -> None:
    router = make_router()
    with pytest.raises(LocalProtocolError):
        router.add("GET", "/hello", lambda r: Response.text("again"))
    with pytest.raises(LocalProtocolError):
        router.add("GET", "relative", lambda r: Response.text("x"))
    # Adding later routes to the same table works (the API grows this way).
    router.add("GET", "/lookup", lambda r: Response.json({"producers": []}))
    assert {r.path for r in router.routes()} >= {"/hello", "/lookup", "/config/:opt"}


def test_http_config_rejects_nonsense() -> None:
    with pytest.raises(ConfigError):
        HTTPConfig(idle_timeout=0)
    with pytest.raises(ConfigError):
        HTTPConfig(max_header_size=10)
    with pytest.raises(ConfigError):
        HTTPConfig(max_connections=0)


# -- handler failures -------------------------------------------------------------


async def test_handler_exception_is_500_and_connection_keeps_serving(
    served: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = connect(served)
    reply = await client.request("GET", "/boom")
    assert reply.status == 500
    assert reply.json() == {"message": "INTERNAL_ERROR"}
    assert reply.headers["x-nsq-content-type"] == "nsq; version=1.0"
    assert "handler bug" in caplog.text
    again = await client.request("GET", "/hello?name=again")
    assert again.body == b"hello again"


async def test_async_handler_may_wait(served: Any, autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    reply = await connect(served).request("GET", "/slow")
    assert reply.body == b"late"
    assert trio.current_time() - start == pytest.approx(5)


# -- keep-alive and connection handling ---------------------------------------------


async def test_keep_alive_serves_two_requests_on_one_connection(served: Any) -> None:
    client = connect(served)
    first = await client.request("GET", "/hello?name=1")
    second = await client.request("POST", "/echo", b"two")
    assert first.body == b"hello 1"
    assert second.json()["body"] == "two"
    assert "connection" not in first.headers


async def test_connection_close_is_honoured(served: Any) -> None:
    client = connect(served)
    reply = await client.request("GET", "/hello?name=x", headers=(("Connection", "close"),))
    assert reply.status == 200
    assert reply.headers["connection"] == "close"
    assert await read_until_eof(client.stream) == b""


async def test_http_10_request_is_answered_then_closed(served: Any) -> None:
    stream = connect_raw(served)
    await stream.send_all(b"GET /hello?name=old HTTP/1.0\r\n\r\n")
    status, _headers, body = parse_raw(await read_until_eof(stream))
    assert status == 200
    assert body == b"hello old"


async def test_pipelined_requests_are_answered_in_order(served: Any) -> None:
    stream = connect_raw(served)
    await stream.send_all(
        b"GET /hello?name=a HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /hello?name=b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    raw = await read_until_eof(stream)
    assert raw.count(b"HTTP/1.1 200") == 2
    assert raw.index(b"hello a") < raw.index(b"hello b")


async def test_expect_100_continue_gets_interim_reply_before_body(served: Any) -> None:
    stream = connect_raw(served)
    await stream.send_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    )
    interim = await stream.receive_some(65536)
    assert interim.startswith(b"HTTP/1.1 100 ")
    await stream.send_all(b"body")
    raw = b""
    for _ in range(100):
        raw += await stream.receive_some(65536)
        if b'"body":"body"' in raw:
            break
    status, _, body = parse_raw(raw)
    assert status == 200
    assert json.loads(body)["body"] == "body"


async def test_chunked_request_body_is_read(served: Any) -> None:
    stream = connect_raw(served)
    await stream.send_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
        b"\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    status, _, body = parse_raw(await read_until_eof(stream))
    assert status == 200
    assert json.loads(body)["body"] == "abcde"


async def test_head_request_gets_headers_without_body(served: Any) -> None:
    router = Router()
    router.add(["GET", "HEAD"], "/x", lambda r: Response.text("abc"))
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(HTTPServer(router).handle, server_stream)
        client = Client(client_stream)
        reply = await client.request("HEAD", "/x")
        assert reply.status == 200
        assert reply.body == b""
        assert reply.headers["content-length"] == "3"
        assert (await client.request("GET", "/x")).body == b"abc"
        nursery.cancel_scope.cancel()


# -- limits -------------------------------------------------------------------


async def test_declared_oversize_body_gets_413_before_it_is_read(served: Any) -> None:
    stream = connect_raw(served)
    # Announce far more than the route's 16 bytes and send none of it: the
    # reply must come without waiting for the body.
    await stream.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    status, headers, body = parse_raw(await read_until_eof(stream))
    assert status == 413
    assert json.loads(body) == {"message": "MSG_TOO_BIG"}
    assert headers["connection"] == "close"
    assert headers["x-nsq-content-type"] == "nsq; version=1.0"
    assert calls == []


async def test_chunked_body_past_the_limit_gets_413(served: Any) -> None:
    stream = connect_raw(served)
    await stream.send_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"10\r\n0123456789abcdef\r\n1\r\nX\r\n0\r\n\r\n"
    )
    status, _, body = parse_raw(await read_until_eof(stream))
    assert status == 413
    assert json.loads(body) == {"message": "MSG_TOO_BIG"}
    assert calls == []


async def test_body_exactly_at_the_limit_is_accepted(served: Any) -> None:
    reply = await connect(served).request("POST", "/echo", b"x" * 16)
    assert reply.status == 200


async def test_oversize_head_gets_431(served: Any) -> None:
    stream = connect_raw(served)
    await stream.send_all(
        b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (32 * 1024) + b"\r\n\r\n"
    )
    status, _, body = parse_raw(await read_until_eof(stream))
    assert status == 431
    assert json.loads(body) == {"message": "REQUEST_HEADER_FIELDS_TOO_LARGE"}


async def test_malformed_request_gets_400_and_others_are_still_served(served: Any) -> None:
    stream = connect_raw(served)
    await stream.send_all(b"THIS IS NOT HTTP\r\n\r\n")
    status, headers, body = parse_raw(await read_until_eof(stream))
    assert status == 400
    assert json.loads(body) == {"message": "BAD_REQUEST"}
    assert headers["x-nsq-content-type"] == "nsq; version=1.0"
    reply = await connect(served).request("GET", "/hello?name=next")
    assert reply.body == b"hello next"


async def test_bad_content_length_gets_400(served: Any) -> None:
    stream = connect_raw(served)
    await stream.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
    status, _, _ = parse_raw(await read_until_eof(stream))
    assert status == 400


async def test_content_length_with_transfer_encoding_gets_400(served: Any) -> None:
    stream = connect_raw(served)
    await stream.send_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    status, _, body = parse_raw(await read_until_eof(stream))
    assert status == 400
    assert json.loads(body) == {"message": "BAD_REQUEST"}
    assert calls == []


@pytest.mark.parametrize("fold", [b" ", b"\t"], ids=["space", "tab"])
async def test_obs_folded_header_gets_400(served: Any, fold: bytes) -> None:
    stream = connect_raw(served)
    await stream.send_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Long: first\r\n"
        + fold
        + b"second\r\nContent-Length: 2\r\n\r\nhi"
    )
    status, _, _ = parse_raw(await read_until_eof(stream))
    assert status == 400
    assert calls == []


async def test_body_that_looks_folded_is_not_refused(served: Any) -> None:
    client = connect(served)
    reply = await client.request("POST", "/echo", b"a\r\n b\n\tc")
    assert reply.status == 200
    assert reply.json()["body"] == "a\r\n b\n\tc"


# -- timeouts (virtual time) --------------------------------------------------------


async def test_silent_client_is_dropped_after_idle_timeout(
    served: Any, autojump_clock: trio.testing.MockClock
) -> None:
    stream = connect_raw(served)
    start = trio.current_time()
    with trio.fail_after(600):
        assert await read_until_eof(stream) == b""
    assert trio.current_time() - start == pytest.approx(30)


async def test_idle_keep_alive_connection_is_closed_after_idle_timeout(
    served: Any, autojump_clock: trio.testing.MockClock
) -> None:
    client = connect(served)
    await client.request("GET", "/hello?name=x")
    start = trio.current_time()
    with trio.fail_after(600):
        assert await read_until_eof(client.stream) == b""
    assert trio.current_time() - start == pytest.approx(30)


async def test_half_sent_head_gets_408_after_request_timeout(
    served: Any, autojump_clock: trio.testing.MockClock
) -> None:
    stream = connect_raw(served)
    start = trio.current_time()
    await stream.send_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
    with trio.fail_after(600):
        raw = await read_until_eof(stream)
    # h11 has not seen a complete request, but it may still answer one.
    status, _, body = parse_raw(raw)
    assert status == 408
    assert json.loads(body) == {"message": "REQUEST_TIMEOUT"}
    assert trio.current_time() - start == pytest.approx(10)


async def test_half_sent_body_gets_408_after_request_timeout(
    served: Any, autojump_clock: trio.testing.MockClock
) -> None:
    stream = connect_raw(served)
    start = trio.current_time()
    await stream.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    with trio.fail_after(600):
        status, _, _ = parse_raw(await read_until_eof(stream))
    assert status == 408
    assert trio.current_time() - start == pytest.approx(10)
    assert calls == []


async def test_slow_client_does_not_block_others(
    served: Any, autojump_clock: trio.testing.MockClock
) -> None:
    slow = connect_raw(served)
    await slow.send_all(b"GET /hel")
    start = trio.current_time()
    reply = await connect(served).request("GET", "/hello?name=fast")
    assert reply.body == b"hello fast"
    assert trio.current_time() == start


async def test_configured_timeouts_are_used(autojump_clock: trio.testing.MockClock) -> None:
    server = HTTPServer(make_router(), HTTPConfig(idle_timeout=2.5))
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle, server_stream)
        start = trio.current_time()
        with trio.fail_after(600):
            assert await read_until_eof(client_stream) == b""
        assert trio.current_time() - start == pytest.approx(2.5)


# -- listeners ---------------------------------------------------------------------


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """Hands out in-memory server streams pushed by `connect`."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[trio.abc.Stream](0)

    async def connect(self) -> trio.abc.Stream:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        await self.send.send(server_stream)
        return client_stream

    async def accept(self) -> trio.abc.Stream:
        return await self.receive.receive()

    async def aclose(self) -> None:
        await self.receive.aclose()


async def test_connection_limit_defers_accepting_while_every_connection_is_busy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listener = MemoryListener()
    server = HTTPServer(make_router(), HTTPConfig(max_connections=1))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, [listener])
        first = Client(await listener.connect())
        await first.send_request("GET", "/slow")  # busy for 5 s
        await trio.testing.wait_all_tasks_blocked()
        assert server.connections == 1
        # A second connection is not served while the first is busy.
        second = Client(await listener.connect())
        await second.send_request("GET", "/hello?name=2")
        with trio.move_on_after(1) as scope:
            await second.read_reply()
        assert scope.cancelled_caught
        assert (await first.read_reply()).body == b"late"
        await first.stream.aclose()
        with trio.fail_after(1):
            assert (await second.read_reply()).body == b"hello 2"
        nursery.cancel_scope.cancel()


async def test_connection_limit_closes_the_longest_idle_connection_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 1,100 idle keep-alives against a cap of 1,024 used to keep a new client
    # waiting until one timed out; now the oldest idle makes room at once.
    listener = MemoryListener()
    cap = 3
    server = HTTPServer(make_router(), HTTPConfig(max_connections=cap))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, [listener])
        idle = [Client(await listener.connect()) for _ in range(cap)]
        for i, client in enumerate(idle):
            assert (await client.request("GET", f"/hello?name={i}")).status == 200
        await trio.testing.wait_all_tasks_blocked()
        assert server.connections == cap
        start = trio.current_time()
        with trio.fail_after(1):
            fresh = Client(await listener.connect())
            assert (await fresh.request("GET", "/hello?name=new")).body == b"hello new"
        assert trio.current_time() == start  # no timeout was waited for
        assert await read_until_eof(idle[0].stream) == b""  # the oldest was closed
        for client in idle[1:]:
            assert (await client.request("GET", "/hello?name=still")).status == 200
        nursery.cancel_scope.cancel()


async def test_serve_http_on_real_socket_with_keep_alive() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_http, listeners, make_router())
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            client = Client(stream)
            assert (await client.request("GET", "/hello?name=a")).body == b"hello a"
            assert (await client.request("GET", "/hello?name=b")).body == b"hello b"
            await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_real_socket_413_arrives_although_the_client_keeps_sending() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    calls.clear()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_http, listeners, make_router())
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"z" * 50_000
            )
            status, _headers, body = parse_raw(await read_until_eof(stream))
            await stream.aclose()
        assert status == 413
        assert json.loads(body) == {"message": "MSG_TOO_BIG"}
        assert calls == []
        nursery.cancel_scope.cancel()
