"""A click group that imports a subcommand's module only when it runs.

``shoal node`` is started by supervisors, tests and deploys, and every
millisecond before it answers and joins is a millisecond its peers and
clients wait. Importing the client library, the cluster launcher and the
simulator (about two thirds of the CLI's import time) only to register
commands this process will not run is the largest part of that; this group
lists their names up front and imports a module on first use. ``--help``
still lists and describes every command (it imports them all).

Click documents this pattern ("Lazily Loading Subcommands" in its
"Advanced Patterns" guide).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["LazyGroup"]


class LazyGroup(click.Group):
    """A `click.Group` with commands named in ``lazy`` as ``{"name": "module:attribute"}``."""

    def __init__(self, *args: Any, lazy: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, the lazy ones included, sorted."""
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Return the command, importing its module if it is a lazy one."""
        target = self._lazy.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command
