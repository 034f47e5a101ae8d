"""The in-memory gossip transport behaves like the sockets it stands in for."""

from __future__ import annotations

import errno

import pytest
import trio

from shoal.testing import MemoryNet


async def test_memory_transport_port_zero_picks_distinct_ports() -> None:
    net = MemoryNet()
    a, b = net.transport(), net.transport()
    first = await a.bind(("10.0.0.1", 0))
    second = await b.bind(("10.0.0.1", 0))
    assert first != second
    assert first[1] > 0


async def test_memory_transport_refuses_an_address_in_use() -> None:
    net = MemoryNet()
    await net.transport().bind(("10.0.0.1", 4160))
    with pytest.raises(OSError, match="in use") as info:
        await net.transport().bind(("10.0.0.1", 4160))
    assert info.value.errno == errno.EADDRINUSE


async def test_memory_transport_delivers_datagrams_with_the_sender() -> None:
    net = MemoryNet()
    a, b = net.transport(), net.transport()
    address_a = await a.bind(("10.0.0.1", 0))
    address_b = await b.bind(("10.0.0.2", 0))
    await b.send_packet(b"hello", address_a)
    assert await a.receive_packet(3) == (b"hel", address_b)


async def test_memory_transport_loses_datagrams_to_nobody_and_by_route(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNet()
    a, b = net.transport(), net.transport()
    address_a = await a.bind(("10.0.0.1", 0))
    await b.bind(("10.0.0.2", 0))
    await b.send_packet(b"x", ("10.0.0.3", 1))
    net.route = lambda source, destination: destination != address_a
    await b.send_packet(b"y", address_a)
    assert net.packets_lost == 2
    with trio.move_on_after(1) as scope:
        await a.receive_packet(10)
    assert scope.cancelled_caught


async def test_memory_transport_streams_connect_and_refuse_after_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNet()
    server, client = net.transport(), net.transport()
    address = await server.bind(("10.0.0.1", 0))
    await client.bind(("10.0.0.2", 0))
    ours = await client.connect_stream(address)
    theirs, peer = await server.accept_stream()
    assert peer is not None
    assert peer[0] == "10.0.0.2"
    await ours.send_all(b"abc")
    assert await theirs.receive_some(10) == b"abc"
    pending = await client.connect_stream(address)
    server.close()
    assert await pending.receive_some(10) == b""  # never accepted: reset
    with pytest.raises(ConnectionRefusedError):
        await client.connect_stream(address)


async def test_memory_transport_resolves_literals_and_known_names() -> None:
    net = MemoryNet()
    net.names["seeds"] = ["10.0.0.1", "10.0.0.2"]
    transport = net.transport()
    assert await transport.resolve("10.0.0.9", 1) == [("10.0.0.9", 1)]
    assert await transport.resolve("seeds", 4160) == [("10.0.0.1", 4160), ("10.0.0.2", 4160)]
    with pytest.raises(OSError, match="resolve"):
        await transport.resolve("unknown", 4160)
