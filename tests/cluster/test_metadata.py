"""The node metadata file (shoal.dat) and the data path lock."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import pytest

from shoal.cluster.metadata import (
    METADATA_FILE_NAME,
    ChannelMeta,
    NodeMetadata,
    TopicMeta,
    load_metadata,
    lock_data_path,
    save_metadata,
)
from shoal.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

TOPICS = (
    TopicMeta(
        name="orders",
        paused=True,
        channels=(ChannelMeta(name="billing"), ChannelMeta(name="audit", paused=True)),
    ),
    TopicMeta(name="clicks"),
)


def test_metadata_round_trips(tmp_path: Path) -> None:
    save_metadata(tmp_path, TOPICS, "1.2.3")
    assert load_metadata(tmp_path) == NodeMetadata(version="1.2.3", topics=TOPICS)


def test_metadata_has_nsqd_shape(tmp_path: Path) -> None:
    save_metadata(tmp_path, TOPICS[1:], "1.2.3")
    document = json.loads((tmp_path / METADATA_FILE_NAME).read_text())
    assert document == {
        "version": "1.2.3",
        "topics": [{"name": "clicks", "paused": False, "channels": []}],
    }


def test_metadata_leaves_out_ephemeral_topics_and_channels(tmp_path: Path) -> None:
    topics = [
        TopicMeta(name="t#ephemeral", channels=(ChannelMeta(name="c"),)),
        TopicMeta(name="t", channels=(ChannelMeta(name="c#ephemeral"), ChannelMeta(name="d"))),
    ]
    save_metadata(tmp_path, topics, "1")
    loaded = load_metadata(tmp_path)
    assert loaded is not None
    assert loaded.topics == (TopicMeta(name="t", channels=(ChannelMeta(name="d"),)),)


def test_metadata_replace_is_atomic_and_leaves_no_temp_file(tmp_path: Path) -> None:
    save_metadata(tmp_path, TOPICS, "1")
    inode = (tmp_path / METADATA_FILE_NAME).stat().st_ino
    save_metadata(tmp_path, TOPICS[1:], "2")
    assert os.listdir(tmp_path) == [METADATA_FILE_NAME]
    assert (tmp_path / METADATA_FILE_NAME).stat().st_ino != inode  # renamed over, not rewritten
    loaded = load_metadata(tmp_path)
    assert loaded is not None
    assert loaded.version == "2"


def test_failed_save_keeps_old_file_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_metadata(tmp_path, TOPICS, "1")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        save_metadata(tmp_path, (), "2")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == [METADATA_FILE_NAME]
    assert load_metadata(tmp_path) == NodeMetadata(version="1", topics=TOPICS)


def test_missing_metadata_means_a_new_node(tmp_path: Path) -> None:
    assert load_metadata(tmp_path) is None


def test_nsqd_null_channels_load_as_none(tmp_path: Path) -> None:
    (tmp_path / METADATA_FILE_NAME).write_text(
        '{"topics": [{"channels": null, "name": "t", "paused": false}], "version": "1.3.0"}'
    )
    assert load_metadata(tmp_path) == NodeMetadata(version="1.3.0", topics=(TopicMeta(name="t"),))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"topics": [', "not valid JSON"),
        (b'{"version": "\xff"}', "not UTF-8"),
        (b"[]", "top level is not an object"),
        (b'{"topics": {}}', "topics is not a list"),
        (b'{"topics": [{"name": ""}]}', "topics[0].name"),
        (b'{"topics": [{"name": "t", "paused": "yes"}]}', "topics[0].paused"),
        (b'{"topics": [{"name": "t", "channels": [3]}]}', "topics[0].channels[0] is not"),
    ],
)
def test_corrupt_metadata_is_a_one_line_config_error(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    (tmp_path / METADATA_FILE_NAME).write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_metadata(tmp_path)
    message = str(info.value)
    assert reason in message
    assert METADATA_FILE_NAME in message
    assert "\n" not in message


def test_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    with (
        lock_data_path(tmp_path),
        pytest.raises(ConfigError, match="is in use by another node"),
    ):
        lock_data_path(tmp_path)


def test_lock_is_free_again_after_release(tmp_path: Path) -> None:
    lock = lock_data_path(tmp_path)
    lock.release()
    assert not lock.held
    with lock_data_path(tmp_path) as again:
        assert again.held


def test_lock_refuses_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        lock_data_path(tmp_path / "nope")
