"""Wire format of the gossip protocol: a version byte, then CBOR, with hard limits.

Rules:

1. Every packet and every stream message starts with one byte,
   `PROTOCOL_VERSION`; anything else is refused. The rest is CBOR (RFC 8949).
2. A **packet** is ``version || CBOR array of 1..255 messages`` (memberlist's
   compound message, without the separate length table: CBOR frames each
   part). A **stream** request or reply is ``version || one CBOR message``.
3. A message is a CBOR array ``[type, field, ...]`` with fields in the order
   below; `MessageType` numbers are on the wire and append-only::

       PING       [0, seq, target, source]
       PING_REQ   [1, seq, target, [host, port], nack, source]
       ACK        [2, seq]
       NACK       [3, seq]
       ALIVE      [4, incarnation, name, [host, port], {meta}]
       SUSPECT    [5, incarnation, name, source]
       DEAD       [6, incarnation, name, source]
       PUSH_PULL  [7, source, join, reply, [[name, [host, port], incarnation,
                   state, {meta}], ...], app_state]
       USER       [8, key, data]
       REFUSED    [9, incarnation, name, source]

   Member states in push-pull tables are small integers, also on the wire
   and append-only: alive 0, suspect 1, dead 2, left 3. A table names each
   member once.
4. Decoding is bounded and strict, because every byte comes from an untrusted
   peer (STYLE §3.5): the size is checked before parsing; then `_prescan`
   walks the CBOR heads alone, building nothing, and refuses a declared
   array or map larger than the bytes left to hold it, nesting deeper than any
   message has, or more items in all than the message type's budget
   (`_Shape`), so cbor2 never starts building 16.7 M empty arrays
   that a 5-byte head asked for; the CBOR nesting
   depth, string lengths, metadata size and member counts are capped;
   indefinite-length items, duplicate map keys, every CBOR tag (no dates,
   regexes, shared references or bignums), trailing bytes, unknown message
   types and messages on the wrong transport are refused, and each field is
   type-checked (a bool is not an int). Every refusal raises `CodecError`, a
   `RemoteProtocolError` whose ``reason`` names a drop counter; nothing else
   escapes `decode_packet` or `decode_stream`.
5. Encoding trusts its input (it comes from our own engine) and never checks
   limits beyond what the engine already enforces.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
from typing import TYPE_CHECKING, Any, Final

import cbor2
import msgspec

from shoal.errors import RemoteProtocolError
from shoal.membership.messages import (
    Ack,
    Address,
    Alive,
    Dead,
    Message,
    MessageType,
    Nack,
    Ping,
    PingReq,
    PushPull,
    PushPullEntry,
    Refused,
    Suspect,
    UserMsg,
)
from shoal.membership.state import MemberState

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from shoal.membership.config import MembershipConfig

__all__ = [
    "MAX_PACKET_MESSAGES",
    "PACKET_OVERHEAD",
    "PACKET_TYPES",
    "PROTOCOL_VERSION",
    "STREAM_REPLY_TYPES",
    "STREAM_REQUEST_TYPES",
    "CodecError",
    "CodecLimits",
    "decode_packet",
    "decode_stream",
    "encode_message",
    "encode_packet",
    "encode_push_pull",
    "encode_stream",
    "encode_table",
]

#: First byte of every packet and stream message. On the wire.
PROTOCOL_VERSION: Final = 1

#: Most messages packed in one packet (memberlist's compound limit).
MAX_PACKET_MESSAGES: Final = 255

#: Bytes a packet spends outside its messages: the version byte and the CBOR
#: array header for up to 255 items.
PACKET_OVERHEAD: Final = 1 + 2

#: Deepest CBOR nesting in any valid message (a push-pull entry's address).
_MAX_DEPTH: Final = 4

_UINT32_MAX: Final = (1 << 32) - 1
_UINT64_MAX: Final = (1 << 64) - 1
_MAX_HOST_LENGTH: Final = 255
#: What a host may be made of: IPv4 and IPv6 literals (with a zone) and names.
_HOST: Final = re.compile(r"[A-Za-z0-9._:%-]+")

#: Member states as numbers on the wire. Append only.
_STATE_TO_WIRE: Final[Mapping[MemberState, int]] = {
    MemberState.ALIVE: 0,
    MemberState.SUSPECT: 1,
    MemberState.DEAD: 2,
    MemberState.LEFT: 3,
}
_WIRE_TO_STATE: Final[Mapping[int, MemberState]] = {v: k for k, v in _STATE_TO_WIRE.items()}

#: Message types allowed in a packet, in a stream request and in a stream reply.
PACKET_TYPES: Final = frozenset(
    {
        MessageType.PING,
        MessageType.PING_REQ,
        MessageType.ACK,
        MessageType.NACK,
        MessageType.ALIVE,
        MessageType.SUSPECT,
        MessageType.DEAD,
        MessageType.USER,
        MessageType.REFUSED,
    }
)
STREAM_REQUEST_TYPES: Final = frozenset({MessageType.PING, MessageType.PUSH_PULL, MessageType.USER})
STREAM_REPLY_TYPES: Final = frozenset({MessageType.ACK, MessageType.PUSH_PULL})
_PACKET_CODES: Final = frozenset(t.value for t in PACKET_TYPES)


class CodecError(RemoteProtocolError):
    """A peer's bytes were refused.

    Attributes:
        reason: a short name for the drop counter: ``"empty"``, ``"oversize"``,
            ``"version"``, ``"cbor"`` (malformed, tagged, indefinite, too deep,
            duplicate key), ``"trailing"``, ``"shape"`` (a field of the wrong
            type or range), ``"limit"`` (too many items or bytes),
            ``"unknown_type"`` or ``"unexpected_type"`` (valid, wrong transport).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CodecLimits:
    """Bounds applied while decoding; see the same-named `MembershipConfig` fields."""

    max_packet_size: int = 65_536
    max_stream_size: int = 16 * 1024 * 1024
    max_name_length: int = 255
    meta_max_size: int = 512
    max_push_pull_members: int = 65_536
    max_app_message_size: int = 1024 * 1024
    #: What `_prescan` allows in a packet and in a stream under these limits:
    #: derived once here rather than on every datagram.
    packet_shape: _Shape = dataclasses.field(init=False, repr=False, compare=False)
    stream_shape: _Shape = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "packet_shape", _packet_shape(self))
        object.__setattr__(self, "stream_shape", _stream_shape(self))

    @classmethod
    def from_config(cls, config: MembershipConfig) -> CodecLimits:
        """Take the limits from a membership configuration."""
        return cls(
            max_packet_size=config.max_packet_size,
            max_stream_size=config.max_stream_size,
            max_name_length=config.max_name_length,
            meta_max_size=config.meta_max_size,
            max_push_pull_members=config.max_push_pull_members,
            max_app_message_size=config.max_app_message_size,
        )


# --------------------------------------------------------------------------- encoding


def _address(address: Address) -> list[Any]:
    return [address[0], address[1]]


#: Wire numbers as plain ints: reading an enum member's value is slow on 3.11,
#: and every message sent is encoded here.
_PING: Final = MessageType.PING.value
_PING_REQ: Final = MessageType.PING_REQ.value
_ACK: Final = MessageType.ACK.value
_NACK: Final = MessageType.NACK.value
_ALIVE: Final = MessageType.ALIVE.value
_SUSPECT: Final = MessageType.SUSPECT.value
_DEAD: Final = MessageType.DEAD.value
_USER: Final = MessageType.USER.value
_REFUSED: Final = MessageType.REFUSED.value
_PUSH_PULL: Final = MessageType.PUSH_PULL.value


def encode_message(message: Message) -> bytes:
    """Return the CBOR encoding of one message (no version byte).

    The result is a part for `encode_packet`, or a broadcast kept queued in
    encoded form so it is encoded once however often it is sent.
    """
    item: list[Any]
    match message:
        case Ping(seq=seq, target=target, source=source):
            item = [_PING, seq, target, source]
        case PingReq(seq=seq, target=target, target_address=address, nack=nack, source=source):
            item = [_PING_REQ, seq, target, _address(address), nack, source]
        case Ack(seq=seq):
            item = [_ACK, seq]
        case Nack(seq=seq):
            item = [_NACK, seq]
        case Alive(incarnation=incarnation, name=name, address=address, meta=meta):
            item = [_ALIVE, incarnation, name, _address(address), dict(meta)]
        case Suspect(incarnation=incarnation, name=name, source=source):
            item = [_SUSPECT, incarnation, name, source]
        case Dead(incarnation=incarnation, name=name, source=source):
            item = [_DEAD, incarnation, name, source]
        case Refused(incarnation=incarnation, name=name, source=source):
            item = [_REFUSED, incarnation, name, source]
        case PushPull(source=source, join=join, reply=reply, members=members, app_state=app_state):
            return _push_pull_bytes(source, join, reply, encode_table(members), app_state)
        case UserMsg(key=key, data=data):
            item = [_USER, key, data]
    return cbor2.dumps(item)


#: Encoded push-pull records without metadata, by (name, address,
#: incarnation, state): see `encode_table`.
_RECORDS: Final[dict[tuple[str, Address, int, MemberState], bytes]] = {}

#: Most records `_RECORDS` holds before it starts afresh: a few versions of
#: every member of the largest cluster, a few megabytes at most.
MAX_ENCODED_RECORDS: Final = 1 << 17

#: The metadata every record without any is encoded with (never modified).
_EMPTY: Final[dict[str, str]] = {}


def encode_table(
    members: Iterable[tuple[str, Address, int, MemberState, Mapping[str, str]]],
) -> bytes:
    """Return the CBOR array of push-pull records (the ``members`` field).

    ``members`` are `PushPullEntry` records or plain tuples of the same five
    fields. Kept separate so an engine can encode its table once and reuse
    it until a record changes: the table is the bulk of every push-pull.

    A record without metadata (the usual case) is encoded once and then
    taken from `_RECORDS`: a table changes a few records at a time, so
    re-encoding one after a change costs a lookup per unchanged record
    instead of an encoding (a seventh of the time at a thousand members),
    and a simulator's engines, which hold the same records, share the work.
    The bytes are exactly what encoding the whole list at once gives.
    """
    wire = _STATE_TO_WIRE
    records = _RECORDS
    known = records.get
    dumps = cbor2.dumps
    parts: list[bytes] = []
    append = parts.append
    for name, address, incarnation, state, meta in members:
        # Tuples encode as arrays, and an address is already a (host, port)
        # tuple: one new object per record instead of three.
        if type(address) is not tuple:
            address = tuple(address)  # type: ignore[assignment]
        if meta:
            append(dumps((name, address, incarnation, wire[state], dict(meta))))
            continue
        key = (name, address, incarnation, state)
        part = known(key)
        if part is None:
            if len(records) >= MAX_ENCODED_RECORDS:
                records.clear()
            part = records[key] = dumps((name, address, incarnation, wire[state], _EMPTY))
        append(part)
    return _array_header(len(parts)) + b"".join(parts)


def _push_pull_bytes(source: str, join: bool, reply: bool, table: bytes, app_state: bytes) -> bytes:
    # A definite-length CBOR array is its header followed by its items, so the
    # pre-encoded table slots in as one item.
    head = cbor2.dumps([MessageType.PUSH_PULL.value, source, join, reply])
    return b"".join((b"\x86", head[1:], table, cbor2.dumps(app_state)))


def encode_push_pull(source: str, join: bool, reply: bool, table: bytes, app_state: bytes) -> bytes:
    """Return the stream bytes of a push-pull whose table `encode_table` produced."""
    return bytes((PROTOCOL_VERSION,)) + _push_pull_bytes(source, join, reply, table, app_state)


def _array_header(count: int) -> bytes:
    if count < 24:
        return bytes((0x80 | count,))
    if count < 256:
        return bytes((0x98, count))
    if count < 65536:
        return bytes((0x99, count >> 8, count & 0xFF))
    return b"\x9a" + count.to_bytes(4, "big")


def encode_packet(parts: Sequence[bytes]) -> bytes:
    """Pack already-encoded messages into one packet.

    Args:
        parts: 1 to `MAX_PACKET_MESSAGES` outputs of `encode_message`.

    Returns:
        The datagram: version byte, CBOR array header, the parts.
    """
    return b"".join((bytes((PROTOCOL_VERSION,)), _array_header(len(parts)), *parts))


def encode_stream(message: Message) -> bytes:
    """Return the bytes of a stream request or reply carrying ``message``."""
    return bytes((PROTOCOL_VERSION,)) + encode_message(message)


# --------------------------------------------------------------------------- decoding


def _reject_tag(tag: object, immutable: bool) -> Any:
    raise CodecError("cbor", "CBOR tags are not part of the protocol")


def _reject_semantic(value: object, immutable: bool) -> Any:
    raise CodecError("cbor", "CBOR tags are not part of the protocol")


# Every tag cbor2 decodes on its own (dates, bignums, decimals, fractions,
# regexes, MIME, UUIDs, sets, IP addresses, shared and string references,
# self-describe): refused before their decoders run. Unknown tags reach
# `_reject_tag`.
_SEMANTIC_TAGS: Final = (
    0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261,
    1004, 43000, 55799,
)  # fmt: skip
_REJECT_SEMANTIC: Final = dict.fromkeys(_SEMANTIC_TAGS, _reject_semantic)


#: CBOR items a push-pull record holds besides its metadata: its array, name,
#: address array with host and port, incarnation, state and meta map. The
#: budget allows as much again for metadata (four pairs per record), which
#: real tables stay well within.
_ITEMS_PER_RECORD: Final = 16
#: Fields of the longest message, its type included (`PING_REQ`, `PUSH_PULL`).
_MAX_FIELDS: Final = 6


class _Shape(msgspec.Struct, frozen=True):
    """What `_prescan` allows: containers per nesting level, items in all."""

    #: Largest container (in items, a map's keys and values both counted) at
    #: each nesting level, the outermost first; its length is the deepest
    #: nesting allowed.
    widest: tuple[int, ...]
    max_items: int


def _packet_shape(limits: CodecLimits) -> _Shape:
    meta = 2 * limits.meta_max_size  # each key takes at least one byte
    # packet array > message > address or meta map
    widest = (MAX_PACKET_MESSAGES, _MAX_FIELDS, max(2, meta))
    return _Shape(widest, limits.max_packet_size)


def _stream_shape(limits: CodecLimits) -> _Shape:
    meta = 2 * limits.meta_max_size
    # message > push-pull table > record > address or meta map
    widest = (_MAX_FIELDS, max(2, limits.max_push_pull_members), 5, max(2, meta))
    return _Shape(widest, limits.max_push_pull_members * _ITEMS_PER_RECORD + 4 * _MAX_FIELDS)


def _prescan(data: bytes, offset: int, shape: _Shape) -> None:
    """Walk the CBOR heads from ``offset`` and refuse what cannot be valid.

    Only heads are read (strings are skipped by their length), so the cost is
    one step per item and nothing is allocated. Refused: truncation; a string,
    array or map declaring more than the bytes left could hold (every item
    takes at least one byte); a container wider than its nesting level allows
    or nested deeper than any message; more than ``shape.max_items`` items in
    all; tags, indefinite lengths and reserved heads. A container's items are
    counted when its head is read, so an oversized one is refused before a
    single one of its items is looked at.

    Raises:
        CodecError: with reason ``"cbor"`` or ``"limit"``.
    """
    end = len(data)
    pos = offset
    widest = shape.widest
    deepest = len(widest)
    max_items = shape.max_items
    items = 1
    remaining = 1  # items still to read at the innermost open level
    outer: list[int] = []  # the same for each enclosing level, the root first
    while True:
        if not remaining:
            if not outer:
                break
            remaining = outer.pop()
            continue
        remaining -= 1
        if pos >= end:
            raise CodecError("cbor", "truncated CBOR")
        head = data[pos]
        pos += 1
        major = head >> 5
        info = head & 0x1F
        if info < 24:
            arg = info
        elif info < 28:
            size = 1 << (info - 24)
            if pos + size > end:
                raise CodecError("cbor", "truncated CBOR head")
            arg = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        else:
            raise CodecError("cbor", "indefinite-length or reserved CBOR head")
        if major < 2 or major == 7:
            continue  # integers, simple values and floats: the head is all
        if major < 4:
            if arg > end - pos:
                raise CodecError("cbor", f"a string of {arg} bytes with {end - pos} left")
            pos += arg
        elif major < 6:
            count = arg << 1 if major == 5 else arg
            level = len(outer)
            if level >= deepest:
                raise CodecError("cbor", f"nested deeper than {deepest}")
            if count > widest[level] or count > end - pos:
                raise CodecError("limit", f"a container of {count} items at depth {level + 1}")
            items += count
            if items > max_items:
                raise CodecError("limit", f"more than {max_items} CBOR items")
            outer.append(remaining)
            remaining = count
        else:
            raise CodecError("cbor", "CBOR tags are not part of the protocol")
    if pos != end:
        raise CodecError("trailing", f"{end - pos} bytes after the message")


def _parse_cbor(data: bytes, offset: int, shape: _Shape) -> Any:
    _prescan(data, offset, shape)
    # The prescan has found exactly one item spanning the rest of ``data``,
    # so one `cbor2.loads` reads all of it (and no trailing bytes are left
    # to check for); the options below refuse again what the prescan
    # already did, as a second line of defence.
    try:
        value = cbor2.loads(
            data[offset:],
            tag_hook=_reject_tag,
            semantic_decoders=_REJECT_SEMANTIC,
            max_depth=_MAX_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
    except CodecError:
        raise
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        # CodecError raised inside a hook arrives wrapped by cbor2.
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, CodecError):
            raise cause from None
        raise CodecError("cbor", str(exc)) from None
    return value


def _shape(detail: str) -> CodecError:
    return CodecError("shape", detail)


# The field checks below sit on the hot path of every received message, so
# each does one cheap test first and builds its error only on failure.


def _uint(value: Any, maximum: int, what: str) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise _shape(f"{what} must be an unsigned integer")
    return value


def _bool(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise _shape(f"{what} must be a boolean")
    return value


def _name(value: Any, limits: CodecLimits, what: str) -> str:
    if type(value) is not str or not 0 < len(value) <= limits.max_name_length:
        if type(value) is str and value:
            raise CodecError("limit", f"{what} is longer than {limits.max_name_length}")
        raise _shape(f"{what} must be a non-empty string")
    return value


def _bytes(value: Any, maximum: int, what: str) -> bytes:
    if type(value) is not bytes:
        raise _shape(f"{what} must be a byte string")
    if len(value) > maximum:
        raise CodecError("limit", f"{what} is longer than {maximum} bytes")
    return value


def _addr(value: Any) -> Address:
    if type(value) is not list or len(value) != 2:
        raise _shape("an address must be [host, port]")
    host, port = value
    if type(host) is not str or not 0 < len(host) <= _MAX_HOST_LENGTH:
        raise _shape("an address host must be a non-empty string")
    if _HOST.fullmatch(host) is None:
        # The driver hands hosts to the socket layer: a NUL or any other
        # character no IP literal or host name has made it raise there.
        raise _shape("an address host must be an IP address or a host name")
    if type(port) is not int or not 0 <= port <= 65535:
        raise _shape("an address port must be in 0..65535")
    return _share_address((host, port))


def _meta(value: Any, limits: CodecLimits) -> dict[str, str]:
    if type(value) is not dict:
        raise _shape("meta must be a map")
    chars = 0
    longest = limits.max_name_length
    for key, item in value.items():
        if type(key) is not str or type(item) is not str or not key:
            raise _shape("meta must map non-empty strings to strings")
        if len(key) > longest:
            raise CodecError("limit", "meta key too long")
        chars += len(key) + len(item)
    # A character takes at most 4 bytes of UTF-8: only near the limit is it
    # worth measuring exactly.
    if chars * 4 > limits.meta_max_size:
        size = sum(len(k.encode()) + len(v.encode()) for k, v in value.items())
        if size > limits.meta_max_size:
            raise CodecError("limit", f"meta larger than {limits.meta_max_size} bytes")
    return value


def _fields(item: list[Any], count: int, what: str) -> None:
    if len(item) != count:
        raise _shape(f"{what} needs {count - 1} fields, got {len(item) - 1}")


def _entries(values: list[Any], limits: CodecLimits) -> tuple[PushPullEntry, ...]:
    """Check and convert a push-pull table: the hottest decode there is.

    Every push-pull carries a record per member, so at a thousand members
    this loop dominates a node's (and the simulator's) decoding time. The
    common record (a short name, a plain address, a small or empty meta) is
    checked inline, and anything unusual falls back to `_entry`, which
    raises the precise error; both accept exactly the same records.

    Names are interned and addresses shared (`_share_address`): a node
    holds each member's strings for as long as it knows the member, and
    every later table repeats them, so one copy per distinct value is kept
    instead of one per decode (the simulator's thousand engines then share
    their members' names and addresses too). Empty metadata, the usual case,
    shares one empty mapping.
    """
    longest = limits.max_name_length
    wire = _WIRE_TO_STATE
    intern = sys.intern
    new = tuple.__new__
    entry_type = PushPullEntry
    no_meta = _NO_META
    host_ok = _HOST.fullmatch
    addresses = _ADDRESSES
    out: list[PushPullEntry] = []
    append = out.append
    for value in values:
        if type(value) is list and len(value) == 5:
            name, address, incarnation, state, meta = value
            if (
                type(name) is str
                and 0 < len(name) <= longest
                and type(address) is list
                and len(address) == 2
                and type(incarnation) is int
                and 0 <= incarnation <= _UINT64_MAX
                and type(state) is int
                and state in wire
                and type(meta) is dict
                and not meta
            ):
                host, port = address
                if (
                    type(host) is str
                    and 0 < len(host) <= _MAX_HOST_LENGTH
                    and type(port) is int
                    and 0 <= port <= 65535
                    and host_ok(host) is not None
                ):
                    address = (host, port)
                    shared = addresses.get(address)
                    if shared is None:
                        shared = _share_address(address)
                    record = (intern(name), shared, incarnation, wire[state], no_meta)
                    append(new(entry_type, record))
                    continue
        entry = _entry(value, limits)
        append(entry._replace(name=intern(entry.name), address=_share_address(entry.address)))
    return tuple(out)


#: Addresses decoded so far, each kept once (see `_share_address`).
_ADDRESSES: Final[dict[Address, Address]] = {}

#: Most addresses `_ADDRESSES` holds before it starts afresh: far more than
#: any cluster has members, few enough that a flood of forged addresses costs
#: a few megabytes at most.
MAX_SHARED_ADDRESSES: Final = 1 << 16


def _share_address(address: Address) -> Address:
    """Return the one shared copy of ``address`` (host interned), storing it if new.

    A node keeps every member's address as long as it knows the member, and
    every table and alive message repeats it: sharing one tuple per address
    (with its port integer) instead of one per decode saves about 90 bytes
    per record, and the simulator's engines, which all decode the same
    addresses, then hold one copy between them (memory per engine O(n)
    references, not O(n) tuples).
    """
    shared = _ADDRESSES.get(address)
    if shared is not None:
        return shared
    if len(_ADDRESSES) >= MAX_SHARED_ADDRESSES:
        _ADDRESSES.clear()
    host, port = address
    shared = _ADDRESSES[address] = (sys.intern(host), port)
    return shared


#: The metadata of every record that has none, read-only so that sharing it
#: is safe.
_NO_META: Final[Mapping[str, str]] = types.MappingProxyType({})


def _entry(value: Any, limits: CodecLimits) -> PushPullEntry:
    # Checks inlined where cheap: a table has a record per member.
    if type(value) is not list or len(value) != 5:
        raise _shape("a push-pull entry must be [name, address, incarnation, state, meta]")
    name, address, incarnation, state, meta = value
    member_state = _WIRE_TO_STATE.get(state) if type(state) is int else None
    if member_state is None:
        raise _shape(f"unknown member state {state!r}")
    if type(name) is not str or not 0 < len(name) <= limits.max_name_length:
        _name(name, limits, "member name")
    if type(incarnation) is not int or not 0 <= incarnation <= _UINT64_MAX:
        raise _shape("incarnation must be an unsigned integer")
    return PushPullEntry(name, _addr(address), incarnation, member_state, _meta(meta, limits))


def _ping(item: list[Any], limits: CodecLimits) -> Message:
    _fields(item, 4, "ping")
    return Ping(
        seq=_uint(item[1], _UINT32_MAX, "seq"),
        target=_name(item[2], limits, "target"),
        source=_name(item[3], limits, "source"),
    )


def _ping_req(item: list[Any], limits: CodecLimits) -> Message:
    _fields(item, 6, "ping-req")
    return PingReq(
        seq=_uint(item[1], _UINT32_MAX, "seq"),
        target=_name(item[2], limits, "target"),
        target_address=_addr(item[3]),
        nack=_bool(item[4], "nack"),
        source=_name(item[5], limits, "source"),
    )


def _ack(item: list[Any], limits: CodecLimits) -> Message:
    _fields(item, 2, "ack")
    return Ack(seq=_uint(item[1], _UINT32_MAX, "seq"))


def _nack(item: list[Any], limits: CodecLimits) -> Message:
    _fields(item, 2, "nack")
    return Nack(seq=_uint(item[1], _UINT32_MAX, "seq"))


def _alive(item: list[Any], limits: CodecLimits) -> Message:
    _fields(item, 5, "alive")
    return Alive(
        incarnation=_uint(item[1], _UINT64_MAX, "incarnation"),
        name=_name(item[2], limits, "name"),
        address=_addr(item[3]),
        meta=_meta(item[4], limits),
    )


def _suspect(item: list[Any], limits: CodecLimits) -> Message:
    _fields(item, 4, "suspect")
    return Suspect(
        incarnation=_uint(item[1], _UINT64_MAX, "incarnation"),
        name=_name(item[2], limits, "name"),
        source=_name(item[3], limits, "source"),
    )


def _dead(item: list[Any], limits: CodecLimits) -> Message:
    _fields(item, 4, "dead")
    return Dead(
        incarnation=_uint(item[1], _UINT64_MAX, "incarnation"),
        name=_name(item[2], limits, "name"),
        source=_name(item[3], limits, "source"),
    )


def _refused(item: list[Any], limits: CodecLimits) -> Message:
    _fields(item, 4, "refused")
    return Refused(
        incarnation=_uint(item[1], _UINT64_MAX, "incarnation"),
        name=_name(item[2], limits, "name"),
        source=_name(item[3], limits, "source"),
    )


def _push_pull(item: list[Any], limits: CodecLimits) -> Message:
    _fields(item, 6, "push-pull")
    entries = item[4]
    if type(entries) is not list:
        raise _shape("push-pull members must be an array")
    if len(entries) > limits.max_push_pull_members:
        raise CodecError("limit", f"more than {limits.max_push_pull_members} members")
    members = _entries(entries, limits)
    if len({m.name for m in members}) != len(members):
        # One record per member: a table that contradicts itself has no
        # meaning, and merging it would depend on the order of its records.
        raise _shape("a push-pull table names a member twice")
    return PushPull(
        source=_name(item[1], limits, "source"),
        join=_bool(item[2], "join"),
        reply=_bool(item[3], "reply"),
        members=members,
        app_state=_bytes(item[5], limits.max_stream_size, "app state"),
    )


def _user(item: list[Any], limits: CodecLimits) -> Message:
    _fields(item, 3, "user")
    return UserMsg(
        key=_name(item[1], limits, "key"),
        data=_bytes(item[2], limits.max_app_message_size, "user data"),
    )


_DECODERS: Final[Mapping[int, Callable[[list[Any], CodecLimits], Message]]] = {
    MessageType.PING.value: _ping,
    MessageType.PING_REQ.value: _ping_req,
    MessageType.ACK.value: _ack,
    MessageType.NACK.value: _nack,
    MessageType.ALIVE.value: _alive,
    MessageType.SUSPECT.value: _suspect,
    MessageType.DEAD.value: _dead,
    MessageType.PUSH_PULL.value: _push_pull,
    MessageType.USER.value: _user,
    MessageType.REFUSED.value: _refused,
}


def _message(item: Any, limits: CodecLimits, allowed: frozenset[int]) -> Message:
    if type(item) is not list or not item:
        raise _shape("a message must be a non-empty array")
    kind = item[0]
    if type(kind) is not int:
        raise _shape("a message type must be an integer")
    if kind not in allowed:
        if kind in _DECODERS:
            raise CodecError("unexpected_type", f"{MessageType(kind).name} is not allowed here")
        raise CodecError("unknown_type", f"message type {kind}")
    return _DECODERS[kind](item, limits)


def _check_frame(data: bytes, maximum: int) -> None:
    if not data:
        raise CodecError("empty", "no bytes")
    if len(data) > maximum:
        raise CodecError("oversize", f"{len(data)} bytes, limit {maximum}")
    if data[0] != PROTOCOL_VERSION:
        raise CodecError("version", f"protocol version {data[0]}, expected {PROTOCOL_VERSION}")


def decode_packet(data: bytes, limits: CodecLimits) -> list[Message]:
    """Decode one datagram into its messages.

    Args:
        data: the datagram as received.
        limits: the bounds to enforce.

    Returns:
        The messages, in packet order (at least one).

    Raises:
        CodecError: the datagram is refused as a whole (even when only one of
            its messages is bad, since a peer that sends one malformed part is
            not trusted for the rest). No other exception escapes.
    """
    _check_frame(data, limits.max_packet_size)
    items = _parse_cbor(data, 1, limits.packet_shape)
    if type(items) is not list or not items:
        raise _shape("a packet must be a non-empty array of messages")
    if len(items) > MAX_PACKET_MESSAGES:
        raise CodecError("limit", f"more than {MAX_PACKET_MESSAGES} messages in a packet")
    allowed = _PACKET_CODES
    return [_message(item, limits, allowed) for item in items]


def decode_stream(
    data: bytes, limits: CodecLimits, allowed: frozenset[MessageType] = STREAM_REQUEST_TYPES
) -> Message:
    """Decode a stream request (or, with ``allowed=STREAM_REPLY_TYPES``, a reply).

    Args:
        data: the whole stream payload.
        limits: the bounds to enforce.
        allowed: message types acceptable here.

    Returns:
        The one message.

    Raises:
        CodecError: the payload is refused. No other exception escapes.
    """
    _check_frame(data, limits.max_stream_size)
    codes = frozenset(t.value for t in allowed)
    if _TABLES and _PUSH_PULL in codes:
        recalled = _recall_push_pull(data, limits)
        if recalled is not None:
            return recalled
    message = _message(_parse_cbor(data, 1, limits.stream_shape), limits, codes)
    if type(message) is PushPull:
        _remember_table(data, limits, message)
    return message


# --------------------------------------------------------------------------- recalled tables

# In a quiet cluster every member holds the same records, and the engine
# encodes its table in name order, so the tables of different members are
# byte for byte the same: a node decoding push-pulls from one peer after
# another finds the same table again and again (and a simulator of a
# thousand engines, a thousand times). A table that starts where a push-pull
# puts its table and equals one already checked under the same limits is
# taken as it was decoded then; only the header and the application state
# around it are read. A table is the bulk of a push-pull (all of it but a
# few bytes when there is no application state), so this turns the O(n)
# decode of a recurring table into a byte comparison. Anything unexpected
# falls back to the full decode, which alone decides what is refused.

#: Push-pull tables decoded last, newest first: (bytes, limits, records).
_TABLES: Final[list[tuple[bytes, CodecLimits, tuple[PushPullEntry, ...]]]] = []

#: Most tables kept, and most bytes of them: enough for the few versions of
#: a table that coexist while news spreads, a bounded cost for a node.
REMEMBERED_TABLES: Final = 8
REMEMBERED_TABLE_BYTES: Final = 8 * 1024 * 1024


def _remember_table(data: bytes, limits: CodecLimits, message: PushPull) -> None:
    """Keep the table of ``data``, a push-pull the full decode accepted as ``message``.

    The table runs from the end of the header to the application state,
    the last item; where that starts follows from its length when its head
    is minimal, as every encoder writes it (a table whose end is not found
    so is simply not kept).
    """
    header = _header(data)
    size = len(message.app_state)
    head = 1 if size < 24 else 2 if size < 256 else 3 if size < 65536 else 5
    end = len(data) - size - head
    if header is None or end <= header[3] or _head(data, end) != (2, size, end + head):
        return
    start = header[3]
    if end - start > REMEMBERED_TABLE_BYTES:
        return
    tables = _TABLES
    tables.insert(0, (data[start:end], limits, message.members))
    total = 0
    for index, (kept, _, _) in enumerate(tables):
        total += len(kept)
        if index >= REMEMBERED_TABLES or total > REMEMBERED_TABLE_BYTES:
            del tables[index:]
            break


def _head(data: bytes, pos: int) -> tuple[int, int, int]:
    """Return (major type, argument, position after) of the CBOR head at ``pos``.

    (-1, 0, pos) for anything `_recall_push_pull` does not take: a truncated,
    indefinite or reserved head.
    """
    if pos >= len(data):
        return -1, 0, pos
    initial = data[pos]
    info = initial & 0x1F
    if info < 24:
        return initial >> 5, info, pos + 1
    if info >= 28:
        return -1, 0, pos
    size = 1 << (info - 24)
    if pos + 1 + size > len(data):
        return -1, 0, pos
    return initial >> 5, int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), pos + 1 + size


_FALSE: Final = 0xF4
_TRUE: Final = 0xF5


def _header(data: bytes) -> tuple[bytes, int, int, int] | None:
    """Read a push-pull's ``[type, source, join, reply`` head by head.

    Returns (source bytes, join byte, reply byte, where the table starts),
    or None for anything else, including every form the full decode would
    refuse here: another type, a source that is not a text string, flags
    that are not booleans.
    """
    if len(data) < 2 or data[1] != 0x86:
        return None
    major, value, pos = _head(data, 2)
    if major != 0 or value != _PUSH_PULL:
        return None
    major, size, pos = _head(data, pos)
    if major != 3 or pos + size + 2 > len(data):
        return None
    start = pos + size + 2
    join, reply = data[start - 2], data[start - 1]
    if (join != _FALSE and join != _TRUE) or (reply != _FALSE and reply != _TRUE):
        return None
    return data[pos : pos + size], join, reply, start


def _recall_push_pull(data: bytes, limits: CodecLimits) -> PushPull | None:
    """Decode a push-pull whose table is one of `_TABLES`, or return None.

    Reads ``[type, source, join, reply, table, app_state]`` head by head
    and accepts exactly what the full decode would, given a table it
    accepted before: a text source within the name limit, two booleans, the
    remembered table, and one byte string ending the payload.
    """
    header = _header(data)
    if header is None:
        return None
    raw, join, reply, start = header
    try:
        source = raw.decode()
    except UnicodeDecodeError:
        return None
    if not 0 < len(source) <= limits.max_name_length:
        return None
    for index, (table, checked, members) in enumerate(_TABLES):
        if not data.startswith(table, start):
            continue
        if checked is not limits and checked != limits:
            continue
        major, size, pos = _head(data, start + len(table))
        if major != 2 or pos + size != len(data):
            return None
        if index:
            _TABLES.insert(0, _TABLES.pop(index))
        return PushPull(
            source=source,
            join=join == _TRUE,
            reply=reply == _TRUE,
            members=members,
            app_state=data[pos:],
        )
    return None
