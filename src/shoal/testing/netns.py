"""Real processes in Linux network namespaces, with links to cut, lose and restore.

`NetnsCluster` gives each of n hosts its own network namespace, joined by
veth pairs to one bridge. Tests run real ``shoal node`` processes on those
hosts and then break the network under them: `Host.cut` takes a host's link
down, `Host.set_loss` drops a share of its packets at random, and
`NetnsCluster.partition` splits the hosts into groups that cannot reach each
other.

Layout (nothing is ever added to the namespace the tests run in)::

    hub namespace: br0 (bridge) ── p0 ── p1 ── ... ── p<n-1>
                                   │     │             │
    node namespaces:             eth0  eth0          eth0
                             10.213.k.1  .2          .<n>

* The bridge lives in a dedicated hub namespace with no address and no
  route, so no packet can leave for the host's own network. Each node
  namespace holds ``lo`` and ``eth0`` with one address in a private /24 and
  the kernel's on-link route; nothing else. Interface names (``br0``,
  ``p<i>``, ``eth0``) only have to be unique inside these namespaces.
* Namespaces are named ``shoalnet-<pid>-<counter>-<role>``, unique per
  harness instance. Leaving the context manager kills the processes started
  in them and deletes them (which deletes the veths), even when a test
  fails; entering one first deletes namespaces that a crashed earlier run
  (a process no longer alive) left behind.

Faults, and why each is built the way it is:

* `Host.cut` sets the hub's end of the host's veth down. The host's own
  ``eth0`` merely loses carrier, so its sockets see what a pulled cable
  looks like: sends succeed and vanish, connections time out. Setting the
  host's end down instead would fail every send at once with ENETUNREACH.
  `Host.restore` flushes the neighbour entries left from the cut, so no
  packet of the cut arrives late.
* Loss and partitions are iptables rules on INPUT only, in a chain that the
  harness owns (``SHOAL-FAULTS``). A DROP in OUTPUT makes ``sendto`` fail
  with EPERM, which no real network does, so a host's outbound loss is
  applied by every receiver to packets from that host; a packet from a to b
  is then lost with probability ``1 - (1 - loss_a) * (1 - loss_b)``. ARP is
  not IP and passes, so addresses stay resolvable under loss and partitions.
* There is no delay, jitter or reordering: the harness has to work on
  kernels built without ``tc netem`` (and without the ``gact`` action),
  where ``tc`` can only limit rates. Timing faults are the business of the
  in-memory `shoal.testing.network.MemoryNetwork`.

Reaching a host from the test process: `Host.socket` creates a socket inside
the host's namespace (a short-lived thread enters it with ``setns``), so
tests talk to nodes directly, and `Host.http_get` / `Host.http_request` use
such a socket for nsqd HTTP calls. `NodeInNamespace` starts ``shoal node``
on a host with fixed ports on its address.

Everything here needs root, ``ip`` (iproute2) and ``iptables``; `available`
says in one line why not when they are missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import http.client
import ipaddress
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from socket import socket as Socket
from typing import TYPE_CHECKING, Any

from shoal.testing.process import START_TIMEOUT, NodeProcess

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from types import TracebackType

__all__ = [
    "PREFIX",
    "REQUIRE_ENV",
    "Host",
    "NetnsCluster",
    "NetnsError",
    "NodeInNamespace",
    "available",
    "cleanup_stale",
    "require",
    "socket_in_netns",
]

#: Every namespace the harness creates starts with this.
PREFIX = "shoalnet-"

#: Where ``ip netns`` keeps its namespace handles.
NETNS_DIR = Path("/run/netns")

#: The private network; the third octet tells harness instances apart.
SUBNET_BASE = "10.213"

#: The chain that holds a node namespace's fault rules.
FAULT_CHAIN = "SHOAL-FAULTS"

#: Bound on every command the harness runs for itself.
COMMAND_TIMEOUT = 30.0

_CLONE_NEWNET = 0x40000000
_counter = itertools.count()


#: Set to ``1`` to make missing namespace prerequisites fail tests instead of
#: skipping them. CI sets it: there the namespace tests are the only proof
#: that the partition tests test anything, so they must run or fail loudly.
REQUIRE_ENV = "SHOAL_REQUIRE_NETNS"


class NetnsError(RuntimeError):
    """A namespace, link or firewall command failed."""


def _command(args: Sequence[str], *, stdin: str | None = None) -> str:
    """Run one of the harness's own commands and return its stdout.

    Raises:
        NetnsError: it exited non-zero, could not start or overran
            `COMMAND_TIMEOUT`; the message carries its stderr.
    """
    try:
        done = subprocess.run(
            list(args),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        detail = done.stderr.strip() or done.stdout.strip()
        raise NetnsError(f"{' '.join(args)} exited with {done.returncode}: {detail}")
    return done.stdout


def _netns_list() -> list[str]:
    """Names of the namespaces ``ip netns`` knows."""
    try:
        return sorted(entry.name for entry in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def _netns_pids(name: str) -> list[int]:
    """Processes living in namespace ``name`` (empty if it is gone)."""
    try:
        out = _command(["ip", "netns", "pids", name])
    except NetnsError:
        return []
    return [int(word) for word in out.split() if word.isdigit()]


def _kill_pids(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _delete_netns(name: str) -> None:
    """Kill what still runs in ``name``, then delete it (and so its veths)."""
    _kill_pids(_netns_pids(name))
    if (NETNS_DIR / name).exists():
        _command(["ip", "netns", "delete", name])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> list[str]:
    """Delete namespaces that a harness in a dead process left behind.

    Only names with our `PREFIX` whose creating pid is no longer alive are
    touched, so harnesses running in other processes keep theirs. Whatever
    still runs inside a stale namespace is killed first.

    Returns:
        The names deleted. Failures are ignored: this is best effort.
    """
    deleted = []
    for name in _netns_list():
        if not name.startswith(PREFIX):
            continue
        pid_text = name[len(PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        with contextlib.suppress(NetnsError):
            _delete_netns(name)
            deleted.append(name)
    return deleted


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.setns.restype = ctypes.c_int
    return libc


def socket_in_netns(
    name: str,
    family: int = socket.AF_INET,
    type: int = socket.SOCK_STREAM,  # noqa: A002 - the socket module's own name
    proto: int = 0,
) -> Socket:
    """Create a socket that lives in network namespace ``name``.

    A socket belongs to the namespace of the thread that created it, for
    good. A throwaway thread enters the namespace with ``setns`` (namespaces
    are per thread on Linux), creates the socket and ends; the caller's
    threads never change namespace and may use the socket freely, also
    through ``trio.socket.from_stdlib_socket``.

    Raises:
        NetnsError: the namespace does not exist or could not be entered; no
            socket was created anywhere.
    """
    path = NETNS_DIR / name
    created: list[Socket] = []
    failures: list[OSError] = []

    def enter_and_create() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc().setns(fd, _CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns: {os.strerror(errno)}")
            finally:
                os.close(fd)
            created.append(socket.socket(family, type, proto))
        except OSError as exc:
            failures.append(exc)

    thread = threading.Thread(target=enter_and_create, name=f"setns-{name}", daemon=True)
    thread.start()
    thread.join(COMMAND_TIMEOUT)
    if failures:
        raise NetnsError(f"cannot create a socket in namespace {name}: {failures[0]}")
    if not created:
        raise NetnsError(f"cannot create a socket in namespace {name}")
    return created[0]


@functools.cache
def available() -> str | None:
    """Say why namespaces with iptables cannot be used here, or None if they can.

    The check builds a throwaway namespace holding a veth pair and a random
    iptables drop rule, which is exactly what `NetnsCluster` needs. Its
    answer is cached for the process.

    Returns:
        None when everything works, else a one-line reason.
    """
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    name = f"{PREFIX}{os.getpid()}-probe{next(_counter)}"
    bridge = "ip link add probe0 type bridge"
    veth = "ip link add probe1 type veth peer name probe2"
    drop = "iptables -w -A INPUT -m statistic --mode random --probability 0.5 -j DROP"
    chain = f"*filter\n:{FAULT_CHAIN} - [0:0]\nCOMMIT\n"
    try:
        _command(["ip", "netns", "add", name])
        try:
            for line in (bridge, veth, drop):
                _command(["ip", "netns", "exec", name, *line.split()])
            _command(
                ["ip", "netns", "exec", name, "iptables-restore", "-w", "--noflush"], stdin=chain
            )
        finally:
            _delete_netns(name)
    except NetnsError as exc:
        return str(exc).splitlines()[0]
    return None


def require() -> None:
    """Skip the calling test when `available` says no, or fail under `REQUIRE_ENV`.

    A developer without root or iptables sees one skip reason per test
    instead of errors they cannot act on; CI, which sets
    ``SHOAL_REQUIRE_NETNS=1``, fails instead, so it never goes green by
    silently not running them.
    """
    import pytest  # here, not at the top: only tests call this, shoal never needs pytest

    reason = available()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"network namespaces with iptables are unavailable: {reason}")
    pytest.skip(f"needs root, network namespaces and iptables: {reason} ({REQUIRE_ENV}=1 fails)")


class Host:
    """One node namespace of a `NetnsCluster`: an address and a link.

    Attributes:
        index: position in `NetnsCluster.hosts`.
        name: the network namespace.
        address: its IPv4 address on the cluster's bridge.
    """

    def __init__(self, cluster: NetnsCluster, index: int, name: str, address: str) -> None:
        self.cluster = cluster
        self.index = index
        self.name = name
        self.address = address
        self.hub_link = f"p{index}"  # the hub's end of this host's veth

    def __repr__(self) -> str:
        return f"Host({self.index}, {self.name!r}, {self.address!r})"

    # ---------------------------------------------------------------- processes

    def command(self, args: Sequence[str]) -> list[str]:
        """``args`` wrapped so that they run in this namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def popen(self, args: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``args`` in this namespace, as `subprocess.Popen` would.

        ``ip netns exec`` replaces itself with the command, so the returned
        process is the command itself and signals reach it. The cluster kills
        it on exit if it still runs.
        """
        proc: subprocess.Popen[Any] = subprocess.Popen(self.command(args), **kw)
        self.cluster._processes.append(proc)
        return proc

    def run(self, args: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``args`` in this namespace to completion, as `subprocess.run` would.

        Output is captured and a `COMMAND_TIMEOUT` applies unless ``kw`` says
        otherwise; a non-zero exit is not an error unless ``check=True``.
        """
        check = kw.pop("check", False)
        kw.setdefault("capture_output", True)
        kw.setdefault("timeout", COMMAND_TIMEOUT)
        return subprocess.run(self.command(args), check=check, **kw)

    def socket(
        self,
        family: int = socket.AF_INET,
        type: int = socket.SOCK_STREAM,  # noqa: A002 - the socket module's own name
        proto: int = 0,
    ) -> Socket:
        """A socket inside this namespace, usable from the calling thread.

        See `socket_in_netns`. Traffic to this host's own address stays on
        its ``lo``, so it works even while the host is cut off.
        """
        return socket_in_netns(self.name, family, type, proto)

    def create_connection(self, address: tuple[str, int], timeout: float = 5.0) -> Socket:
        """A TCP connection from inside this namespace, as `socket.create_connection`.

        Args:
            address: ``(ip, port)`` of the server.
            timeout: for connecting, and left on the socket for later calls.

        Raises:
            OSError: the connection failed or timed out; no socket is left open.
        """
        sock = self.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        return sock

    def http_request(
        self,
        method: str,
        port: int,
        path: str,
        body: bytes | None = None,
        *,
        timeout: float = 5.0,
        address: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Make one HTTP/1.1 request from inside this namespace.

        Args:
            method: ``GET``, ``POST``...
            port: the server's port.
            path: the request target, query string included.
            body: the request body, if any.
            timeout: for connecting and for each read.
            address: the server's IP; this host's own when omitted. Name
                another host's address to go over the bridge.
            headers: extra request headers.

        Returns:
            The status code and the whole response body.

        Raises:
            OSError: the connection failed or timed out (``TimeoutError``).
            http.client.HTTPException: the response was not HTTP.
        """
        connection = _NamespacedHTTPConnection(self, address or self.address, port, timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def http_get(
        self, port: int, path: str, timeout: float = 5.0, *, address: str | None = None
    ) -> tuple[int, bytes]:
        """``GET path`` from inside this namespace; see `http_request`."""
        return self.http_request("GET", port, path, timeout=timeout, address=address)

    def http_post(
        self,
        port: int,
        path: str,
        body: bytes,
        timeout: float = 5.0,
        *,
        address: str | None = None,
    ) -> tuple[int, bytes]:
        """``POST path`` with ``body`` from inside this namespace; see `http_request`."""
        return self.http_request("POST", port, path, body, timeout=timeout, address=address)

    # ------------------------------------------------------------------- faults

    @property
    def is_cut(self) -> bool:
        """Whether `cut` took this host's link down (and `restore` has not run)."""
        return self.index in self.cluster._cut

    @property
    def loss(self) -> float:
        """The packet loss set by `set_loss`, in percent."""
        return self.cluster._loss.get(self.index, 0.0) * 100.0

    def cut(self) -> None:
        """Take this host's link down: it reaches no one and no one reaches it.

        Its processes keep running and its address stays; packets it sends
        are silently lost, as with a pulled cable, and so are packets sent
        to it.
        """
        _command(["ip", "-n", self.cluster.hub, "link", "set", self.hub_link, "down"])
        self.cluster._cut.add(self.index)

    def restore(self) -> None:
        """Bring the link up again and remove this host's packet loss.

        Partitions made with `isolate_from` or `NetnsCluster.partition` stay
        until healed.

        While the link was down, the kernel kept the packets sent to or
        from this host in its neighbour (ARP) queues and would retry
        resolution only every second. Those entries are flushed here, so
        the packets of the cut stay lost instead of arriving late, and the
        next packet is resolved and sent at once.
        """
        _command(["ip", "-n", self.cluster.hub, "link", "set", self.hub_link, "up"])
        for host in self.cluster.hosts:
            if host is self:
                _command(["ip", "-n", host.name, "neigh", "flush", "dev", "eth0"])
            else:
                _command(["ip", "-n", host.name, "neigh", "flush", "to", self.address])
        self.cluster._cut.discard(self.index)
        self.set_loss(0)

    def set_loss(self, percent: float) -> None:
        """Drop ``percent`` % of the packets this host sends and receives, at random.

        Each direction is dropped independently by an iptables ``statistic``
        rule in the receiving namespace (see the module docstring); 0
        removes the loss.

        Raises:
            ValueError: ``percent`` is outside 0..100; nothing changed.
        """
        if not 0 <= percent <= 100:
            raise ValueError(f"loss must be between 0 and 100 percent, not {percent}")
        if percent:
            self.cluster._loss[self.index] = percent / 100.0
        else:
            self.cluster._loss.pop(self.index, None)
        self.cluster._apply_faults()

    def isolate_from(self, others: Iterable[Host]) -> None:
        """Block all IP traffic between this host and ``others``, both ways.

        Other pairs are untouched, so repeated calls build any partial
        partition. Undo with `heal` or `NetnsCluster.heal`.
        """
        for other in others:
            if other.index != self.index:
                self.cluster._blocked.add(frozenset((self.index, other.index)))
        self.cluster._apply_faults()

    def heal(self) -> None:
        """Unblock every pair involving this host (from `isolate_from` or a partition)."""
        self.cluster._blocked = {pair for pair in self.cluster._blocked if self.index not in pair}
        self.cluster._apply_faults()


class _NamespacedHTTPConnection(http.client.HTTPConnection):
    """An `http.client.HTTPConnection` whose socket lives in a host's namespace."""

    def __init__(self, netns_host: Host, address: str, port: int, timeout: float) -> None:
        super().__init__(address, port, timeout=timeout)
        self._netns_host = netns_host
        self._connect_timeout = timeout

    def connect(self) -> None:
        address = (self.host, self.port)
        self.sock = self._netns_host.create_connection(address, self._connect_timeout)


class NetnsCluster:
    """``n`` hosts in their own network namespaces, joined by one bridge.

    Args:
        n: how many hosts (1 to 254).

    Resource handling:
        Use it as a context manager. Entering deletes stale namespaces from
        crashed runs (`cleanup_stale`) and builds the hub and the hosts;
        leaving kills every process started through `Host.popen` (and
        anything else still inside the namespaces) and deletes the
        namespaces, whatever happened in between. If building fails half
        way, what was built is deleted before the error propagates.

    Error handling:
        Setup and fault commands raise `NetnsError`. A cleanup failure is
        raised from ``__exit__`` only when the block itself succeeded;
        otherwise it is added as a note to the block's exception.
    """

    def __init__(self, n: int) -> None:
        if not 1 <= n <= 254:
            raise ValueError(f"a cluster has 1 to 254 hosts, not {n}")
        instance = next(_counter)
        self.prefix = f"{PREFIX}{os.getpid()}-{instance}-"
        self.hub = f"{self.prefix}hub"
        self.network = ipaddress.IPv4Network(f"{SUBNET_BASE}.{instance % 256}.0/24")
        self.hosts = [
            Host(self, i, f"{self.prefix}{i}", str(self.network.network_address + i + 1))
            for i in range(n)
        ]
        self._processes: list[subprocess.Popen[Any]] = []
        self._cut: set[int] = set()
        self._loss: dict[int, float] = {}
        self._blocked: set[frozenset[int]] = set()
        self._applied: dict[int, str] = {}  # host index -> the fault chain's rules
        self._open = False

    # ----------------------------------------------------------------- lifetime

    def __enter__(self) -> NetnsCluster:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.close()
        except NetnsError as cleanup_error:
            if exc is None:
                raise
            exc.add_note(f"NetnsCluster cleanup also failed: {cleanup_error}")

    def open(self) -> None:
        """Build the hub and the hosts; see the class's resource handling."""
        cleanup_stale()
        self._open = True
        built = False
        try:
            names = [self.hub, *(host.name for host in self.hosts)]
            _command(["ip", "-batch", "-"], stdin="".join(f"netns add {n}\n" for n in names))
            hub = ["link set lo up", "link add br0 type bridge", "link set br0 up"]
            for host in self.hosts:
                hub += [
                    f"link add {host.hub_link} type veth peer name eth0 netns {host.name}",
                    f"link set {host.hub_link} master br0",
                    f"link set {host.hub_link} up",
                ]
            _command(["ip", "-n", self.hub, "-batch", "-"], stdin="\n".join(hub) + "\n")
            for host in self.hosts:
                node = [
                    "link set lo up",
                    f"addr add {host.address}/{self.network.prefixlen} dev eth0",
                    "link set eth0 up",
                ]
                _command(["ip", "-n", host.name, "-batch", "-"], stdin="\n".join(node) + "\n")
            built = True
        finally:
            if not built:
                with contextlib.suppress(NetnsError):
                    self.close()

    def close(self) -> None:
        """Kill the processes and delete the namespaces; safe to call twice.

        Raises:
            NetnsError: some namespace could not be deleted (after trying
                all of them).
        """
        if not self._open:
            return
        self._open = False
        for proc in self._processes:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(COMMAND_TIMEOUT)
        self._processes.clear()
        failures = []
        for name in [*(host.name for host in self.hosts), self.hub]:
            try:
                _delete_netns(name)
            except NetnsError as exc:
                failures.append(str(exc))
        if failures:
            raise NetnsError("; ".join(failures))

    def namespaces(self) -> list[str]:
        """The namespaces of this cluster that currently exist."""
        return [name for name in _netns_list() if name.startswith(self.prefix)]

    # ------------------------------------------------------------------- faults

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Split the hosts into groups that cannot reach each other.

        Hosts named in no group form one more group together (as in
        `shoal.testing.network.MemoryNetwork.partition`). This replaces any
        earlier partition or `Host.isolate_from`; loss and cuts stay.

        Args:
            groups: host indexes, e.g. ``[[0, 1], [2, 3, 4]]``.

        Raises:
            ValueError: an index is out of range or named twice; nothing
                changed.
        """
        group_of: dict[int, int] = {}
        for number, group in enumerate(groups, start=1):
            for index in group:
                if not 0 <= index < len(self.hosts):
                    raise ValueError(f"no host {index} in a cluster of {len(self.hosts)}")
                if index in group_of:
                    raise ValueError(f"host {index} is in two groups")
                group_of[index] = number
        self._blocked = {
            frozenset((a, b))
            for a, b in itertools.combinations(range(len(self.hosts)), 2)
            if group_of.get(a, 0) != group_of.get(b, 0)
        }
        self._apply_faults()

    def heal(self) -> None:
        """End every partition: all hosts reach each other again (loss and cuts stay)."""
        self._blocked = set()
        self._apply_faults()

    def _fault_rules(self, host: Host) -> str:
        """The iptables rules of ``host``'s fault chain, for iptables-restore."""
        others = [other for other in self.hosts if other is not host]
        rules = [
            f"-A {FAULT_CHAIN} -s {other.address}/32 -j DROP"
            for other in others
            if frozenset((host.index, other.index)) in self._blocked
        ]
        random_drop = "-m statistic --mode random --probability"
        if host.index in self._loss:
            rules.append(f"-A {FAULT_CHAIN} {random_drop} {self._loss[host.index]:.9f} -j DROP")
        rules.extend(
            f"-A {FAULT_CHAIN} -s {other.address}/32 "
            f"{random_drop} {self._loss[other.index]:.9f} -j DROP"
            for other in others
            if other.index in self._loss
        )
        return "".join(rule + "\n" for rule in rules)

    def _apply_faults(self) -> None:
        """Bring every host's fault chain in line with the fault state.

        Each chain is replaced whole with iptables-restore, so its rules are
        always exactly what the state says; only changed chains are written.
        """
        for host in self.hosts:
            rules = self._fault_rules(host)
            previous = self._applied.get(host.index)
            if rules == previous or (previous is None and not rules):
                continue
            # The first write creates the chain and hooks it into INPUT for
            # eth0 only, so traffic on lo is never dropped.
            hook = f"-A INPUT -i eth0 -j {FAULT_CHAIN}\n" if previous is None else ""
            script = f"*filter\n:{FAULT_CHAIN} - [0:0]\n{hook}{rules}COMMIT\n"
            _command(host.command(["iptables-restore", "-w", "--noflush"]), stdin=script)
            self._applied[host.index] = rules


class NodeInNamespace(NodeProcess):
    """A ``shoal node`` child process on a `Host`, at fixed ports on its address.

    Like `NodeProcess` (same ready file, stderr log, `stop`, `kill`, `tcp`,
    `http`), but the listeners bind ``<host address>:tcp_port`` and
    ``<host address>:http_port`` and the node broadcasts the host's address,
    so peers on other hosts reach it over the bridge. Fixed ports are safe
    because the namespace is the node's alone.

    Args:
        host: where the node runs.
        *args: extra ``shoal node`` flags (``--gossip-address``, ``--seed``...).
        tcp_port: the NSQ TCP port.
        http_port: the nsqd HTTP port.
        workdir: where the ready file and the stderr log go (a temporary
            directory when omitted).
        env: extra environment variables.
    """

    def __init__(
        self,
        host: Host,
        *args: str,
        tcp_port: int = 4150,
        http_port: int = 4151,
        workdir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(*args, workdir=workdir, env=env)
        self.host = host
        self.tcp_port = tcp_port
        self.http_port = http_port

    def command(self) -> list[str]:
        """The ``shoal node`` command line, before ``ip netns exec``."""
        address = self.host.address
        return [
            sys.executable, "-m", "shoal", "node",
            "--tcp-address", f"{address}:{self.tcp_port}",
            "--http-address", f"{address}:{self.http_port}",
            "--broadcast-address", address,
            "--ready-file", str(self.ready_file),
            *self.args,
        ]  # fmt: skip

    def start(self) -> NodeInNamespace:
        """Start the node in its namespace and wait until every listener is bound.

        Raises:
            RuntimeError: the process exited or did not get ready in
                `START_TIMEOUT`; the message carries its stderr.
        """
        self.ready_file.unlink(missing_ok=True)
        env = {**os.environ, **self.env}
        with self.stderr_path.open("ab") as stderr:
            self.proc = self.host.popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, env=env
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                self.addresses = json.loads(self.ready_file.read_text())
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"shoal node exited with {self.proc.returncode}:\n{self.stderr}")
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"shoal node did not get ready in {START_TIMEOUT}s:\n{self.stderr}")

    def http_get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """``GET path`` on this node's HTTP API, from inside its namespace."""
        return self.host.http_get(self.http_port, path, timeout)

    def __enter__(self) -> NodeInNamespace:
        return self.start()
