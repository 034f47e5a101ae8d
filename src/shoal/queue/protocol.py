"""One client connection of the NSQ TCP protocol V2, as a pure state machine.

The trio shell (`shoal.cluster.tcp_server`) owns the socket; this object owns
everything else a connection means: its state, the settings IDENTIFY chose,
RDY and the in-flight count, its subscription and its counters. It is fed
decoded commands (`shoal.queue.commands`) and `now`, and answers with the
response frame to send, or raises `ClientError` for an error frame.

Rules (docs/nsq.md §1.2-§1.7):
1. A connection starts in INIT. IDENTIFY and AUTH are allowed in INIT only;
   SUB moves INIT to SUBSCRIBED; CLS moves SUBSCRIBED to CLOSING.
   PUB, MPUB, DPUB and NOP are allowed in every state.
2. RDY is "messages in flight allowed on this connection", not a counter that
   deliveries decrement: the connection may receive while
   ``in_flight < rdy``. In CLOSING, RDY is silently ignored.
3. FIN, REQ and TOUCH need SUBSCRIBED or CLOSING. An ID that is not in flight
   for this connection gives a non-fatal error; everything else is fatal.
4. A closing connection does not requeue its in-flight messages; they wait
   for their deadline (docs/nsq.md §0 item 9).
5. State errors come before parameter errors, as in nsqd: the decoder calls
   `ClientV2.check_state` with each verb before it parses the parameters,
   so FIN before SUB is ``cannot FIN in current state`` whatever follows.
   With TLS required, every verb but IDENTIFY needs TLS first.
6. Upgrades (TLS, then snappy or deflate) are decided here and carried out
   by the shell: after an IDENTIFY response, `take_upgrades` names them in
   nsqd's order, and the shell sends the response in the clear, upgrades
   the stream, and sends one ``OK`` through each new layer.
7. AUTH needs an auth server, which is I/O: the core raises `AuthQuery`
   (not an error frame) when it needs an answer, the shell asks the servers
   and hands the answer to `auth_answered`, then executes the command again.

Every ``ClientError`` raised here leaves the connection's state unchanged;
the shell closes the connection when the error is fatal.
"""

from __future__ import annotations

import enum
import json
import random
from typing import TYPE_CHECKING, Any

from shoal import strict_json
from shoal.queue import errors
from shoal.queue.backend import BackendError
from shoal.queue.channel import Channel, InFlightError
from shoal.queue.commands import (
    Auth,
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
)
from shoal.queue.errors import ClientError, FatalClientError
from shoal.queue.frames import (
    CLOSE_WAIT_FRAME,
    OK_FRAME,
    encode_message_batches,
    encode_message_frames,
    encode_response,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from shoal.queue.auth import AuthState
    from shoal.queue.broker import Broker
    from shoal.queue.config import QueueConfig
    from shoal.queue.message import Message
    from shoal.queue.topic import Topic

__all__ = ["AuthQuery", "ClientState", "ClientV2", "ReplicatedPublish"]

#: The stream layers IDENTIFY can add, in the order the shell must apply them.
TLS, SNAPPY, DEFLATE = "tls", "snappy", "deflate"

# Verbs whose state nsqd checks before their parameters.
_SUBSCRIBED_VERBS = frozenset({b"FIN", b"REQ", b"TOUCH", b"RDY"})
_INIT_VERBS = frozenset({b"SUB", b"AUTH", b"IDENTIFY"})


class AuthQuery(Exception):
    """The shell must ask the auth servers about ``secret``, then call `ClientV2.auth_answered`.

    Raised by `ClientV2.execute` for AUTH, and for PUB, MPUB, DPUB or SUB when
    the cached answer has expired; the command changed nothing and is to be
    executed again once the answer is in.
    """

    def __init__(self, secret: str) -> None:
        super().__init__(secret)
        self.secret = secret


class ReplicatedPublish(Exception):
    """The shell must publish to a replicated topic and await its replicas.

    Raised by `ClientV2.execute` for PUB, MPUB or DPUB of a topic whose
    ``replicated`` is set: the command changed nothing, and the shell answers
    it once the publish committed (``OK``) or failed (``failed_code``).
    """

    def __init__(
        self, verb: str, topic: Topic, bodies: tuple[bytes, ...], defer: float, failed_code: str
    ) -> None:
        super().__init__(verb)
        self.verb = verb
        self.topic = topic
        self.bodies = bodies
        self.defer = defer
        self.failed_code = failed_code


class ClientState(enum.IntEnum):
    """Connection states as /stats reports them (docs/nsq.md §1.2); on the wire, append only."""

    INIT = 0
    DISCONNECTED = 1
    CONNECTED = 2
    SUBSCRIBED = 3
    CLOSING = 4


class ClientV2:
    """The protocol state of one TCP client.

    Args:
        broker: the node's topics and channels.
        config: limits and defaults.
        client_id: unique per node; owns in-flight messages.
        remote_address: ``ip:port`` of the peer, the default client_id and hostname.
        version: the node's version string, sent in the IDENTIFY response.
        now: connection time (wall clock seconds).
        rng: draws for ``sample_rate``.
    """

    def __init__(
        self,
        broker: Broker,
        config: QueueConfig,
        *,
        client_id: int,
        remote_address: str,
        version: str,
        now: float,
        rng: random.Random | None = None,
    ) -> None:
        self.broker = broker
        self.config = config
        self.id = client_id
        self.remote_address = remote_address
        self.version = version
        self.connect_ts = now
        self.rng = rng if rng is not None else random.Random(client_id)
        host = remote_address.rsplit(":", 1)[0]
        self.client_name = host
        self.hostname = host
        self.user_agent = ""
        self.state = ClientState.INIT
        self.heartbeat_interval = config.client_timeout / 2
        self.msg_timeout = config.msg_timeout
        self.output_buffer_size = 16 * 1024
        self.output_buffer_timeout = config.output_buffer_timeout
        self.sample_rate = 0
        self.feature_negotiation = False
        self.rdy = 0
        self.in_flight = 0
        self.channel: Channel | None = None
        self.message_count = 0
        self.finish_count = 0
        self.requeue_count = 0
        self.pub_counts: dict[str, int] = {}
        # Stream layers negotiated by IDENTIFY, in order; set by `_identify`,
        # taken by the shell. `tls`/`snappy`/`deflate` say what is in place.
        self.upgrades: tuple[str, ...] = ()
        self.deflate_level = 0
        self.tls = False
        self.snappy = False
        self.deflate = False
        self.tls_version = ""
        self.tls_cipher_suite = ""
        self.auth_secret = ""
        self.auth_state: AuthState | None = None

    # -- commands ---------------------------------------------------------------

    def execute(self, cmd: Command, now: float) -> bytes | None:
        """Apply one command.

        Returns:
            The response frame to send, or None when the command has no reply.

        Raises:
            ClientError: the command is refused; send ``err.frame()``, and close
                the connection when ``err.fatal``.
        """
        match cmd:
            case Pub(topic=topic, body=body):
                return self._publish("PUB", topic, (body,), now, 0.0, errors.E_PUB_FAILED)
            case Mpub(topic=topic, bodies=bodies):
                return self._publish("MPUB", topic, bodies, now, 0.0, errors.E_MPUB_FAILED)
            case Dpub(topic=topic, defer_ms=defer_ms, body=body):
                return self._publish(
                    "DPUB", topic, (body,), now, defer_ms / 1000, errors.E_DPUB_FAILED
                )
            case Rdy(count=count):
                self._rdy(count)
                return None
            case Fin(id=msg_id):
                channel = self._in_flight_channel("FIN")
                try:
                    channel.finish(self.id, msg_id, now)
                except InFlightError as exc:
                    raise ClientError(
                        errors.E_FIN_FAILED, f"FIN {msg_id.decode('ascii', 'replace')} failed {exc}"
                    ) from None
                self.in_flight -= 1
                self.finish_count += 1
                return None
            case Req(id=msg_id, timeout_ms=timeout_ms):
                channel = self._in_flight_channel("REQ")
                max_ms = int(self.config.max_req_timeout * 1000)
                delay = min(max(timeout_ms, 0), max_ms) / 1000
                try:
                    channel.requeue(self.id, msg_id, delay, now)
                except InFlightError as exc:
                    raise ClientError(
                        errors.E_REQ_FAILED, f"REQ {msg_id.decode('ascii', 'replace')} failed {exc}"
                    ) from None
                self.in_flight -= 1
                self.requeue_count += 1
                return None
            case Touch(id=msg_id):
                channel = self._in_flight_channel("TOUCH")
                try:
                    channel.touch(self.id, msg_id, now, self.msg_timeout)
                except InFlightError as exc:
                    raise ClientError(
                        errors.E_TOUCH_FAILED,
                        f"TOUCH {msg_id.decode('ascii', 'replace')} failed {exc}",
                    ) from None
                return None
            case Nop():
                return None
            case Sub(topic=topic, channel=channel_name):
                return self._sub(topic, channel_name, now)
            case Cls():
                if self.state != ClientState.SUBSCRIBED:
                    raise FatalClientError(errors.E_INVALID, "cannot CLS in current state")
                self.rdy = 0
                self.state = ClientState.CLOSING
                return CLOSE_WAIT_FRAME
            case Identify(body=body):
                return self._identify(body)
            case Auth(secret=secret):
                return self._auth(secret)
        raise FatalClientError(errors.E_INVALID, f"invalid command {type(cmd).__name__.upper()}")

    def finish_many(self, msg_ids: Sequence[bytes], now: float | None = None) -> list[bytes]:
        """Apply a run of FIN commands, as `execute` would apply each `Fin` in turn.

        This is the consumer's hot path: `CommandDecoder.next_fins` hands over
        every plain FIN of a read at once.

        Returns:
            The ``E_FIN_FAILED`` error frame of each FIN refused (non-fatal), in
            order; every other ID is finished.

        Raises:
            FatalClientError: the connection is neither subscribed nor closing
                (as for the first `Fin` through `execute`).
        """
        if not msg_ids:
            return []
        channel = self._in_flight_channel("FIN")
        failed = channel.finish_many(self.id, msg_ids, now)
        done = len(msg_ids) - len(failed)
        self.in_flight -= done
        self.finish_count += done
        return [
            ClientError(
                errors.E_FIN_FAILED, f"FIN {msg_id.decode('ascii', 'replace')} failed {reason}"
            ).frame()
            for msg_id, reason in failed
        ]

    def _publish(
        self,
        verb: str,
        topic_name: str,
        bodies: tuple[bytes, ...] | list[bytes],
        now: float,
        defer: float,
        failed_code: str,
    ) -> bytes:
        if self.config.auth_required:
            self._check_auth(verb, topic_name, "", now)
        topic = self.broker.topics.get(topic_name)
        if topic is None:
            topic, _ = self.broker.get_or_create_topic(topic_name, now)
        if topic.deleted:
            raise FatalClientError(failed_code, f"{verb} failed topic is exiting")
        if topic.replicated is not None:
            raise ReplicatedPublish(verb, topic, tuple(bodies), defer, failed_code)
        try:
            topic.publish(bodies, now, defer)
        except BackendError as exc:
            raise FatalClientError(failed_code, f"{verb} failed {exc}") from None
        self.pub_counts[topic_name] = self.pub_counts.get(topic_name, 0) + len(bodies)
        return OK_FRAME

    def _rdy(self, count: int) -> None:
        if self.state == ClientState.CLOSING:
            return
        if self.state != ClientState.SUBSCRIBED:
            raise FatalClientError(errors.E_INVALID, "cannot RDY in current state")
        self.rdy = count

    def _in_flight_channel(self, verb: str) -> Channel:
        if self.state not in (ClientState.SUBSCRIBED, ClientState.CLOSING) or self.channel is None:
            raise FatalClientError(errors.E_INVALID, f"cannot {verb} in current state")
        return self.channel

    def _sub(self, topic_name: str, channel_name: str, now: float) -> bytes:
        if self.state != ClientState.INIT:
            raise FatalClientError(errors.E_INVALID, "cannot SUB in current state")
        if self.heartbeat_interval <= 0:
            raise FatalClientError(errors.E_INVALID, "cannot SUB with heartbeats disabled")
        if self.config.auth_required:
            self._check_auth("SUB", topic_name, channel_name, now)
        topic, _ = self.broker.get_or_create_topic(topic_name, now)
        channel, _ = self.broker.get_or_create_channel(topic_name, channel_name, now)
        if topic.deleted or channel.deleted:
            raise FatalClientError(
                errors.E_SUB_FAILED, f"SUB failed to add client to {topic_name}:{channel_name}"
            )
        limit = self.config.max_channel_consumers
        if limit and channel.client_count >= limit:
            raise FatalClientError(
                errors.E_SUB_FAILED,
                f"channel consumers for {topic_name}:{channel_name} exceeds limit of {limit}",
            )
        channel.add_client(self.id)
        self.channel = channel
        self.state = ClientState.SUBSCRIBED
        return OK_FRAME

    # -- state, AUTH -------------------------------------------------------------

    def check_state(self, verb: bytes) -> None:
        """Refuse ``verb`` in the current state, before its parameters are parsed.

        The `CommandDecoder` calls this with each command line's verb, so the
        errors come in nsqd's order (rule 5). `execute` checks again, for
        callers that build commands themselves.

        Raises:
            FatalClientError: ``E_INVALID cannot <VERB> in current state``, or
                ``... (TLS required)`` for anything but IDENTIFY before TLS.
        """
        if verb == b"IDENTIFY":
            if self.state != ClientState.INIT:
                raise FatalClientError(errors.E_INVALID, "cannot IDENTIFY in current state")
            return
        if self.config.tls_required and not self.tls:
            raise FatalClientError(
                errors.E_INVALID,
                f"cannot {verb.decode('ascii', 'replace')} in current state (TLS required)",
            )
        state = self.state
        if verb in _SUBSCRIBED_VERBS:
            if state != ClientState.SUBSCRIBED and state != ClientState.CLOSING:
                raise FatalClientError(errors.E_INVALID, f"cannot {verb.decode()} in current state")
        elif verb in _INIT_VERBS:
            if state != ClientState.INIT:
                raise FatalClientError(errors.E_INVALID, f"cannot {verb.decode()} in current state")
            if verb == b"SUB" and self.heartbeat_interval <= 0:
                raise FatalClientError(errors.E_INVALID, "cannot SUB with heartbeats disabled")

    def _auth(self, secret: bytes) -> bytes:
        if self.state != ClientState.INIT:
            raise FatalClientError(errors.E_INVALID, "cannot AUTH in current state")
        if self.auth_state is not None and self.auth_state.grants:
            raise FatalClientError(errors.E_INVALID, "AUTH already set")
        if not self.config.auth_required:
            raise FatalClientError(errors.E_AUTH_DISABLED, "AUTH disabled")
        self.auth_secret = secret.decode("utf-8", "replace")
        raise AuthQuery(self.auth_secret)

    def auth_answered(self, state: AuthState | None, *, for_auth: bool) -> bytes | None:
        """Take the auth servers' answer to an `AuthQuery`.

        Args:
            state: the answer, or None when no server gave a valid one.
            for_auth: the query came from AUTH (rather than a refresh before
                PUB or SUB, which the shell then executes again).

        Returns:
            For AUTH, nsqd's JSON response frame; otherwise None.

        Raises:
            FatalClientError: ``E_AUTH_FAILED AUTH failed`` when no server
                answered (the reason goes only to the log, as in nsqd), or
                ``E_UNAUTHORIZED`` when AUTH found no authorizations.
        """
        if state is None:
            raise FatalClientError(errors.E_AUTH_FAILED, "AUTH failed")
        self.auth_state = state
        if not for_auth:
            return None
        if not state.grants:
            raise FatalClientError(errors.E_UNAUTHORIZED, "AUTH no authorizations found")
        body = {
            "identity": state.identity,
            "identity_url": state.identity_url,
            "permission_count": len(state.grants),
        }
        return encode_response(json.dumps(body, separators=(",", ":")).encode())

    def _check_auth(self, verb: str, topic: str, channel: str, now: float) -> None:
        state = self.auth_state
        if state is None or not state.grants:
            raise FatalClientError(errors.E_AUTH_FIRST, f"AUTH required before {verb}")
        if state.expired(now):
            raise AuthQuery(self.auth_secret)
        if not state.allows(topic, channel):
            raise FatalClientError(
                errors.E_UNAUTHORIZED,
                f'AUTH failed for {verb} on "{topic}" "{channel}"',
            )

    def take_upgrades(self) -> tuple[str, ...]:
        """The stream layers the last IDENTIFY negotiated, once (rule 6)."""
        upgrades, self.upgrades = self.upgrades, ()
        return upgrades

    # -- IDENTIFY ---------------------------------------------------------------

    def _identify(self, body: bytes) -> bytes:
        if self.state != ClientState.INIT:
            raise FatalClientError(errors.E_INVALID, "cannot IDENTIFY in current state")
        try:
            data = strict_json.loads(body)
        except strict_json.JSONBodyError:
            raise FatalClientError(
                errors.E_BAD_BODY, "IDENTIFY failed to decode JSON body"
            ) from None
        if not isinstance(data, dict):
            raise FatalClientError(errors.E_BAD_BODY, "IDENTIFY failed to decode JSON body")
        cfg = self.config
        heartbeat_ms = _int_field(data, "heartbeat_interval")
        if heartbeat_ms == -1:
            heartbeat = -1.0
        elif heartbeat_ms == 0:
            heartbeat = cfg.client_timeout / 2
        elif 1000 <= heartbeat_ms <= cfg.max_heartbeat_interval * 1000:
            heartbeat = heartbeat_ms / 1000
        else:
            raise _bad_field("heartbeat_interval", heartbeat_ms)

        buffer_size = _int_field(data, "output_buffer_size")
        buffer_timeout_ms = _int_field(data, "output_buffer_timeout")
        if buffer_size == -1:
            out_size, out_timeout = 1, 0.0
        else:
            if buffer_size == 0:
                out_size = 16 * 1024
            elif 64 <= buffer_size <= cfg.max_output_buffer_size:
                out_size = buffer_size
            else:
                raise _bad_field("output_buffer_size", buffer_size)
            if buffer_timeout_ms == -1:
                out_timeout = 0.0
            elif buffer_timeout_ms == 0:
                out_timeout = cfg.output_buffer_timeout
            elif (
                cfg.min_output_buffer_timeout * 1000
                <= buffer_timeout_ms
                <= cfg.max_output_buffer_timeout * 1000
            ):
                out_timeout = buffer_timeout_ms / 1000
            else:
                raise _bad_field("output_buffer_timeout", buffer_timeout_ms)

        sample_rate = _int_field(data, "sample_rate")
        if not 0 <= sample_rate <= 99:
            raise _bad_field("sample_rate", sample_rate)
        msg_timeout_ms = _int_field(data, "msg_timeout")
        if msg_timeout_ms == 0:
            msg_timeout = cfg.msg_timeout
        elif 1000 <= msg_timeout_ms <= cfg.max_msg_timeout * 1000:
            msg_timeout = msg_timeout_ms / 1000
        else:
            raise _bad_field("msg_timeout", msg_timeout_ms)
        deflate_level = _int_field(data, "deflate_level")
        feature_negotiation = bool(data.get("feature_negotiation"))
        # Upgrades happen only with feature negotiation (docs/nsq.md §1.4), and
        # only for what the node offers.
        tls_v1 = feature_negotiation and cfg.tls_v1 and bool(data.get("tls_v1"))
        deflate = feature_negotiation and cfg.deflate and bool(data.get("deflate"))
        snappy = feature_negotiation and cfg.snappy and bool(data.get("snappy"))
        if deflate and snappy:
            raise FatalClientError(
                errors.E_IDENTIFY_FAILED, "cannot enable both deflate and snappy compression"
            )

        self.client_name = _str_field(data, "client_id", self.client_name)
        self.hostname = _str_field(data, "hostname", self.hostname)
        self.user_agent = _str_field(data, "user_agent", self.user_agent)
        self.heartbeat_interval = heartbeat
        self.output_buffer_size = out_size
        self.output_buffer_timeout = out_timeout
        self.sample_rate = sample_rate
        self.msg_timeout = msg_timeout
        self.feature_negotiation = feature_negotiation
        if not self.feature_negotiation:
            return OK_FRAME
        level = min(deflate_level if deflate and deflate_level > 0 else 6, cfg.max_deflate_level)
        self.deflate_level = level
        self.upgrades = tuple(
            name for name, wanted in ((TLS, tls_v1), (SNAPPY, snappy), (DEFLATE, deflate)) if wanted
        )
        response = {
            "max_rdy_count": cfg.max_rdy_count,
            "version": self.version,
            "max_msg_timeout": int(cfg.max_msg_timeout * 1000),
            "msg_timeout": int(self.msg_timeout * 1000),
            "tls_v1": tls_v1,
            "deflate": deflate,
            "deflate_level": level,
            "max_deflate_level": cfg.max_deflate_level,
            "snappy": snappy,
            "sample_rate": self.sample_rate,
            "auth_required": cfg.auth_required,
            "output_buffer_size": self.output_buffer_size,
            "output_buffer_timeout": int(self.output_buffer_timeout * 1000),
        }
        return encode_response(json.dumps(response, separators=(",", ":")).encode())

    # -- delivery ---------------------------------------------------------------

    @property
    def ready_room(self) -> int:
        """How many more messages this connection may take now."""
        if self.state != ClientState.SUBSCRIBED or self.channel is None:
            return 0
        return max(self.rdy - self.in_flight, 0)

    def deliver(self, now: float) -> list[Message]:
        """Take as many messages as RDY allows from the subscribed channel.

        Returns:
            Messages now in flight for this connection, to be framed and sent.
        """
        room = self.ready_room
        if room == 0:
            return []
        assert self.channel is not None
        msgs = self.channel.deliver(self.id, now, self.msg_timeout, room)
        if self.sample_rate and msgs:
            msgs = self._sample(msgs)
        self.in_flight += len(msgs)
        self.message_count += len(msgs)
        return msgs

    def deliver_frames(self, now: float) -> bytes:
        """Take as many messages as RDY allows and return their message frames.

        The same effect as `deliver` followed by framing each message, but
        the messages never become `Message` objects (unless ``sample_rate``
        is set): this is the consumer hot path.

        Returns:
            The frames to send in one write; empty when nothing was taken.
        """
        room = self.ready_room
        if room == 0:
            return b""
        if self.sample_rate:
            return encode_message_frames(self.deliver(now))
        assert self.channel is not None
        batches = self.channel.deliver_batches(self.id, now, self.msg_timeout, room)
        if not batches:
            return b""
        count = sum([len(batch[0]) for batch in batches])
        self.in_flight += count
        self.message_count += count
        return encode_message_batches(batches)

    def _sample(self, msgs: list[Message]) -> list[Message]:
        # nsqd discards an unsampled message for the whole channel rather than
        # requeueing it (docs/nsq.md §4.9): finishing it here is that discard.
        assert self.channel is not None
        kept = []
        for msg in msgs:
            if self.rng.randint(0, 99) <= self.sample_rate:
                kept.append(msg)
            else:
                self.channel.finish(self.id, msg.id)
        return kept

    def timed_out(self, count: int) -> None:
        """Account for ``count`` of this connection's messages that timed out."""
        self.in_flight = max(self.in_flight - count, 0)

    def close(self) -> None:
        """Detach from the channel when the connection ends.

        An ephemeral channel left without clients is deleted, and an ephemeral
        topic left without channels with it (docs/nsq.md §4.7).
        """
        channel, self.channel = self.channel, None
        self.state = ClientState.DISCONNECTED
        if channel is None or channel.deleted:
            return
        if (
            channel.remove_client(self.id)
            and self.broker.get_channel(channel.topic_name, channel.name) is channel
        ):
            self.broker.delete_channel(channel.topic_name, channel.name)

    def stats(self) -> dict[str, Any]:
        """The client object of /stats (docs/nsq.md §2.3)."""
        return {
            "client_id": self.client_name,
            "hostname": self.hostname,
            "version": "V2",
            "remote_address": self.remote_address,
            "state": int(self.state),
            "ready_count": self.rdy,
            "in_flight_count": self.in_flight,
            "message_count": self.message_count,
            "finish_count": self.finish_count,
            "requeue_count": self.requeue_count,
            "connect_ts": int(self.connect_ts),
            "sample_rate": self.sample_rate,
            "deflate": self.deflate,
            "snappy": self.snappy,
            "user_agent": self.user_agent,
            "tls": self.tls,
            "tls_cipher_suite": self.tls_cipher_suite,
            "tls_version": self.tls_version,
            "tls_negotiated_protocol": "",
            "tls_negotiated_protocol_is_mutual": False,
            "pub_counts": [{"topic": t, "count": n} for t, n in sorted(self.pub_counts.items())],
            **self._auth_stats(),
        }

    def _auth_stats(self) -> dict[str, Any]:
        state = self.auth_state
        if state is None:
            return {}
        return {
            "authed": True,
            "auth_identity": state.identity,
            "auth_identity_url": state.identity_url,
        }


def _int_field(data: dict[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad_field(key, value)
    return int(value)


def _str_field(data: dict[str, Any], key: str, default: str) -> str:
    value = data.get(key)
    if isinstance(value, str) and value:
        return value
    return default


def _bad_field(key: str, value: object) -> FatalClientError:
    return FatalClientError(errors.E_BAD_BODY, f"IDENTIFY {key} ({value}) is invalid")
