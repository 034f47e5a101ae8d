"""Log lines in nsqd's layout, which tools and harnesses already parse.

nsqd writes ``[nsqd] 2024/05/01 10:00:00.123456 INFO: TCP: listening on
[::]:4150``; harnesses look for ``TCP: listening on`` and ``HTTP: listening
on``, so the message text after the level is kept word for word.
"""

from __future__ import annotations

import datetime
import logging
import sys

__all__ = ["setup_logging"]


class NsqFormatter(logging.Formatter):
    """``[shoal] YYYY/MM/DD HH:MM:SS.ffffff LEVEL: message``."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record on one line."""
        stamp = datetime.datetime.fromtimestamp(record.created).strftime("%Y/%m/%d %H:%M:%S.%f")
        level = "WARNING" if record.levelno == logging.WARNING else record.levelname
        return f"[shoal] {stamp} {level}: {record.getMessage()}"


def setup_logging(level: str) -> None:
    """Send the ``shoal`` loggers to stderr at ``level`` (debug, info, warn, error)."""
    names = {
        "debug": logging.DEBUG,
        "info": logging.INFO,
        "warn": logging.WARNING,
        "warning": logging.WARNING,
        "error": logging.ERROR,
        "fatal": logging.CRITICAL,
    }
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(NsqFormatter())
    root = logging.getLogger("shoal")
    root.handlers[:] = [handler]
    root.setLevel(names[level])
    root.propagate = False
