"""Config fields that describe their own command-line option.

Each setting is declared once, on its config dataclass: its default, its
type and its help text. `setting` stores the help (and, where the field
name is not the flag's, the flag and parameter names, bounds and a
metavar) in the field's metadata; `shoal.cli.options.config_options`
generates the click options from it, so a default or a help text is never
written twice (nsqd's flags take their defaults from ``NewOptions`` in the
same spirit). Pure data: no click here, so cores may use it.

Metadata keys: ``help`` (required), ``flag`` (default: the field name with
dashes), ``param`` (the option's parameter name, default: the field name),
``min`` and ``max`` (integer bounds), ``metavar``, ``file`` (a path that
must not name a directory), ``optional`` (the option defaults to unset and
the config's own default applies, described by ``help``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["setting"]


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,  # noqa: A002 - the option's help text, as click names it
    default_factory: Any = dataclasses.MISSING,
    flag: str | None = None,
    param: str | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
    metavar: str | None = None,
    file: bool = False,
    optional: bool = False,
) -> Any:
    """A dataclass field that is also a ``shoal node`` option (see the module docstring)."""
    given = {"flag": flag, "param": param, "min": minimum, "max": maximum, "metavar": metavar}
    metadata: dict[str, Any] = {"help": help}
    metadata.update({key: value for key, value in given.items() if value is not None})
    if file:
        metadata["file"] = True
    if optional:
        metadata["optional"] = True
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)
