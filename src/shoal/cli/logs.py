"""Log lines in nsqd's layout, which tools and harnesses already parse.

nsqd writes ``[nsqd] 2024/05/01 10:00:00.123456 INFO: TCP: listening on
[::]:4150``; harnesses look for ``TCP: listening on`` and ``HTTP: listening
on``, so the message text after the level is kept word for word.

``--log-format json`` writes one JSON object per line instead, for log
shippers: ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``msg`` (the same
text), plus any structured fields a line carries in its ``shoal`` extra
(membership lines name the event, member and address).

A line logged with an exception (``log.exception``: a bug caught so that
the node keeps serving) stays one line: it ends with the exception's type,
its message and the innermost frame that raised it, in JSON as ``error``.
Without that the line says only that something failed, not what.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import traceback

__all__ = ["LOG_FORMATS", "JsonFormatter", "NsqFormatter", "setup_logging"]

#: The ``--log-format`` choices.
LOG_FORMATS = ("nsq", "json")


class NsqFormatter(logging.Formatter):
    """``[shoal] YYYY/MM/DD HH:MM:SS.ffffff LEVEL: message``."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record on one line."""
        stamp = datetime.datetime.fromtimestamp(record.created).strftime("%Y/%m/%d %H:%M:%S.%f")
        level = "WARNING" if record.levelno == logging.WARNING else record.levelname
        error = _error(record)
        tail = f": {error}" if error else ""
        return f"[shoal] {stamp} {level}: {record.getMessage()}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg and the line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as one line of JSON."""
        stamp = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        out: dict[str, object] = {
            "time": stamp.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "level": "warn" if record.levelno == logging.WARNING else record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        error = _error(record)
        if error:
            out["error"] = error
        fields = getattr(record, "shoal", None)
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if k not in out})
        return json.dumps(out, default=str)


def _error(record: logging.LogRecord) -> str:
    """``Type: message (file:line in function)`` of the record's exception, or ``""``."""
    if not record.exc_info or record.exc_info[1] is None:
        return ""
    _kind, exc, tb = record.exc_info
    message = " ".join(str(exc).split())  # one line, whatever the exception says
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    frames = traceback.extract_tb(tb)
    if not frames:
        return text
    where = frames[-1]
    return f"{text} ({where.filename.rsplit('/', 1)[-1]}:{where.lineno} in {where.name})"


def setup_logging(level: str, log_format: str = "nsq") -> None:
    """Send the ``shoal`` loggers to stderr at ``level`` (debug, info, warn, error).

    ``log_format`` is ``"nsq"`` (nsqd's layout) or ``"json"``.
    """
    names = {
        "debug": logging.DEBUG,
        "info": logging.INFO,
        "warn": logging.WARNING,
        "warning": logging.WARNING,
        "error": logging.ERROR,
        "fatal": logging.CRITICAL,
    }
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else NsqFormatter())
    root = logging.getLogger("shoal")
    root.handlers[:] = [handler]
    root.setLevel(names[level])
    root.propagate = False
