"""Seeded fuzzers against a real node: NSQ TCP, HTTP and gossip input.

Each fuzzer builds valid inputs from templates, mutates them (flipped,
inserted, deleted, duplicated and truncated bytes, extreme integers) with a
seeded `random.Random`, and feeds a bounded number to the victim while the
canary, the /ping probe and the peer's watch run (conftest). Every input must
end cleanly: the node answers or closes, never hangs, never logs a traceback
or an internal error, never answers 500, and is never suspected by its peer.
The seed and the count are printed; a failure names the input's index.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import time
from typing import TYPE_CHECKING

import pytest

from shoal.cluster.membership_driver import FRAME_HEADER
from shoal.membership.codec import encode_message, encode_packet, encode_stream
from shoal.membership.messages import (
    Ack,
    Alive,
    Dead,
    Message,
    Ping,
    PingReq,
    PushPull,
    PushPullEntry,
    Suspect,
    UserMsg,
)
from shoal.membership.state import MemberState
from shoal.queue.commands import (
    Cls,
    Command,
    Dpub,
    Fin,
    Identify,
    Mpub,
    Nop,
    Pub,
    Rdy,
    Req,
    Sub,
    Touch,
    encode_command,
)
from shoal.queue.frames import MAGIC_V2
from shoal.testing.faults import Pair, membership_stats, watched
from shoal.testing.process import split_address

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 13
PROTOCOL_INPUTS = 1000
HTTP_INPUTS = 1000
GOSSIP_DATAGRAMS = 10_000
GOSSIP_STREAMS = 500

_EXTREME = (0, 1, -1, 2**31 - 1, -(2**31), 2**32 - 1, 2**63 - 1, 2**64 - 1)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """Apply one to three random edits to ``data``."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        pos = rng.randrange(len(buf) + 1)
        match rng.randrange(7):
            case 0 if buf:  # flip a byte
                buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
            case 1:  # insert random bytes
                buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
            case 2:  # delete a slice
                del buf[pos : pos + rng.randint(1, 16)]
            case 3:  # truncate
                del buf[pos:]
            case 4:  # duplicate a slice
                buf[pos:pos] = buf[pos : pos + rng.randint(1, 64)]
            case 5 if len(buf) >= 4:  # an extreme 32-bit integer
                value = rng.choice(_EXTREME) & 0xFFFFFFFF
                at = min(pos, len(buf) - 4)
                buf[at : at + 4] = value.to_bytes(4, "big")
            case _:  # a random byte anywhere
                buf[pos:pos] = bytes((rng.randrange(256),))
    return bytes(buf)


def _exchange(address: tuple[str, int], data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``data``, end our side, and read until the node closes.

    Raises:
        TimeoutError: the node neither answered nor closed in time.
    """
    with socket.create_connection(address, timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return b""  # closed on us while we were still sending: fine
        reply = bytearray()
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return bytes(reply)
            if not chunk:
                return bytes(reply)
            reply += chunk


# -- NSQ TCP ---------------------------------------------------------------------------


def _random_json(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return rng.choice(_EXTREME)
    if kind == 1:
        return rng.random() * 10 ** rng.randint(-5, 300)
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return "".join(rng.choice('ab\u00e9\u2603"\\') for _ in range(rng.randint(0, 8)))
    if kind == 4:
        return rng.randint(-(10**6), 10**6)
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["heartbeat_interval", "output_buffer_size", "output_buffer_timeout", "msg_timeout",
            "sample_rate", "client_id", "hostname", "feature_negotiation", "deflate",
            "deflate_level", "snappy", "tls_v1", "user_agent"]  # fmt: skip
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _nsq_command(rng: random.Random) -> Command:
    topic = f"fz{rng.randrange(4)}"
    msg_id = b"%016x" % rng.randrange(2**64)
    makers: list[Callable[[], Command]] = [
        lambda: Identify(json.dumps(_random_json(rng)).encode()),
        lambda: Sub(topic, f"c{rng.randrange(3)}"),
        lambda: Pub(topic, rng.randbytes(rng.randint(1, 64))),
        lambda: Mpub(topic, [rng.randbytes(rng.randint(1, 8)) for _ in range(rng.randint(1, 50))]),
        lambda: Dpub(topic, rng.randrange(10_000), b"d"),
        lambda: Rdy(rng.randrange(3000)),
        lambda: Fin(msg_id),
        lambda: Req(msg_id, rng.randrange(10_000)),
        lambda: Touch(msg_id),
        lambda: Nop(),
        lambda: Cls(),
    ]
    return rng.choice(makers)()


def test_protocol_fuzzer(pair: Pair) -> None:
    rng = random.Random(SEED)
    with watched(pair) as seen:
        for index in range(PROTOCOL_INPUTS):
            commands = b"".join(encode_command(_nsq_command(rng)) for _ in range(rng.randint(1, 4)))
            data = MAGIC_V2 + (mutate(rng, commands) if rng.random() < 0.8 else commands)
            try:
                _exchange(pair.victim.tcp, data)
            except TimeoutError:
                pytest.fail(f"input {index} (seed {SEED}) hung the connection: {data[:200]!r}")
        seen.report(f"protocol fuzzer, {PROTOCOL_INPUTS} inputs")


# -- HTTP ------------------------------------------------------------------------------

_ROUTES = (
    ("GET", "/ping"), ("GET", "/info"), ("GET", "/stats"), ("GET", "/stats?format=json"),
    ("GET", "/debug"), ("GET", "/lookup?topic=fz1"), ("GET", "/topics"), ("GET", "/nodes"),
    ("GET", "/channels?topic=fz1"), ("GET", "/members"), ("GET", "/config/log_level"),
    ("POST", "/pub?topic=fz1"), ("POST", "/pub?topic=fz2&defer=100"), ("POST", "/mpub?topic=fz1"),
    ("POST", "/mpub?topic=fz3&binary=true"), ("POST", "/topic/create?topic=fz2"),
    ("POST", "/topic/delete?topic=fz3"), ("POST", "/topic/empty?topic=fz1"),
    ("POST", "/topic/pause?topic=fz2"), ("POST", "/topic/unpause?topic=fz2"),
    ("POST", "/channel/create?topic=fz1&channel=c"),
    ("POST", "/channel/delete?topic=fz1&channel=c"),
    ("POST", "/channel/empty?topic=fz1&channel=c"), ("POST", "/channel/pause?topic=fz1&channel=c"),
    ("POST", "/channel/unpause?topic=fz1&channel=c"), ("PUT", "/config/nsqlookupd_tcp_addresses"),
    ("PUT", "/config/log_level"), ("POST", "/topic/tombstone?topic=fz1&node=x:1"),
)  # fmt: skip


def _http_request(rng: random.Random) -> bytes:
    method, target = rng.choice(_ROUTES)
    body_kind = rng.randrange(4)
    if body_kind == 0:
        body = b""
    elif body_kind == 1:
        body = json.dumps(_random_json(rng)).encode()
    elif body_kind == 2:
        count = rng.randint(1, 20)
        body = struct.pack(">i", count) + b"".join(
            struct.pack(">i", 3) + b"abc" for _ in range(count)
        )
    else:
        body = b"\n".join(rng.randbytes(rng.randint(0, 10)) for _ in range(rng.randint(1, 20)))
    headers = [b"Host: fuzz", b"Content-Length: %d" % len(body)]
    if rng.random() < 0.2:
        headers.append(b"Transfer-Encoding: chunked")
    if rng.random() < 0.2:
        headers.append(b"Connection: close")
    if rng.random() < 0.1:
        headers.append(b"X-Fold: a\r\n b")
    head = f"{method} {target} HTTP/1.1\r\n".encode() + b"\r\n".join(headers) + b"\r\n\r\n"
    request = head + body
    return mutate(rng, request) if rng.random() < 0.6 else request


def test_http_fuzzer(pair: Pair) -> None:
    rng = random.Random(SEED)
    statuses: dict[int, int] = {}
    with watched(pair) as seen:
        for index in range(HTTP_INPUTS):
            data = _http_request(rng)
            try:
                reply = _exchange(pair.victim.http, data)
            except TimeoutError:
                pytest.fail(f"input {index} (seed {SEED}) hung the connection: {data[:300]!r}")
            for line in reply.split(b"\r\n"):
                if line.startswith(b"HTTP/1.1 "):
                    status = int(line.split()[1])
                    statuses[status] = statuses.get(status, 0) + 1
                    detail = f"input {index} (seed {SEED}): {data[:300]!r} -> {reply!r}"
                    assert status != 500, detail
        seen.report(f"HTTP fuzzer, {HTTP_INPUTS} inputs, statuses {sorted(statuses.items())}")
    assert statuses  # most inputs are answered


# -- gossip ----------------------------------------------------------------------------


def _gossip_message(rng: random.Random) -> Message:
    name = f"x{rng.randrange(8)}"
    address = ("127.0.0.1", rng.randrange(40_000, 60_000))
    incarnation = rng.choice((*_EXTREME[:2], 2**32 - 1, 2**64 - 1, rng.randrange(100)))
    makers: list[Callable[[], Message]] = [
        lambda: Ping(seq=rng.randrange(2**32), target="victim", source=name),
        lambda: Ping(seq=rng.randrange(2**32), target=name, source=name),
        lambda: Ack(seq=rng.randrange(2**32)),
        lambda: PingReq(
            seq=rng.randrange(2**32), target=name, target_address=address, nack=True, source=name
        ),
        lambda: Alive(incarnation=incarnation, name=name, address=address, meta={"t": "1"}),
        lambda: Suspect(incarnation=incarnation, name=name, source="x9"),
        lambda: Dead(incarnation=incarnation, name=name, source="x9"),
        lambda: UserMsg(key=rng.choice(("registry", "r", name)), data=rng.randbytes(20)),
    ]
    return rng.choice(makers)()


def _push_pull(rng: random.Random) -> PushPull:
    members = tuple(
        PushPullEntry(
            f"x{i}",
            ("127.0.0.1", rng.randrange(40_000, 60_000)),
            rng.randrange(5),
            rng.choice(list(MemberState)),
            {},
        )
        for i in range(rng.randrange(4))
    )
    return PushPull(
        source="x9", join=rng.random() < 0.5, reply=False, members=members, app_state=b""
    )


def test_gossip_fuzzer(pair: Pair) -> None:
    rng = random.Random(SEED)
    victim = pair.victim
    udp_address = split_address(victim.gossip)
    before = membership_stats(victim)
    with watched(pair) as seen, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for sent in range(GOSSIP_DATAGRAMS):
            if sent % 20 == 0:
                # About 2,000 a second: fuzzing, not flooding. A flood fills the
                # socket's receive buffer and drops the peer's probes with the
                # rest, which no decoder can prevent.
                time.sleep(0.01)
            parts = [encode_message(_gossip_message(rng)) for _ in range(rng.randint(1, 5))]
            packet = encode_packet(parts)
            udp.sendto(mutate(rng, packet) if rng.random() < 0.7 else packet, udp_address)
        for index in range(GOSSIP_STREAMS):
            message: Message = _push_pull(rng) if rng.random() < 0.5 else _gossip_message(rng)
            payload = encode_stream(message)
            if rng.random() < 0.7:
                payload = mutate(rng, payload)
            frame = FRAME_HEADER.pack(len(payload)) + payload
            data = mutate(rng, frame) if rng.random() < 0.2 else frame
            try:
                _exchange(udp_address, data, timeout=15)
            except TimeoutError:
                pytest.fail(f"stream {index} (seed {SEED}) hung: {data[:200]!r}")
        seen.report(f"gossip fuzzer, {GOSSIP_DATAGRAMS} datagrams and {GOSSIP_STREAMS} streams")
    after = membership_stats(victim)
    engine_before, engine_after = before["engine"], after["engine"]
    assert isinstance(engine_before, dict)
    assert isinstance(engine_after, dict)
    assert engine_after["packets_received"] - engine_before["packets_received"] >= (
        GOSSIP_DATAGRAMS // 2
    )
    assert sum(engine_after["dropped"].values()) > sum(engine_before["dropped"].values())
