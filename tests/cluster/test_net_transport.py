"""The gossip port on real sockets: UDP and TCP on 127.0.0.1, real time.

The driver's behaviour is tested on the in-memory transport; these tests
cover what only sockets do: one port for UDP and TCP, wildcard binds, name
resolution, truncated datagrams, and a cluster forming over the network.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
import trio

from shoal.cluster.membership_driver import MembershipDriver
from shoal.cluster.net_transport import NetTransport
from shoal.membership import Address, MembershipConfig, MemberState
from shoal.testing import eventually

FAST = dataclasses.replace(
    MembershipConfig.local(),
    probe_interval=0.2,
    probe_timeout=0.05,
    gossip_interval=0.02,
    reconnect_interval=0.4,
    push_pull_interval=3.0,
    stream_timeout=0.5,
    max_packet_size=4096,
)


async def test_net_transport_binds_udp_and_tcp_on_one_port() -> None:
    transport = NetTransport()
    with trio.fail_after(5):
        bound = await transport.bind(("127.0.0.1", 0))
        try:
            assert bound[0] == "127.0.0.1"
            assert bound[1] > 0
            tcp = await trio.open_tcp_stream(*bound)
            accepted, peer = await transport.accept_stream()
            assert peer is not None
            assert peer[0] == "127.0.0.1"
            await tcp.send_all(b"hi")
            assert await accepted.receive_some(10) == b"hi"
            await tcp.aclose()
            await accepted.aclose()
        finally:
            transport.close()


async def test_net_transport_datagrams_round_trip_and_are_cut_to_max_size() -> None:
    a, b = NetTransport(), NetTransport()
    with trio.fail_after(5):
        address_a = await a.bind(("127.0.0.1", 0))
        address_b = await b.bind(("127.0.0.1", 0))
        try:
            await b.send_packet(b"ping", address_a)
            assert await a.receive_packet(100) == (b"ping", address_b)
            await b.send_packet(b"x" * 50, address_a)
            data, _ = await a.receive_packet(11)
            assert data == b"x" * 11  # more than max_size means oversize to the caller
        finally:
            a.close()
            b.close()


async def test_net_transport_refused_connection_is_an_os_error() -> None:
    probe = NetTransport()
    port = (await probe.bind(("127.0.0.1", 0)))[1]
    probe.close()
    with trio.fail_after(5), pytest.raises(OSError, match="connect"):
        await NetTransport().connect_stream(("127.0.0.1", port))


async def test_net_transport_resolves_names_in_the_bound_family() -> None:
    transport = NetTransport()
    await transport.bind(("127.0.0.1", 0))
    try:
        assert ("127.0.0.1", 4160) in await transport.resolve("localhost", 4160)
    finally:
        transport.close()


async def test_driver_advertises_loopback_for_wildcard_bind() -> None:
    driver = MembershipDriver(FAST, name="a", bind="0.0.0.0:0")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            address: Address = await nursery.start(driver.serve)
            assert address[0] == "0.0.0.0"
            assert driver.advertise_address == ("127.0.0.1", address[1])
            nursery.cancel_scope.cancel()


async def test_driver_cluster_forms_over_real_sockets() -> None:
    drivers = [
        MembershipDriver(FAST, name=name, bind="127.0.0.1:0", rng=random.Random(name))
        for name in ("a", "b", "c")
    ]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addresses = [await nursery.start(d.serve) for d in drivers]
            for driver in drivers[1:]:
                await driver.join([f"localhost:{addresses[0][1]}"])
            await eventually(
                lambda: all(
                    {m.name: m.state for m in d.members()}
                    == dict.fromkeys("abc", MemberState.ALIVE)
                    for d in drivers
                )
            )
            for driver in drivers:
                stats = driver.statistics()
                await eventually(lambda: driver.statistics().packets_received > 0)  # noqa: B023
                assert stats.stream_bytes_sent > 0
            nursery.cancel_scope.cancel()
