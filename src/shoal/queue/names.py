"""Topic and channel name rules (docs/nsq.md §1.6, §4.7).

A name is 1 to 64 bytes of ``[.a-zA-Z0-9_-]``, optionally followed by the
suffix ``#ephemeral``; the suffix counts towards the 64, as nsqd checks the
length of the whole name before matching the pattern. Valid names are
therefore pure ASCII, so characters and bytes count the same.

These checks run on every PUB, so they are a length test and one
precompiled ``fullmatch`` (``fullmatch`` rather than nsqd's ``^...$``,
because Python's ``$`` also matches before a trailing newline).
"""

from __future__ import annotations

import re

__all__ = [
    "EPHEMERAL_SUFFIX",
    "MAX_NAME_LENGTH",
    "is_ephemeral",
    "is_valid_channel_name",
    "is_valid_topic_name",
]

#: Longest topic or channel name, suffix included (nsqd; was 32 before 0.2.28).
MAX_NAME_LENGTH = 64
#: Marks a topic or channel that is deleted once its last consumer leaves.
EPHEMERAL_SUFFIX = "#ephemeral"

_NAME = re.compile(r"[.a-zA-Z0-9_-]+(?:#ephemeral)?")


def _is_valid_name(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME_LENGTH and _NAME.fullmatch(name) is not None


def is_valid_topic_name(name: str) -> bool:
    """Return whether ``name`` is a legal topic name, ``#ephemeral`` suffix included."""
    return _is_valid_name(name)


def is_valid_channel_name(name: str) -> bool:
    """Return whether ``name`` is a legal channel name, ``#ephemeral`` suffix included."""
    return _is_valid_name(name)


def is_ephemeral(name: str) -> bool:
    """Return whether ``name`` carries the ``#ephemeral`` suffix.

    The name is not validated; call `is_valid_topic_name` or
    `is_valid_channel_name` first.
    """
    return name.endswith(EPHEMERAL_SUFFIX)
