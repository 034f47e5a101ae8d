"""TLS, snappy, deflate and AUTH against real nodes, with pynsq as the client.

Certificates come from trustme; the auth server is a small HTTP server in a
thread that grants one topic. Each scenario runs real ``shoal node``
processes on 127.0.0.1 with port 0.
"""

from __future__ import annotations

import asyncio
import collections
import http.server
import json
import socket
import ssl
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import TYPE_CHECKING, Any

import nsq
import pytest
import trustme

from shoal.testing.process import NodeProcess

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run(scenario: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> Any:
    """Run a pynsq scenario on a fresh event loop (pynsq is tornado, i.e. asyncio)."""

    async def main() -> Any:
        return await asyncio.wait_for(scenario(), timeout)

    return asyncio.run(main())


async def wait_for(condition: Callable[[], bool], limit: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


def topic_name() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


class Certs:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as files."""

    def __init__(self, directory: Path) -> None:
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("client.example", common_name="client.example")
        self.ca = directory / "ca.pem"
        self.cert = directory / "server.pem"
        self.key = directory / "server.key"
        self.client_cert = directory / "client.pem"
        self.client_key = directory / "client.key"
        ca.cert_pem.write_to_path(str(self.ca))
        server.cert_chain_pems[0].write_to_path(str(self.cert))
        server.private_key_pem.write_to_path(str(self.key))
        client.cert_chain_pems[0].write_to_path(str(self.client_cert))
        client.private_key_pem.write_to_path(str(self.client_key))

    def node_args(self) -> list[str]:
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]

    def client_options(self, *, client_cert: bool = False) -> dict[str, Any]:
        # PROTOCOL_TLS_CLIENT instead of pynsq's deprecated PROTOCOL_TLSv1_2.
        options: dict[str, Any] = {
            "ssl_version": ssl.PROTOCOL_TLS_CLIENT,
            "ca_certs": str(self.ca),
        }
        if client_cert:
            options["certfile"] = str(self.client_cert)
            options["keyfile"] = str(self.client_key)
        return options


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_node(certs: Certs) -> Iterator[NodeProcess]:
    """TLS offered (not required), snappy and deflate offered, client certs checked if given."""
    with NodeProcess(*certs.node_args(), "--tls-root-ca-file", str(certs.ca)) as proc:
        yield proc
        assert "Traceback" not in proc.stderr, proc.stderr


def stats(node: NodeProcess, topic: str) -> dict[str, Any]:
    host, port = node.http
    url = f"http://{host}:{port}/stats?format=json&topic={topic}"
    with urllib.request.urlopen(url, timeout=5) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


TRANSPORTS: dict[str, dict[str, Any]] = {
    "tls": {"tls_v1": True},
    "tls+snappy": {"tls_v1": True, "snappy": True},
    "tls+deflate": {"tls_v1": True, "deflate": True, "deflate_level": 3},
    "snappy": {"snappy": True},
    "deflate": {"deflate": True},
}


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_pynsq_publishes_and_consumes_over_each_transport(
    tls_node: NodeProcess, certs: Certs, transport: str
) -> None:
    topic = topic_name()
    options: dict[str, Any] = dict(TRANSPORTS[transport])
    if options.get("tls_v1"):
        options["tls_options"] = certs.client_options()
    host, port = tls_node.tcp
    address = f"{host}:{port}"
    bodies = [b"%s message %d " % (transport.encode(), i) * 20 for i in range(500)]
    counts: collections.Counter[bytes] = collections.Counter()
    client_stats: list[dict[str, Any]] = []

    def handle(message: Any) -> bool:
        counts[message.body] += 1
        return True

    async def scenario() -> None:
        writer = nsq.Writer([address], **options)
        await wait_for(lambda: bool(writer.conns))
        acks: list[object] = []
        for start in range(0, len(bodies), 100):
            writer.mpub(topic, bodies[start : start + 100], callback=lambda _c, d: acks.append(d))
        writer.pub(topic, bodies[0], callback=lambda _c, d: acks.append(d))
        await wait_for(lambda: len(acks) == 6)
        assert acks == [b"OK"] * 6
        reader = nsq.Reader(
            topic=topic,
            channel="c",
            message_handler=handle,
            nsqd_tcp_addresses=[address],
            max_in_flight=100,
            **options,
        )
        await wait_for(lambda: sum(counts.values()) >= len(bodies) + 1, limit=40)
        data = await asyncio.to_thread(stats, tls_node, topic)
        client_stats.extend(data["topics"][0]["channels"][0]["clients"])
        reader.close()
        for conn in list(writer.conns.values()):
            conn.close()

    run(scenario)
    assert set(counts) == set(bodies)
    assert counts[bodies[0]] == 2
    assert sum(counts.values()) == len(bodies) + 1
    (client,) = client_stats
    assert client["tls"] is bool(options.get("tls_v1"))
    assert client["snappy"] is bool(options.get("snappy"))
    assert client["deflate"] is bool(options.get("deflate"))
    if options.get("tls_v1"):
        assert client["tls_version"].startswith("TLSv1")


def test_client_certificate_required_and_verified(certs: Certs) -> None:
    """require-verify: a CA-signed client certificate gets through, none gets nothing."""
    args = [*certs.node_args(), "--tls-root-ca-file", str(certs.ca)]
    with NodeProcess(*args, "--tls-client-auth-policy", "require-verify") as node:
        host, port = node.tcp
        address = f"{host}:{port}"
        topic = topic_name()
        errors: list[str] = []

        async def scenario() -> None:
            good = nsq.Writer(
                [address], tls_v1=True, tls_options=certs.client_options(client_cert=True)
            )
            await wait_for(lambda: bool(good.conns))
            acks: list[object] = []
            good.pub(topic, b"with a certificate", callback=lambda _c, d: acks.append(d))
            await wait_for(lambda: bool(acks))
            assert acks == [b"OK"]

            for conn in list(good.conns.values()):
                conn.close()

        run(scenario)
        # Without a client certificate the handshake fails: no OK ever comes.
        with socket.create_connection((host, port), timeout=5) as raw:
            raw.sendall(b"  V2" + identify({"feature_negotiation": True, "tls_v1": True}))
            _, body = read_frame(raw)
            assert json.loads(body)["tls_v1"] is True
            context = ssl.create_default_context(cafile=str(certs.ca))
            with (
                pytest.raises((ssl.SSLError, ConnectionError)),
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                errors.append(repr(read_frame(tls)))
        assert not errors
        # The TLS-required policy also refuses plain-text commands outright.
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(b"  V2" + b"PUB " + topic.encode() + b"\n" + struct.pack(">I", 1) + b"x")
            assert read_frame(sock) == (
                1,
                b"E_INVALID cannot PUB in current state (TLS required)",
            )
        assert "Traceback" not in node.stderr, node.stderr


def identify(data: dict[str, Any]) -> bytes:
    body = json.dumps(data).encode()
    return b"IDENTIFY\n" + struct.pack(">I", len(body)) + body


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    header = b""
    while len(header) < 8:
        chunk = sock.recv(8 - len(header))
        if not chunk:
            raise ConnectionError("connection closed")
        header += chunk
    size, kind = struct.unpack(">Ii", header)
    body = b""
    while len(body) < size - 4:
        chunk = sock.recv(size - 4 - len(body))
        if not chunk:
            raise ConnectionError("connection closed")
        body += chunk
    return kind, body


class AuthServer:
    """nsqd's auth protocol: GET /auth?remote_ip=&tls=&secret=&common_name=."""

    def __init__(self, grants: dict[str, list[dict[str, Any]]], ttl: int = 3600) -> None:
        self.queries: list[dict[str, str]] = []
        self.grants = grants
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
                outer.queries.append({"path": url.path, **query})
                secret = query.get("secret", "")
                if url.path != "/auth" or secret not in outer.grants:
                    self.send_response(403)
                    self.end_headers()
                    return
                body = json.dumps(
                    {
                        "ttl": ttl,
                        "identity": f"id-{secret}",
                        "identity_url": "http://example.invalid/id",
                        "authorizations": outer.grants[secret],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> AuthServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


ALLOWED = "allowed_topic"


def http_pub(url: str, secret: str | None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    request = urllib.request.Request(url, data=b"over http", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_auth_server_grants_one_topic() -> None:
    grants = {
        "s3cret": [
            {"topic": f"^{ALLOWED}$", "channels": [".*"], "permissions": ["publish", "subscribe"]}
        ]
    }
    with AuthServer(grants) as auth, NodeProcess("--auth-http-address", auth.address) as node:
        host, port = node.tcp
        address = f"{host}:{port}"
        received: list[bytes] = []
        errors: list[str] = []

        def handle(message: Any) -> bool:
            received.append(message.body)
            return True

        async def scenario() -> None:
            writer = nsq.Writer([address], auth_secret="s3cret")
            await wait_for(lambda: bool(writer.conns))
            acks: list[object] = []
            writer.pub(ALLOWED, b"granted", callback=lambda _c, d: acks.append(d))
            await wait_for(lambda: bool(acks))
            assert acks == [b"OK"]
            reader = nsq.Reader(
                topic=ALLOWED,
                channel="c",
                message_handler=handle,
                nsqd_tcp_addresses=[address],
                auth_secret="s3cret",
            )
            await wait_for(lambda: received == [b"granted"])
            reader.close()
            # A topic the grant does not cover: the server's error, then a close.
            denied: list[object] = []
            writer.pub("other_topic", b"no", callback=lambda _c, d: denied.append(d))
            await wait_for(lambda: bool(denied))
            errors.append(repr(denied[0]))
            for conn in list(writer.conns.values()):
                conn.close()

        run(scenario)
        assert "E_UNAUTHORIZED" in errors[0]
        assert "other_topic" in errors[0]

        # Raw transcripts: SUB to an ungranted topic; PUB before AUTH; a bad secret.
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(b"  V2AUTH\n" + struct.pack(">I", 6) + b"s3cret")
            kind, body = read_frame(sock)
            assert kind == 0
            assert json.loads(body) == {
                "identity": "id-s3cret",
                "identity_url": "http://example.invalid/id",
                "permission_count": 1,
            }
            sock.sendall(b"SUB other_topic c\n")
            assert read_frame(sock) == (
                1,
                b'E_UNAUTHORIZED AUTH failed for SUB on "other_topic" "c"',
            )
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(b"  V2PUB " + ALLOWED.encode() + b"\n" + struct.pack(">I", 1) + b"x")
            assert read_frame(sock) == (1, b"E_AUTH_FIRST AUTH required before PUB")
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(b"  V2AUTH\n" + struct.pack(">I", 5) + b"wrong")
            assert read_frame(sock) == (1, b"E_AUTH_FAILED AUTH failed")
        # The HTTP API checks publishes too (a bearer secret).
        http_host, http_port = node.http
        base = f"http://{http_host}:{http_port}"
        assert http_pub(f"{base}/pub?topic={ALLOWED}", "s3cret") == (200, b"OK")
        assert http_pub(f"{base}/pub?topic=other_topic", "s3cret") == (
            403,
            b'{"message":"UNAUTHORIZED"}',
        )
        assert http_pub(f"{base}/pub?topic={ALLOWED}", None) == (
            401,
            b'{"message":"AUTH_REQUIRED"}',
        )
        assert http_pub(f"{base}/mpub?topic={ALLOWED}", "wrong") == (
            401,
            b'{"message":"AUTH_FAILED"}',
        )
        assert "Traceback" not in node.stderr, node.stderr
    first = auth.queries[0]
    assert first == {
        "path": "/auth",
        "remote_ip": "127.0.0.1",
        "tls": "false",
        "secret": "s3cret",
        "common_name": "",
    }


def test_https_listener_serves_the_http_api_and_plain_http_refuses(certs: Certs) -> None:
    args = [*certs.node_args(), "--https-address", "127.0.0.1:0", "--tls-required", "true"]
    with NodeProcess(*args) as node:
        address = node.addresses["https"]
        assert address is not None
        context = ssl.create_default_context(cafile=str(certs.ca))
        with urllib.request.urlopen(f"https://{address}/ping", context=context, timeout=5) as r:
            assert r.read() == b"OK"
        assert "HTTPS: listening on " + address in node.stderr
        host, port = node.http
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{host}:{port}/ping", timeout=5)
        assert refused.value.code == 403
        https_port = int(address.rpartition(":")[2])
        assert json.loads(refused.value.read()) == {
            "message": "TLS_REQUIRED",
            "https_port": https_port,
        }


def test_an_expired_answer_is_asked_for_again_and_can_be_narrowed() -> None:
    """ttl 1 s: the first PUB after expiry asks again; the new answer applies at once."""
    both = [{"topic": ".*", "channels": [".*"], "permissions": ["publish"]}]
    with (
        AuthServer({"k": both}, ttl=1) as auth,
        NodeProcess("--auth-http-address", auth.address) as node,
        socket.create_connection(node.tcp, timeout=10) as sock,
    ):
        sock.sendall(b"  V2AUTH\n" + struct.pack(">I", 1) + b"k")
        assert read_frame(sock)[0] == 0
        pub = b"PUB first\n" + struct.pack(">I", 1) + b"x"
        sock.sendall(pub)
        assert read_frame(sock) == (0, b"OK")
        assert len(auth.queries) == 1  # the cached answer served the PUB
        auth.grants["k"] = [{"topic": "^second$", "channels": [".*"], "permissions": ["publish"]}]
        time.sleep(1.2)
        sock.sendall(pub)
        assert read_frame(sock) == (1, b'E_UNAUTHORIZED AUTH failed for PUB on "first" ""')
        assert len(auth.queries) == 2
        assert "Traceback" not in node.stderr, node.stderr
