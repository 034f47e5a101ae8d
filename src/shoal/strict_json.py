"""JSON from clients, decoded the way Go's ``encoding/json`` would accept it.

nsqd decodes IDENTIFY bodies and ``/config`` values with Go's decoder, which
refuses ``NaN`` and ``Infinity`` (not JSON), numbers beyond float64 and
nesting past 10,000 levels. Python's `json.loads` accepts the first two,
turns ``1e400`` into ``inf`` (so a later ``int()`` raised OverflowError) and
raises RecursionError, not ValueError, on deep nesting (1,000 levels is
enough). Any of those used to escape as an internal error instead of the
client's error reply. `loads` turns every one into `JSONBodyError`, a
ValueError, so callers need one ``except``.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["JSONBodyError", "loads"]


class JSONBodyError(ValueError):
    """The body is not JSON this node can use."""


def _no_constant(name: str) -> Any:
    raise JSONBodyError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONBodyError(f"number {text[:32]} out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def loads(data: bytes | str) -> Any:
    """Decode one JSON document strictly.

    Raises:
        JSONBodyError: not UTF-8, not JSON, a non-finite or out-of-range
            number, an integer too long to convert, or nesting too deep.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return _DECODER.decode(text)
    except JSONBodyError:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise JSONBodyError(str(exc)[:200]) from None
