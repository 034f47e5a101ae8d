"""Fixtures for the command tests: the commands as a group, a fake node, a real node."""

from __future__ import annotations

import socket
import sys
from typing import TYPE_CHECKING, Any

import click
import pytest
from click.testing import CliRunner, Result

from shoal.cli.agent import AGENT_COMMANDS
from shoal.cli.commands import COMMANDS
from shoal.client.testing import LOCAL_GOSSIP_ARGS, FakeNode, serve_in_thread
from shoal.testing.process import NodeProcess

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@pytest.fixture
def shoal() -> Callable[..., Result]:
    """Run a command in-process: ``shoal("members", "--node", addr)``."""
    commands = (*COMMANDS, *AGENT_COMMANDS)
    group = click.Group("shoal", commands={command.name or "": command for command in commands})
    runner = CliRunner()

    def invoke(*args: str, input: Any = None, env: dict[str, str] | None = None) -> Result:  # noqa: A002
        return runner.invoke(
            group, list(args), input=input, env={"SHOAL_NODE": None, **(env or {})},
            catch_exceptions=False,
        )  # fmt: skip

    return invoke


@pytest.fixture
def fake() -> Iterator[FakeNode]:
    """A fake node API served from a thread; its ``address`` is set."""
    node = FakeNode()
    with serve_in_thread(node):
        yield node


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    """One real node (a cluster of one) shared by a module's tests."""
    with NodeProcess(*LOCAL_GOSSIP_ARGS, "--node-name", "solo") as proc:
        yield proc
        assert "Traceback" not in proc.stderr, proc.stderr


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def shoal_argv() -> list[str]:
    """The argv prefix that runs the ``shoal`` command in a new process."""
    return [sys.executable, "-m", "shoal"]
