"""Publish and consume msgs/s over each transport: plain, TLS, snappy, deflate, and TLS with each.

    python bench/transports.py --messages 200000 --size 200

Starts one node on loopback with a throwaway certificate (trustme), then for
each transport opens one raw V2 connection, negotiates it through IDENTIFY
(feature_negotiation, then the TLS handshake and the compression layer, as
pynsq and go-nsq do), publishes --messages in MPUB batches of --batch-size
(one in flight, as nsq's bench_writer) and consumes them on another
connection with RDY --rdy, FINning every message. Bodies are half random hex
and half repeated text, so compression has something to do but not
everything. The client side uses the same codecs as the node and runs in
this one process, so on a 2-core machine client and node compete for CPU:
compare the rows with one another, not with other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import struct
import tempfile
import time
from pathlib import Path

import trustme

from shoal.cluster.stream_codecs import DeflateCodec, SnappyCodec, StreamCodec
from shoal.testing.process import NodeProcess
from shoal.testing.progress import StatusLine

TRANSPORTS = {
    "plain": {},
    "tls": {"tls_v1": True},
    "snappy": {"snappy": True},
    "deflate": {"deflate": True},
    "tls+snappy": {"tls_v1": True, "snappy": True},
    "tls+deflate": {"tls_v1": True, "deflate": True},
}


class Conn:
    """A blocking V2 connection with the negotiated layers applied client-side."""

    def __init__(self, address: tuple[str, int], features: dict[str, bool], ca: str) -> None:
        sock: socket.socket = socket.create_connection(address, timeout=60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket | ssl.SSLSocket = sock
        self.codec: StreamCodec | None = None
        self.buf = bytearray()
        body = json.dumps({"feature_negotiation": True, **features}).encode()
        sock.sendall(b"  V2IDENTIFY\n" + struct.pack(">I", len(body)) + body)
        answer = json.loads(self.frame()[1])
        if answer["tls_v1"]:
            context = ssl.create_default_context(cafile=ca)
            self.sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
            assert self.frame() == (0, b"OK")
        if answer["snappy"]:
            self._compress(SnappyCodec())
        if answer["deflate"]:
            self._compress(DeflateCodec(answer["deflate_level"]))

    def _compress(self, codec: StreamCodec) -> None:
        # What arrived after the IDENTIFY response is already compressed.
        self.codec = codec
        codec.feed(bytes(self.buf))
        self.buf.clear()
        while out := codec.decoded(1 << 20):
            self.buf += out
        assert self.frame() == (0, b"OK")

    def send(self, data: bytes) -> None:
        self.sock.sendall(self.codec.encode(data) if self.codec else data)

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("closed")
        if self.codec is None:
            self.buf += data
            return
        self.codec.feed(data)
        while out := self.codec.decoded(1 << 20):
            self.buf += out

    def frame(self) -> tuple[int, bytes]:
        while len(self.buf) < 8:
            self._fill()
        size, kind = struct.unpack_from(">Ii", self.buf)
        while len(self.buf) < 4 + size:
            self._fill()
        body = bytes(self.buf[8 : 4 + size])
        del self.buf[: 4 + size]
        return kind, body


def bodies(count: int, size: int) -> list[bytes]:
    half = size // 2
    noise = os.urandom(half // 2 + 1).hex().encode()[:half]
    return [(b"%08d" % i + noise + b"abc" * size)[:size] for i in range(count)]


def publish(conn: Conn, topic: str, messages: list[bytes], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(messages), batch):
        chunk = messages[i : i + batch]
        payload = struct.pack(">I", len(chunk)) + b"".join(
            struct.pack(">I", len(m)) + m for m in chunk
        )
        conn.send(b"MPUB " + topic.encode() + b"\n" + struct.pack(">I", len(payload)) + payload)
        kind, body = conn.frame()
        assert (kind, body) == (0, b"OK"), body
    return time.perf_counter() - start


def consume(conn: Conn, topic: str, count: int, rdy: int) -> float:
    conn.send(b"SUB " + topic.encode() + b" c\n")
    assert conn.frame() == (0, b"OK")
    start = time.perf_counter()
    conn.send(b"RDY %d\n" % rdy)
    got = 0
    fins: list[bytes] = []
    while got < count:
        kind, body = conn.frame()
        if kind == 0:  # heartbeat
            conn.send(b"NOP\n")
            continue
        assert kind == 2, body
        fins.append(b"FIN " + body[10:26] + b"\n")
        got += 1
        if len(fins) >= rdy // 4 or got == count:
            conn.send(b"".join(fins))
            fins.clear()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=200, help="message size in bytes")
    parser.add_argument("--batch-size", type=int, default=100, help="messages per MPUB")
    parser.add_argument("--rdy", type=int, default=2500)
    parser.add_argument("--only", nargs="*", choices=sorted(TRANSPORTS), help="run these only")
    args = parser.parse_args()
    status = StatusLine("bench/transports.py")  # on a terminal only: stdout is the figures

    with status.ticking(), tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        ca_path, cert_path, key_path = (Path(tmp) / n for n in ("ca.pem", "c.pem", "k.pem"))
        ca.cert_pem.write_to_path(str(ca_path))
        cert.cert_chain_pems[0].write_to_path(str(cert_path))
        cert.private_key_pem.write_to_path(str(key_path))
        node_args = [
            *("--tls-cert", str(cert_path), "--tls-key", str(key_path)),
            *("--mem-queue-size", str(args.messages + 1), "--data-path", ""),
        ]
        messages = bodies(args.messages, args.size)
        status.say(
            f"{args.messages} messages of {args.size} B, MPUB x{args.batch_size}, RDY {args.rdy}"
        )
        status.say(f"{'transport':<12} {'publish msgs/s':>15} {'consume msgs/s':>15}")
        status.show("warming up")
        with NodeProcess(*node_args, workdir=Path(tmp)) as node:
            # One unreported plain round first, so no row pays for warming up.
            warm = messages[: max(len(messages) // 10, 1)]
            publish(Conn(node.tcp, {}, str(ca_path)), "bench_warmup", warm, args.batch_size)
            consume(Conn(node.tcp, {}, str(ca_path)), "bench_warmup", len(warm), args.rdy)
            for name in args.only or list(TRANSPORTS):
                topic = f"bench_{name.replace('+', '_')}_{time.monotonic_ns()}"
                features = TRANSPORTS[name]
                status.show(f"{name}: publishing, then consuming")
                pub_seconds = publish(
                    Conn(node.tcp, features, str(ca_path)), topic, messages, args.batch_size
                )
                sub_seconds = consume(
                    Conn(node.tcp, features, str(ca_path)), topic, len(messages), args.rdy
                )
                status.say(
                    f"{name:<12} {len(messages) / pub_seconds:>15,.0f} "
                    f"{len(messages) / sub_seconds:>15,.0f}"
                )


if __name__ == "__main__":
    main()
