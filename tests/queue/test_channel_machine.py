"""A Channel driven by random PUB, deliver, FIN, REQ, TOUCH, time, pause and restart.

The model is three dicts (ready, in flight, deferred) keyed by message ID.
After every step the channel's counts must equal the model's, so no message
is lost or duplicated anywhere, and every delivery must hand out only ready
messages, exactly as many as the model says.
"""

from __future__ import annotations

from collections import Counter

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from shoal.queue.backend import MemoryBackend
from shoal.queue.channel import Channel, InFlightError
from shoal.queue.config import QueueConfig
from shoal.queue.message import Message

T0 = 1_700_000_000.0
CONFIG = QueueConfig(mem_queue_size=3, msg_timeout=3.0, max_msg_timeout=3.5)
CLIENTS = st.sampled_from([1, 2])
TIMEOUTS = st.sampled_from([1.0, 2.0, 3.0])
UNKNOWN_ID = b"f" * 16

# A few seconds per run: long random walks are what finds ordering bugs.
pytestmark = pytest.mark.slow


class InFlightModel:
    __slots__ = ("attempts", "deadline", "delivered_at", "owner")

    def __init__(self, owner: int, deadline: float, delivered_at: float, attempts: int) -> None:
        self.owner = owner
        self.deadline = deadline
        self.delivered_at = delivered_at
        self.attempts = attempts


class ChannelMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.backend = MemoryBackend()
        self.channel = Channel("t", "c", CONFIG, self.backend)
        self.now = T0
        self.serial = 0
        self.ready: dict[bytes, int] = {}  # id -> attempts
        self.in_flight: dict[bytes, InFlightModel] = {}
        self.deferred: dict[bytes, tuple[float, int]] = {}  # id -> (due, attempts)
        self.bodies: dict[bytes, bytes] = {}
        self.put_count = 0
        self.requeues = 0
        self.timeouts = 0
        self.paused = False

    def pick_target(self, data: st.DataObject) -> tuple[int, bytes]:
        """Mostly an in-flight ID and its owner (the interesting case), else anything."""
        anything = st.tuples(CLIENTS, st.sampled_from([*sorted(self.bodies), UNKNOWN_ID]))
        if not self.in_flight:
            return data.draw(anything)
        owned = st.sampled_from(sorted((e.owner, i) for i, e in self.in_flight.items()))
        return data.draw(st.one_of(owned, owned, owned, anything))

    def expect_error(self, client: int, msg_id: bytes) -> str | None:
        entry = self.in_flight.get(msg_id)
        if entry is None:
            return "ID not in flight"
        if entry.owner != client:
            return "client does not own message"
        return None

    @initialize(count=st.integers(0, 6))
    def start_with_messages(self, count: int) -> None:
        if count:
            self.put(count, 0.0)

    @rule(count=st.integers(1, 4), defer=st.sampled_from([0.0, 0.0, 1.5, 3.0]))
    def put(self, count: int, defer: float) -> None:
        for _ in range(count):
            self.serial += 1
            msg_id = b"%016x" % self.serial
            body = b"body-%d" % self.serial
            self.bodies[msg_id] = body
            self.channel.put(Message(msg_id, body, int(self.now * 1e9), 0, defer), self.now)
            if defer > 0:
                self.deferred[msg_id] = (self.now + defer, 0)
            else:
                self.ready[msg_id] = 0
            self.put_count += 1

    @rule(client=CLIENTS, limit=st.integers(0, 5), timeout=TIMEOUTS)
    def deliver(self, client: int, limit: int, timeout: float) -> None:
        out = self.channel.deliver(client, self.now, timeout, limit)
        expected = 0 if self.paused else min(limit, len(self.ready))
        assert len(out) == expected
        assert len({m.id for m in out}) == len(out)
        for msg in out:
            assert msg.id in self.ready, "delivered a message that was not ready"
            assert msg.body == self.bodies[msg.id]
            attempts = self.ready.pop(msg.id) + 1
            assert msg.attempts == attempts
            self.in_flight[msg.id] = InFlightModel(client, self.now + timeout, self.now, attempts)

    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        client, msg_id = self.pick_target(data)
        error = self.expect_error(client, msg_id)
        if error is not None:
            with pytest.raises(InFlightError, match=f"^{error}$"):
                self.channel.finish(client, msg_id)
            return
        self.channel.finish(client, msg_id)
        del self.in_flight[msg_id]

    @rule(delay=st.sampled_from([0.0, 0.0, 1.0, 4.0]), data=st.data())
    def requeue(self, delay: float, data: st.DataObject) -> None:
        client, msg_id = self.pick_target(data)
        error = self.expect_error(client, msg_id)
        if error is not None:
            with pytest.raises(InFlightError, match=f"^{error}$"):
                self.channel.requeue(client, msg_id, delay, self.now)
            return
        self.channel.requeue(client, msg_id, delay, self.now)
        entry = self.in_flight.pop(msg_id)
        self.requeues += 1
        if delay > 0:
            self.deferred[msg_id] = (self.now + delay, entry.attempts)
        else:
            self.ready[msg_id] = entry.attempts

    @rule(timeout=TIMEOUTS, data=st.data())
    def touch(self, timeout: float, data: st.DataObject) -> None:
        client, msg_id = self.pick_target(data)
        error = self.expect_error(client, msg_id)
        if error is not None:
            with pytest.raises(InFlightError, match=f"^{error}$"):
                self.channel.touch(client, msg_id, self.now, timeout)
            return
        self.channel.touch(client, msg_id, self.now, timeout)
        entry = self.in_flight[msg_id]
        entry.deadline = min(self.now + timeout, entry.delivered_at + CONFIG.max_msg_timeout)

    @rule(step=st.sampled_from([0.0, 0.5, 1.0, 1.5, 4.0]))
    def advance(self, step: float) -> None:
        self.now += step
        owners = self.channel.process_in_flight(self.now)
        expired = [i for i, e in self.in_flight.items() if e.deadline <= self.now]
        assert Counter(owners) == Counter(self.in_flight[i].owner for i in expired)
        for msg_id in expired:
            self.ready[msg_id] = self.in_flight.pop(msg_id).attempts
        self.timeouts += len(expired)
        moved = self.channel.process_deferred(self.now)
        due = [i for i, (at, _) in self.deferred.items() if at <= self.now]
        assert moved == len(due)
        for msg_id in due:
            self.ready[msg_id] = self.deferred.pop(msg_id)[1]

    # Rules without arguments would be drawn far more often than the others,
    # and each of these wipes or freezes the interesting state: a roll keeps
    # them rare while leaving shrinking free to pick them.
    @rule(roll=st.integers(0, 3))
    def toggle_pause(self, roll: int) -> None:
        if roll:
            return
        if self.paused:
            self.channel.unpause()
        else:
            self.channel.pause()
        self.paused = not self.paused

    @rule(roll=st.integers(0, 7))
    def empty(self, roll: int) -> None:
        if roll:
            return
        owners = self.channel.empty()
        assert Counter(owners) == Counter(e.owner for e in self.in_flight.values())
        self.ready.clear()
        self.in_flight.clear()
        self.deferred.clear()

    @rule(roll=st.integers(0, 7))
    def restart(self, roll: int) -> None:
        if roll:
            return
        self.channel.flush(self.now)
        self.channel.close()
        self.channel = Channel("t", "c", CONFIG, self.backend)
        for msg_id, entry in self.in_flight.items():
            self.ready[msg_id] = entry.attempts
        for msg_id, (_, attempts) in self.deferred.items():
            self.ready[msg_id] = attempts
        self.in_flight.clear()
        self.deferred.clear()
        self.put_count = self.requeues = self.timeouts = 0
        self.paused = False

    @invariant()
    def counts_match_model(self) -> None:
        channel = self.channel
        assert channel.depth == len(self.ready)
        assert channel.in_flight_count == len(self.in_flight)
        assert channel.deferred_count == len(self.deferred)
        assert channel.message_count == self.put_count
        assert channel.requeue_count == self.requeues
        assert channel.timeout_count == self.timeouts
        assert channel.paused is self.paused

    @invariant()
    def next_deadline_matches_model(self) -> None:
        times = [e.deadline for e in self.in_flight.values()]
        times += [due for due, _ in self.deferred.values()]
        assert self.channel.next_deadline() == (min(times) if times else None)


ChannelMachine.TestCase.settings = settings(max_examples=150, deadline=None)
test_channel_machine_matches_dict_model = ChannelMachine.TestCase
