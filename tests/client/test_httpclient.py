"""The small HTTP client, against the fake node API and hostile servers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from shoal.client.discovery import fetch_lookup, fetch_members
from shoal.client.errors import HTTPStatusError, NodeUnavailable
from shoal.client.httpclient import get_json, parse_address, request
from shoal.testing.fake_node import FakeNode, member_entry, producer_entry

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:4151", ("127.0.0.1", 4151)),
        ("localhost:1", ("localhost", 1)),
        ("[::1]:4151", ("::1", 4151)),
        (" node-1:65535 ", ("node-1", 65535)),
    ],
)
def test_parse_address_splits_host_and_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


def test_parse_address_uses_the_default_port() -> None:
    assert parse_address("example", 4151) == ("example", 4151)


@pytest.mark.parametrize("text", ["", ":4151", "host:", "host:0", "host:65536", "host:x", "[::1"])
def test_parse_address_refuses_bad_addresses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid address"):
        parse_address(text)


async def serve_fake(nursery: trio.Nursery) -> FakeNode:
    fake = FakeNode()
    await nursery.start(fake.serve)
    return fake


async def test_get_json_decodes_a_reply(nursery: trio.Nursery) -> None:
    fake = await serve_fake(nursery)
    fake.info = {"version": "9", "tcp_port": 1234, "http_port": 1}
    assert await get_json(fake.address, "/info") == fake.info


async def test_get_json_raises_nsq_error_codes(nursery: trio.Nursery) -> None:
    fake = await serve_fake(nursery)
    with pytest.raises(HTTPStatusError) as info:
        await get_json(fake.address, "/nope")
    assert info.value.status == 404
    assert info.value.message == "NOT_FOUND"


async def test_request_sends_the_query_and_body(nursery: trio.Nursery) -> None:
    fake = await serve_fake(nursery)
    response = await request(fake.address, "POST", "/leave", params={"a": "b c"}, body=b"x")
    assert response.status == 200
    assert response.body == b"OK"
    assert fake.leaves == 1
    assert fake.requests == ["POST /leave"]


async def test_request_to_a_closed_port_is_node_unavailable() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with pytest.raises(NodeUnavailable, match="refused"):
        await request(f"127.0.0.1:{port}", "GET", "/ping")


async def raw_server(
    nursery: trio.Nursery, reply: Callable[[trio.SocketStream], Awaitable[None]]
) -> str:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def handler(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await reply(stream)
        await stream.aclose()

    nursery.start_soon(trio.serve_listeners, handler, listeners)
    return f"127.0.0.1:{port}"


async def test_a_reply_cut_short_is_node_unavailable(nursery: trio.Nursery) -> None:
    async def reply(stream: trio.SocketStream) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")

    address = await raw_server(nursery, reply)
    with pytest.raises(NodeUnavailable, match="closed"):
        await request(address, "GET", "/")


async def test_a_malformed_reply_is_node_unavailable(nursery: trio.Nursery) -> None:
    async def reply(stream: trio.SocketStream) -> None:
        await stream.send_all(b"SSH-2.0-OpenSSH\r\n\r\n")

    address = await raw_server(nursery, reply)
    with pytest.raises(NodeUnavailable, match="malformed"):
        await request(address, "GET", "/")


async def test_an_oversize_reply_is_refused(nursery: trio.Nursery) -> None:
    async def reply(stream: trio.SocketStream) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000)

    address = await raw_server(nursery, reply)
    with pytest.raises(NodeUnavailable, match="larger than 1000"):
        await request(address, "GET", "/", max_size=1000)


async def test_fetch_members_parses_entries(nursery: trio.Nursery) -> None:
    fake = await serve_fake(nursery)
    fake.members = [member_entry("a", "127.0.0.1", 10, 11, topics=["t"], incarnation=3)]
    [member] = await fetch_members(fake.address)
    assert (member.name, member.status, member.incarnation, member.topics) == (
        "a",
        "alive",
        3,
        ("t",),
    )
    assert member.endpoint.tcp_address == "127.0.0.1:10"
    assert member.endpoint.http_address == "127.0.0.1:11"


async def test_fetch_members_refuses_a_malformed_entry(nursery: trio.Nursery) -> None:
    fake = await serve_fake(nursery)
    fake.members = [{**member_entry("a", "127.0.0.1", 10, 11), "tcp_port": "10"}]
    with pytest.raises(NodeUnavailable, match="tcp_port"):
        await fetch_members(fake.address)


async def test_fetch_lookup_returns_none_for_an_unknown_topic(nursery: trio.Nursery) -> None:
    fake = await serve_fake(nursery)
    assert await fetch_lookup(fake.address, "nope") is None


async def test_fetch_lookup_parses_producers_and_version(nursery: trio.Nursery) -> None:
    fake = await serve_fake(nursery)
    fake.set_topic("t", [producer_entry("127.0.0.1", 10, 11)], ["c"])
    result = await fetch_lookup(fake.address, "t")
    assert result is not None
    assert result.channels == ("c",)
    assert [p.tcp_address for p in result.producers] == ["127.0.0.1:10"]
    assert result.version == fake.version("t")


async def test_fetch_lookup_long_polls_until_the_set_changes(nursery: trio.Nursery) -> None:
    fake = await serve_fake(nursery)
    fake.set_topic("t", [producer_entry("127.0.0.1", 10, 11)])
    version = fake.version("t")

    async def add_producer() -> None:
        await trio.sleep(0.3)
        fake.set_topic(
            "t", [producer_entry("127.0.0.1", 10, 11), producer_entry("127.0.0.1", 20, 21)]
        )

    nursery.start_soon(add_producer)
    start = trio.current_time()
    result = await fetch_lookup(fake.address, "t", wait=30, version=version)
    assert result is not None
    assert len(result.producers) == 2
    assert result.version != version
    assert 0.3 <= trio.current_time() - start < 5
