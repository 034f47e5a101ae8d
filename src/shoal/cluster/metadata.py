"""The node's metadata file and the lock on its data directory (docs/nsq.md §4.6).

``shoal.dat`` in the data path lists the durable topics and channels and
their pause state, in nsqd's ``nsqd.dat`` shape::

    {"version": "0.1.0",
     "topics": [{"name": "t", "paused": false,
                 "channels": [{"name": "c", "paused": true}]}]}

Rules:
1. Ephemeral topics and channels are never written: they do not survive a
   restart (docs/nsq.md §4.7).
2. The file is replaced atomically (temp file, fsync, rename, fsync of the
   directory), so a crash leaves either the old or the new file, never a
   mix, and a replaced file survives a power loss.
3. The queue files are the truth about what holds messages; ``shoal.dat``
   only adds what they cannot say (pause state, channels without a
   backlog). So `restore_metadata` never starts a node without a topic or
   channel whose queue files are present: a missing, unreadable or invalid
   ``shoal.dat`` (every name is checked as the protocol checks it) is set
   aside as ``shoal.dat.bad`` and rebuilt from the queue files, and the node
   logs one warning line naming the file, the entry at fault and what was
   rebuilt.
4. ``shoal.name`` holds the member name a restarted node keeps
   (`load_node_name`); content that cannot be a name is refused with one
   line naming the file, never a traceback.
5. One node per data path: `lock_data_path` takes an exclusive ``flock``
   held for the node's lifetime; the kernel releases it when the process
   dies, so a SIGKILL never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from shoal.cluster.disk_queue import DiskBackendFactory, disk_backend_factory
from shoal.errors import ConfigError
from shoal.queue.backend import memory_backend_factory
from shoal.queue.broker import Broker, ChannelCreated, TopicCreated
from shoal.queue.names import (
    MAX_NAME_LENGTH,
    is_ephemeral,
    is_valid_channel_name,
    is_valid_topic_name,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import TracebackType

    from shoal.config import NodeConfig
    from shoal.queue.broker import BrokerEvent
    from shoal.queue.config import QueueConfig
    from shoal.queue.diskqueue import DiskQueueConfig

__all__ = [
    "LOCK_FILE_NAME",
    "METADATA_FILE_NAME",
    "ChannelMeta",
    "DataPath",
    "DataPathLock",
    "NodeMetadata",
    "TopicMeta",
    "load_metadata",
    "load_node_name",
    "lock_data_path",
    "queue_names_on_disk",
    "read_node_name",
    "restore_metadata",
    "save_metadata",
]

log = logging.getLogger("shoal.node")

METADATA_FILE_NAME = "shoal.dat"
NAME_FILE_NAME = "shoal.name"
#: Longest member name kept in ``shoal.name`` (bytes).
MAX_NODE_NAME = 255
LOCK_FILE_NAME = "shoal.lock"
#: A metadata file larger than this is refused rather than parsed.
MAX_METADATA_SIZE = 64 * 1024 * 1024


class ChannelMeta(msgspec.Struct, frozen=True, kw_only=True):
    """A durable channel and whether it is paused."""

    name: str
    paused: bool = False


class TopicMeta(msgspec.Struct, frozen=True, kw_only=True):
    """A durable topic, whether it is paused, and its durable channels."""

    name: str
    paused: bool = False
    channels: tuple[ChannelMeta, ...] = ()


class NodeMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """The content of ``shoal.dat``.

    Attributes:
        version: the shoal version that wrote the file.
        topics: durable topics in file order.
    """

    version: str
    topics: tuple[TopicMeta, ...]


def save_metadata(
    data_path: str | os.PathLike[str], topics_info: Iterable[TopicMeta], version: str
) -> None:
    """Atomically replace ``shoal.dat``, leaving ephemeral topics and channels out.

    Args:
        data_path: the node's (locked) data directory.
        topics_info: every topic the node has, ephemeral ones included.
        version: the running shoal version.

    Raises:
        OSError: the file could not be written; the previous file is intact
            and no temporary file is left behind.
    """
    directory = os.fspath(data_path)
    topics = [
        {
            "name": topic.name,
            "paused": topic.paused,
            "channels": [
                {"name": channel.name, "paused": channel.paused}
                for channel in topic.channels
                if not is_ephemeral(channel.name)
            ],
        }
        for topic in topics_info
        if not is_ephemeral(topic.name)
    ]
    data = json.dumps({"version": version, "topics": topics}).encode()
    path = os.path.join(directory, METADATA_FILE_NAME)
    tmp = f"{path}.{os.getpid()}.tmp"
    replaced = False
    try:
        with open(tmp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        replaced = True
    finally:
        if not replaced:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_metadata(data_path: str | os.PathLike[str]) -> NodeMetadata | None:
    """Read ``shoal.dat``.

    Returns:
        The metadata, or None when the file does not exist (a new node).
        Ephemeral entries, which a well-formed file never holds, are dropped.

    Raises:
        ConfigError: the file is unreadable, too large, not JSON, or not of
            the expected shape; the message is one line naming the file.
    """
    path = os.path.join(os.fspath(data_path), METADATA_FILE_NAME)
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_METADATA_SIZE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read metadata file {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_METADATA_SIZE:
        raise ConfigError(f"metadata file {path} is larger than {MAX_METADATA_SIZE} bytes")
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"metadata file {path} is not UTF-8: {exc.reason} at byte {exc.start}"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"metadata file {path} is not valid JSON: {exc.msg}"
            f" at line {exc.lineno} column {exc.colno}"
        ) from exc
    try:
        return _parse(document)
    except _ShapeError as exc:
        raise ConfigError(f"metadata file {path} is invalid: {exc}") from exc


class _ShapeError(Exception):
    """The JSON parsed but is not shaped like a metadata file."""


def _parse(document: Any) -> NodeMetadata:
    if not isinstance(document, dict):
        raise _ShapeError("the top level is not an object")
    version = document.get("version", "")
    if not isinstance(version, str):
        raise _ShapeError("version is not a string")
    topics = document.get("topics")
    if topics is None:
        topics = []
    if not isinstance(topics, list):
        raise _ShapeError("topics is not a list")
    parsed: list[TopicMeta] = []
    for index, topic in enumerate(topics):
        name, paused = _name_and_paused(topic, f"topics[{index}]")
        channels = topic.get("channels")
        if channels is None:  # nsqd writes null for a topic without channels
            channels = []
        if not isinstance(channels, list):
            raise _ShapeError(f"topics[{index}].channels is not a list")
        parsed_channels = []
        for number, channel in enumerate(channels):
            channel_name, channel_paused = _name_and_paused(
                channel, f"topics[{index}].channels[{number}]"
            )
            if not is_ephemeral(channel_name):
                parsed_channels.append(ChannelMeta(name=channel_name, paused=channel_paused))
        if not is_ephemeral(name):
            parsed.append(TopicMeta(name=name, paused=paused, channels=tuple(parsed_channels)))
    return NodeMetadata(version=version, topics=tuple(parsed))


def _name_and_paused(entry: Any, where: str) -> tuple[str, bool]:
    if not isinstance(entry, dict):
        raise _ShapeError(f"{where} is not an object")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise _ShapeError(f"{where}.name is not a non-empty string")
    valid = is_valid_channel_name if ".channels[" in where else is_valid_topic_name
    if not valid(name):
        kind = "channel" if ".channels[" in where else "topic"
        raise _ShapeError(
            f"{where}.name {name[: MAX_NAME_LENGTH + 1]!r} is not a valid {kind} name"
            f" (1..{MAX_NAME_LENGTH} of [.a-zA-Z0-9_-])"
        )
    paused = entry.get("paused", False)
    if not isinstance(paused, bool):
        raise _ShapeError(f"{where}.paused is not a boolean")
    return name, paused


def queue_names_on_disk(data_path: str | os.PathLike[str]) -> dict[str, set[str]]:
    """Topics and their channels that have disk-queue files in the data path.

    A file ``<name>.diskqueue.<anything>`` belongs to queue ``<name>``:
    ``topic``, ``topic:channel`` or ``topic:channel:deferred``. Names that
    are not valid topic or channel names are left out.
    """
    found: dict[str, set[str]] = {}
    for file_name in os.listdir(os.fspath(data_path)):
        name, sep, _rest = file_name.partition(".diskqueue.")
        if not sep:
            continue
        topic, _, channel = name.partition(":")
        channel = channel.removesuffix(":deferred")
        if not is_valid_topic_name(topic) or is_ephemeral(topic):
            continue
        channels = found.setdefault(topic, set())
        if channel and is_valid_channel_name(channel) and not is_ephemeral(channel):
            channels.add(channel)
    return found


def restore_metadata(data_path: str | os.PathLike[str]) -> tuple[NodeMetadata | None, str | None]:
    """What the node restores: ``shoal.dat`` completed from the queue files (rule 3).

    Returns:
        The metadata (None for a new, empty data path) and the warning line
        to log when anything was rebuilt, else None.
    """
    directory = os.fspath(data_path)
    problem: str | None = None
    try:
        meta = load_metadata(directory)
    except ConfigError as exc:
        problem = str(exc)
        meta = None
        bad = os.path.join(directory, METADATA_FILE_NAME)
        with contextlib.suppress(OSError):
            os.replace(bad, bad + ".bad")
    on_disk = queue_names_on_disk(directory)
    if meta is None and not on_disk:
        return None, (f"{problem}; no queue files to rebuild it from" if problem else None)
    topics = {topic.name: topic for topic in meta.topics} if meta is not None else {}
    rebuilt: list[str] = []
    for topic_name, channel_names in sorted(on_disk.items()):
        known = topics.get(topic_name)
        if known is None:
            rebuilt.append(topic_name)
            known = TopicMeta(name=topic_name)
        have = {channel.name for channel in known.channels}
        extra = sorted(channel_names - have)
        rebuilt += [f"{topic_name}:{channel}" for channel in extra]
        topics[topic_name] = msgspec.structs.replace(
            known, channels=known.channels + tuple(ChannelMeta(name=c) for c in extra)
        )
    version = meta.version if meta is not None else ""
    result = NodeMetadata(version=version, topics=tuple(topics.values()))
    if not rebuilt and problem is None:
        return result, None
    path = os.path.join(directory, METADATA_FILE_NAME)
    cause = problem if problem is not None else f"metadata file {path} is missing entries"
    names = ", ".join(rebuilt) if rebuilt else "nothing"
    return result, f"{cause}; rebuilt from the queue files: {names}"


def read_node_name(data_path: str | os.PathLike[str]) -> str:
    """The member name kept in ``shoal.name``, or ``""`` when there is none yet.

    A restarted node must be the same member, so the name is kept with the
    data; the node reads it before it serves anything, so bad content stops
    it with one line.

    Raises:
        ConfigError: the file is unreadable, not UTF-8, longer than
            `MAX_NODE_NAME` bytes, or holds control characters; one line
            naming the file.
    """
    path = os.path.join(os.fspath(data_path), NAME_FILE_NAME)
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_NODE_NAME + 2)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise ConfigError(f"cannot read node name file {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_NODE_NAME + 1:
        raise ConfigError(f"node name file {path} is longer than {MAX_NODE_NAME} bytes")
    try:
        stored = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"node name file {path} is not UTF-8 ({exc.reason} at byte {exc.start});"
            " fix or remove it"
        ) from None
    if any(not char.isprintable() for char in stored):
        raise ConfigError(f"node name file {path} holds control characters; fix or remove it")
    return stored


def load_node_name(data_path: str | os.PathLike[str], default: str) -> str:
    """`read_node_name`, writing ``default`` there on first start.

    If the file cannot be written (a full disk), the node still starts,
    under ``default``.

    Raises:
        ConfigError: as `read_node_name`.
    """
    stored = read_node_name(data_path)
    if stored:
        return stored
    path = os.path.join(os.fspath(data_path), NAME_FILE_NAME)
    try:
        with open(path, "w", encoding="utf-8") as file:
            file.write(default + "\n")
    except OSError:
        return default  # a full disk: the name is written on a later start
    return default


class DataPathLock:
    """An exclusive lock on a data directory; release it with `release` or ``with``."""

    __slots__ = ("_fd", "path")

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        """Whether the lock is still held."""
        return self._fd is not None

    def release(self) -> None:
        """Release the lock (idempotent). The lock file stays, as nsqd's does."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> DataPathLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def lock_data_path(path: str | os.PathLike[str]) -> DataPathLock:
    """Take the exclusive lock of a data directory for this node's lifetime.

    The lock is an ``flock`` on ``shoal.lock`` inside the directory, so it
    also refuses a second holder inside the same process.

    Raises:
        ConfigError: the directory does not exist or cannot hold the lock
            file, or another node holds the lock.
    """
    directory = os.fspath(path)
    if not os.path.isdir(directory):
        raise ConfigError(f"data path {directory} is not a directory")
    try:
        fd = os.open(os.path.join(directory, LOCK_FILE_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot lock data path {directory}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"data path {directory} is in use by another node") from None
    except OSError as exc:
        os.close(fd)
        raise ConfigError(f"cannot lock data path {directory}: {exc.strerror or exc}") from exc
    return DataPathLock(directory, fd)


class DataPath:
    """The node's data directory at run time: lock, broker, restore, metadata saves.

    `open` locks the directory, builds the broker over disk queues (or over
    memory when there is no data path; in durable mode the disk queues keep
    every message until it is acknowledged), restores the topics and
    channels ``shoal.dat`` lists, completed from the queue files (rule 3),
    and from then on keeps the file in step with the
    broker's topics and channels; `close` flushes every queue, saves one last
    time and releases the lock.

    Saving. Broker listeners must be quick, and a save is two fsyncs, so a
    deletion or a pause only marks the metadata stale and wakes `save_loop`,
    which takes a snapshot on the event loop and writes it in a worker
    thread (``trio.to_thread``); changes that arrive meanwhile are coalesced
    into the next save. The creation of a non-ephemeral topic or channel is
    the exception, saved at once, before the command that caused it is
    answered, as it always was: a topic or channel missing from
    ``shoal.dat`` after a SIGKILL would hide its queue, and the producer
    from the cluster, after the restart (an acknowledged message must come
    back). Saves are numbered, and an older snapshot never replaces a newer
    file.

    Args:
        config: the node's configuration (``data_path``, ``durable``).
        queue_config: the broker's limits (durable mode already applied).
        disk_config: the disk queues' settings (durable mode already applied).
        known_channels: channels to pre-create with a new topic.
        version: the running shoal version, written into the file.

    Attributes:
        broker: the broker, built by `open`.
        disk: the disk queue factory, or None without a data path.
        health: None while saves succeed, else why the last one failed.
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        queue_config: QueueConfig,
        disk_config: DiskQueueConfig,
        known_channels: Callable[[str], Iterable[str]],
        version: str,
    ) -> None:
        self._config = config
        self._queue_config = queue_config
        self._disk_config = disk_config
        self._known_channels = known_channels
        self._version = version
        self._lock: DataPathLock | None = None
        self._stale = trio.Event()
        self._write_lock = threading.Lock()
        self._taken = 0
        self._written = 0
        self.broker = Broker(queue_config)
        self.disk: DiskBackendFactory | None = None
        self.health: str | None = None
        #: Metadata files written (for tests and statistics).
        self.saves = 0

    def open(self) -> Broker:
        """Lock the directory, build the broker and restore what ``shoal.dat`` lists.

        A ``shoal.dat`` that cannot be read is rebuilt from the queue files
        (rule 3), with one warning line.

        Raises:
            ConfigError: the data path is locked by another node, or its
                ``shoal.name`` cannot be a member name.
            OSError: the directory cannot be created.
        """
        data_path = self._config.data_path
        if data_path is None:
            self.broker = Broker(
                self._queue_config, memory_backend_factory, known_channels=self._known_channels
            )
            return self.broker
        os.makedirs(data_path, exist_ok=True)
        self._lock = lock_data_path(data_path)
        read_node_name(data_path)  # bad content stops the start here, in one line
        self.disk = disk_backend_factory(
            data_path, config=self._disk_config, durable=self._config.durable
        )
        self.broker = Broker(self._queue_config, self.disk, known_channels=self._known_channels)
        if self._config.durable:
            log.info("durable mode: every message is fsynced to disk before OK")
        self._restore(data_path)
        self.broker.add_listener(self._on_broker_event)
        return self.broker

    def node_name(self, default: str) -> str:
        """The member name kept with the data, so a restarted node is the same member."""
        data_path = self._config.data_path
        return default if data_path is None else load_node_name(data_path, default)

    def _restore(self, data_path: str) -> None:
        meta, rebuilt = restore_metadata(data_path)
        if rebuilt is not None:
            log.warning("%s", rebuilt)
        if meta is None:
            return
        now = time.time()
        broker = self.broker
        for topic_meta in meta.topics:
            topic, _ = broker.get_or_create_topic(topic_meta.name, now)
            for channel_meta in topic_meta.channels:
                channel, _ = topic.get_or_create_channel(channel_meta.name, now)
                if channel_meta.paused:
                    channel.pause()
            if topic_meta.paused:
                topic.pause()
        depth = sum(
            t.depth + sum(c.depth for c in t.channels.values()) for t in broker.topics.values()
        )
        log.info("restored %d topics with %d messages from %s", len(meta.topics), depth, data_path)
        for report in self.damage():
            log.warning("DISKQUEUE: %s", report)

    def damage(self) -> list[str]:
        """What disk recovery set aside, one line per damaged region."""
        if self.disk is None:
            return []
        return [line for queue in self.disk.open_queues() for line in queue.damage]

    def _on_broker_event(self, event: BrokerEvent) -> None:
        if (
            isinstance(event, TopicCreated | ChannelCreated)
            and not is_ephemeral(event.topic)
            and not (isinstance(event, ChannelCreated) and is_ephemeral(event.channel))
        ):
            self._save(self._snapshot())
            return
        self._stale.set()

    async def save_loop(self) -> None:
        """Save the metadata whenever it went stale, coalescing changes; runs until cancelled."""
        if self._config.data_path is None:
            return
        while True:
            await self._stale.wait()
            self._stale = trio.Event()
            await trio.to_thread.run_sync(self._save, self._snapshot())

    def close(self) -> None:
        """Flush every queue, save the metadata one last time and release the lock."""
        try:
            self.broker.flush(time.time())
            self.broker.close()
            if self._config.data_path is not None:
                self._save(self._snapshot())
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _snapshot(self) -> tuple[int, list[TopicMeta]]:
        self._taken += 1
        topics = [
            TopicMeta(
                name=topic.name,
                paused=topic.paused,
                channels=tuple(
                    ChannelMeta(name=c.name, paused=c.paused) for c in topic.channels.values()
                ),
            )
            for topic in self.broker.topics.values()
        ]
        return self._taken, topics

    def _save(self, snapshot: tuple[int, list[TopicMeta]]) -> None:
        """Write ``snapshot`` unless a newer one was written (any thread)."""
        number, topics = snapshot
        data_path = self._config.data_path
        assert data_path is not None
        with self._write_lock:
            if number <= self._written:
                return
            try:
                save_metadata(data_path, topics, self._version)
            except OSError as exc:
                self.health = f"failed to persist metadata - {exc}"
                log.error("failed to persist metadata: %s", exc)  # noqa: TRY400 - one line, no traceback
                return
            self._written = number
            self.saves += 1
