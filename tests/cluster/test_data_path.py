"""The data path at run time: metadata saves coalesced and off the event loop."""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING

import pytest
import trio

from shoal.cluster.metadata import DataPath, TopicMeta, load_metadata
from shoal.config import NodeConfig
from shoal.queue.diskqueue import DiskQueueConfig
from shoal.testing import eventually

if TYPE_CHECKING:
    from pathlib import Path


def data_path(tmp_path: Path, *, durable: bool = False) -> DataPath:
    config = NodeConfig(
        data_path=str(tmp_path), disk=DiskQueueConfig(sync_every=1 if durable else 2500)
    )
    return DataPath(
        config,
        queue_config=config.queue,
        disk_config=config.disk,
        known_channels=lambda topic: (),
        version="test",
    )


def topic_names(tmp_path: Path) -> list[str]:
    meta = load_metadata(tmp_path)
    return [] if meta is None else [t.name for t in meta.topics]


async def test_deletions_and_pauses_mark_stale_and_one_save_covers_them(tmp_path: Path) -> None:
    path = data_path(tmp_path)
    broker = path.open()
    try:
        for name in ("a", "b", "c", "d"):
            broker.get_or_create_topic(name, 0.0)
            broker.get_or_create_channel(name, "ch", 0.0)
        saves = path.saves
        broker.delete_topic("d")
        for name in ("a", "b", "c"):
            broker.pause_topic(name, True)
        assert path.saves == saves  # the listener only marked the metadata stale
        assert topic_names(tmp_path) == ["a", "b", "c", "d"]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(path.save_loop)
            with trio.fail_after(10):
                await eventually(lambda: path.saves > saves)
            nursery.cancel_scope.cancel()
        assert path.saves == saves + 1  # four changes, one file written
        meta = load_metadata(tmp_path)
        assert meta is not None
        assert [(t.name, t.paused) for t in meta.topics] == [
            ("a", True),
            ("b", True),
            ("c", True),
        ]
    finally:
        path.close()


async def test_save_runs_in_a_worker_thread(tmp_path: Path) -> None:
    path = data_path(tmp_path)
    broker = path.open()
    threads: list[threading.Thread] = []
    original = path._save

    def spy(snapshot: tuple[int, list[TopicMeta]]) -> None:
        threads.append(threading.current_thread())
        original(snapshot)

    broker.get_or_create_topic("t", 0.0)  # saved at once, on this thread
    path._save = spy  # type: ignore[method-assign]
    try:
        broker.delete_topic("t")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(path.save_loop)
            with trio.fail_after(10):
                await eventually(lambda: bool(threads))
            nursery.cancel_scope.cancel()
        assert threads[0] is not threading.main_thread()
    finally:
        path._save = original  # type: ignore[method-assign]
        path.close()


@pytest.mark.parametrize("durable", [False, True])
def test_creation_is_saved_before_the_event_returns(tmp_path: Path, durable: bool) -> None:
    path = data_path(tmp_path, durable=durable)
    broker = path.open()
    try:
        broker.get_or_create_topic("orders", 0.0)
        assert topic_names(tmp_path) == ["orders"]
        broker.get_or_create_channel("orders", "audit", 0.0)
        meta = load_metadata(tmp_path)
        assert meta is not None
        assert [c.name for c in meta.topics[0].channels] == ["audit"]
        # Ephemeral names are never written, so they cost no save.
        saves = path.saves
        broker.get_or_create_topic("scratch#ephemeral", 0.0)
        assert path.saves == saves
    finally:
        path.close()


def test_an_older_snapshot_never_replaces_a_newer_file(tmp_path: Path) -> None:
    path = data_path(tmp_path)
    broker = path.open()
    try:
        broker.get_or_create_topic("first", 0.0)
        older = path._snapshot()
        broker.get_or_create_topic("second", 0.0)
        newer = path._snapshot()
        path._save(newer)
        path._save(older)
        assert topic_names(tmp_path) == ["first", "second"]
    finally:
        path.close()


def test_close_saves_and_releases_the_lock(tmp_path: Path) -> None:
    path = data_path(tmp_path)
    path.open().get_or_create_topic("kept", 0.0)
    path.close()
    assert topic_names(tmp_path) == ["kept"]
    again = data_path(tmp_path)
    assert list(again.open().topics) == ["kept"]  # lock released, topic restored
    again.close()


def test_failed_save_is_reported_as_health(tmp_path: Path) -> None:
    path = data_path(tmp_path)
    path.open()
    try:
        gone = dataclasses.replace(path._config, data_path=str(tmp_path / "missing" / "dir"))
        path._config = gone
        path._save(path._snapshot())
        assert path.health is not None
        assert path.health.startswith("failed to persist metadata")
    finally:
        path._config = dataclasses.replace(gone, data_path=str(tmp_path))
        path.close()
