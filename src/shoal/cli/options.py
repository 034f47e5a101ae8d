"""Options shared by the ``shoal`` commands, generated from the config dataclasses.

Durations are written as nsqd's flags write them (Go durations: ``250ms``,
``60s``, ``15m``, ``1h30m``); a bare number is taken as seconds.

`config_options` turns every field declared with `shoal.fields.setting`
into a click option: the flag and help come from the field's metadata, the
default from the field itself, the type from its annotation (``float`` is a
duration, ``int`` an integer with the declared bounds, ``bool`` an
``--x/--no-x`` switch, a tuple a repeatable flag). Membership settings,
which ``shoal simulate --set`` can change, are set on a node with
``--gossip-set FIELD=VALUE``, parsed by the same `parse_membership_setting`,
so any simulated setting can be reproduced on a real node.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import TYPE_CHECKING, Any, TypeVar

import click

from shoal.membership.config import MembershipConfig

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "DURATION",
    "Duration",
    "config_options",
    "format_duration",
    "option_fields",
    "parse_duration",
    "parse_membership_setting",
]

F = TypeVar("F", bound="Callable[..., Any]")

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


def format_duration(seconds: float) -> str:
    """Seconds as the Go duration a flag's help shows (``250ms``, ``60s``, ``15m``, ``1h``)."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def option_fields(cls: type[Any]) -> list[dataclasses.Field[Any]]:
    """The fields of config dataclass ``cls`` that are command-line options."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    assert field.default_factory is not dataclasses.MISSING
    return field.default_factory()


def _option(field: dataclasses.Field[Any]) -> Callable[[F], F]:
    meta = field.metadata
    # ``int | None`` is an int option whose default (None) means "derived".
    kind = str(field.type).removesuffix(" | None")
    flag = "--" + meta.get("flag", field.name.replace("_", "-"))
    param = meta.get("param", field.name)
    extra: dict[str, Any] = {"help": meta["help"]}
    if "metavar" in meta:
        extra["metavar"] = meta["metavar"]
    if kind == "bool":
        name = meta.get("flag", field.name.replace("_", "-"))
        return click.option(
            f"--{name}/--no-{name}", param, default=_default(field), show_default=True, **extra
        )
    if kind.startswith("tuple["):
        element = kind.removeprefix("tuple[").split(",")[0]
        click_type: Any = float if element == "float" else str
        return click.option(flag, param, type=click_type, multiple=True, **extra)
    if kind == "float":
        click_type = DURATION
    elif kind == "int":
        bounds = meta.get("min"), meta.get("max")
        click_type = int if bounds == (None, None) else click.IntRange(*bounds)
    elif meta.get("file"):
        click_type = click.Path(dir_okay=False)
    else:
        click_type = str
    if meta.get("optional"):
        return click.option(flag, param, type=click_type, default=None, **extra)
    default = _default(field)
    if kind == "float" and parse_duration(format_duration(default)) == default:
        default = format_duration(default)  # shown as nsqd shows it; DURATION reads it back
    return click.option(
        flag, param, type=click_type, default=default, show_default=default is not None, **extra
    )


def config_options(*classes: type[Any]) -> Callable[[F], F]:
    """Decorate a command with one option per `setting` field of ``classes``, in order."""
    options = [_option(field) for cls in classes for field in option_fields(cls)]

    def decorate(fn: F) -> F:
        return functools.reduce(lambda f, option: option(f), reversed(options), fn)

    return decorate


def parse_membership_setting(text: str, option: str = "--set") -> tuple[str, Any]:
    """Parse ``FIELD=VALUE`` for a `MembershipConfig` field, by its type.

    Durations for float fields (``2m``), ``true``/``false`` for booleans,
    integers for counts; ``inf`` where a float may be infinite.

    Raises:
        click.BadParameter: the text is not FIELD=VALUE, names no membership
            setting, or the value does not fit the setting's type.
    """
    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not sep or not name:
        raise click.BadParameter(f"{text!r} is not FIELD=VALUE", param_hint=option)
    kinds = {field.name: str(field.type) for field in dataclasses.fields(MembershipConfig)}
    kind = kinds.get(name)
    if kind is None:
        raise click.BadParameter(f"no membership setting named {name!r}", param_hint=option)
    value = _typed(kind, raw)
    if value is None:
        expected = {"bool": "true or false", "int": "an integer"}.get(
            kind, "a number or a duration (e.g. 500ms, 2m)"
        )
        raise click.BadParameter(f"{name} must be {expected}, not {raw!r}", param_hint=option)
    return name, value


def _typed(kind: str, raw: str) -> bool | int | float | None:
    lowered = raw.lower()
    if kind == "bool":
        return {"true": True, "false": False}.get(lowered)
    try:
        if kind == "int":
            return int(raw)
        if lowered in ("inf", "infinity"):
            return math.inf
        return parse_duration(raw)
    except ValueError:
        return None
