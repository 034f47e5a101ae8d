"""A publish's IDs or bodies as the replication frame carried them, cut only when read.

A replica acknowledges most publishes without ever reading one of their
messages: it needs their bytes only when a record stores them (a FIN, a
pump, a drop), a snapshot or an adoption reads them, or a publish is
aborted. Cutting every ID and body out of each frame it receives was most
of its work per batch, so the codec hands out a `PackedField` instead: the
frame's bytes, where the block starts and the size of each item, checked
against the frame when decoded (a later cut cannot fail). The first read
cuts the whole block in one C-level `struct` call and keeps the result.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, overload

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["PackedField", "total_size"]


@functools.lru_cache(maxsize=64)
def _equal_items(count: int, size: int) -> struct.Struct:
    """The format that cuts ``count`` items of ``size`` bytes (a publisher's usual batch).

    Compiling a format costs four times what cutting with it does; batches
    of equal items repeat, so theirs is kept.
    """
    return struct.Struct(">" + f"{size}s" * count)


class PackedField(Sequence[bytes]):
    """Items laid end to end in ``data`` from ``start``, read-only, cut on first read.

    Args:
        data: the frame's bytes (kept while this is referenced).
        start: where the first item begins.
        lengths: each item's size, in order; the caller has checked that
            they fit in ``data``.
    """

    __slots__ = ("_cut", "_data", "_lengths", "_start", "size")

    def __init__(self, data: bytes, start: int, lengths: tuple[int, ...]) -> None:
        self._data = data
        self._start = start
        self._lengths = lengths
        self._cut: tuple[bytes, ...] | None = None
        #: Bytes of all the items, known without cutting.
        self.size = sum(lengths)

    @classmethod
    def equal(cls, data: bytes, start: int, count: int, size: int) -> PackedField:
        """``count`` items of ``size`` bytes each (message IDs)."""
        return cls(data, start, (size,) * count)

    @property
    def is_cut(self) -> bool:
        """Whether the items were read (and so cut out of the frame)."""
        return self._cut is not None

    @property
    def lengths(self) -> tuple[int, ...]:
        """Each item's size, without cutting."""
        return self._lengths

    def block(self) -> memoryview:
        """The items' bytes as they came, end to end, without a copy."""
        return memoryview(self._data)[self._start : self._start + self.size]

    def cut(self) -> tuple[bytes, ...]:
        """The items, cut out of the frame on the first call."""
        items = self._cut
        if items is None:
            lengths = self._lengths
            count = len(lengths)
            if count and lengths.count(lengths[0]) == count:
                fmt = _equal_items(count, lengths[0])
            else:
                fmt = struct.Struct(">" + "%ds" * count % lengths)
            items = self._cut = fmt.unpack_from(self._data, self._start)
        return items

    def __len__(self) -> int:
        return len(self._lengths)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.cut())

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[bytes, ...]: ...

    def __getitem__(self, index: int | slice) -> bytes | tuple[bytes, ...]:
        return self.cut()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedField):
            return self.cut() == other.cut()
        if isinstance(other, tuple):
            return self.cut() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.cut())

    def __repr__(self) -> str:
        return f"PackedField({len(self)} items, {self.size} bytes, cut={self.is_cut})"


def total_size(items: Sequence[bytes]) -> int:
    """Bytes of ``items``, without cutting a `PackedField`."""
    if type(items) is PackedField:
        return items.size
    return sum(map(len, items))
