"""Client-to-server commands of the NSQ TCP protocol V2 (docs/nsq.md §1.1, §1.3).

One frozen `msgspec.Struct` per wire verb, `encode_command` to write them, and
`CommandDecoder`, a sans-IO parser in the style of h11: the connection feeds
it bytes with `CommandDecoder.receive_data` and pulls commands with
`CommandDecoder.next_command` until it returns ``None`` (need more data).

Rules:

1. The decoder checks everything that can be checked without connection
   state, with nsqd's codes and wording: parameter counts, topic and channel
   names, body and message sizes, number syntax and ranges, message ID
   lengths. Connection state (``cannot SUB in current state``), auth, TLS
   policy and IDENTIFY's JSON are the caller's business.
2. Every error it raises is a `FatalClientError`: nsqd closes the connection
   after each of them, so the decoder is unusable afterwards and says so with
   `LocalProtocolError`.
3. A declared length is checked the moment its four bytes arrive, before
   any of the body it announces is buffered, so a peer cannot make us hold
   more than ``max_msg_size`` / ``max_body_size`` for a command.
4. Results do not depend on how the stream was split: a command cut at any
   byte boundary decodes to the same thing once complete, and an error is
   raised at the same point of the stream.

Theory of operation. The decoder is a small state machine over a buffer
with a read offset: MAGIC, then LINE, and for verbs with a
body, BODY_SIZE then BODY, or for MPUB, MPUB_SIZE, MPUB_COUNT then
MPUB_MESSAGES. Each state knows exactly how many bytes it needs, so waiting
for more data costs O(1) and nothing is parsed twice. The buffer is the
``bytes`` object just read whenever everything before it was consumed (the
usual case: clients write whole commands), so lines and bodies are sliced
straight out of what the socket returned; only a command split across reads
is collected in a ``bytearray``. MPUB is the hot path: once at least one
message is complete, every body of the available part of the batch is
sliced in one loop, validating each size as it goes. FIN is the consumer's
hot path: `CommandDecoder.next_fins` takes a whole run of FIN lines at once.
Valid topic names are remembered per connection, so a publisher's
repeated topic is checked once.

Departures from nsqd, all for bounded memory:

- a command line longer than `MAX_LINE_SIZE` is refused with ``E_INVALID``
  (nsqd reads lines through a 16 KiB buffer and drops the connection without
  an error frame beyond it; the longest legal line is about 140 bytes);
- nsqd does not compare MPUB's declared body length with the messages that
  follow, so it would buffer up to ``count * max_msg_size``; we accept any
  declared length as nsqd does but refuse a batch whose messages add up to
  more than ``max_body_size`` (``E_BAD_BODY``), which no correct client sends.

Numbers are parsed as nsqd's ``ByteToBase10`` does: ASCII digits only (so no
sign), and an empty parameter reads as 0.
"""

from __future__ import annotations

import functools
import struct
from typing import TYPE_CHECKING, TypeAlias

import msgspec

from shoal.errors import LocalProtocolError
from shoal.queue.errors import (
    E_BAD_BODY,
    E_BAD_CHANNEL,
    E_BAD_MESSAGE,
    E_BAD_PROTOCOL,
    E_BAD_TOPIC,
    E_INVALID,
    FatalClientError,
)
from shoal.queue.frames import MAGIC_V2
from shoal.queue.message import ID_SIZE
from shoal.queue.names import is_valid_channel_name, is_valid_topic_name

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "MAX_LINE_SIZE",
    "Auth",
    "Cls",
    "Command",
    "CommandDecoder",
    "Dpub",
    "Fin",
    "Identify",
    "Mpub",
    "Nop",
    "Pub",
    "Rdy",
    "Req",
    "Sub",
    "Touch",
    "encode_command",
]

#: Longest command line accepted, ``\r`` included, ``\n`` excluded. It must stay
#: below Python's 4300-digit limit on ``int(str)`` so that parsing a number
#: taken from a line can never raise.
MAX_LINE_SIZE = 4096


class Identify(msgspec.Struct, frozen=True):
    """``IDENTIFY``: client metadata and feature negotiation.

    Attributes:
        body: the raw JSON object; its keys are validated by the connection.
    """

    body: bytes


class Auth(msgspec.Struct, frozen=True):
    """``AUTH``: the secret to check with the auth server."""

    secret: bytes


class Sub(msgspec.Struct, frozen=True):
    """``SUB``: subscribe this connection to a channel of a topic."""

    topic: str
    channel: str


class Pub(msgspec.Struct, frozen=True):
    """``PUB``: publish one message."""

    topic: str
    body: bytes


class Mpub(msgspec.Struct, frozen=True):
    """``MPUB``: publish a batch atomically.

    Attributes:
        topic: the topic to publish to.
        bodies: the message bodies in publish order; a list (not a tuple), so
            the command is equal to one built from a list but not hashable.
    """

    topic: str
    bodies: list[bytes]


class Dpub(msgspec.Struct, frozen=True):
    """``DPUB``: publish one message held back for ``defer_ms`` milliseconds."""

    topic: str
    defer_ms: int
    body: bytes


class Rdy(msgspec.Struct, frozen=True):
    """``RDY``: the most messages this connection will hold in flight."""

    count: int


class Fin(msgspec.Struct, frozen=True):
    """``FIN``: the message with this 16-byte ID was handled."""

    id: bytes


class Req(msgspec.Struct, frozen=True):
    """``REQ``: put the message back, deliverable again after ``timeout_ms``.

    Attributes:
        id: the 16-byte message ID.
        timeout_ms: as sent, not yet clamped to ``0..max_req_timeout``; the
            connection clamps it, as nsqd does (no error).
    """

    id: bytes
    timeout_ms: int


class Touch(msgspec.Struct, frozen=True):
    """``TOUCH``: extend the deadline of the message with this 16-byte ID."""

    id: bytes


class Cls(msgspec.Struct, frozen=True):
    """``CLS``: stop delivering; the server answers ``CLOSE_WAIT``."""


class Nop(msgspec.Struct, frozen=True):
    """``NOP``: does nothing; clients send it to answer heartbeats."""


Command: TypeAlias = Identify | Auth | Sub | Pub | Mpub | Dpub | Rdy | Fin | Req | Touch | Cls | Nop

_INT32 = struct.Struct(">i")
_TWO_INT32 = struct.Struct(">ii")


def _sized(body: bytes) -> bytes:
    return _INT32.pack(len(body)) + body


def encode_command(cmd: Command) -> bytes:
    """Return the wire bytes of ``cmd`` (without the ``"  V2"`` magic).

    Nothing is validated, so tests can also write commands a server must
    refuse; names are encoded as UTF-8.
    """
    match cmd:
        case Pub(topic, body):
            return b"PUB " + topic.encode() + b"\n" + _sized(body)
        case Mpub(topic, bodies):
            payload = b"".join([_INT32.pack(len(body)) + body for body in bodies])
            head = _TWO_INT32.pack(len(payload) + 4, len(bodies))
            return b"MPUB " + topic.encode() + b"\n" + head + payload
        case Dpub(topic, defer_ms, body):
            return b"DPUB %s %d\n" % (topic.encode(), defer_ms) + _sized(body)
        case Rdy(count):
            return b"RDY %d\n" % count
        case Fin(msg_id):
            return b"FIN " + msg_id + b"\n"
        case Req(msg_id, timeout_ms):
            return b"REQ %s %d\n" % (msg_id, timeout_ms)
        case Touch(msg_id):
            return b"TOUCH " + msg_id + b"\n"
        case Sub(topic, channel):
            return b"SUB %s %s\n" % (topic.encode(), channel.encode())
        case Identify(body):
            return b"IDENTIFY\n" + _sized(body)
        case Auth(secret):
            return b"AUTH\n" + _sized(secret)
        case Cls():
            return b"CLS\n"
        case Nop():
            return b"NOP\n"


# --- Helpers that reproduce nsqd's parsing and wording ----------------------

_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    '"': '\\"',
    "\\": "\\\\",
}


def _go_quote(raw: bytes) -> str:
    """Quote ``raw`` as Go's ``%q`` does, for descriptions that embed a name."""
    out = ['"']
    for char in raw.decode("utf-8", "surrogateescape"):
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not valid UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif char.isprintable():
            out.append(char)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _text(raw: bytes) -> str:
    """Render raw parameter bytes as Go's ``%s`` would, keeping bad bytes visible."""
    return raw.decode("utf-8", "backslashreplace")


def _parse_base10(raw: bytes) -> int | None:
    """Parse like nsqd's ``ByteToBase10``: ASCII digits only, empty is 0."""
    if not raw:
        return 0
    if not raw.isdigit():  # bytes.isdigit is ASCII-only
        return None
    return int(raw)


def _fatal(code: str, description: str) -> FatalClientError:
    return FatalClientError(code, description)


def _topic(verb: str, raw: bytes, prefix: str = "") -> str:
    name = raw.decode("ascii") if raw.isascii() else ""
    if not is_valid_topic_name(name):
        raise _fatal(E_BAD_TOPIC, f"{prefix}{verb} topic name {_go_quote(raw)} is not valid")
    return name


def _message_id(raw: bytes) -> bytes:
    if len(raw) != ID_SIZE:
        raise _fatal(E_INVALID, "invalid message ID")
    return raw


# --- The decoder --------------------------------------------------------------

# Decoder states; see the module docstring.
_MAGIC = 0
_LINE = 1
_BODY_SIZE = 2
_BODY = 3
_MPUB_SIZE = 4
_MPUB_COUNT = 5
_MPUB_MESSAGES = 6

# Compact the receive buffer once this much of it has been consumed.
_COMPACT_AT = 64 * 1024

# MPUB messages of equal size cut by one struct call at most (bounds the
# formats cached by `_bodies_struct`).
_STRUCT_RUN = 256


@functools.lru_cache(maxsize=64)
def _bodies_struct(size: int, count: int) -> struct.Struct:
    """A struct that skips each size field and returns the ``count`` bodies."""
    return struct.Struct(f"4x{size}s" * count)


def _equal_sized_run(data: bytes, start: int, count: int, size: int) -> int:
    """How many of ``count`` MPUB messages from ``start`` all have body ``size``.

    The answer is ``count`` or 0: each byte of the size field is compared
    for all messages at once with a strided slice.
    """
    field = _INT32.pack(size)
    stride = 4 + size
    stop = start + count * stride
    for index in range(4):
        if data[start + index : stop : stride] != field[index : index + 1] * count:
            return 0
    return count


# Valid topic names a decoder remembers (it forgets them all when full).
_NAMES_REMEMBERED = 64

# A plain FIN line (`CommandDecoder.next_fins`): b"FIN ", the ID, b"\n"; and
# its fixed bytes as (offset, byte).
_FIN_SIZE = 4 + ID_SIZE + 1
_FIN_FIXED = ((0, b"F"), (1, b"I"), (2, b"N"), (3, b" "), (_FIN_SIZE - 1, b"\n"))


class CommandDecoder:
    """Turns the bytes a client sends into `Command` objects (server side).

    Args:
        max_msg_size: largest PUB, DPUB or single MPUB message body in bytes.
        max_body_size: largest IDENTIFY, AUTH or whole MPUB body in bytes.
        max_req_timeout_ms: largest DPUB deferral, in milliseconds.
        max_rdy_count: largest RDY count.
        expect_magic: whether the stream starts with ``"  V2"``; false when the
            caller has already read and checked it.

    Error handling:
        Every error is a `FatalClientError` carrying nsqd's code and wording;
        send ``err.frame()`` and close the connection. After one, every method
        raises `LocalProtocolError`.

    Resource handling:
        The decoder holds what it was fed and has not returned yet. Declared
        sizes are checked before their data is waited for, so as long as the
        caller drains `next_command` after each `receive_data`, it never holds
        more than one read plus the limits above.
    """

    __slots__ = (
        "_bodies",
        "_buf",
        "_defer",
        "_errored",
        "_handlers",
        "_max_body_size",
        "_max_mpub_count",
        "_max_msg_size",
        "_max_rdy_count",
        "_max_req_timeout_ms",
        "_mpub_count",
        "_mpub_declared",
        "_mpub_total",
        "_names",
        "_need",
        "_pending",
        "_pos",
        "_scan",
        "_state",
        "_topic",
        "precheck",
    )

    def __init__(
        self,
        *,
        max_msg_size: int,
        max_body_size: int,
        max_req_timeout_ms: int,
        max_rdy_count: int,
        expect_magic: bool = True,
    ) -> None:
        if max_msg_size < 1 or max_body_size < 5:
            raise LocalProtocolError("max_msg_size must be >= 1 and max_body_size >= 5")
        if max_req_timeout_ms < 0 or max_rdy_count < 0:
            raise LocalProtocolError("max_req_timeout_ms and max_rdy_count must not be negative")
        self._max_msg_size = max_msg_size
        self._max_body_size = max_body_size
        self._max_req_timeout_ms = max_req_timeout_ms
        self._max_rdy_count = max_rdy_count
        # 4 bytes of count, then at least 5 bytes (size + one byte) per message.
        self._max_mpub_count = (max_body_size - 4) // 5
        # bytes while it is one read consumed in place, else a bytearray.
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._scan = 0  # where to resume looking for b"\n"
        self._state = _MAGIC if expect_magic else _LINE
        self._errored = False
        # What the line announced, while its body is awaited.
        self._pending = ""  # verb of a command with a body
        self._topic = ""
        self._defer = 0
        self._need = 0  # body size
        self._bodies: list[bytes] = []
        self._mpub_count = 0
        self._mpub_total = 0
        self._mpub_declared = 0
        self._names: dict[bytes, str] = {}  # valid topic names seen, raw -> name
        #: Called with each command line's verb before its parameters are
        #: parsed, so a state error wins over a parameter error as in nsqd
        #: (`ClientV2.check_state`); it raises `FatalClientError` to refuse.
        self.precheck: Callable[[bytes], None] | None = None
        self._handlers: dict[bytes, Callable[[list[bytes]], Command | None]] = {
            b"FIN": self._line_fin,
            b"RDY": self._line_rdy,
            b"REQ": self._line_req,
            b"PUB": self._line_pub,
            b"MPUB": self._line_mpub,
            b"DPUB": self._line_dpub,
            b"NOP": self._line_nop,
            b"TOUCH": self._line_touch,
            b"SUB": self._line_sub,
            b"CLS": self._line_cls,
            b"AUTH": self._line_auth,
            b"IDENTIFY": self._line_identify,
        }

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes read from the connection; nothing is parsed yet.

        End of stream needs no call: the connection handles EOF itself.

        Raises:
            LocalProtocolError: an earlier call raised `FatalClientError`.
        """
        if self._errored:
            raise LocalProtocolError("command decoder is unusable after a fatal client error")
        buf = self._buf
        pos = self._pos
        if pos >= len(buf):
            # Everything before was consumed: parse the new bytes where they are.
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
            self._scan = 0
        elif type(buf) is bytes:
            # A command continues in this read: collect it in a bytearray.
            with memoryview(buf) as view:
                rest = bytearray(view[pos:])
            rest += data
            self._buf = rest
            self._pos = 0
            self._scan = max(0, self._scan - pos)
        else:
            buf += data

    def next_command(self) -> Command | None:
        """Return the next complete command, or ``None`` when more data is needed.

        Raises:
            FatalClientError: the client broke the protocol (bad magic, unknown
                verb, bad parameters, bad sizes); the decoder is then unusable.
            LocalProtocolError: an earlier call raised `FatalClientError`.
        """
        if self._errored:
            raise LocalProtocolError("command decoder is unusable after a fatal client error")
        if self._pos >= len(self._buf):
            # Every state waits for at least one more byte.
            return None
        try:
            command = self._next()
        except FatalClientError:
            self._errored = True
            raise
        self._compact()
        return command

    def next_fins(self) -> list[bytes]:
        r"""Consume the run of plain FIN commands next in the stream; return their IDs.

        A plain FIN is the line ``FIN <id>\n`` with a 16-byte ID holding no
        space or newline and not ending in ``\r``: exactly the lines for which
        `next_command` would return a `Fin` without looking further. The
        result equals what repeated `next_command` calls would return as long
        as they returned `Fin`, so a caller may call this first and then
        `next_command` for whatever follows (another command, a FIN with an
        odd spelling or an error), in a loop. A consumer answers thousands of
        messages per read, and this handles them in a few passes over the
        bytes instead of a parse per line.

        Returns:
            The IDs in stream order; empty when the next command is not a plain
            FIN or not complete yet.

        Raises:
            LocalProtocolError: an earlier call raised `FatalClientError`.
        """
        if self._errored:
            raise LocalProtocolError("command decoder is unusable after a fatal client error")
        buf = self._buf
        pos = self._pos
        count = (len(buf) - pos) // _FIN_SIZE
        if self._state != _LINE or count == 0 or not buf.startswith(b"FIN ", pos):
            return []
        data = bytes(buf[pos : pos + count * _FIN_SIZE])
        # The fixed bytes of each line, one column at a time: the run is as
        # long as the shortest column prefix that holds the right byte.
        for offset, char in _FIN_FIXED:
            column = data[offset::_FIN_SIZE]
            count = min(count, len(column) - len(column.lstrip(char)))
        size = count * _FIN_SIZE
        # With the fixed bytes in place, each line holds one space and one
        # newline exactly when its ID has none.
        if (
            data.count(b" ", 0, size) != count
            or data.count(b"\n", 0, size) != count
            or b"\r" in data[_FIN_SIZE - 2 : size : _FIN_SIZE]
        ):
            count = self._plain_fin_prefix(data, count)
            size = count * _FIN_SIZE
        if count == 0:
            return []
        # Every "FIN " is a line prefix: IDs hold no space.
        ids = data[:size].replace(b"FIN ", b"").split(b"\n")
        ids.pop()  # after the last newline
        self._pos = pos + size
        self._scan = self._pos
        self._compact()
        return ids

    @staticmethod
    def _plain_fin_prefix(data: bytes, count: int) -> int:
        """How many of the first ``count`` lines of ``data`` have a plain ID."""
        for index in range(count):
            start = index * _FIN_SIZE + 4
            msg_id = data[start : start + ID_SIZE]
            if b" " in msg_id or b"\n" in msg_id or msg_id.endswith(b"\r"):
                return index
        return count

    def _compact(self) -> None:
        pos = self._pos
        if pos == 0:
            return
        buf = self._buf
        if pos == len(buf):
            self._buf = b""
        elif pos >= _COMPACT_AT and type(buf) is bytearray:
            # (A bytes buffer is one read: it goes as a whole once consumed.)
            del buf[:pos]
        else:
            return
        self._pos = 0
        self._scan = max(0, self._scan - pos)

    def _take(self, size: int) -> bytes:
        buf = self._buf
        pos = self._pos
        end = pos + size
        self._pos = end
        if type(buf) is bytes:
            return buf[pos:end]
        with memoryview(buf) as view:
            return view[pos:end].tobytes()

    def _next(self) -> Command | None:
        buf = self._buf
        # Each pass returns or moves to a later state (LINE only to a body
        # state), so the longest path, MAGIC LINE MPUB_SIZE MPUB_COUNT
        # MPUB_MESSAGES, bounds the loop.
        for _ in range(8):
            state = self._state
            avail = len(buf) - self._pos
            if state == _LINE:
                command = self._next_line()
                if command is not None or self._state == _LINE:
                    return command
                continue
            if state == _MPUB_MESSAGES:
                return self._next_mpub_messages()
            if state == _BODY:
                if avail < self._need:
                    return None
                body = self._take(self._need)
                self._state = _LINE
                return self._finish_body(body)
            if avail < 4:
                return None
            if state == _MAGIC:
                magic = self._take(4)
                if magic != MAGIC_V2:
                    raise _fatal(E_BAD_PROTOCOL, f"client sent bad magic {magic!r}")
                self._state = _LINE
                continue
            (value,) = _INT32.unpack_from(buf, self._pos)
            self._pos += 4
            if state == _BODY_SIZE:
                self._check_body_size(value)
                self._need = value
                self._state = _BODY
            elif state == _MPUB_SIZE:
                if value <= 0:
                    raise _fatal(E_BAD_BODY, f"MPUB invalid body size {value}")
                if value > self._max_body_size:
                    raise _fatal(E_BAD_BODY, f"MPUB body too big {value} > {self._max_body_size}")
                self._mpub_declared = value - 4
                self._state = _MPUB_COUNT
            else:  # _MPUB_COUNT
                if value <= 0 or value > self._max_mpub_count:
                    raise _fatal(E_BAD_BODY, f"MPUB invalid message count {value}")
                self._mpub_count = value
                self._mpub_total = 4
                self._bodies = []
                self._state = _MPUB_MESSAGES
        raise AssertionError("unreachable: the decoder state machine did not settle")

    def _next_line(self) -> Command | None:
        buf = self._buf
        pos = self._pos
        # Resume the search where the last one stopped, but never inside a
        # body consumed since then (bodies may contain newlines).
        scan = self._scan
        newline = buf.find(b"\n", scan if scan > pos else pos)
        if newline < 0:
            if len(buf) - pos > MAX_LINE_SIZE:
                raise _fatal(E_INVALID, f"command line longer than {MAX_LINE_SIZE} bytes")
            self._scan = len(buf)
            return None
        if newline - pos > MAX_LINE_SIZE:
            raise _fatal(E_INVALID, f"command line longer than {MAX_LINE_SIZE} bytes")
        line = buf[pos:newline]
        if type(line) is not bytes:
            line = bytes(line)
        self._pos = self._scan = newline + 1
        if line[-1:] == b"\r":
            line = line[:-1]
        params = line.split(b" ")
        handler = self._handlers.get(params[0])
        if handler is None:
            raise _fatal(E_INVALID, f"invalid command {_text(params[0])}")
        if self.precheck is not None:
            self.precheck(params[0])
        return handler(params)

    def _topic_name(self, verb: str, raw: bytes, prefix: str = "") -> str:
        name = self._names.get(raw)
        if name is None:
            name = _topic(verb, raw, prefix)
            if len(self._names) >= _NAMES_REMEMBERED:
                self._names.clear()
            self._names[raw] = name
        return name

    # Line handlers: return the command, or None after arming a body state.

    def _line_identify(self, params: list[bytes]) -> Command | None:
        self._pending = "IDENTIFY"
        self._state = _BODY_SIZE
        return None

    def _line_auth(self, params: list[bytes]) -> Command | None:
        if len(params) != 1:
            raise _fatal(E_INVALID, "AUTH invalid number of parameters")
        self._pending = "AUTH"
        self._state = _BODY_SIZE
        return None

    def _line_sub(self, params: list[bytes]) -> Command | None:
        if len(params) < 3:
            raise _fatal(E_INVALID, "SUB insufficient number of parameters")
        topic = _topic("SUB", params[1])
        raw = params[2]
        channel = raw.decode("ascii") if raw.isascii() else ""
        if not is_valid_channel_name(channel):
            raise _fatal(E_BAD_CHANNEL, f"SUB channel name {_go_quote(raw)} is not valid")
        return Sub(topic, channel)

    def _line_pub(self, params: list[bytes]) -> Command | None:
        if len(params) < 2:
            raise _fatal(E_INVALID, "PUB insufficient number of parameters")
        topic = self._topic = self._topic_name("PUB", params[1])
        # When the body is already here and its size is valid, the command is
        # complete: skip the BODY_SIZE and BODY states (any error is left to
        # them, so it is raised exactly as it would be).
        buf = self._buf
        pos = self._pos
        if len(buf) - pos >= 4:
            (size,) = _INT32.unpack_from(buf, pos)
            if 0 < size <= self._max_msg_size and len(buf) - pos - 4 >= size:
                self._pos = pos + 4
                return Pub(topic, self._take(size))
        self._pending = "PUB"
        self._state = _BODY_SIZE
        return None

    def _line_mpub(self, params: list[bytes]) -> Command | None:
        if len(params) < 2:
            raise _fatal(E_INVALID, "MPUB insufficient number of parameters")
        # nsqd repeats the code inside this one description; clients may match it.
        self._topic = self._topic_name("MPUB", params[1], prefix=f"{E_BAD_TOPIC} ")
        # When the body size and message count are here and valid, go straight
        # to the messages, as the MPUB_SIZE and MPUB_COUNT states would (any
        # error is left to them, so it is raised exactly as it would be).
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail >= 8:
            declared, count = _TWO_INT32.unpack_from(buf, pos)
            if 0 < declared <= self._max_body_size and 0 < count <= self._max_mpub_count:
                if count == 1 and avail >= 12:
                    # A batch of one, whole and valid: the one publisher's
                    # hot path (go-nsq's bench_writer sends nothing else).
                    (size,) = _INT32.unpack_from(buf, pos + 8)
                    if (
                        0 < size <= self._max_msg_size
                        and 8 + size <= self._max_body_size
                        and avail - 12 >= size
                    ):
                        self._pos = pos + 12
                        return Mpub(self._topic, [self._take(size)])
                self._pos = pos + 8
                self._mpub_declared = declared - 4
                self._mpub_count = count
                self._mpub_total = 4
                self._bodies = []
                self._state = _MPUB_MESSAGES
                return self._next_mpub_messages()
        self._state = _MPUB_SIZE
        return None

    def _line_dpub(self, params: list[bytes]) -> Command | None:
        if len(params) < 3:
            raise _fatal(E_INVALID, "DPUB insufficient number of parameters")
        self._topic = self._topic_name("DPUB", params[1])
        defer_ms = _parse_base10(params[2])
        if defer_ms is None:
            raise _fatal(E_INVALID, f"DPUB could not parse timeout {_text(params[2])}")
        if defer_ms > self._max_req_timeout_ms:
            raise _fatal(
                E_INVALID,
                f"DPUB timeout {defer_ms} out of range 0-{self._max_req_timeout_ms}",
            )
        self._defer = defer_ms
        self._pending = "DPUB"
        self._state = _BODY_SIZE
        return None

    def _line_rdy(self, params: list[bytes]) -> Command | None:
        count = 1
        if len(params) > 1:
            parsed = _parse_base10(params[1])
            if parsed is None:
                raise _fatal(E_INVALID, f"RDY could not parse count {_text(params[1])}")
            count = parsed
        if count > self._max_rdy_count:
            raise _fatal(E_INVALID, f"RDY count {count} out of range 0-{self._max_rdy_count}")
        return Rdy(count)

    def _line_fin(self, params: list[bytes]) -> Command | None:
        if len(params) < 2:
            raise _fatal(E_INVALID, "FIN insufficient number of params")
        return Fin(_message_id(params[1]))

    def _line_req(self, params: list[bytes]) -> Command | None:
        if len(params) < 3:
            raise _fatal(E_INVALID, "REQ insufficient number of params")
        msg_id = _message_id(params[1])
        timeout_ms = _parse_base10(params[2])
        if timeout_ms is None:
            raise _fatal(E_INVALID, f"REQ could not parse timeout {_text(params[2])}")
        return Req(msg_id, timeout_ms)

    def _line_touch(self, params: list[bytes]) -> Command | None:
        if len(params) < 2:
            raise _fatal(E_INVALID, "TOUCH insufficient number of params")
        return Touch(_message_id(params[1]))

    def _line_cls(self, params: list[bytes]) -> Command | None:
        return Cls()

    def _line_nop(self, params: list[bytes]) -> Command | None:
        return Nop()

    # Bodies.

    def _check_body_size(self, size: int) -> None:
        verb = self._pending
        if verb in ("PUB", "DPUB"):
            if size <= 0:
                raise _fatal(E_BAD_MESSAGE, f"{verb} invalid message body size {size}")
            if size > self._max_msg_size:
                raise _fatal(E_BAD_MESSAGE, f"{verb} message too big {size} > {self._max_msg_size}")
        else:  # IDENTIFY, AUTH: nsqd checks the upper bound first here
            if size > self._max_body_size:
                raise _fatal(E_BAD_BODY, f"{verb} body too big {size} > {self._max_body_size}")
            if size <= 0:
                raise _fatal(E_BAD_BODY, f"{verb} invalid body size {size}")

    def _finish_body(self, body: bytes) -> Command:
        verb = self._pending
        if verb == "PUB":
            return Pub(self._topic, body)
        if verb == "DPUB":
            return Dpub(self._topic, self._defer, body)
        if verb == "IDENTIFY":
            return Identify(body)
        return Auth(body)

    def _next_mpub_messages(self) -> Command | None:
        buf = self._buf
        unpack = _INT32.unpack_from
        max_msg = self._max_msg_size
        bodies = self._bodies
        count = self._mpub_count
        # Bounded: every pass takes at least one message or returns.
        while len(bodies) < count:
            pos = self._pos
            avail = len(buf) - pos
            if avail < 4:
                return None
            # Check the next size before waiting for (or copying) its body.
            (size,) = unpack(buf, pos)
            self._check_mpub_message(size, self._mpub_total, len(bodies))
            if avail < 4 + size:
                return None
            # Slice every body of what is left of the batch (as declared, at
            # least this message): straight from a bytes buffer, else from
            # one copy of that part.
            window = min(avail, max(self._mpub_declared, 4 + size))
            data: bytes
            if type(buf) is bytes:
                data = buf
                base = pos
            else:
                with memoryview(buf) as view:
                    data = view[pos : pos + window].tobytes()
                base = 0
            end = base + window
            # A message ending past this offset makes the batch exceed max_body_size.
            body_limit = base + self._max_body_size - self._mpub_total
            offset = base
            # Equal sizes (the common batch): check every size field at once
            # and let struct cut the bodies.
            stride = 4 + size
            same = min(count - len(bodies), window // stride)
            if same > 1 and base + same * stride <= body_limit:
                same = _equal_sized_run(data, base, same, size)
                while same:
                    run = min(same, _STRUCT_RUN)
                    bodies += _bodies_struct(size, run).unpack_from(data, offset)
                    offset += run * stride
                    same -= run
            for _ in range(count - len(bodies)):
                if end - offset < 4:
                    break
                (size,) = unpack(data, offset)
                start = offset + 4
                stop = start + size
                if size <= 0 or size > max_msg or stop > body_limit:
                    self._check_mpub_message(size, self._mpub_total + offset - base, len(bodies))
                if stop > end:
                    break
                bodies.append(data[start:stop])
                offset = stop
            self._pos = pos + offset - base
            self._mpub_declared -= offset - base
            self._mpub_total += offset - base
        self._state = _LINE
        self._bodies = []
        return Mpub(self._topic, bodies)

    def _check_mpub_message(self, size: int, total: int, index: int) -> None:
        if size <= 0:
            raise _fatal(E_BAD_MESSAGE, f"MPUB invalid message({index}) body size {size}")
        if size > self._max_msg_size:
            raise _fatal(E_BAD_MESSAGE, f"MPUB message too big {size} > {self._max_msg_size}")
        if total + 4 + size > self._max_body_size:
            raise _fatal(
                E_BAD_BODY, f"MPUB body too big {total + 4 + size} > {self._max_body_size}"
            )
