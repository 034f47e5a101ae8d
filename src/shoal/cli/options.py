"""Option types shared by the ``shoal`` commands.

Durations are written as nsqd's flags write them (Go durations: ``250ms``,
``60s``, ``15m``, ``1h30m``); a bare number is taken as seconds.
"""

from __future__ import annotations

import re
from typing import Any

import click

__all__ = ["DURATION", "Duration", "parse_duration"]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Parse a Go duration or a number of seconds into float seconds.

    Raises:
        ValueError: the text is neither.
    """
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    pos, total = 0, 0.0
    while pos < len(body):
        match = _PART.match(body, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    return sign * total


class Duration(click.ParamType[float, Any]):
    """A click parameter for durations (see `parse_duration`)."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        """Return seconds, or fail with a usage error naming the bad value."""
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a duration (e.g. 250ms, 60s, 15m, 1h)", param, ctx)


DURATION = Duration()
