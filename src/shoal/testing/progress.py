"""One status line on stderr for long scripts (benchmarks), on a terminal only.

A benchmark that runs for minutes should say what it is doing, but its
stdout is its figures and a pipe or a log must get nothing else: so the
line is written only when stderr is a terminal, rewritten in place, at
most every `INTERVAL` seconds, and cleared before figures are printed.

A phase that blocks for long (a node filling, a pool of publishers) still
shows its clock: `ticking` redraws the current text from a thread, and
`say` prints a figure with the line out of its way.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from collections.abc import Iterator

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
        self._text = "starting"
        self._lock = threading.Lock()

    def update(self, text: str, *, force: bool = False) -> None:
        """Show ``text`` with the time elapsed since the start."""
        self._text = text
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._shown_at < INTERVAL:
            return
        with self._lock:
            self._shown_at = now
            line = f"{self.name}: {text} ({now - self.started:.0f}s)"
            self.stream.write("\r" + line.ljust(self._width))
            self.stream.flush()
            self._width = len(line)

    def show(self, text: str) -> None:
        """Make ``text`` the current phase and draw it now."""
        self.update(text, force=True)

    def clear(self) -> None:
        """Erase the line, so that what is printed next starts clean."""
        with self._lock:
            if self.enabled and self._width:
                self.stream.write("\r" + " " * self._width + "\r")
                self.stream.flush()
                self._width = 0

    def say(self, text: str) -> None:
        """Print a figure on stdout, the line cleared first (it comes back on the next draw)."""
        self.clear()
        print(text, flush=True)

    @contextmanager
    def ticking(self) -> Iterator[StatusLine]:
        """Redraw the current phase every `INTERVAL` from a thread until the block ends.

        The clock moves while the script blocks; the line is cleared at the
        end. Nothing runs when the stream is not a terminal.
        """
        if not self.enabled:
            yield self
            return
        done = threading.Event()

        def redraw() -> None:
            while not done.wait(INTERVAL):  # bounded by the block's end
                self.update(self._text)

        thread = threading.Thread(target=redraw, name="status-line", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            done.set()
            thread.join()
            self.clear()
