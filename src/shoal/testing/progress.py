"""One status line on stderr for long scripts (benchmarks), on a terminal only.

A benchmark that runs for minutes should say what it is doing, but its
stdout is its figures and a pipe or a log must get nothing else: so the
line is written only when stderr is a terminal, rewritten in place, at
most every `INTERVAL` seconds, and cleared before figures are printed.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["INTERVAL", "StatusLine"]

#: Seconds between two redraws.
INTERVAL = 0.2


class StatusLine:
    """``update("topic 37 of 100")`` shows the text after the script's name.

    Args:
        name: shown first on the line, e.g. ``bench/lookup.py``.
        stream: where to write; stderr by default.
    """

    def __init__(self, name: str, stream: TextIO | None = None) -> None:
        self.name = name
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.started = time.monotonic()
        self._shown_at = -INTERVAL
        self._width = 0

    def update(self, text: str, *, force: bool = False) -> None:
        """Show ``text`` with the time elapsed since the start."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._shown_at < INTERVAL:
            return
        self._shown_at = now
        line = f"{self.name}: {text} ({now - self.started:.0f}s)"
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def clear(self) -> None:
        """Erase the line, so that what is printed next starts clean."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
