"""The package layering DESIGN.md promises, checked on the source tree.

Cores (`queue`, `membership`, `registry`) import no trio, socket or clock
module, and the simulator imports cores only, never the trio shell, so every
simulated result speaks for the code a real node runs.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import shoal

ROOT = pathlib.Path(shoal.__file__).parent
CORES = ("queue", "membership", "registry")
SHELL_ONLY = {"trio", "socket", "time", "selectors", "asyncio", "threading"}


def imported_modules(package: str) -> list[tuple[str, str]]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out.append((path.name, node.module))
            elif isinstance(node, ast.Import):
                out.extend((path.name, alias.name) for alias in node.names)
    return out


@pytest.mark.parametrize("package", CORES)
def test_core_imports_no_io_or_clock_module(package: str) -> None:
    found = [
        (name, module)
        for name, module in imported_modules(package)
        if module.split(".")[0] in SHELL_ONLY
    ]
    assert found == []


def test_simulations_import_no_shell_module() -> None:
    found = [
        (name, module)
        for name, module in imported_modules("simulations")
        if module.startswith(("shoal.cluster", "shoal.cli", "shoal.client", "shoal.testing"))
    ]
    assert found == []


def test_registry_core_imports_only_cores() -> None:
    allowed = ("shoal.registry", "shoal.membership", "shoal.queue", "shoal.errors")
    found = [
        (name, module)
        for name, module in imported_modules("registry")
        if module.startswith("shoal") and not module.startswith(allowed)
    ]
    assert found == []
