"""One SWIM or Lifeguard rule per test, on a single engine fed by hand."""

import dataclasses
import itertools
import random
from collections.abc import Iterable

import pytest

from shoal.errors import LocalProtocolError, RemoteProtocolError
from shoal.membership import (
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MemberReaped,
    MemberRecovered,
    Membership,
    MembershipConfig,
    MemberState,
    MemberSuspected,
    MemberUpdated,
    NameConflict,
    push_pull_scale,
)
from shoal.membership.broadcast import retransmit_limit
from shoal.membership.codec import (
    STREAM_REPLY_TYPES,
    CodecLimits,
    decode_packet,
    decode_stream,
    encode_message,
    encode_packet,
    encode_stream,
)
from shoal.membership.messages import (
    Ack,
    Address,
    Alive,
    Dead,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    PushPullEntry,
    Suspect,
    UserMsg,
)
from shoal.membership.state import MAX_INCARNATION_STEP

CONFIG = MembershipConfig.local()
LIMITS = CodecLimits.from_config(CONFIG)
A: Address = ("10.0.0.1", 4160)
ADDR = {name: (f"10.0.0.{i}", 4160) for i, name in enumerate("abcdefgh", start=1)}


def make(config: MembershipConfig = CONFIG, **kwargs: object) -> Membership:
    return Membership(
        config,
        name="a",
        address=A,
        meta={"v": "1"},
        rng=random.Random(7),
        now=0.0,
        **kwargs,  # type: ignore[arg-type]
    )


def alive(name: str, incarnation: int = 1, **kwargs: object) -> Alive:
    fields: dict[str, object] = {"address": ADDR[name], "meta": {}}
    fields.update(kwargs)
    return Alive(incarnation=incarnation, name=name, **fields)  # type: ignore[arg-type]


def feed(
    engine: Membership, *messages: Message, now: float = 0.0, src: Address = ADDR["b"]
) -> None:
    engine.receive_packet(encode_packet([encode_message(m) for m in messages]), src, now)


def drain(engine: Membership) -> list[tuple[Address, Message]]:
    return [
        (address, message)
        for address, data in engine.packets_to_send()
        for message in decode_packet(data, LIMITS)
    ]


def with_members(*names: str, config: MembershipConfig = CONFIG) -> Membership:
    engine = make(config)
    feed(engine, *(alive(n) for n in names))
    engine.events()
    drain(engine)
    return engine


class Driver:
    """Ticks one engine through time; members in ``answer`` ack its pings at once."""

    def __init__(self, engine: Membership, answer: Iterable[str] = ()) -> None:
        self.engine = engine
        self.answer = set(answer)
        self.sent: list[tuple[float, Address, Message]] = []
        self.streams: list[tuple[float, Address, Message]] = []

    def run_until(self, until: float) -> None:
        engine = self.engine
        for _ in range(100_000):
            deadline = engine.next_deadline()
            if deadline > until:
                return
            engine.tick(deadline)
            self._collect(deadline)
        raise AssertionError("engine did not settle")

    def _collect(self, now: float) -> None:
        engine = self.engine
        for _ in range(100):
            replies = []
            for address, message in drain(engine):
                self.sent.append((now, address, message))
                if isinstance(message, Ping) and message.target in self.answer:
                    replies.append((address, Ack(seq=message.seq)))
            for address, data in engine.streams_to_open():
                self.streams.append((now, address, decode_stream(data, LIMITS)))
            if not replies:
                return
            for address, reply in replies:
                feed(engine, reply, now=now, src=address)

    def pings(self) -> list[tuple[float, Address, Ping]]:
        return [(at, a, m) for at, a, m in self.sent if isinstance(m, Ping)]

    def ping_reqs(self) -> list[tuple[float, Address, PingReq]]:
        return [(at, a, m) for at, a, m in self.sent if isinstance(m, PingReq)]


def state(engine: Membership, name: str) -> MemberState | None:
    member = engine.member(name)
    return None if member is None else member.state


# ------------------------------------------------------------------ alive / join


def test_alive_adds_member_and_raises_joined() -> None:
    engine = make()
    feed(engine, alive("b", 3, meta={"k": "v"}))
    member = engine.member("b")
    assert member is not None
    assert (member.state, member.incarnation, member.address, dict(member.meta)) == (
        MemberState.ALIVE, 3, ADDR["b"], {"k": "v"}
    )  # fmt: skip
    assert [type(e) for e in engine.events()] == [MemberJoined]


def test_alive_with_older_or_equal_incarnation_is_ignored() -> None:
    engine = with_members("b")
    feed(engine, alive("b", 5, meta={"k": "new"}))
    feed(engine, alive("b", 5, meta={"k": "replay"}))
    feed(engine, alive("b", 4, meta={"k": "old"}))
    member = engine.member("b")
    assert member is not None
    assert (member.incarnation, dict(member.meta)) == (5, {"k": "new"})


def test_alive_with_new_meta_raises_updated() -> None:
    engine = with_members("b")
    feed(engine, alive("b", 2, meta={"k": "v2"}))
    events = engine.events()
    assert [type(e) for e in events] == [MemberUpdated]


def test_join_opens_push_pull_with_every_seed_but_ourselves() -> None:
    engine = make()
    engine.join([ADDR["b"], A, ADDR["c"]], now=0.0)
    streams = engine.streams_to_open()
    assert [address for address, _ in streams] == [ADDR["b"], ADDR["c"]]
    for _, data in streams:
        request = decode_stream(data, LIMITS)
        assert isinstance(request, PushPull)
        assert request.join
        assert not request.reply
        assert [(e.name, e.state) for e in request.members] == [("a", MemberState.ALIVE)]


def test_join_rejects_malformed_seed() -> None:
    with pytest.raises(LocalProtocolError):
        make().join([("host",)], now=0.0)  # type: ignore[list-item]


# ------------------------------------------------------------------ suspicion


def test_suspect_marks_alive_member_suspect() -> None:
    engine = with_members("b", "c")
    feed(engine, Suspect(incarnation=1, name="b", source="c"))
    assert state(engine, "b") is MemberState.SUSPECT
    events = engine.events()
    assert len(events) == 1
    assert isinstance(events[0], MemberSuspected)
    assert events[0].accuser == "c"


def test_suspect_ignores_older_incarnation() -> None:
    engine = make()
    feed(engine, alive("b", 5))
    feed(engine, Suspect(incarnation=4, name="b", source="c"))
    feed(engine, Dead(incarnation=4, name="b", source="c"))
    assert state(engine, "b") is MemberState.ALIVE


def test_suspect_about_unknown_member_is_ignored() -> None:
    engine = make()
    feed(engine, Suspect(incarnation=1, name="zz", source="c"))
    assert engine.member("zz") is None


def test_refutation_bumps_incarnation_and_broadcasts_alive() -> None:
    engine = with_members("b")
    feed(engine, Suspect(incarnation=4, name="a", source="b"))
    assert engine.incarnation == 5
    assert engine.statistics().refutations == 1
    feed(engine, Ping(seq=9, target="a", source="b"))
    sent = [m for _, m in drain(engine)]
    assert Ack(seq=9) in sent
    assert Alive(incarnation=5, name="a", address=A, meta={"v": "1"}) in sent


def test_refutation_ignores_accusation_older_than_own_incarnation() -> None:
    engine = make(incarnation=10)
    feed(engine, Suspect(incarnation=3, name="a", source="b"))
    assert engine.incarnation == 10


def test_refutation_raises_health_score() -> None:
    engine = with_members("b")
    feed(engine, Suspect(incarnation=1, name="a", source="b"))
    assert engine.health_score == 1


def test_dead_about_self_is_refuted_never_applied() -> None:
    engine = with_members("b")
    feed(engine, Dead(incarnation=1, name="a", source="b"))
    feed(engine, Dead(incarnation=7, name="a", source="a"))
    me = engine.member("a")
    assert me is not None
    assert me.state is MemberState.ALIVE
    assert engine.incarnation == 8


def test_accusation_far_beyond_own_incarnation_is_dropped_not_refuted() -> None:
    engine = with_members("b")
    feed(engine, Suspect(incarnation=2**64 - 1, name="a", source="b"))
    feed(engine, Dead(incarnation=1 + MAX_INCARNATION_STEP + 1, name="a", source="b"))
    feed(engine, Alive(incarnation=2**64 - 1, name="a", address=A, meta={"v": "1"}))
    assert engine.incarnation == 1
    assert engine.statistics().dropped["incarnation_jump"] == 3
    # A later honest accusation is still refuted.
    feed(engine, Suspect(incarnation=1, name="a", source="b"))
    assert engine.incarnation == 2


def test_forged_dead_at_largest_incarnation_is_ignored_about_others() -> None:
    engine = with_members("b", "c")
    feed(engine, Dead(incarnation=2**64 - 1, name="b", source="c"))
    feed(engine, Suspect(incarnation=2**64 - 1, name="b", source="c"))
    feed(engine, alive("c", 2**64 - 1))
    assert state(engine, "b") is MemberState.ALIVE
    c = engine.member("c")
    assert c is not None
    assert c.incarnation == 1
    assert engine.statistics().dropped["incarnation_jump"] == 3


def test_forged_accusations_cost_one_step_each() -> None:
    # The most a forger can take per message is one step, and the member
    # refutes every time: the 64-bit range outlasts any feasible flood.
    engine = with_members("b")
    for _ in range(100):
        feed(
            engine,
            Dead(incarnation=engine.incarnation + MAX_INCARNATION_STEP, name="a", source="b"),
        )
    assert engine.incarnation == 1 + 100 * (MAX_INCARNATION_STEP + 1)
    assert engine.statistics().refutations == 100


def test_restarted_member_catches_up_from_an_asked_for_reply() -> None:
    # Our previous life reached an incarnation far beyond the one we restart
    # with; the reply to our join tells us, and we refute above it.
    engine = with_members("b")
    far = 5 * MAX_INCARNATION_STEP
    request = PushPull(
        source="b",
        join=False,
        reply=False,
        members=(entry("a", far, MemberState.DEAD),),
        app_state=b"",
    )
    engine.receive_stream(encode_stream(request), ADDR["b"], 0.0)
    assert engine.incarnation == 1  # unasked: not believed
    reply = PushPull(
        source="b",
        join=True,
        reply=True,
        members=(entry("a", far, MemberState.DEAD),),
        app_state=b"",
    )
    engine.receive_stream_reply(encode_stream(reply), ADDR["b"], 0.0)
    assert engine.incarnation == far + 1


def test_alive_about_self_with_newer_incarnation_is_refuted() -> None:
    engine = with_members("b")
    feed(engine, Alive(incarnation=4, name="a", address=A, meta={"v": "1"}))
    assert engine.incarnation == 5


def test_alive_about_self_identical_is_not_refuted() -> None:
    engine = with_members("b")
    feed(engine, Alive(incarnation=1, name="a", address=A, meta={"v": "1"}))
    assert engine.incarnation == 1


def test_alive_about_self_from_other_address_is_refuted_and_reported() -> None:
    engine = with_members("b")
    feed(engine, Alive(incarnation=1, name="a", address=ADDR["h"], meta={"v": "1"}))
    assert engine.incarnation == 2
    assert any(isinstance(e, NameConflict) for e in engine.events())


def test_suspicion_expires_into_dead_at_max_without_confirmations() -> None:
    engine = with_members("b", "c", "d", "e")  # n = 5: k = 1, min 3 s, max 18 s
    feed(engine, Suspect(incarnation=1, name="b", source="c"))
    driver = Driver(engine, answer="bcde")
    driver.run_until(17.9)
    assert state(engine, "b") is MemberState.SUSPECT
    driver.run_until(18.01)
    assert state(engine, "b") is MemberState.DEAD
    failed = [e for e in engine.events() if isinstance(e, MemberFailed)]
    assert [(e.member.name, e.declared_by) for e in failed] == [("b", "a")]
    assert engine.statistics().deaths_declared == 1


def test_suspicion_confirmations_shorten_the_timeout() -> None:
    engine = with_members("b", "c", "d", "e")
    feed(engine, Suspect(incarnation=1, name="b", source="c"))
    feed(engine, Suspect(incarnation=1, name="b", source="d"), now=1.0)
    assert engine.statistics().confirmations == 1
    driver = Driver(engine, answer="bcde")
    driver.run_until(2.99)
    assert state(engine, "b") is MemberState.SUSPECT
    driver.run_until(3.01)
    assert state(engine, "b") is MemberState.DEAD


def test_suspicion_repeat_from_original_accuser_is_not_a_confirmation() -> None:
    engine = with_members("b", "c", "d", "e")
    feed(engine, Suspect(incarnation=1, name="b", source="c"))
    feed(engine, Suspect(incarnation=1, name="b", source="c"), now=1.0)
    assert engine.statistics().confirmations == 0


def test_suspicion_timeout_is_fixed_without_lifeguard() -> None:
    config = dataclasses.replace(CONFIG, lifeguard_suspicion=False)
    engine = with_members("b", "c", "d", "e", config=config)
    feed(engine, Suspect(incarnation=1, name="b", source="c"))
    driver = Driver(engine, answer="bcde")
    driver.run_until(2.99)
    assert state(engine, "b") is MemberState.SUSPECT
    driver.run_until(3.01)
    assert state(engine, "b") is MemberState.DEAD


def test_alive_with_newer_incarnation_clears_suspicion() -> None:
    engine = with_members("b", "c")
    feed(engine, Suspect(incarnation=1, name="b", source="c"))
    feed(engine, alive("b", 2))
    assert state(engine, "b") is MemberState.ALIVE
    assert [type(e) for e in engine.events()] == [MemberSuspected, MemberRecovered]
    Driver(engine, answer="bc").run_until(30.0)
    assert state(engine, "b") is MemberState.ALIVE


# ------------------------------------------------------------------ dead / leave


def test_dead_marks_member_failed() -> None:
    engine = with_members("b", "c")
    feed(engine, Dead(incarnation=1, name="b", source="c"))
    assert state(engine, "b") is MemberState.DEAD
    events = engine.events()
    assert isinstance(events[0], MemberFailed)
    assert events[0].declared_by == "c"


def test_leave_is_final_for_that_incarnation() -> None:
    engine = with_members("b", "c")
    feed(engine, Dead(incarnation=2, name="b", source="b"))
    assert state(engine, "b") is MemberState.LEFT
    feed(engine, alive("b", 2))
    feed(engine, Suspect(incarnation=2, name="b", source="c"))
    feed(engine, Dead(incarnation=2, name="b", source="c"))
    assert state(engine, "b") is MemberState.LEFT
    assert [type(e) for e in engine.events()] == [MemberLeft]
    feed(engine, alive("b", 3))
    assert state(engine, "b") is MemberState.ALIVE
    assert [type(e) for e in engine.events()] == [MemberJoined]


def test_dead_member_reclaimed_by_newer_incarnation() -> None:
    engine = with_members("b", "c")
    feed(engine, Dead(incarnation=1, name="b", source="c"))
    feed(engine, alive("b", 1))
    assert state(engine, "b") is MemberState.DEAD
    feed(engine, alive("b", 2))
    assert state(engine, "b") is MemberState.ALIVE
    assert [type(e) for e in engine.events()] == [MemberFailed, MemberJoined]


def test_name_on_new_address_conflicts_while_member_alive() -> None:
    engine = with_members("b")
    feed(engine, alive("b", 9, address=ADDR["h"]))
    member = engine.member("b")
    assert member is not None
    assert (member.address, member.incarnation) == (ADDR["b"], 1)
    conflicts = [e for e in engine.events() if isinstance(e, NameConflict)]
    assert [(c.known_address, c.claimed_address) for c in conflicts] == [(ADDR["b"], ADDR["h"])]


def test_name_moves_to_new_address_once_dead() -> None:
    engine = with_members("b", "c")
    feed(engine, Dead(incarnation=1, name="b", source="c"))
    feed(engine, alive("b", 2, address=ADDR["h"]))
    member = engine.member("b")
    assert member is not None
    assert (member.state, member.address) == (MemberState.ALIVE, ADDR["h"])


def test_name_stays_put_when_reclaim_is_disabled() -> None:
    config = dataclasses.replace(CONFIG, dead_node_reclaim_time=float("inf"))
    engine = with_members("b", "c", config=config)
    feed(engine, Dead(incarnation=1, name="b", source="c"))
    feed(engine, alive("b", 2, address=ADDR["h"]))
    assert state(engine, "b") is MemberState.DEAD


def test_leave_broadcasts_dead_about_self_until_complete() -> None:
    engine = with_members("b", "c")
    engine.leave(now=0.0)
    assert not engine.leave_complete()
    me = engine.member("a")
    assert me is not None
    assert me.state is MemberState.LEFT
    driver = Driver(engine, answer="bc")
    driver.run_until(5.0)
    leaves = [m for _, _, m in driver.sent if m == Dead(incarnation=1, name="a", source="a")]
    # Sent as often as any broadcast: b and c are the live members now.
    assert len(leaves) == retransmit_limit(CONFIG.retransmit_mult, 2)
    assert engine.leave_complete()
    assert driver.pings() == []  # a leaving node stops probing


def test_leaving_node_does_not_refute_its_own_leave() -> None:
    engine = with_members("b")
    engine.leave(now=0.0)
    feed(engine, Dead(incarnation=1, name="a", source="a"))
    feed(engine, Suspect(incarnation=1, name="a", source="b"))
    assert engine.incarnation == 1


def test_join_after_leave_is_refused() -> None:
    engine = make()
    engine.leave(now=0.0)
    with pytest.raises(LocalProtocolError):
        engine.join([ADDR["b"]], now=0.0)


def test_dead_members_are_reaped_after_retention_and_retried() -> None:
    engine = with_members("b")
    feed(engine, Dead(incarnation=1, name="b", source="c"))
    driver = Driver(engine)
    driver.run_until(CONFIG.dead_retention + 2.0)
    assert engine.member("b") is None
    assert any(isinstance(e, MemberReaped) for e in engine.events())
    driver.run_until(CONFIG.dead_retention + 2.0 + 2 * CONFIG.reconnect_interval)
    retried = [
        at for at, address, m in driver.streams if address == ADDR["b"] and isinstance(m, PushPull)
    ]
    assert any(at > CONFIG.dead_retention for at in retried)


def test_forget_reaps_a_failed_member_now_and_never_retries_it() -> None:
    # Serf's force-leave: the operator knows it is gone for good.
    engine = with_members("b", "c")
    feed(engine, Dead(incarnation=1, name="b", source="c"), src=ADDR["c"])
    engine.events()
    engine.streams_to_open()
    assert engine.forget("b", 1.0) is True
    assert engine.member("b") is None
    assert any(isinstance(e, MemberReaped) for e in engine.events())
    assert engine.forget("b", 1.5) is False  # already gone
    driver = Driver(engine, answer="c")  # probe rounds go on without it
    driver.run_until(1.0 + 3 * CONFIG.reconnect_interval)
    assert not [address for _, address, _ in driver.streams if address == ADDR["b"]]


def test_forget_refuses_live_members_and_ourselves() -> None:
    engine = with_members("b")
    feed(engine, Suspect(incarnation=1, name="b", source="c"))
    for name in ("b", "a"):
        with pytest.raises(LocalProtocolError, match="not failed or left"):
            engine.forget(name, 1.0)
    assert engine.member("b") is not None


# ------------------------------------------------------------------ probing


def test_probe_pings_members_in_round_robin() -> None:
    engine = with_members("b", "c", "d")
    driver = Driver(engine, answer="bcd")
    driver.run_until(6.0)
    targets = [m.target for _, _, m in driver.pings()]
    assert len(targets) == 6
    assert sorted(targets[:3]) == ["b", "c", "d"]
    assert sorted(targets[3:]) == ["b", "c", "d"]
    assert engine.statistics().acks_received == 6
    assert state(engine, "b") is MemberState.ALIVE


def test_failed_probe_asks_helpers_then_suspects() -> None:
    engine = with_members("b", "c")
    driver = Driver(engine, answer="c")
    driver.run_until(3.0)
    requests = [m for _, _, m in driver.ping_reqs()]
    assert requests
    assert all(m.target == "b" for m in requests)
    assert any(isinstance(m, Ping) and m.target == "b" for _, _, m in driver.streams)
    assert state(engine, "b") is MemberState.SUSPECT
    assert engine.statistics().probe_failures >= 1


def test_probe_timeout_and_helper_wait_follow_config() -> None:
    engine = with_members("b", "c")
    driver = Driver(engine, answer="c")
    driver.run_until(3.0)
    ping_at = next(at for at, _, m in driver.pings() if m.target == "b")
    req_at = next(at for at, _, _ in driver.ping_reqs())
    assert req_at == pytest.approx(ping_at + CONFIG.probe_timeout)


def test_missing_nacks_raise_health_and_slow_probing() -> None:
    engine = with_members("b", "c")
    Driver(engine).run_until(3.0)
    assert engine.health_score >= 1
    assert engine.statistics().nacks_received == 0


def test_received_nack_spares_the_health_score() -> None:
    engine = with_members("b", "c")
    driver = Driver(engine, answer="c")
    requests: list[tuple[float, Address, PingReq]] = []
    for _ in range(200):
        driver.run_until(engine.next_deadline())
        requests = driver.ping_reqs()
        if requests:
            break
    _, helper, request = requests[0]
    feed(engine, Nack(seq=request.seq), now=engine.next_deadline(), src=helper)
    score = engine.health_score
    driver.run_until(driver.sent[-1][0] + CONFIG.probe_interval)
    assert engine.statistics().nacks_received == 1
    assert engine.health_score == score  # expected 1 nack, got 1: no penalty


def test_ack_lowers_health_score() -> None:
    engine = with_members("b")
    feed(engine, Suspect(incarnation=1, name="a", source="b"))
    assert engine.health_score == 1
    Driver(engine, answer="b").run_until(2.5)
    assert engine.health_score == 0


def test_ping_to_suspect_carries_the_suspicion() -> None:
    engine = with_members("b", "c")
    feed(engine, Suspect(incarnation=1, name="b", source="c"))
    driver = Driver(engine, answer="bc")
    driver.run_until(4.0)
    to_b = [m for _, address, m in driver.sent if address == ADDR["b"]]
    assert Suspect(incarnation=1, name="b", source="a") in to_b


def test_ping_is_acked_with_piggybacked_news() -> None:
    engine = with_members("b")
    feed(engine, alive("c"))
    feed(engine, Ping(seq=3, target="a", source="b"))
    sent = drain(engine)
    assert (ADDR["b"], Ack(seq=3)) in sent
    assert (ADDR["b"], alive("c")) in sent


def test_ping_for_another_name_is_dropped() -> None:
    engine = make()
    feed(engine, Ping(seq=3, target="someone-else", source="b"))
    assert drain(engine) == []
    assert engine.statistics().dropped == {"wrong_target": 1}


def test_ping_req_relays_ack_to_origin() -> None:
    engine = make()
    feed(engine, PingReq(seq=77, target="c", target_address=ADDR["c"], nack=True, source="b"))
    [(address, ping)] = drain(engine)
    assert address == ADDR["c"]
    assert isinstance(ping, Ping)
    assert ping.target == "c"
    feed(engine, Ack(seq=ping.seq), src=ADDR["c"], now=0.1)
    assert drain(engine) == [(ADDR["b"], Ack(seq=77))]
    Driver(engine).run_until(1.0)  # no nack after an ack
    assert engine.statistics().nacks_sent == 0


def test_ping_req_sends_nack_when_target_is_silent() -> None:
    engine = make()
    feed(engine, PingReq(seq=77, target="c", target_address=ADDR["c"], nack=True, source="b"))
    drain(engine)
    driver = Driver(engine)
    driver.run_until(CONFIG.probe_timeout + 0.01)
    nacks = [(at, address, m) for at, address, m in driver.sent if isinstance(m, Nack)]
    assert len(nacks) == 1
    at, address, nack = nacks[0]
    assert at == pytest.approx(CONFIG.probe_timeout)
    assert (address, nack) == (ADDR["b"], Nack(seq=77))


def test_stream_ping_is_answered_with_ack() -> None:
    engine = make()
    reply = engine.receive_stream(
        encode_stream(Ping(seq=5, target="a", source="b")), ADDR["b"], 0.0
    )
    assert reply is not None
    assert decode_stream(reply, LIMITS, STREAM_REPLY_TYPES) == Ack(seq=5)
    assert (
        engine.receive_stream(encode_stream(Ping(seq=5, target="x", source="b")), ADDR["b"], 0.0)
        is None
    )


# ------------------------------------------------------------------ push-pull


def entry(name: str, incarnation: int, member_state: MemberState) -> PushPullEntry:
    address = A if name == "a" else ADDR[name]
    return PushPullEntry(
        name=name, address=address, incarnation=incarnation, state=member_state, meta={}
    )


def test_push_pull_merges_remote_dead_as_suspect() -> None:
    engine = with_members("b", "c")
    request = PushPull(
        source="b",
        join=False,
        reply=False,
        members=(
            entry("b", 1, MemberState.ALIVE),
            entry("c", 1, MemberState.DEAD),
            entry("d", 4, MemberState.ALIVE),
        ),
        app_state=b"",
    )
    engine.receive_stream(encode_stream(request), ADDR["b"], 0.0)
    assert state(engine, "c") is MemberState.SUSPECT
    assert state(engine, "d") is MemberState.ALIVE


def test_push_pull_reply_carries_refutation() -> None:
    engine = with_members("b")
    request = PushPull(
        source="b",
        join=True,
        reply=False,
        members=(entry("a", 1, MemberState.DEAD),),
        app_state=b"",
    )
    data = engine.receive_stream(encode_stream(request), ADDR["b"], 0.0)
    assert data is not None
    reply = decode_stream(data, LIMITS, STREAM_REPLY_TYPES)
    assert isinstance(reply, PushPull)
    assert reply.reply
    mine = [e for e in reply.members if e.name == "a"]
    assert [(e.state, e.incarnation) for e in mine] == [(MemberState.ALIVE, 2)]


def test_push_pull_remote_left_is_merged_as_leave() -> None:
    engine = with_members("b", "c")
    reply = PushPull(
        source="b",
        join=False,
        reply=True,
        members=(entry("c", 1, MemberState.LEFT),),
        app_state=b"",
    )
    engine.receive_stream_reply(encode_stream(reply), ADDR["b"], 0.0)
    assert state(engine, "c") is MemberState.LEFT


def test_push_pull_interval_scales_above_32_members() -> None:
    assert push_pull_scale(30.0, 32) == 30.0
    assert push_pull_scale(30.0, 33) == 60.0
    assert push_pull_scale(30.0, 64) == 60.0
    assert push_pull_scale(30.0, 65) == 90.0
    assert push_pull_scale(30.0, 1000) == 180.0
    assert push_pull_scale(30.0, 10_000) == 300.0


def test_periodic_push_pull_goes_to_a_live_member() -> None:
    engine = with_members("b")
    driver = Driver(engine, answer="b")
    driver.run_until(CONFIG.push_pull_interval + 0.1)
    push_pulls = [(address, m) for _, address, m in driver.streams if isinstance(m, PushPull)]
    assert push_pulls
    assert all(address == ADDR["b"] and not m.join for address, m in push_pulls)


QUIET = dataclasses.replace(CONFIG, push_pull_interval=0.0)  # no periodic push-pull


def push_pulls_between(driver: Driver, start: float, end: float) -> list[Address]:
    return [
        address
        for at, address, message in driver.streams
        if isinstance(message, PushPull) and start <= at <= end
    ]


def test_packet_from_member_held_dead_prompts_one_push_pull_per_spacing() -> None:
    engine = with_members("b", "c")
    feed(engine, Dead(incarnation=1, name="b", source="c"), now=1.0, src=ADDR["c"])
    engine.streams_to_open()
    # A ping from b, whom we hold dead: b missed its own death, so we
    # exchange state with it directly instead of waiting for gossip.
    feed(engine, Ping(seq=1, target="a", source="b"), now=2.0, src=ADDR["b"])
    assert [address for address, _ in engine.streams_to_open()] == [ADDR["b"]]
    feed(engine, Ping(seq=2, target="a", source="b"), now=3.0, src=ADDR["b"])
    assert engine.streams_to_open() == []  # within REVIVE_SPACING
    feed(engine, Ping(seq=3, target="a", source="b"), now=8.0, src=ADDR["b"])
    assert [address for address, _ in engine.streams_to_open()] == [ADDR["b"]]


def test_ping_from_a_reaped_member_prompts_a_push_pull_with_it() -> None:
    # A lone node that still counts us alive probes us after the split
    # heals; we forgot it long ago, and only this exchange tells us it is back.
    engine = with_members("b", "c", config=QUIET)
    feed(engine, Dead(incarnation=1, name="b", source="c"), src=ADDR["c"])
    driver = Driver(engine, answer="c")
    driver.run_until(QUIET.dead_retention + 2.0)
    assert engine.member("b") is None
    now = QUIET.dead_retention + 3.0
    engine.streams_to_open()
    feed(engine, Ping(seq=9, target="a", source="b"), now=now, src=ADDR["b"])
    assert [address for address, _ in engine.streams_to_open()] == [ADDR["b"]]
    assert any(isinstance(m, Ack) for _, m in drain(engine))


def test_refuting_an_accusation_prompts_a_catch_up_push_pull() -> None:
    engine = with_members("b", "c", config=QUIET)
    driver = Driver(engine, answer="bc")
    driver.run_until(5.0)
    assert push_pulls_between(driver, 0.0, 5.0) == []
    feed(engine, Suspect(incarnation=1, name="a", source="c"), now=5.0)
    driver.run_until(5.0 + 5 * QUIET.probe_interval)
    # Whoever suspected us may have stopped gossiping to us: one exchange a
    # few probe intervals later fetches what we missed.
    catch_up = push_pulls_between(
        driver, 5.0 + 2 * QUIET.probe_interval, 5.0 + 4 * QUIET.probe_interval
    )
    assert len(catch_up) == 1
    assert catch_up[0] in (ADDR["b"], ADDR["c"])
    # A second accusation soon after costs nothing more.
    now = 5.0 + 5 * QUIET.probe_interval
    feed(engine, Suspect(incarnation=2, name="a", source="b"), now=now)
    driver.run_until(now + 10.0)
    assert push_pulls_between(driver, now, now + 10.0) == []


def test_members_coming_alive_in_bulk_prompt_a_catch_up_push_pull() -> None:
    engine = with_members("b", config=QUIET)
    driver = Driver(engine, answer="bcdefgh")
    feed(engine, alive("c"), now=1.0)
    driver.run_until(10.0)
    assert push_pulls_between(driver, 0.0, 10.0) == []  # one join is routine
    # Three members appearing within seconds: two groups merged, and the
    # other group's news may have missed us.
    feed(engine, alive("d"), alive("e"), alive("f"), now=10.0)
    driver.run_until(15.0)
    assert len(push_pulls_between(driver, 10.0, 15.0)) == 1


# ------------------------------------------------------------------ application channel


class Recorder:
    def __init__(self, news: bool = True, state: bytes = b"") -> None:
        self.news = news
        self.state = state
        self.messages: list[bytes] = []
        self.merged: list[tuple[bytes, str]] = []

    def local_state(self) -> bytes:
        return self.state

    def merge_remote_state(self, data: bytes, from_name: str) -> None:
        if data == b"bad":
            raise RemoteProtocolError("bad state")
        self.merged.append((data, from_name))

    def notify_message(self, data: bytes) -> bool:
        self.messages.append(data)
        return self.news


def test_app_broadcast_piggybacks_on_packets() -> None:
    engine = with_members("b")
    engine.broadcast_app("topic:x", b"v1", now=0.0)
    engine.broadcast_app("topic:x", b"v2", now=0.0)
    feed(engine, Ping(seq=1, target="a", source="b"))
    sent = [m for _, m in drain(engine)]
    assert UserMsg(key="topic:x", data=b"v2") in sent
    assert UserMsg(key="topic:x", data=b"v1") not in sent


def test_app_message_news_is_regossiped_and_repeats_are_not() -> None:
    delegate = Recorder(news=True)
    engine = make(delegate=delegate)
    feed(engine, alive("b"), UserMsg(key="k", data=b"d"))
    assert delegate.messages == [b"d"]
    feed(engine, Ping(seq=1, target="a", source="b"))
    assert UserMsg(key="k", data=b"d") in [m for _, m in drain(engine)]
    quiet = Recorder(news=False)
    other = make(delegate=quiet)
    feed(other, alive("b"), UserMsg(key="k", data=b"d"))
    feed(other, Ping(seq=1, target="a", source="b"))
    assert UserMsg(key="k", data=b"d") not in [m for _, m in drain(other)]


def test_app_broadcast_too_large_for_a_packet_goes_over_streams() -> None:
    engine = with_members("b", "c", "d", "e")
    engine.broadcast_app("big", b"x" * 5000, now=0.0)
    streams = [(address, decode_stream(data, LIMITS)) for address, data in engine.streams_to_open()]
    assert len(streams) == CONFIG.gossip_nodes
    assert all(m == UserMsg(key="big", data=b"x" * 5000) for _, m in streams)
    assert engine.statistics().app_stream_broadcasts == CONFIG.gossip_nodes


def test_app_state_travels_in_push_pull() -> None:
    delegate = Recorder(state=b"mine")
    engine = make(delegate=delegate)
    request = PushPull(
        source="b",
        join=True,
        reply=False,
        members=(entry("b", 1, MemberState.ALIVE),),
        app_state=b"theirs",
    )
    data = engine.receive_stream(encode_stream(request), ADDR["b"], 0.0)
    assert data is not None
    reply = decode_stream(data, LIMITS, STREAM_REPLY_TYPES)
    assert isinstance(reply, PushPull)
    assert reply.app_state == b"mine"
    assert delegate.merged == [(b"theirs", "b")]


def test_app_state_refused_by_delegate_is_counted() -> None:
    engine = make(delegate=Recorder())
    request = PushPull(source="b", join=True, reply=False, members=(), app_state=b"bad")
    engine.receive_stream(encode_stream(request), ADDR["b"], 0.0)
    assert engine.statistics().dropped == {"app_state": 1}


def test_app_broadcast_rejects_bad_arguments() -> None:
    engine = make()
    with pytest.raises(LocalProtocolError):
        engine.broadcast_app("", b"x")
    with pytest.raises(LocalProtocolError):
        engine.broadcast_app("k", b"x" * (CONFIG.max_app_message_size + 1))


def test_app_broadcasts_get_their_share_of_a_full_packet() -> None:
    engine = with_members(*"bcdefgh")
    for i in range(60):  # far more membership news than a packet holds
        engine.receive_packet(
            encode_packet(
                [
                    encode_message(
                        Alive(
                            incarnation=1,
                            name=f"m{i:02}-{'x' * 40}",
                            address=("10.9.0.1", i),
                            meta={},
                        )
                    )
                ]
            ),
            ADDR["b"],
            0.0,
        )
    engine.broadcast_app("app", b"y" * 200, now=0.0)
    feed(engine, Ping(seq=1, target="a", source="b"))
    [(_, data)] = engine.packets_to_send()
    assert len(data) <= CONFIG.packet_budget
    assert UserMsg(key="app", data=b"y" * 200) in decode_packet(data, LIMITS)


# ------------------------------------------------------------------ misc


def test_update_meta_bumps_incarnation_and_broadcasts() -> None:
    engine = with_members("b")
    engine.update_meta({"v": "2"}, now=0.0)
    assert engine.incarnation == 2
    feed(engine, Ping(seq=1, target="a", source="b"))
    assert Alive(incarnation=2, name="a", address=A, meta={"v": "2"}) in [
        m for _, m in drain(engine)
    ]


def test_constructor_rejects_bad_arguments() -> None:
    with pytest.raises(LocalProtocolError):
        Membership(CONFIG, name="", address=A, rng=random.Random(0), now=0.0)
    with pytest.raises(LocalProtocolError):
        Membership(CONFIG, name="a", address=("h", 70000), rng=random.Random(0), now=0.0)
    with pytest.raises(LocalProtocolError):
        Membership(
            CONFIG, name="a", address=A, meta={"k": "v" * 600}, rng=random.Random(0), now=0.0
        )


def test_garbage_is_dropped_and_counted() -> None:
    engine = make()
    engine.receive_packet(b"", ADDR["b"], 0.0)
    engine.receive_packet(b"\x07junk", ADDR["b"], 0.0)
    assert engine.receive_stream(b"\x01\xff", ADDR["b"], 0.0) is None
    engine.receive_stream_reply(encode_stream(Ping(seq=1, target="a", source="b")), ADDR["b"], 0.0)
    stats = engine.statistics()
    assert stats.dropped == {"empty": 1, "version": 1, "cbor": 1, "unexpected_type": 1}
    assert stats.packets_received == 2


def test_statistics_count_traffic() -> None:
    engine = with_members("b")
    engine.receive_packet(
        encode_packet([encode_message(Ping(seq=1, target="a", source="b"))]), ADDR["b"], 0.0
    )
    sent = engine.packets_to_send()
    stats = engine.statistics()
    assert (stats.packets_received, stats.messages_received) == (2, 2)
    assert (stats.packets_sent, stats.bytes_sent) == (1, len(sent[0][1]))
    assert (stats.alive, stats.suspect, stats.dead, stats.left) == (2, 0, 0, 0)


# ------------------------------------------------------------------ departures from memberlist


def test_awareness_slows_probing_when_unhealthy() -> None:
    engine = with_members("b", "c")
    driver = Driver(engine)  # nobody answers: every probe fails, nacks never come
    driver.run_until(30.0)
    probe_starts = sorted({at for at, _, m in driver.pings() if m.source == "a"})
    gaps = [b - a for a, b in itertools.pairwise(probe_starts)]
    assert engine.health_score == CONFIG.awareness_max_multiplier - 1
    # Each failure raises the score, and the period is interval * (score + 1).
    assert gaps[0] == pytest.approx(CONFIG.probe_interval)
    assert gaps == sorted(gaps)
    assert gaps[-1] >= 4 * CONFIG.probe_interval


def test_probing_keeps_its_pace_without_lifeguard_awareness() -> None:
    config = dataclasses.replace(CONFIG, lifeguard_awareness=False)
    engine = with_members("b", "c", config=config)
    driver = Driver(engine)
    driver.run_until(10.0)
    assert engine.health_score == 0
    assert len({at for at, _, m in driver.pings() if m.source == "a"}) >= 9


def test_failed_probe_tells_the_suspect_at_once() -> None:
    engine = with_members("b", "c")
    driver = Driver(engine, answer="c")
    driver.run_until(3.0)
    pinged_at = next(at for at, _, m in driver.pings() if m.target == "b")
    suspected_at = next(
        at for at, address, m in driver.sent if address == ADDR["b"] and isinstance(m, Suspect)
    )
    assert state(engine, "b") is MemberState.SUSPECT
    # Right when the failed probe's period ended, not at b's next probe.
    assert suspected_at == pytest.approx(pinged_at + CONFIG.probe_interval)


def test_refutation_goes_straight_back_to_the_sender() -> None:
    engine = with_members("b", "c")
    feed(engine, Suspect(incarnation=1, name="a", source="b"), src=ADDR["c"])
    sent = drain(engine)
    alive = Alive(incarnation=2, name="a", address=A, meta={"v": "1"})
    assert (ADDR["c"], alive) in sent  # who told us
    assert (ADDR["b"], alive) in sent  # who accused us


def test_stale_accusation_is_answered_with_current_incarnation() -> None:
    engine = with_members("b")
    feed(engine, Suspect(incarnation=3, name="a", source="b"))
    drain(engine)
    Driver(engine, answer="b").run_until(10.0)  # the refutation is fully gossiped
    feed(engine, Suspect(incarnation=3, name="a", source="b"), now=10.0)
    assert engine.incarnation == 4
    assert (ADDR["b"], Alive(incarnation=4, name="a", address=A, meta={"v": "1"})) in drain(engine)


def test_suspicion_at_newer_incarnation_restarts_instead_of_confirming() -> None:
    engine = with_members("b", "c", "d", "e")
    feed(engine, Suspect(incarnation=1, name="b", source="c"))
    feed(engine, Suspect(incarnation=2, name="b", source="d"), now=5.0)
    assert engine.statistics().confirmations == 0
    member = engine.member("b")
    assert member is not None
    assert (member.state, member.incarnation) == (MemberState.SUSPECT, 2)
    driver = Driver(engine, answer="bcde")
    driver.run_until(5.0 + 17.9)  # a fresh 18 s suspicion, not the old one's 3 s minimum
    assert state(engine, "b") is MemberState.SUSPECT
    driver.run_until(5.0 + 18.01)
    assert state(engine, "b") is MemberState.DEAD


def test_push_pull_suspicion_is_not_a_confirmation() -> None:
    engine = with_members("b", "c", "d", "e")
    feed(engine, Suspect(incarnation=1, name="b", source="c"))
    table = PushPull(
        source="d",
        join=False,
        reply=True,
        members=(entry("b", 1, MemberState.SUSPECT),),
        app_state=b"",
    )
    engine.receive_stream_reply(encode_stream(table), ADDR["d"], 1.0)
    assert engine.statistics().confirmations == 0


def test_join_follows_up_with_a_catch_up_push_pull() -> None:
    engine = make()
    engine.join([ADDR["b"]], now=0.0)
    engine.streams_to_open()
    table = PushPull(
        source="b",
        join=False,
        reply=True,
        members=(entry("b", 1, MemberState.ALIVE), entry("c", 1, MemberState.ALIVE)),
        app_state=b"",
    )
    engine.receive_stream_reply(encode_stream(table), ADDR["b"], 0.01)
    driver = Driver(engine, answer="bc")
    driver.run_until(2.0 * CONFIG.probe_interval + 0.01)
    catch_ups = [(at, a) for at, a, m in driver.streams if isinstance(m, PushPull)]
    assert catch_ups
    assert catch_ups[0][1] == ADDR["b"]  # the seed first
    assert CONFIG.probe_interval <= catch_ups[0][0] <= 2 * CONFIG.probe_interval


def test_a_death_is_gossiped_twice_the_limit_a_leave_once() -> None:
    engine = with_members("b", "c", "d")
    driver = Driver(engine, answer="bcd")
    feed(engine, Dead(incarnation=1, name="d", source="b"))
    driver.run_until(5.0)
    deaths = [m for _, _, m in driver.sent if m == Dead(incarnation=1, name="d", source="b")]
    # Re-gossiped by us: twice the limit for the two members left alive.
    assert len(deaths) == 2 * retransmit_limit(CONFIG.retransmit_mult, 2)
