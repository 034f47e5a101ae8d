"""The membership driver over real UDP and TCP sockets on 127.0.0.1.

Timings are MembershipConfig.local() scaled down five times, so a crash is
detected in about a second of real time. Each test waits for a condition by
polling it (`eventually`) under a `fail_after`, never for a fixed time,
except where it asserts that something does *not* happen.
"""

from __future__ import annotations

import dataclasses
import random
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from shoal.cluster.membership_driver import (
    FRAME_HEADER,
    MembershipDriver,
    MessageStream,
    StreamError,
)
from shoal.cluster.neighbour_watch import HELLO, WATCH_TAG, WatchStatistics
from shoal.errors import ConfigError
from shoal.membership import (
    Address,
    Event,
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MembershipConfig,
    MemberState,
)
from shoal.membership.codec import CodecLimits, decode_packet, encode_message, encode_packet
from shoal.membership.keyring import Keyring
from shoal.membership.messages import Ack, Ping

if TYPE_CHECKING:
    from collections.abc import Callable

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
FAST_LIMITS = CodecLimits.from_config(FAST)
KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))


@dataclasses.dataclass
class Running:
    driver: MembershipDriver
    scope: trio.CancelScope
    address: Address


async def start(
    nursery: trio.Nursery,
    name: str,
    *,
    keyring: Keyring | None = None,
    bind: str = "127.0.0.1:0",
    config: MembershipConfig = FAST,
) -> Running:
    driver = MembershipDriver(
        config, name=name, bind=bind, keyring=keyring, rng=random.Random(name)
    )
    scope = trio.CancelScope()

    async def run(*, task_status: trio.TaskStatus[Address]) -> None:
        with scope:
            await driver.serve(task_status=task_status)

    address = await nursery.start(run)
    return Running(driver, scope, address)


async def eventually(predicate: Callable[[], bool], *, polls: int = 2000) -> None:
    """Poll ``predicate`` every 10 ms; the test's ``fail_after`` usually ends it first."""
    for _ in range(polls):
        if predicate():
            return
        await trio.sleep(0.01)
    raise AssertionError("condition never held")


def seed(running: Running) -> str:
    host, port = running.address
    return f"{host}:{port}"


def states(driver: MembershipDriver) -> dict[str, MemberState]:
    return {m.name: m.state for m in driver.members()}


def state_of(driver: MembershipDriver, name: str) -> MemberState | None:
    member = driver.member(name)
    return None if member is None else member.state


def all_alive(drivers: list[MembershipDriver], names: set[str]) -> bool:
    return all(states(d) == dict.fromkeys(names, MemberState.ALIVE) for d in drivers)


async def start_cluster(
    nursery: trio.Nursery, names: list[str], *, keyring: Keyring | None = None
) -> list[Running]:
    nodes = [await start(nursery, name, keyring=keyring) for name in names]
    for node in nodes[1:]:
        await node.driver.join([seed(nodes[0])])
    await eventually(lambda: all_alive([n.driver for n in nodes], set(names)))
    return nodes


def dropped(driver: MembershipDriver) -> dict[str, int]:
    return dict(driver.statistics().dropped)


async def test_driver_reports_bound_address_and_advertises_it() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            a = await start(nursery, "a")
            assert a.address[0] == "127.0.0.1"
            assert a.address[1] > 0
            assert a.driver.address == a.address
            assert a.driver.advertise_address == a.address
            # TCP listens on the same port as UDP.
            tcp = await trio.open_tcp_stream(*a.address)
            await tcp.aclose()
            nursery.cancel_scope.cancel()


async def test_driver_advertises_loopback_for_wildcard_bind() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            a = await start(nursery, "a", bind="0.0.0.0:0")
            assert a.address[0] == "0.0.0.0"
            assert a.driver.advertise_address == ("127.0.0.1", a.address[1])
            nursery.cancel_scope.cancel()


def test_driver_refuses_bad_bind_address() -> None:
    with pytest.raises(ConfigError, match="gossip address"):
        MembershipDriver(FAST, name="a", bind="no-port")


async def test_driver_three_nodes_join_through_one_seed() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nodes = await start_cluster(nursery, ["a", "b", "c"])
            for node in nodes:
                assert node.driver.statistics().engine.alive == 3
            # Probing runs over UDP, counted at the socket.
            for node in nodes:
                driver = node.driver
                await eventually(lambda: driver.statistics().packets_received > 0)  # noqa: B023
                stats = driver.statistics()
                assert stats.bytes_received >= stats.engine.bytes_received > 0
                # The sender task writes what the engine queued a moment later.
                await eventually(lambda: driver.statistics().packets_sent > 0)  # noqa: B023
            nursery.cancel_scope.cancel()


async def test_driver_publishes_events_to_listeners_and_subscribers() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a = await start(nursery, "a")
            heard: list[Event] = []
            a.driver.add_listener(heard.append)
            channel = a.driver.subscribe()
            b = await start(nursery, "b")
            await b.driver.join([seed(a)])
            event = await channel.receive()
            assert isinstance(event, MemberJoined)
            assert event.member.name == "b"
            assert heard[0] == event
            nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_driver_cuts_off_a_subscriber_that_falls_behind() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a = await start(nursery, "a")
            channel = a.driver.subscribe(max_buffer_size=1)
            for name in ("b", "c"):
                other = await start(nursery, name)
                await other.driver.join([seed(a)])
            await eventually(lambda: dropped(a.driver) == {"subscriber_overflow": 1})
            first = await channel.receive()
            assert isinstance(first, MemberJoined)
            with pytest.raises(trio.EndOfChannel):
                await channel.receive()
            nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_driver_crashed_node_is_declared_dead() -> None:
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            a, b, c = await start_cluster(nursery, ["a", "b", "c"])
            failures: list[MemberFailed] = []
            a.driver.add_listener(
                lambda e: failures.append(e) if isinstance(e, MemberFailed) else None
            )
            c.scope.cancel()  # a crash: no leave, sockets closed
            await eventually(
                lambda: all(state_of(d, "c") is MemberState.DEAD for d in (a.driver, b.driver))
            )
            assert [f.member.name for f in failures] == ["c"]
            assert states(a.driver)["b"] is MemberState.ALIVE
            nursery.cancel_scope.cancel()


async def test_driver_graceful_leave_is_seen_as_left() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a, b, c = await start_cluster(nursery, ["a", "b", "c"])
            departures: list[MemberLeft] = []
            b.driver.add_listener(
                lambda e: departures.append(e) if isinstance(e, MemberLeft) else None
            )
            assert await c.driver.leave(2.0)
            c.scope.cancel()
            await eventually(
                lambda: all(state_of(d, "c") is MemberState.LEFT for d in (a.driver, b.driver))
            )
            assert [e.member.name for e in departures] == ["c"]
            nursery.cancel_scope.cancel()


async def test_driver_leave_alone_completes_at_once() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            a = await start(nursery, "a")
            assert await a.driver.leave(1.0)
            with pytest.raises(RuntimeError, match="leaving"):
                await a.driver.join(["127.0.0.1:1"])
            nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_driver_restarted_node_returns_with_higher_incarnation() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            a, b, c = await start_cluster(nursery, ["a", "b", "c"])
            old = a.driver.member("c")
            assert old is not None
            c.scope.cancel()
            await eventually(
                lambda: all(state_of(d, "c") is MemberState.DEAD for d in (a.driver, b.driver))
            )
            # Same name, same gossip port: a process restarted in place.
            again = await start(nursery, "c", bind=seed(c))
            assert again.address == c.address
            await again.driver.join([seed(a)])
            await eventually(lambda: all_alive([a.driver, b.driver, again.driver], {"a", "b", "c"}))
            for driver in (a.driver, b.driver):
                member = driver.member("c")
                assert member is not None
                assert member.incarnation > old.incarnation
            assert again.driver.engine.incarnation > old.incarnation
            nursery.cancel_scope.cancel()


async def test_driver_join_resolves_host_names() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a = await start(nursery, "a")
            b = await start(nursery, "b")
            addresses = await b.driver.join([f"localhost:{a.address[1]}"])
            assert ("127.0.0.1", a.address[1]) in addresses
            await eventually(lambda: all_alive([a.driver, b.driver], {"a", "b"}))
            nursery.cancel_scope.cancel()


async def test_driver_join_retries_an_unreachable_seed() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            b = await start(nursery, "b")
            # Reserve a port for the future seed, then free it.
            probe = await start(nursery, "probe")
            port = probe.address[1]
            probe.scope.cancel()
            await b.driver.join([f"127.0.0.1:{port}"])
            await eventually(lambda: b.driver.statistics().streams_failed >= 1)
            a = await start(nursery, "a", bind=f"127.0.0.1:{port}")
            # The engine's healing retries the seed until it answers.
            await eventually(lambda: all_alive([a.driver, b.driver], {"a", "b"}))
            nursery.cancel_scope.cancel()


async def test_driver_keyed_cluster_forms() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nodes = await start_cluster(nursery, ["a", "b", "c"], keyring=Keyring([KEY]))
            for node in nodes:
                driver = node.driver
                # Probes and acks travel sealed and open cleanly on the other side.
                await eventually(lambda: driver.statistics().engine.acks_received > 0)  # noqa: B023
                assert driver.statistics().dropped == {}
                assert driver.statistics().engine.dropped == {}
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "outsider_keyring",
    [Keyring([OTHER_KEY]), None],
    ids=["wrong_key", "no_key"],
)
async def test_driver_keyed_cluster_refuses_outsider(outsider_keyring: Keyring | None) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a, b = await start_cluster(nursery, ["a", "b"], keyring=Keyring([KEY]))
            x = await start(nursery, "x", keyring=outsider_keyring)
            await x.driver.join([seed(a)])
            await eventually(lambda: dropped(a.driver).get("decrypt", 0) >= 1)
            await eventually(lambda: x.driver.statistics().streams_failed >= 1)
            assert states(x.driver) == {"x": MemberState.ALIVE}
            assert states(a.driver) == {"a": MemberState.ALIVE, "b": MemberState.ALIVE}
            assert states(b.driver) == {"a": MemberState.ALIVE, "b": MemberState.ALIVE}
            nursery.cancel_scope.cancel()


async def test_driver_keyed_node_drops_foreign_datagrams() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            keyring = Keyring([KEY])
            a = await start(nursery, "a", keyring=keyring)
            ping = encode_packet([encode_message(Ping(seq=7, target="a", source="x"))])
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            with sock:
                await sock.bind(("127.0.0.1", 0))
                for data in (Keyring([OTHER_KEY]).seal(ping, label=b"shoal"), ping):
                    await sock.sendto(data, a.address)
                await eventually(lambda: dropped(a.driver).get("decrypt", 0) == 2)
                # A correctly keyed ping is answered: the drops above are the key's doing.
                await sock.sendto(keyring.seal(ping, label=b"shoal"), a.address)
                reply, _ = await sock.recvfrom(65536)
                messages = decode_packet(keyring.open(reply, label=b"shoal"), FAST_LIMITS)
                assert Ack(seq=7) in messages
                # The wrong label is refused too.
                await sock.sendto(keyring.seal(ping, label=b"other"), a.address)
                await eventually(lambda: dropped(a.driver).get("decrypt", 0) == 3)
            assert a.driver.statistics().engine.packets_received == 1
            nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_driver_garbage_changes_only_drop_counters() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a, b = await start_cluster(nursery, ["a", "b"])
            before = {m.name: (m.state, m.incarnation) for m in a.driver.members()}
            engine_drops = dict(a.driver.statistics().engine.dropped)
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            with sock:
                await sock.bind(("127.0.0.1", 0))
                for data in (b"", b"\x00junk", b"\x01\xff\xff", bytes(range(256)) * 4):
                    await sock.sendto(data, a.address)
                await sock.sendto(b"x" * (FAST.max_packet_size + 1), a.address)
            await eventually(lambda: dropped(a.driver).get("oversize", 0) == 1)
            await eventually(
                lambda: (
                    sum(a.driver.statistics().engine.dropped.values())
                    >= sum(engine_drops.values()) + 4
                )
            )

            async def send_raw(data: bytes, *, hold: bool = False) -> None:
                tcp = await trio.open_tcp_stream(*a.address)
                async with tcp:
                    await tcp.send_all(data)
                    if hold:
                        # Wait for the server to give up on us.
                        assert await tcp.receive_some(10) == b""

            await send_raw(b"")  # connect and close
            await send_raw(FRAME_HEADER.pack(2**31))  # absurd length
            await send_raw(FRAME_HEADER.pack(100) + b"short")  # torn message
            await send_raw(FRAME_HEADER.pack(3) + b"abc")  # framed garbage for the engine
            await send_raw(b"\x00\x00", hold=True)  # stalls inside the header
            await eventually(
                lambda: dropped(a.driver) == {"oversize": 2, "truncated": 2, "timeout": 1}
            )
            assert {m.name: (m.state, m.incarnation) for m in a.driver.members()} == before
            assert states(b.driver) == {"a": MemberState.ALIVE, "b": MemberState.ALIVE}
            # Still gossiping: a newcomer joins through the battered node.
            c = await start(nursery, "c")
            await c.driver.join([seed(a)])
            await eventually(lambda: all_alive([a.driver, b.driver, c.driver], {"a", "b", "c"}))
            nursery.cancel_scope.cancel()


async def test_driver_keyed_garbage_stream_counts_decrypt() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a = await start(nursery, "a", keyring=Keyring([KEY]))
            tcp = await trio.open_tcp_stream(*a.address)
            async with tcp:
                await tcp.send_all(FRAME_HEADER.pack(40) + bytes(40))
                assert await tcp.receive_some(10) == b""  # closed without a reply
            await eventually(lambda: dropped(a.driver) == {"decrypt": 1})
            assert states(a.driver) == {"a": MemberState.ALIVE}
            nursery.cancel_scope.cancel()


ECHO_TAG = 0x42


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "keyed"])
async def test_driver_stream_handler_answers_tagged_exchange(keyed: bool) -> None:
    keyring = Keyring([KEY]) if keyed else None
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a = await start(nursery, "a", keyring=keyring)
            b = await start(nursery, "b", keyring=keyring)
            served: list[tuple[bytes, Address]] = []

            async def handler(stream: MessageStream, peer: Address) -> None:
                digest = await stream.receive_message()
                await stream.send_message(b"delta for " + digest)
                served.append((await stream.receive_message(), peer))

            b.driver.add_stream_handler(ECHO_TAG, handler)
            async with a.driver.open_stream(b.address, ECHO_TAG) as stream:
                await stream.send_message(b"digest-a")
                assert await stream.receive_message() == b"delta for digest-a"
                await stream.send_message(b"delta-a")
                with pytest.raises(trio.EndOfChannel):
                    await stream.receive_message()  # the handler returned: closed
            assert served[0][0] == b"delta-a"
            assert served[0][1][0] == "127.0.0.1"
            assert b.driver.statistics().dropped == {}
            # The engine still owns untagged streams on the same port.
            await a.driver.join([seed(b)])
            await eventually(lambda: all_alive([a.driver, b.driver], {"a", "b"}))
            nursery.cancel_scope.cancel()


async def test_driver_keyed_stream_handler_refuses_plaintext_peer() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a = await start(nursery, "a", keyring=None)
            b = await start(nursery, "b", keyring=Keyring([KEY]))
            calls: list[Address] = []

            async def handler(stream: MessageStream, peer: Address) -> None:
                calls.append(peer)  # pragma: no cover - must not run

            b.driver.add_stream_handler(ECHO_TAG, handler)
            async with a.driver.open_stream(b.address, ECHO_TAG) as stream:
                with pytest.raises(trio.EndOfChannel):
                    await stream.receive_message()
            await eventually(lambda: dropped(b.driver) == {"decrypt": 1})
            assert calls == []
            nursery.cancel_scope.cancel()


async def test_driver_stream_handler_protocol_error_is_counted() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a = await start(nursery, "a", keyring=Keyring([KEY]))
            b = await start(nursery, "b", keyring=Keyring([KEY]))

            async def handler(stream: MessageStream, peer: Address) -> None:
                await stream.receive_message()

            b.driver.add_stream_handler(ECHO_TAG, handler)
            tcp = await trio.open_tcp_stream(*b.address)
            async with tcp:
                sealed = Keyring([KEY]).seal(bytes((ECHO_TAG,)), label=b"shoal")
                await tcp.send_all(FRAME_HEADER.pack(len(sealed)) + sealed)
                await tcp.send_all(FRAME_HEADER.pack(29) + bytes(29))  # forged message
                assert await tcp.receive_some(10) == b""
            await eventually(lambda: dropped(b.driver) == {"decrypt": 1})
            assert a.driver.statistics().dropped == {}
            nursery.cancel_scope.cancel()


def test_driver_add_stream_handler_refuses_bad_tags() -> None:
    driver = MembershipDriver(FAST, name="a", bind="127.0.0.1:0")

    async def handler(stream: MessageStream, peer: Address) -> None:
        raise AssertionError  # pragma: no cover - never called

    with pytest.raises(ValueError, match="tag"):
        driver.add_stream_handler(1, handler)  # the membership protocol's version byte
    with pytest.raises(ValueError, match="tag"):
        driver.add_stream_handler(256, handler)
    driver.add_stream_handler(ECHO_TAG, handler)
    with pytest.raises(ValueError, match="already"):
        driver.add_stream_handler(ECHO_TAG, handler)


async def test_message_stream_refuses_oversize_announcement() -> None:
    left, right = trio.testing.memory_stream_pair()
    sender = MessageStream(left, keyring=None, label=b"", max_message_size=100)
    receiver = MessageStream(right, keyring=None, label=b"", max_message_size=10)
    with trio.fail_after(1):
        await sender.send_message(b"x" * 11)
        with pytest.raises(StreamError) as info:
            await receiver.receive_message()
    assert info.value.reason == "oversize"


def watch_stats(running: Running) -> WatchStatistics:
    return running.driver.statistics().watch


async def test_driver_watch_close_is_evidence_on_crash_and_not_on_leave() -> None:
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            nodes = await start_cluster(nursery, ["a", "b", "c", "d"])
            # Every member watches its two successors on the ring.
            await eventually(lambda: all(watch_stats(n).established >= 2 for n in nodes))
            await eventually(lambda: all(watch_stats(n).watchers == 2 for n in nodes))
            by_name = {n.driver.name: n for n in nodes}
            leaver, victim = by_name["c"], by_name["d"]
            assert await leaver.driver.leave(2.0)
            leaver.scope.cancel()
            rest = [n for n in nodes if n not in (leaver, victim)]
            await eventually(lambda: all(state_of(n.driver, "c") is MemberState.LEFT for n in rest))
            # The leaver said goodbye on its watch streams: nothing was evidence.
            assert sum(watch_stats(n).goodbyes for n in [*rest, victim]) >= 1
            assert sum(watch_stats(n).closures for n in [*rest, victim]) == 0
            assert all(n.driver.statistics().engine.watch_closures == 0 for n in rest)
            await eventually(lambda: all(watch_stats(n).watchers >= 1 for n in [victim]))
            closures_before = sum(n.driver.statistics().engine.watch_closures for n in rest)
            victim.scope.cancel()  # a crash: sockets closed, no goodbye
            await eventually(lambda: all(state_of(n.driver, "d") is MemberState.DEAD for n in rest))
            assert sum(n.driver.statistics().engine.watch_closures for n in rest) > closures_before
            assert sum(watch_stats(n).closures for n in rest) >= 1
            assert all(state_of(n.driver, m.driver.name) is MemberState.ALIVE
                       for n in rest for m in rest)  # fmt: skip
            nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_driver_watch_streams_are_bounded_and_outlive_stream_timeout() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            a = await start(nursery, "a")
            held: list[MessageStream] = []
            for _ in range(18):
                tcp = await trio.open_tcp_stream(*a.address)
                stream = MessageStream(tcp, keyring=None, label=b"shoal", max_message_size=64)
                await stream.send_message(bytes((WATCH_TAG,)))
                held.append(stream)
            replies = []
            for stream in held:
                try:
                    replies.append(await stream.receive_message())
                except trio.EndOfChannel:
                    replies.append(b"<closed>")
            # 16 watchers at most; the rest are turned away before HELLO.
            assert replies.count(HELLO) == 16
            assert replies.count(b"<closed>") == 2
            assert watch_stats(a).busy == 2
            await trio.sleep(FAST.stream_timeout * 2)  # past the stream deadline
            assert watch_stats(a).watchers == 16
            assert "timeout" not in dropped(a.driver)
            # A watcher that sends garbage is hung up on; nothing else changes.
            await held[0].send_message(b"junk")
            await eventually(lambda: watch_stats(a).watchers == 15)
            for stream in held:
                await stream.aclose()
            await eventually(lambda: watch_stats(a).watchers == 0)
            # A watcher that announces a large message and never sends it is
            # hung up on at once: a watch stream has no deadline, so it must
            # not sit in the inbound budget waiting for the bytes.
            tcp = await trio.open_tcp_stream(*a.address)
            async with tcp:
                await tcp.send_all(FRAME_HEADER.pack(1) + bytes((WATCH_TAG,)))
                await eventually(lambda: watch_stats(a).watchers == 1)
                await tcp.send_all(FRAME_HEADER.pack(60_000))
                await eventually(lambda: watch_stats(a).watchers == 0)
            assert states(a.driver) == {"a": MemberState.ALIVE}
            nursery.cancel_scope.cancel()
