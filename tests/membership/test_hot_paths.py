"""The engine's and the codec's hot paths do the work they claim, counted.

A thousand-node simulation runs these paths hundreds of thousands of times
(`bench/simulations.py scale`); each test pins the mechanism that keeps one
of them cheap: no reference cycle per probe, records encoded once, member
snapshots that stay immutable and hash without their metadata.
"""

import gc
import random
from collections.abc import Iterator

import cbor2
import pytest

from shoal.membership import Member, MemberJoined, Membership, MembershipConfig, MemberState, codec
from shoal.membership.codec import CodecLimits, encode_message, encode_packet, encode_table
from shoal.membership.messages import Ack, Address, Alive, Ping, PingReq

CONFIG = MembershipConfig.local()
LIMITS = CodecLimits.from_config(CONFIG)
Record = tuple[str, Address, int, MemberState, dict[str, str]]
ADDR: dict[str, Address] = {n: (f"10.0.0.{i}", 4160) for i, n in enumerate("abcde", start=1)}


@pytest.fixture
def saved_garbage() -> Iterator[list[object]]:
    """Collect first, then keep what the collector finds instead of freeing it."""
    enabled = gc.isenabled()
    gc.disable()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()


def _engine() -> Membership:
    engine = Membership(CONFIG, name="a", address=ADDR["a"], rng=random.Random(3), now=0.0)
    alive = [encode_message(Alive(incarnation=1, name=n, address=ADDR[n], meta={})) for n in "bcde"]
    engine.receive_packet(encode_packet(alive), ADDR["b"], 0.0)
    engine.events()
    engine.packets_to_send()
    return engine


def _run(engine: Membership, until: float, answer: str) -> int:
    """Tick ``engine`` to ``until``; members in ``answer`` ack at once. Return pings sent."""
    pings = 0
    for _ in range(100_000):
        now = engine.next_deadline()
        if now > until:
            return pings
        engine.tick(now)
        for address, data in engine.packets_to_send():
            for message in codec.decode_packet(data, LIMITS):
                if isinstance(message, Ping):
                    pings += 1
                    if message.target in answer:
                        ack = encode_packet([encode_message(Ack(seq=message.seq))])
                        engine.receive_packet(ack, address, now)
        engine.streams_to_open()
        engine.events()
    raise AssertionError("engine did not settle")


def test_ended_probes_relays_and_broadcasts_leave_no_garbage_cycles(
    saved_garbage: list[object],
) -> None:
    engine = _engine()
    # "e" never answers: its probes fail, ask helpers and fall back to a stream.
    pings = _run(engine, 30.0, answer="bcd")
    # Relayed probes, one acked and one timing out.
    for seq, target in ((90, "b"), (91, "e")):
        request = PingReq(
            seq=seq, target=target, target_address=ADDR[target], nack=True, source="c"
        )
        engine.receive_packet(encode_packet([encode_message(request)]), ADDR["c"], 30.0)
    for address, data in engine.packets_to_send():
        for message in codec.decode_packet(data, LIMITS):
            if isinstance(message, Ping) and message.target == "b":
                ack = encode_packet([encode_message(Ack(seq=message.seq))])
                engine.receive_packet(ack, address, 30.0)
    _run(engine, 40.0, answer="bcd")
    assert pings >= 25
    assert engine.statistics().probe_failures >= 1
    assert engine.statistics().indirect_probes_served == 2
    assert engine.statistics().broadcasts_queued >= 2  # "e" suspected, then dead
    assert gc.collect() == 0
    assert saved_garbage == []


def test_a_changed_record_is_the_only_one_encoded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    codec._RECORDS.clear()
    calls: list[object] = []
    real = cbor2.dumps

    def counting(item: object) -> bytes:
        calls.append(item)
        return real(item)

    monkeypatch.setattr(cbor2, "dumps", counting)
    records: list[Record] = [
        (f"node-{i}", (f"10.0.0.{i}", 4160), 1, MemberState.ALIVE, {}) for i in range(100)
    ]
    encode_table(records)
    assert len(calls) == 100
    calls.clear()
    records[7] = ("node-7", ("10.0.0.7", 4160), 1, MemberState.SUSPECT, {})
    encode_table(records)
    assert len(calls) == 1
    calls.clear()
    # Records with metadata are not kept: their metadata is not part of the key.
    records[9] = ("node-9", ("10.0.0.9", 4160), 1, MemberState.ALIVE, {"v": "2"})
    encode_table(records)
    encode_table(records)
    assert len(calls) == 2


@pytest.mark.parametrize("count", [0, 1, 23, 24, 255, 256, 300])
def test_a_table_of_kept_records_is_byte_for_byte_one_encoding(count: int) -> None:
    states = list(MemberState)
    records = [
        (
            f"n{i}",
            (f"10.1.{i // 256}.{i % 256}", 4160 + i),
            i,
            states[i % 4],
            {"k": "v"} if i % 7 else {},
        )
        for i in range(count)
    ]
    whole = cbor2.dumps(
        [(n, a, inc, codec._STATE_TO_WIRE[s], dict(m)) for n, a, inc, s, m in records]
    )
    assert encode_table(records) == whole
    assert encode_table(records) == whole  # now from the kept records


def test_array_heads_of_every_width() -> None:
    for count in (0, 23, 24, 255, 256, 65_535, 65_536, 70_000):
        assert codec._array_header(count) == cbor2.dumps([0] * count)[: -count or None]


def test_kept_records_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    codec._RECORDS.clear()
    monkeypatch.setattr(codec, "MAX_ENCODED_RECORDS", 10)
    records: list[Record] = [
        (f"n{i}", ("10.0.0.1", i), 1, MemberState.ALIVE, {}) for i in range(25)
    ]
    first = encode_table(records)
    assert len(codec._RECORDS) <= 10
    assert encode_table(records) == first


def test_member_snapshots_are_frozen_and_hash_without_their_meta() -> None:
    def member(meta: dict[str, str]) -> Member:
        return Member(
            name="b",
            address=ADDR["b"],
            state=MemberState.SUSPECT,
            incarnation=4,
            meta=meta,
            state_changed_at=2.5,
        )

    built = member({"v": "1"})
    with pytest.raises(AttributeError):
        built.state = MemberState.ALIVE  # type: ignore[misc]
    assert built == member({"v": "1"})
    assert hash(built) == hash(member({"v": "1"}))
    assert built != member({"v": "2"})
    assert MemberJoined(member=built) == MemberJoined(member=member({"v": "1"}))


def test_limits_carry_the_shapes_they_imply() -> None:
    limits = CodecLimits(max_push_pull_members=7, meta_max_size=40)
    assert limits.packet_shape == codec._packet_shape(limits)
    assert limits.stream_shape == codec._stream_shape(limits)
    assert limits == CodecLimits(max_push_pull_members=7, meta_max_size=40)
    assert "shape" not in repr(limits)
