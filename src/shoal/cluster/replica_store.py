"""What a replica holds, on disk: one append-only log of batch frames per (owner, topic).

Rules:
1. A batch is written (and, in durable mode, fsynced in a worker thread, off
   the event loop) before the replica acknowledges it, so an acknowledged
   record survives a crash of the replica.
2. A log is the owner's frames as they came (`shoal.replication.codec`),
   each behind a 4-byte length: replaying them through
   `shoal.replication.replica.receive` rebuilds the held state exactly.
3. When a log grows past `REWRITE_FACTOR` times what it holds (plus
   `REWRITE_SLACK`), it is rewritten as one snapshot frame into a new file
   that replaces the old one by rename, so a crash leaves one or the other.
4. A torn or corrupt tail (a crash mid-write) ends the replay there: what
   came before is kept, and the owner resends the rest, unacknowledged.

File names are ``<owner hex>.<topic>.log``: topic names are safe in a path,
member names may hold anything, hence hex.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from typing import TYPE_CHECKING, Final

import trio

from shoal.errors import RemoteProtocolError
from shoal.replication.codec import decode_frame, encode_frame
from shoal.replication.records import Batch
from shoal.replication.replica import ReplicaTopic, receive

if TYPE_CHECKING:
    from typing import BinaryIO

__all__ = ["REWRITE_FACTOR", "REWRITE_SLACK", "ReplicaStore"]

log = logging.getLogger("shoal.replication")

_LENGTH: Final = struct.Struct(">I")
#: A log is rewritten once it is this many times larger than what it holds...
REWRITE_FACTOR = 4
#: ...plus this many bytes, so small logs are not rewritten constantly.
REWRITE_SLACK = 1 << 20
_SUFFIX = ".log"

Key = tuple[str, str]


class ReplicaStore:
    """The replica logs under one directory.

    Args:
        path: the directory (created if missing).
        durable: fsync each append before it returns.
    """

    def __init__(self, path: str, *, durable: bool) -> None:
        self.path = path
        self.durable = durable
        os.makedirs(path, exist_ok=True)
        self._files: dict[Key, BinaryIO] = {}
        self._sizes: dict[Key, int] = {}
        self.rewrites = 0

    def _file_name(self, key: Key) -> str:
        owner, topic = key
        return os.path.join(self.path, f"{owner.encode('utf-8').hex()}.{topic}{_SUFFIX}")

    def restore(self) -> dict[Key, ReplicaTopic]:
        """Replay every log: what this node held when it stopped."""
        held: dict[Key, ReplicaTopic] = {}
        for entry in sorted(os.listdir(self.path)):
            if not entry.endswith(_SUFFIX) or "." not in entry[: -len(_SUFFIX)]:
                continue
            owner_hex, topic = entry[: -len(_SUFFIX)].split(".", 1)
            try:
                owner = bytes.fromhex(owner_hex).decode("utf-8")
            except ValueError:
                log.warning("replica log %s has an unreadable name; skipped", entry)
                continue
            replica = self._replay(os.path.join(self.path, entry))
            if replica is not None:
                held[owner, topic] = replica
        return held

    @staticmethod
    def _replay(path: str) -> ReplicaTopic | None:
        with open(path, "rb") as fh:
            data = fh.read()
        replica: ReplicaTopic | None = None
        pos = 0
        # Bounded by the file: every pass consumes a frame or stops.
        while pos + _LENGTH.size <= len(data):
            (length,) = _LENGTH.unpack_from(data, pos)
            end = pos + _LENGTH.size + length
            if end > len(data):
                break
            try:
                frame = decode_frame(data[pos + _LENGTH.size : end])
                if not isinstance(frame, Batch):
                    break
                replica = receive(replica, frame)
            except RemoteProtocolError as exc:
                log.warning("replica log %s: replay stops at byte %d: %s", path, pos, exc)
                break
            pos = end
        return replica

    async def append(self, key: Key, frame: bytes, held: ReplicaTopic) -> None:
        """Keep ``frame`` (just applied, giving ``held``) before it is acknowledged."""
        fh = self._files.get(key) or self._open(key)
        fh.write(_LENGTH.pack(len(frame)) + frame)
        fh.flush()
        self._sizes[key] += _LENGTH.size + len(frame)
        if self._sizes[key] > REWRITE_FACTOR * held.held_bytes_bound + REWRITE_SLACK:
            await self._rewrite(key, held)
        elif self.durable:
            await trio.to_thread.run_sync(os.fsync, fh.fileno())

    async def _rewrite(self, key: Key, held: ReplicaTopic) -> None:
        """Replace the log of ``key`` by one snapshot frame of ``held``."""
        frame = encode_frame(
            Batch(topic=key[1], first=0, records=(), commit=0, snapshot=held.snapshot())
        )
        name = self._file_name(key)
        temporary = name + ".new"
        data = _LENGTH.pack(len(frame)) + frame
        durable = self.durable

        def write() -> None:
            with open(temporary, "wb") as out:
                out.write(data)
                if durable:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(temporary, name)

        old = self._files.pop(key, None)
        if old is not None:
            old.close()
        await trio.to_thread.run_sync(write)
        self._open(key)
        self.rewrites += 1

    def _open(self, key: Key) -> BinaryIO:
        """Open the log of ``key`` for appending (a local file: quick, never blocks long)."""
        fh = self._files[key] = open(self._file_name(key), "ab")  # noqa: SIM115
        self._sizes[key] = fh.tell()
        return fh

    def drop(self, key: Key) -> None:
        """Forget ``key``: its copy was adopted or is no longer ours to hold."""
        fh = self._files.pop(key, None)
        if fh is not None:
            fh.close()
        self._sizes.pop(key, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._file_name(key))

    def close(self) -> None:
        """Close every open log."""
        for fh in self._files.values():
            fh.close()
        self._files.clear()
