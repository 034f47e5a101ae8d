"""A blocking NSQ V2 client for transcript tests and benchmarks.

Tests read like nsq's own ``protocol_v2_test.go``: connect, ``identify``,
``sub``, ``rdy``, then ``read_frame`` and assert on what came back. Every
read has a timeout, so a server that stays silent fails the test instead of
hanging it.
"""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING, Any

from shoal.queue.commands import (
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
    encode_command,
)
from shoal.queue.frames import MAGIC_V2, FrameDecoder, FrameType
from shoal.queue.message import Message, decode_message

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["NsqConnection"]


class NsqConnection:
    """One raw V2 connection to a node.

    Args:
        address: ``(host, port)`` of the node's TCP listener.
        timeout: seconds any single read or write may take.
        magic: what to send first; None sends nothing (to test the check).
    """

    def __init__(
        self, address: tuple[str, int], *, timeout: float = 10.0, magic: bytes | None = MAGIC_V2
    ) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = FrameDecoder()
        if magic is not None:
            self.sock.sendall(magic)

    def send(self, *commands: Command) -> None:
        """Write commands back to back in one send."""
        self.sock.sendall(b"".join(encode_command(c) for c in commands))

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are."""
        self.sock.sendall(data)

    def read_frame(self, *, skip_heartbeats: bool = True) -> tuple[FrameType, bytes]:
        """Return the next frame (answering heartbeats with NOP unless asked not to).

        Raises:
            ConnectionError: the server closed the connection first.
            TimeoutError: nothing arrived within the timeout.
        """
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                ftype, data = frame
                if skip_heartbeats and ftype == FrameType.RESPONSE and data == b"_heartbeat_":
                    self.send(Nop())
                    continue
                return ftype, data
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.decoder.receive_data(chunk)

    def read_response(self) -> bytes:
        """The next frame, which must be a response frame."""
        ftype, data = self.read_frame()
        if ftype != FrameType.RESPONSE:
            raise AssertionError(f"expected a response, got {ftype.name} {data!r}")
        return data

    def read_error(self) -> bytes:
        """The next frame, which must be an error frame."""
        ftype, data = self.read_frame()
        if ftype != FrameType.ERROR:
            raise AssertionError(f"expected an error, got {ftype.name} {data!r}")
        return data

    def read_message(self) -> Message:
        """The next frame, which must be a message frame."""
        ftype, data = self.read_frame()
        if ftype != FrameType.MESSAGE:
            raise AssertionError(f"expected a message, got {ftype.name} {data!r}")
        return decode_message(data)

    def is_closed(self) -> bool:
        """True when the server has closed the connection (reads EOF)."""
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def identify(self, **fields: Any) -> bytes:
        """IDENTIFY with ``fields`` and return the response data."""
        self.send(Identify(json.dumps(fields).encode()))
        return self.read_response()

    def sub(self, topic: str, channel: str) -> None:
        """SUB and expect OK."""
        self.send(Sub(topic, channel))
        data = self.read_response()
        if data != b"OK":
            raise AssertionError(f"SUB answered {data!r}")

    def rdy(self, count: int) -> None:
        """Send RDY (no reply)."""
        self.send(Rdy(count))

    def pub(self, topic: str, body: bytes) -> None:
        """PUB and expect OK."""
        self.send(Pub(topic, body))
        data = self.read_response()
        if data != b"OK":
            raise AssertionError(f"PUB answered {data!r}")

    def mpub(self, topic: str, bodies: list[bytes]) -> None:
        """MPUB and expect OK."""
        self.send(Mpub(topic, bodies))
        data = self.read_response()
        if data != b"OK":
            raise AssertionError(f"MPUB answered {data!r}")

    def dpub(self, topic: str, defer_ms: int, body: bytes) -> None:
        """DPUB and expect OK."""
        self.send(Dpub(topic, defer_ms, body))
        data = self.read_response()
        if data != b"OK":
            raise AssertionError(f"DPUB answered {data!r}")

    def fin(self, msg_id: bytes) -> None:
        """FIN (no reply unless it fails)."""
        self.send(Fin(msg_id))

    def req(self, msg_id: bytes, timeout_ms: int) -> None:
        """REQ (no reply unless it fails)."""
        self.send(Req(msg_id, timeout_ms))

    def touch(self, msg_id: bytes) -> None:
        """TOUCH (no reply unless it fails)."""
        self.send(Touch(msg_id))

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def __enter__(self) -> NsqConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
