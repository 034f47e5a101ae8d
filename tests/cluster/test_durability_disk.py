"""What a damaged, full or tampered data path costs a real node: only what is damaged."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest

from shoal.queue.diskqueue import QueueMeta, encode_meta
from shoal.testing.process import NodeProcess
from shoal.testing.wire import NsqConnection

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration


def http_get(node: NodeProcess, path: str) -> tuple[int, bytes]:
    host, port = node.http
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as reply:
            return int(reply.status), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_json(node: NodeProcess, path: str) -> Any:
    status, body = http_get(node, path)
    assert status == 200, body
    return json.loads(body)


def http_post(node: NodeProcess, path: str) -> None:
    host, port = node.http
    request = urllib.request.Request(f"http://{host}:{port}{path}", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200


def publish(node: NodeProcess, topic: str, bodies: list[bytes]) -> None:
    with NsqConnection(node.tcp) as conn:
        for start in range(0, len(bodies), 50):
            conn.mpub(topic, bodies[start : start + 50])


def consume(node: NodeProcess, topic: str, channel: str, count: int) -> list[bytes]:
    with NsqConnection(node.tcp, timeout=20) as conn:
        conn.sub(topic, channel)
        conn.rdy(500)
        bodies = []
        for _ in range(count):
            msg = conn.read_message()
            bodies.append(msg.body)
            conn.fin(msg.id)
        conn.send_raw(b"NOP\n")
        return bodies


def node_on(data: Path, *args: str, workdir: Path | None = None) -> NodeProcess:
    workdir = workdir if workdir is not None else data.parent
    return NodeProcess("--data-path", str(data), *args, workdir=workdir)


def depths(node: NodeProcess) -> dict[str, int]:
    """Depth of every topic and ``topic:channel`` the node has."""
    out: dict[str, int] = {}
    for topic in http_json(node, "/stats?format=json")["topics"]:
        out[topic["topic_name"]] = topic["depth"]
        for channel in topic["channels"]:
            out[f"{topic['topic_name']}:{channel['channel_name']}"] = channel["depth"]
    return out


def test_one_flipped_bit_loses_at_most_the_record_it_touches(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bodies = [b"record %04d" % i for i in range(300)]
    with node_on(data, "--mem-queue-size", "0") as node:
        publish(node, "logs", bodies)  # no channel yet: all in the topic's disk queue
        assert node.stop() == 0
    (segment,) = sorted(data.glob("logs.diskqueue.[0-9]*.dat"))
    raw = bytearray(segment.read_bytes())
    raw[len(raw) // 3] ^= 0x10
    segment.write_bytes(bytes(raw))
    with node_on(data) as node:
        assert depths(node)["logs"] == 299
        got = consume(node, "logs", "ch", 299)
        assert len(set(bodies) - set(got)) == 1
        assert got == [body for body in bodies if body in set(got)]
        assert "DISKQUEUE" in node.stderr
        assert "Traceback" not in node.stderr


def test_a_position_file_pointing_past_the_data_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bodies = [b"segmented %04d" % i for i in range(400)]
    with node_on(data, "--mem-queue-size", "0", "--max-bytes-per-file", "2000") as node:
        publish(node, "logs", bodies)
        assert node.stop() == 0
    segments = sorted(data.glob("logs.diskqueue.[0-9]*.dat"))
    assert len(segments) >= 8
    bogus = QueueMeta(depth=0, read_file=len(segments) + 5, read_pos=0, write_file=99, write_pos=0)
    (data / "logs.diskqueue.meta.dat").write_bytes(encode_meta(bogus))  # a valid checksum
    with node_on(data, "--max-bytes-per-file", "2000") as node:
        assert sorted(data.glob("logs.diskqueue.[0-9]*.dat")) == segments
        assert depths(node)["logs"] == 400
        assert sorted(consume(node, "logs", "ch", 400)) == sorted(bodies)
        assert "past the data" in node.stderr


def test_a_lost_metadata_file_is_rebuilt_with_every_topic_channel_and_depth(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with node_on(data, "--mem-queue-size", "0") as node:
        for topic, channels in (("orders", ("billing", "audit")), ("events", ())):
            http_post(node, f"/topic/create?topic={topic}")
            for channel in channels:
                http_post(node, f"/channel/create?topic={topic}&channel={channel}")
        publish(node, "orders", [b"o%d" % i for i in range(120)])
        publish(node, "events", [b"e%d" % i for i in range(70)])
        consume(node, "orders", "audit", 20)  # 100 more stay in flight: flushed at stop
        assert node.stop() == 0
    (data / "shoal.dat").unlink()
    with node_on(data) as node:
        expected = {"orders": 0, "orders:billing": 120, "orders:audit": 100, "events": 70}
        assert depths(node) == expected
        warnings = [line for line in node.stderr.splitlines() if "rebuilt" in line]
        assert len(warnings) == 1
        assert all(name in warnings[0] for name in ("orders", "orders:billing", "events"))


def test_a_damaged_metadata_file_is_named_set_aside_and_rebuilt(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with node_on(data, "--mem-queue-size", "0") as node:
        publish(node, "orders", [b"o%d" % i for i in range(30)])
        assert node.stop() == 0
    (data / "shoal.dat").write_text(
        json.dumps({"version": "x", "topics": [{"name": "../../etc", "channels": []}]})
    )
    with node_on(data) as node:
        assert depths(node) == {"orders": 30}
        (line,) = [line for line in node.stderr.splitlines() if "rebuilt" in line]
        assert "shoal.dat" in line
        assert "topics[0].name" in line
        assert (data / "shoal.dat.bad").exists()
        assert "Traceback" not in node.stderr


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe\x00garbage", b"a\x07bell", b"x" * 5000],
    ids=["binary", "control", "long"],
)
def test_a_garbage_name_file_gives_one_line_and_exit_1(tmp_path: Path, content: bytes) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "shoal.name").write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "shoal", "node", "--data-path", str(data),
         "--tcp-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0",
         "--gossip-address", "127.0.0.1:0", "--lookup-http-address", "127.0.0.1:0"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    errors = [line for line in result.stderr.decode().splitlines() if line.startswith("shoal:")]
    assert len(errors) == 1
    assert "shoal.name" in errors[0]
    assert b"Traceback" not in result.stderr


# --- a full disk -------------------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (root only: CI runs as root)."""
    path.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        # Like the partition tests: a machine that cannot run this fails loudly.
        pytest.fail(f"cannot mount a tmpfs to fill (needs root): {result.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> None:
    """Take every free byte of the file system holding ``path``."""
    with (path / "filler").open("wb") as file:
        chunk = b"\0" * (64 << 10)
        for _ in range(1 << 16):  # at most 4 GiB; a small tmpfs fills long before
            try:
                file.write(chunk)
                file.flush()
            except OSError:
                break
    with contextlib.suppress(OSError), (path / "filler2").open("wb") as small:
        for _ in range(64 << 10):
            small.write(b"\0")
            small.flush()


@pytest.mark.slow
def test_a_node_starts_on_a_full_disk_serves_its_backlog_and_refuses_publishes(
    tmp_path: Path,
) -> None:
    with small_filesystem(tmp_path / "disk", "8m") as disk:
        data = disk / "data"
        bodies = [b"backlog %04d" % i + b"." * 200 for i in range(2000)]
        # The log and the ready file live off the small file system.
        with node_on(data, "--mem-queue-size", "0", workdir=tmp_path) as node:
            http_post(node, "/topic/create?topic=orders")
            http_post(node, "/channel/create?topic=orders&channel=billing")
            http_post(node, "/channel/create?topic=orders&channel=audit")
            publish(node, "orders", bodies)
            assert node.stop() == 0
        fill(disk)
        assert os.statvfs(disk).f_bavail == 0
        with node_on(data, "--mem-queue-size", "0", workdir=tmp_path) as node:
            # Publish until the disk refuses: every OK was stored, the refused
            # one is answered with an error and never delivered.
            accepted: list[bytes] = []
            refused = b""
            for i in range(20_000):  # a full 8 MiB tmpfs refuses within a few pages
                body = b"late %05d" % i + b"." * 500
                with NsqConnection(node.tcp) as conn:
                    conn.send_raw(b"PUB orders\n" + len(body).to_bytes(4, "big") + body)
                    _kind, answer = conn.read_frame()
                if answer != b"OK":
                    assert answer.startswith(b"E_PUB_FAILED"), answer
                    refused = body
                    break
                accepted.append(body)
            assert refused
            status, reason = http_get(node, "/ping")
            assert status == 500
            assert b"No space left on device" in reason
            # Both channels hold every accepted message and not the refused
            # one, whichever channel's write the full disk refused.
            for channel in ("billing", "audit"):
                got = consume(node, "orders", channel, 2000 + len(accepted))
                assert sorted(got) == sorted(bodies + accepted)
                with NsqConnection(node.tcp, timeout=1) as conn:
                    conn.sub("orders", channel)
                    conn.rdy(10)
                    with pytest.raises(TimeoutError):
                        conn.read_message()  # the refused message is not there
            assert "Traceback" not in node.stderr
