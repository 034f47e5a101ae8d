"""Reference responders: the least a server spends per publish round trip here.

    python bench/floor.py c PORT         # C, blocking reads (built with cc)
    python bench/floor.py go PORT        # Go's netpoller, as nsqd (built with go)
    python bench/floor.py epoll PORT     # Python, a plain epoll loop
    python bench/floor.py trio PORT      # Python under trio, shoal's reader pattern

Each listens on 127.0.0.1:PORT (C and epoll serve one connection at a
time) and answers ``OK`` to every ``PUB`` or ``MPUB`` (a line, a 4-byte
size, that many bytes) after the V2 magic, and does nothing else: no topic,
no message, no ID. What it spends per
round trip is the cost of the round trip itself on this machine: the
system calls, the loopback delivery that wakes the client, and the
sleeping and waking of the server, plus the runtime's scheduler in the Go
one (nsqd's, and the nearest stand-in for nsqd where there is none) and the
event loop in the Python ones. The compiled ones are built when used, and
are left out where their compiler is missing (Debian: gcc, golang-go).

`compare.py --floor` runs them beside shoal with the same client, in the
same window, so the single-message rows (``pub-1``, ``mpub-1``) can be read
against what the machine allows at that moment: its speed swings by a
factor of two from one hour to the next, and an absolute figure alone says
little.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from shoal.queue.frames import OK_FRAME

if TYPE_CHECKING:
    from collections.abc import Iterator

KINDS = ("c", "go", "epoll", "trio")
#: The compiled responders: the compiler, and its arguments before the output path.
COMPILED = {"c": ("cc", ["-O2", "-o"]), "go": ("go", ["build", "-o"])}
READ_SIZE = 256 * 1024


class Answerer:
    """Counts the complete publish commands in what it is fed; the magic goes first."""

    def __init__(self) -> None:
        self.buf = b""
        self.magic = False

    def feed(self, data: bytes) -> int:
        """Take ``data``; return how many commands it completed."""
        buf = self.buf + data
        pos = 0
        if not self.magic:
            if len(buf) < 4:
                self.buf = buf
                return 0
            pos = 4
            self.magic = True
        done = 0
        while True:
            newline = buf.find(b"\n", pos)
            if newline < 0 or len(buf) < newline + 5:
                break
            end = newline + 5 + int.from_bytes(buf[newline + 1 : newline + 5], "big")
            if len(buf) < end:
                break
            pos = end
            done += 1
        self.buf = buf[pos:]
        return done

    def answer(self, fd: int) -> bool:
        """Read what ``fd`` holds and answer what it completes; False at end of stream.

        Raises:
            BlockingIOError: nothing to read yet (the caller waits, its own way).
        """
        data = os.read(fd, READ_SIZE)
        if not data:
            return False
        done = self.feed(data)
        if done:
            os.write(fd, OK_FRAME * done)
        return True


def _listen(port: int) -> socket.socket:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    return server


def serve_epoll(port: int) -> None:
    """One connection at a time: read until empty, then ``epoll_wait``."""
    server = _listen(port)
    while True:
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setblocking(False)
        fd = conn.fileno()
        answerer = Answerer()
        with select.epoll() as poller:
            poller.register(fd, select.EPOLLIN)
            while True:
                try:
                    if not answerer.answer(fd):
                        break
                except BlockingIOError:
                    poller.poll()
        conn.close()


def serve_trio(port: int) -> None:
    """As shoal's reader does: read straight from the socket, wait in trio when empty."""
    import trio

    async def handle(stream: trio.SocketStream) -> None:
        fd = stream.socket.fileno()
        answerer = Answerer()
        while True:
            try:
                if not answerer.answer(fd):
                    return
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)

    async def main() -> None:
        await trio.serve_tcp(handle, port, host="127.0.0.1")

    trio.run(main)


@contextlib.contextmanager
def compiled(kind: str) -> Iterator[list[str] | None]:
    """The command (before the port) that runs ``floor.<kind>`` built; None without its compiler."""
    compiler, args = COMPILED[kind]
    path = shutil.which(compiler)
    if path is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="shoal-floor-") as tmp:
        binary = Path(tmp) / "floor"
        source = Path(__file__).with_name(f"floor.{kind}")
        env = {**os.environ, "GOCACHE": str(Path(tmp) / "cache"), "GOPATH": str(Path(tmp) / "go")}
        subprocess.run([path, *args, str(binary), str(source)], check=True, cwd=tmp, env=env)
        yield [str(binary)]


def command(kind: str) -> list[str]:
    """The argv prefix (before the port) of the Python responder ``kind``."""
    return [sys.executable, str(Path(__file__).resolve()), kind]


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in KINDS or not sys.argv[2].isdigit():
        sys.exit(f"usage: floor.py {{{'|'.join(KINDS)}}} PORT")
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind in COMPILED:
        with compiled(kind) as argv:
            if argv is None:
                sys.exit(f"floor.py: no {COMPILED[kind][0]} on PATH to build floor.{kind}")
            with contextlib.suppress(KeyboardInterrupt):
                subprocess.run([*argv, str(port)], check=False)
        return
    with contextlib.suppress(KeyboardInterrupt):
        (serve_epoll if kind == "epoll" else serve_trio)(port)


if __name__ == "__main__":
    main()
