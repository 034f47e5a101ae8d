"""How every ``shoal`` command ends when something goes wrong: one line, an exit code.

One home for the rules, so that ``shoal node``, the operator commands and
``shoal simulate`` agree:

- A failure is one line on stderr, ``shoal: <what>``, naming the address,
  path or file at fault and the cause, with exit code `EXIT_FAILURE`.
- Ctrl-C is ``shoal: interrupted`` and exit code `EXIT_INTERRUPTED` (130,
  what a shell reports for a command ended by SIGINT), whenever it lands:
  also while Python is still importing, before any command runs.
- Never a traceback for a user's mistake or a signal. Only a genuine bug
  (an exception no rule here knows) still prints one, because hiding it
  would hide the bug.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "describe_os_error",
    "fail",
    "interrupted",
    "leaf",
]

#: Exit code of a command that failed at run time (usage errors are click's 2).
EXIT_FAILURE = 1
#: Exit code of a command ended by Ctrl-C: 128 + SIGINT, as shells report it.
EXIT_INTERRUPTED = 130


def describe_os_error(exc: OSError) -> str:
    """One line for an `OSError`: the file it names, then the cause.

    ``os.makedirs("file/x")`` raises ``FileExistsError`` whose text is only
    ``[Errno 17] File exists``; the path is in ``exc.filename``, so it is put
    first. Errors raised with a message that names their subject
    (``cannot listen on 127.0.0.1:4150 (TCP): Address already in use``) are
    kept as they are, without the ``[Errno n]`` prefix.
    """
    cause = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None:
        path = os.fsdecode(exc.filename)
        if isinstance(exc, FileExistsError) and not os.path.isdir(path):
            cause = "exists and is not a directory"  # makedirs' only way to say so
        return f"{path}: {cause}"
    return cause


def leaf(exc: BaseException) -> BaseException:
    """The first error inside nested exception groups (trio wraps task failures)."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def fail(message: str) -> NoReturn:
    """Print ``shoal: message`` on stderr and exit `EXIT_FAILURE`."""
    sys.stderr.write(f"shoal: {message}\n")
    sys.stderr.flush()
    sys.exit(EXIT_FAILURE)


def interrupted() -> NoReturn:
    """Print ``shoal: interrupted`` on stderr and exit `EXIT_INTERRUPTED`."""
    try:
        # On a terminal the ^C sits at the end of a line: start a fresh one.
        sys.stderr.write(("\n" if sys.stderr.isatty() else "") + "shoal: interrupted\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr is gone too; the exit code still tells
    sys.exit(EXIT_INTERRUPTED)
