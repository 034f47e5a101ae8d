"""The network-namespace harness: real traffic between hosts, cut, lost and partitioned.

Every test builds its own cluster and checks the network from the outside,
with real UDP and TCP between the namespaces, so a harness that only
pretended to cut or partition would fail here.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from shoal.queue.commands import Pub, encode_command
from shoal.queue.frames import MAGIC_V2, FrameDecoder, FrameType
from shoal.testing.netns import PREFIX, Host, NetnsCluster, NodeInNamespace, require

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.netns

PORT = 7000
SO_RCVBUFFORCE = 33  # Linux; the socket module does not name it


@pytest.fixture(autouse=True)
def _require_netns() -> None:
    # Skips with its reason on a machine without root or iptables; CI sets
    # SHOAL_REQUIRE_NETNS=1 so that it fails there instead.
    require()


ECHO_SERVER = """
import socket, sys, threading
address, port = sys.argv[1], int(sys.argv[2])
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind((address, port))
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.bind((address, port))
tcp.listen()

def serve_udp():
    while True:
        data, peer = udp.recvfrom(2048)
        udp.sendto(peer[0].encode() + b" " + data, peer)

threading.Thread(target=serve_udp, daemon=True).start()
print("ready", flush=True)
while True:
    conn, peer = tcp.accept()
    with conn:
        conn.sendall(peer[0].encode() + b" " + conn.recv(2048))
"""

TCP_CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as conn:
    conn.sendall(b"hello")
    print(conn.recv(2048).decode())
"""


@contextlib.contextmanager
def echo_server(host: Host) -> Iterator[None]:
    """An echo server process on ``host``: replies prefix the sender's address."""
    proc = host.popen(
        [sys.executable, "-c", ECHO_SERVER, host.address, str(PORT)], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        yield
    finally:
        proc.kill()
        proc.communicate()


@contextlib.contextmanager
def udp_sockets(cluster: NetnsCluster) -> Iterator[list[socket.socket]]:
    """One non-blocking UDP socket per host, bound to its address and `PORT`."""
    socks: list[socket.socket] = []
    try:
        for host in cluster.hosts:
            sock = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
            sock.bind((host.address, PORT))
            sock.setblocking(False)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def drain(sock: socket.socket) -> list[bytes]:
    received = []
    with contextlib.suppress(BlockingIOError):
        while True:
            received.append(sock.recv(2048))
    return received


def reachability(cluster: NetnsCluster, window: float) -> set[tuple[int, int]]:
    """Which (sender, receiver) pairs get UDP datagrams through within ``window`` s.

    Every host keeps sending to every other; the wait ends early once all
    pairs got through, so only expected blockages cost the whole window.
    """
    hosts = cluster.hosts
    pairs = everyone(len(hosts))
    reached: set[tuple[int, int]] = set()
    with udp_sockets(cluster) as socks:
        deadline = time.monotonic() + window
        while reached != pairs and time.monotonic() < deadline:
            for a, b in pairs - reached:
                socks[a].sendto(str(a).encode(), (hosts[b].address, PORT))
            time.sleep(0.05)
            for b, sock in enumerate(socks):
                reached.update((int(data), b) for data in drain(sock))
    return reached


def everyone(n: int) -> set[tuple[int, int]]:
    return set(itertools.permutations(range(n), 2))


def tcp_connects(source: Host, destination: Host, timeout: float = 0.5) -> bool:
    """Whether ``source`` completes a TCP handshake with ``destination``."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(destination.socket())
        listener.bind((destination.address, 0))
        listener.listen()
        client = stack.enter_context(source.socket())
        client.settimeout(timeout)
        try:
            client.connect(listener.getsockname())
        except OSError:
            return False
        stack.enter_context(listener.accept()[0])
        return True


def lost_share(sender: Host, receiver: Host, sock: list[socket.socket], count: int) -> float:
    """Send ``count`` datagrams from ``sender`` to ``receiver``; the share that never arrived."""
    send, receive = sock[sender.index], sock[receiver.index]
    drain(receive)
    received = 0
    for batch in range(count // 50):
        for i in range(50):
            send.sendto(b"%d" % (batch * 50 + i), (receiver.address, PORT))
        time.sleep(0.01)
        received += len(drain(receive))
    quiet_until = time.monotonic() + 0.3
    while time.monotonic() < quiet_until:
        time.sleep(0.02)
        received += len(drain(receive))
    return 1 - received / count


def test_hosts_exchange_udp_and_tcp() -> None:
    with NetnsCluster(2) as cluster, echo_server(cluster.hosts[0]):
        server, client = cluster.hosts
        assert server.address != client.address

        with client.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(5)
            udp.sendto(b"ping", (server.address, PORT))
            assert udp.recvfrom(2048) == (
                client.address.encode() + b" ping",
                (server.address, PORT),
            )

        with client.socket() as tcp:
            tcp.settimeout(5)
            tcp.connect((server.address, PORT))
            tcp.sendall(b"hi")
            assert tcp.recv(2048) == client.address.encode() + b" hi"

        done = client.run([sys.executable, "-c", TCP_CLIENT, server.address, str(PORT)], check=True)
        assert done.stdout.decode().strip() == f"{client.address} hello"


def test_hosts_cannot_reach_the_root_namespace_network() -> None:
    with NetnsCluster(1) as cluster:
        (host,) = cluster.hosts
        routes = host.run(["ip", "-4", "route", "show"], check=True, text=True).stdout
        assert routes.split() == [
            str(cluster.network), "dev", "eth0", "proto", "kernel", "scope", "link",
            "src", host.address,
        ]  # fmt: skip
        hub = subprocess.run(
            ["ip", "-n", cluster.hub, "-4", "address", "show"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "inet " in hub  # the hub's lo: 127.0.0.1 only
        assert [
            line for line in hub.splitlines() if "inet " in line and "127.0.0.1" not in line
        ] == []


def test_cut_isolates_a_host_and_restore_reconnects_it() -> None:
    with NetnsCluster(3) as cluster:
        cut, other, bystander = cluster.hosts
        assert reachability(cluster, window=3.0) == everyone(3)

        cut.cut()
        assert [host.is_cut for host in cluster.hosts] == [True, False, False]
        assert reachability(cluster, window=0.5) == {(1, 2), (2, 1)}
        assert not tcp_connects(other, cut)
        assert tcp_connects(other, bystander)

        cut.restore()
        assert [host.is_cut for host in cluster.hosts] == [False, False, False]
        assert reachability(cluster, window=3.0) == everyone(3)
        assert tcp_connects(other, cut, timeout=3.0)
        assert tcp_connects(cut, bystander, timeout=3.0)


def test_datagrams_sent_during_a_cut_never_arrive() -> None:
    with NetnsCluster(2) as cluster, udp_sockets(cluster) as socks:
        cut, other = cluster.hosts
        cut.cut()
        for i in range(3):
            socks[0].sendto(b"during %d" % i, (other.address, PORT))
            socks[1].sendto(b"during %d" % i, (cut.address, PORT))
        time.sleep(0.2)
        cut.restore()
        received: list[bytes] = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            socks[0].sendto(b"after", (other.address, PORT))
            socks[1].sendto(b"after", (cut.address, PORT))
            time.sleep(0.05)
            received += drain(socks[0]) + drain(socks[1])
        assert set(received) == {b"after"}


def test_set_loss_drops_about_that_share_both_ways() -> None:
    with NetnsCluster(2) as cluster, udp_sockets(cluster) as socks:
        lossy, clean = cluster.hosts
        assert lost_share(lossy, clean, socks, 400) == 0

        lossy.set_loss(30)
        assert lossy.loss == 30
        assert 0.15 <= lost_share(lossy, clean, socks, 400) <= 0.45
        assert 0.15 <= lost_share(clean, lossy, socks, 400) <= 0.45

        lossy.set_loss(0)
        assert lost_share(lossy, clean, socks, 400) == 0
        assert lost_share(clean, lossy, socks, 400) == 0


def test_set_loss_refuses_out_of_range() -> None:
    with NetnsCluster(1) as cluster:
        with pytest.raises(ValueError, match="between 0 and 100"):
            cluster.hosts[0].set_loss(101)
        assert cluster.hosts[0].loss == 0


def test_partition_blocks_across_groups_only_and_heal_undoes_it() -> None:
    with NetnsCluster(4) as cluster:
        # Host 3 is in no group, so it forms a group of its own.
        cluster.partition([[0, 1], [2]])
        assert reachability(cluster, window=0.5) == {(0, 1), (1, 0)}
        hosts = cluster.hosts
        assert not tcp_connects(hosts[0], hosts[2])
        assert tcp_connects(hosts[0], hosts[1])

        cluster.heal()
        assert reachability(cluster, window=3.0) == everyone(4)
        assert tcp_connects(hosts[0], hosts[2])


def test_isolate_from_blocks_one_pair_and_host_heal_undoes_it() -> None:
    with NetnsCluster(3) as cluster:
        first, _, last = cluster.hosts
        last.isolate_from([first])
        assert reachability(cluster, window=0.5) == everyone(3) - {(0, 2), (2, 0)}

        last.heal()
        assert reachability(cluster, window=3.0) == everyone(3)


def test_partition_refuses_bad_groups() -> None:
    with NetnsCluster(2) as cluster:
        with pytest.raises(ValueError, match="no host 2"):
            cluster.partition([[0], [2]])
        with pytest.raises(ValueError, match="two groups"):
            cluster.partition([[0, 1], [1]])


def netns_names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def test_exit_kills_processes_and_deletes_namespaces_even_on_error() -> None:
    with pytest.raises(RuntimeError, match="test failed"), NetnsCluster(2) as cluster:  # noqa: PT012
        sleeper = cluster.hosts[1].popen([sys.executable, "-c", "import time; time.sleep(60)"])
        assert sorted(cluster.namespaces()) == sorted(
            [cluster.hub, *(host.name for host in cluster.hosts)]
        )
        raise RuntimeError("test failed")
    assert sleeper.returncode == -9
    assert [name for name in netns_names() if name.startswith(cluster.prefix)] == []


def test_entering_deletes_namespaces_left_by_dead_processes_only() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{PREFIX}{dead.pid}-0-hub"
    alive = f"{PREFIX}{os.getpid()}-elsewhere-hub"
    try:
        for name in (stale, alive):
            subprocess.run(["ip", "netns", "add", name], check=True)
        with NetnsCluster(1):
            names = netns_names()
            assert stale not in names
            assert alive in names
    finally:
        for name in (stale, alive):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def test_http_get_reaches_a_server_in_another_namespace(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_bytes(b"hello from the server")
    with NetnsCluster(2) as cluster:
        server, client = cluster.hosts
        proc = server.popen(
            [sys.executable, "-m", "http.server", "8000", "--bind", server.address,
             "--directory", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while not tcp_port_open(client, (server.address, 8000)):
                assert proc.poll() is None, "http.server exited"
                assert time.monotonic() < deadline, "http.server did not listen in time"
                time.sleep(0.05)
            get = client.http_get(8000, "/hello.txt", address=server.address)
            assert get == (200, b"hello from the server")
            assert client.http_get(8000, "/missing", address=server.address)[0] == 404
            assert server.http_get(8000, "/hello.txt") == (200, b"hello from the server")
        finally:
            proc.kill()
            proc.wait()


def tcp_port_open(source: Host, address: tuple[str, int]) -> bool:
    try:
        source.create_connection(address, timeout=1.0).close()
    except OSError:
        return False
    return True


def publish(source: Host, address: tuple[str, int], timeout: float) -> bytes:
    """PUB one message over NSQ TCP from ``source``; the response frame's data."""
    with source.create_connection(address, timeout) as sock:
        sock.sendall(MAGIC_V2 + encode_command(Pub("netns", b"across the bridge")))
        decoder = FrameDecoder()
        for _ in range(100):
            frame = decoder.next_frame()
            if frame is not None:
                assert frame[0] == FrameType.RESPONSE, frame
                return frame[1]
            chunk = sock.recv(65536)
            assert chunk, "the node closed the connection"
            decoder.receive_data(chunk)
    raise AssertionError("no response frame")


def test_node_in_namespace_serves_peers_until_cut(tmp_path: Path) -> None:
    with NetnsCluster(2) as cluster:
        home, peer = cluster.hosts
        with NodeInNamespace(home, workdir=tmp_path) as node:
            assert node.tcp == (home.address, 4150)
            assert publish(peer, node.tcp, timeout=5.0) == b"OK"

            home.cut()
            with pytest.raises(OSError):  # noqa: PT011 - a timeout or an unreachable host
                publish(peer, node.tcp, timeout=0.5)
            assert publish(home, node.tcp, timeout=5.0) == b"OK"  # over its own lo

            home.restore()
            assert publish(peer, node.tcp, timeout=3.0) == b"OK"
            assert node.stop() == 0
            assert node.proc is not None
            assert "Traceback" not in node.stderr, node.stderr
