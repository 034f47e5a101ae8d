"""ClientV2 against nsqd's rules for state errors, IDENTIFY upgrades and AUTH.

Each test feeds bytes through the `CommandDecoder` wired to the client, as the
TCP shell does, so the order of the checks is the order a client sees.
"""

from __future__ import annotations

import json
import random
import re

import pytest

from shoal.queue.auth import InvalidAuthResponse, parse_auth_response
from shoal.queue.broker import Broker
from shoal.queue.commands import Auth, CommandDecoder, Identify, Pub, Sub
from shoal.queue.config import QueueConfig
from shoal.queue.errors import FatalClientError
from shoal.queue.frames import OK_FRAME, FrameDecoder, FrameType
from shoal.queue.protocol import DEFLATE, SNAPPY, TLS, AuthQuery, ClientV2

NOW = 1_700_000_000.0


def make_client(**config: object) -> ClientV2:
    return ClientV2(
        Broker(QueueConfig()),
        QueueConfig(**config),  # type: ignore[arg-type]
        client_id=1,
        remote_address="10.0.0.1:5000",
        version="0.1.0",
        now=NOW,
        rng=random.Random(7),
    )


def run_line(client: ClientV2, data: bytes) -> bytes | None:
    """Decode ``data`` (after the magic) with the client's state check, then execute."""
    decoder = CommandDecoder(
        max_msg_size=1024, max_body_size=4096, max_req_timeout_ms=3_600_000, max_rdy_count=2500
    )
    decoder.precheck = client.check_state
    decoder.receive_data(b"  V2" + data)
    cmd = decoder.next_command()
    assert cmd is not None
    return client.execute(cmd, NOW)


def response_json(frame: bytes | None) -> dict[str, object]:
    assert frame is not None
    decoder = FrameDecoder()
    decoder.receive_data(frame)
    got = decoder.next_frame()
    assert got is not None
    kind, body = got
    assert kind == FrameType.RESPONSE
    data: dict[str, object] = json.loads(body)
    return data


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"FIN\n", "E_INVALID cannot FIN in current state"),
        (b"REQ\n", "E_INVALID cannot REQ in current state"),
        (b"REQ 0123456789abcdef x\n", "E_INVALID cannot REQ in current state"),
        (b"TOUCH\n", "E_INVALID cannot TOUCH in current state"),
        (b"RDY not-a-number\n", "E_INVALID cannot RDY in current state"),
    ],
)
def test_state_errors_come_before_parameter_errors(line: bytes, error: str) -> None:
    with pytest.raises(FatalClientError) as exc:
        run_line(make_client(), line)
    assert str(exc.value) == error


def test_sub_and_identify_after_sub_are_state_errors_whatever_follows() -> None:
    client = make_client()
    assert run_line(client, b"SUB t c\n") == OK_FRAME
    for line, verb in ((b"SUB\n", "SUB"), (b"IDENTIFY\n\xff\xff\xff\xff", "IDENTIFY")):
        with pytest.raises(FatalClientError, match=rf"^E_INVALID cannot {verb} in current state$"):
            run_line(client, line)


def test_tls_required_refuses_everything_but_identify_before_tls() -> None:
    client = make_client(tls_v1=True, tls_required=True)
    for line, verb in ((b"PUB t\n", "PUB"), (b"NOP\n", "NOP"), (b"SUB\n", "SUB")):
        with pytest.raises(FatalClientError) as exc:
            run_line(client, line)
        assert str(exc.value) == f"E_INVALID cannot {verb} in current state (TLS required)"
    body = b'{"feature_negotiation": true, "tls_v1": true}'
    answer = response_json(run_line(client, b"IDENTIFY\n" + len(body).to_bytes(4, "big") + body))
    assert answer["tls_v1"] is True
    assert client.take_upgrades() == (TLS,)
    client.tls = True  # what the shell records once the handshake is done
    assert run_line(client, b"NOP\n") is None


@pytest.mark.parametrize(
    ("config", "request_", "expected", "upgrades"),
    [
        ({}, {"tls_v1": True, "snappy": True}, {"tls_v1": False, "snappy": True}, (SNAPPY,)),
        (
            {"tls_v1": True},
            {"tls_v1": True, "deflate": True, "deflate_level": 9},
            {"tls_v1": True, "deflate": True, "deflate_level": 6},
            (TLS, DEFLATE),
        ),
        ({"snappy": False, "deflate": False}, {"snappy": True}, {"snappy": False}, ()),
        (
            {},
            {"deflate": True, "deflate_level": 2},
            {"deflate": True, "deflate_level": 2},
            (DEFLATE,),
        ),
    ],
)
def test_identify_negotiates_what_both_sides_want(
    config: dict[str, object],
    request_: dict[str, object],
    expected: dict[str, object],
    upgrades: tuple[str, ...],
) -> None:
    client = make_client(**config)
    answer = response_json(
        client.execute(Identify(json.dumps({"feature_negotiation": True, **request_}).encode()), 0)
    )
    assert {key: answer[key] for key in expected} == expected
    assert client.take_upgrades() == upgrades
    assert client.take_upgrades() == ()  # taken once


def test_no_upgrade_without_feature_negotiation() -> None:
    client = make_client(tls_v1=True)
    assert client.execute(Identify(b'{"tls_v1": true, "snappy": true}'), NOW) == OK_FRAME
    assert client.take_upgrades() == ()


def test_snappy_and_deflate_together_are_refused() -> None:
    body = b'{"feature_negotiation": true, "snappy": true, "deflate": true}'
    with pytest.raises(FatalClientError, match=r"^E_IDENTIFY_FAILED cannot enable both"):
        make_client().execute(Identify(body), NOW)


GRANT = json.dumps(
    {
        "ttl": 60,
        "identity": "alice",
        "identity_url": "",
        "authorizations": [
            {"topic": "^orders$", "channels": ["^billing$"], "permissions": ["subscribe"]},
            {"topic": "orders", "channels": [".*"], "permissions": ["publish"]},
        ],
    }
).encode()


def test_auth_disabled_and_auth_first() -> None:
    with pytest.raises(FatalClientError, match=r"^E_AUTH_DISABLED AUTH disabled$"):
        make_client().execute(Auth(b"secret"), NOW)
    with pytest.raises(FatalClientError, match=r"^E_AUTH_FIRST AUTH required before PUB$"):
        make_client(auth_required=True).execute(Pub("orders", b"x"), NOW)
    with pytest.raises(FatalClientError, match=r"^E_AUTH_FIRST AUTH required before SUB$"):
        make_client(auth_required=True).execute(Sub("orders", "billing"), NOW)


def test_auth_grants_publish_and_subscribe_by_pattern() -> None:
    client = make_client(auth_required=True)
    with pytest.raises(AuthQuery) as query:
        client.execute(Auth(b"s3cret"), NOW)
    assert query.value.secret == "s3cret"
    answer = response_json(client.auth_answered(parse_auth_response(GRANT, NOW), for_auth=True))
    assert answer == {"identity": "alice", "identity_url": "", "permission_count": 2}
    with pytest.raises(FatalClientError, match=r"^E_INVALID AUTH already set$"):
        client.execute(Auth(b"again"), NOW)
    assert client.execute(Pub("orders", b"x"), NOW) == OK_FRAME
    assert client.execute(Pub("orders_eu", b"x"), NOW) == OK_FRAME  # unanchored pattern
    with pytest.raises(FatalClientError) as exc:
        client.execute(Pub("payments", b"x"), NOW)
    assert str(exc.value) == 'E_UNAUTHORIZED AUTH failed for PUB on "payments" ""'
    with pytest.raises(FatalClientError) as exc:
        client.execute(Sub("orders", "audit"), NOW)
    assert str(exc.value) == 'E_UNAUTHORIZED AUTH failed for SUB on "orders" "audit"'
    assert client.execute(Sub("orders", "billing"), NOW) == OK_FRAME
    assert client.stats()["auth_identity"] == "alice"


def test_an_expired_answer_is_asked_for_again_before_use() -> None:
    client = make_client(auth_required=True)
    with pytest.raises(AuthQuery):
        client.execute(Auth(b"s3cret"), NOW)
    client.auth_answered(parse_auth_response(GRANT, NOW), for_auth=True)
    assert client.execute(Pub("orders", b"x"), NOW + 59) == OK_FRAME
    with pytest.raises(AuthQuery) as query:
        client.execute(Pub("orders", b"x"), NOW + 60)
    assert query.value.secret == "s3cret"
    assert client.broker.topics["orders"].message_count == 1  # nothing published yet
    assert client.auth_answered(parse_auth_response(GRANT, NOW + 60), for_auth=False) is None
    assert client.execute(Pub("orders", b"x"), NOW + 60) == OK_FRAME
    with pytest.raises(FatalClientError, match=r"^E_AUTH_FAILED AUTH failed$"):
        client.auth_answered(None, for_auth=False)


def test_auth_failures_as_nsqd_words_them() -> None:
    client = make_client(auth_required=True)
    with pytest.raises(AuthQuery):
        client.execute(Auth(b"s3cret"), NOW)
    with pytest.raises(FatalClientError, match=r"^E_AUTH_FAILED AUTH failed$"):
        client.auth_answered(None, for_auth=True)
    empty = parse_auth_response(b'{"ttl": 5, "authorizations": []}', NOW)
    with pytest.raises(FatalClientError, match=r"^E_UNAUTHORIZED AUTH no authorizations found$"):
        make_client(auth_required=True).auth_answered(empty, for_auth=True)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b'{"ttl": 0}', "invalid TTL 0"),
        (b'{"ttl": 5, "authorizations": [{"topic": "(", "channels": []}]}', "unable to compile"),
        (b'{"ttl": 5, "authorizations": [{"topic": "t", "permissions": ["admin"]}]}', "admin"),
    ],
)
def test_auth_answers_nsqd_refuses_are_refused(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidAuthResponse, match=re.escape(reason)):
        parse_auth_response(body, NOW)
