"""Run every command of a Markdown file, so the README cannot drift from the code.

``tests/test_readme.py`` runs the README through `run_readme`; the module
also runs alone, ``python -m shoal.testing.readme README.md``, which is how
the test runs it inside a private network namespace (the README's commands
use fixed ports: 4150, 5150, 6150...).

The convention, for whoever writes the README:

- Every fenced code block is run, command by command, in order, with
  ``bash -c``, from a scratch folder, and must exit 0. A command continues
  on the next line after a trailing backslash. ``NAME=$(command)`` keeps
  ``NAME`` for the following commands, as a shell would.
- An HTML comment right before the fence, invisible on GitHub, says how to
  run the block: ``<!-- readme: DIRECTIVE; DIRECTIVE ... -->``.

  ``skip (REASON)``
      Not run; the reason is required (a block in another language than
      ``sh`` must be skipped or it is an error).
  ``background until "TEXT"``
      Each command starts in the background (a server); the next block
      runs once its output shows TEXT. Background commands are stopped
      with SIGINT, as Ctrl-C would, at the end of their ``##`` section.
  ``replace "OLD" "NEW"``
      Run a variant: a shorter ``--duration``, fewer nodes. The README
      should then say how long the real command takes.
  ``retry DURATION``
      Run the block again until it passes or DURATION (``30s``) is up, for
      commands that wait on a cluster to converge.
  ``expect "TEXT"``, ``expect-count "TEXT" N``
      The block's stdout contains TEXT (on at least N lines).

- Paths under ``/tmp/`` are moved into the scratch folder.
- No command may print a Python traceback, on stdout or stderr, and no
  background process either.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["Block", "ReadmeError", "parse", "run_readme"]

#: Longest a foreground command may run.
COMMAND_TIMEOUT = 300.0
#: Longest a background command may take to print its ready text.
READY_TIMEOUT = 60.0
#: Longest a stopped background command may take to exit.
STOP_TIMEOUT = 30.0

_FENCE = re.compile(r"^```(\w*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*readme:\s*(.*?)\s*-->\s*$")
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=\$\((.*)\)$")


class ReadmeError(Exception):
    """A README block failed, or the README breaks the convention."""


@dataclasses.dataclass(slots=True)
class Block:
    """One fenced block and how to run it.

    Attributes:
        section: the ``##`` heading it sits under.
        line: its line number in the file (of the fence).
        language: the fence's language tag.
        text: the block's content.
        skip: the reason it is not run, or None.
        background: the ready text of background commands, or None.
        replacements: (old, new) pairs applied before running.
        retry: seconds to keep retrying, 0 for one attempt.
        expect: (text, at least this many lines) pairs for its stdout.
    """

    section: str
    line: int
    language: str
    text: str
    skip: str | None = None
    background: str | None = None
    replacements: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    retry: float = 0.0
    expect: list[tuple[str, int]] = dataclasses.field(default_factory=list)

    @property
    def where(self) -> str:
        """``line N (section)``, for error messages."""
        return f"line {self.line} ({self.section})"

    def commands(self, tmp: Path) -> list[str]:
        """The block's commands, with its replacements and /tmp/ moved to ``tmp``."""
        text = self.text
        for old, new in self.replacements:
            if old not in text:
                raise ReadmeError(f"{self.where}: replace {old!r}: not in the block")
            text = text.replace(old, new)
        text = text.replace("/tmp/", f"{tmp}/")
        commands: list[str] = []
        pending = ""
        for raw in text.splitlines():
            line = raw.rstrip()
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            command = (pending + line).strip()
            pending = ""
            if command and not command.startswith("#"):
                commands.append(command)
        return commands


def _apply(block: Block, directive: str) -> None:
    if directive.split(maxsplit=1)[0] == "skip":
        # Free text, apostrophes and all: not parsed as shell words.
        reason = directive.partition("skip")[2].strip().strip("()").strip()
        if not reason:
            raise ReadmeError(f"{block.where}: skip needs a reason")
        block.skip = reason
        return
    try:
        words = shlex.split(directive)
    except ValueError as exc:
        raise ReadmeError(f"{block.where}: cannot read directive {directive!r}: {exc}") from None
    if not words:
        return
    match words:
        case ["background", "until", text]:
            block.background = text
        case ["replace", old, new]:
            block.replacements.append((old, new))
        case ["retry", duration] if duration.endswith("s") and duration[:-1].isdigit():
            block.retry = float(duration[:-1])
        case ["expect", text]:
            block.expect.append((text, 1))
        case ["expect-count", text, count] if count.isdigit():
            block.expect.append((text, int(count)))
        case _:
            raise ReadmeError(f"{block.where}: unknown directive {directive!r}")


def parse(markdown: str) -> list[Block]:
    """Every fenced block of ``markdown``, with the directives before it.

    Raises:
        ReadmeError: a directive is malformed, or a block that is not
            ``sh`` is not skipped.
    """
    blocks: list[Block] = []
    section = "top"
    directives: list[str] = []
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            section = line[3:].strip()
        found = _DIRECTIVE.match(line)
        fence = _FENCE.match(line)
        if found:
            directives.append(found.group(1))
        elif fence:
            end = index + 1
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            block = Block(section, index + 1, fence.group(1), "\n".join(lines[index + 1 : end]))
            for text in directives:
                for part in _split_directives(text):
                    _apply(block, part)
            if block.skip is None and block.language not in ("sh", "bash", "shell", ""):
                raise ReadmeError(f"{block.where}: a {block.language} block must be skipped")
            blocks.append(block)
            directives = []
            index = end
        elif line.strip():
            directives = []  # a directive applies to the fence right after it
        index += 1
    return blocks


def _split_directives(text: str) -> list[str]:
    """Split at ``;`` outside quotes and parentheses (a skip reason may hold one)."""
    parts: list[str] = []
    current = ""
    quoted = False
    depth = 0
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "()":
            depth += 1 if char == "(" else -1
        if char == ";" and not quoted and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return [part for part in parts if part]


@dataclasses.dataclass(slots=True)
class _Background:
    command: str
    process: subprocess.Popen[bytes]
    log: Path


class _Runner:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.tmp = workdir / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        self.env.pop("SHOAL_NODE", None)
        self.env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + self.env.get("PATH", "")
        self.background: list[_Background] = []
        self.report: list[dict[str, object]] = []

    def run_block(self, block: Block) -> None:
        started = time.monotonic()
        self._run_block(block)
        self.report[-1]["seconds"] = round(time.monotonic() - started, 1)

    def _run_block(self, block: Block) -> None:
        if block.skip is not None:
            self.report.append({"line": block.line, "skipped": block.skip})
            return
        commands = block.commands(self.tmp)
        if block.background is not None:
            for command in commands:
                if _ASSIGNMENT.match(command):
                    self._run(block, command)  # a variable for what follows, not a server
                else:
                    self._start(block, command, block.background)
            self.report.append({"line": block.line, "background": commands})
            return
        deadline = time.monotonic() + block.retry
        while True:
            try:
                stdout = "".join(self._run(block, command) for command in commands)
                self._check(block, stdout)
            except ReadmeError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)
                continue
            self.report.append({"line": block.line, "ran": commands})
            return

    def _run(self, block: Block, command: str) -> str:
        assignment = _ASSIGNMENT.match(command)
        script = f'printf %s "$({assignment.group(2)})"' if assignment else command
        try:
            result = subprocess.run(
                ["bash", "-c", script], cwd=self.workdir, env=self.env, capture_output=True,
                timeout=COMMAND_TIMEOUT, check=False, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise ReadmeError(f"{block.where}: {command!r} ran over {COMMAND_TIMEOUT:g}s") from None
        stdout = result.stdout.decode(errors="replace")
        stderr = result.stderr.decode(errors="replace")
        if "Traceback" in stdout + stderr:
            raise ReadmeError(f"{block.where}: {command!r} printed a traceback:\n{stderr}")
        if result.returncode != 0:
            raise ReadmeError(
                f"{block.where}: {command!r} exited {result.returncode}:\n{stdout}{stderr}"
            )
        if assignment:
            self.env[assignment.group(1)] = stdout.strip()
            return ""
        return stdout

    def _check(self, block: Block, stdout: str) -> None:
        for text, count in block.expect:
            found = sum(text in line for line in stdout.splitlines())
            if found < count:
                raise ReadmeError(
                    f"{block.where}: expected {text!r} on {count} line(s), "
                    f"found {found}, in:\n{stdout}"
                )

    def _start(self, block: Block, command: str, ready: str) -> None:
        log = self.workdir / f"background-{len(self.background)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", "-c", f"exec {command}"], cwd=self.workdir, env=self.env,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self.background.append(_Background(command, process, log))
        deadline = time.monotonic() + READY_TIMEOUT
        while ready not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise ReadmeError(
                    f"{block.where}: {command!r} did not print {ready!r}:\n"
                    + log.read_text(errors="replace")[-2000:]
                )
            time.sleep(0.05)

    def stop_background(self) -> None:
        """Ctrl-C every background command, as a user ends a section; kill stragglers."""
        for item in self.background:
            if item.process.poll() is None:
                item.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_TIMEOUT
        problems = []
        for item in self.background:
            try:
                item.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(item.process.pid, signal.SIGKILL)
                item.process.wait()
                problems.append(f"{item.command!r} ignored Ctrl-C")
            text = item.log.read_text(errors="replace")
            if "Traceback" in text:
                problems.append(f"{item.command!r} printed a traceback:\n{text[-2000:]}")
        self.background = []
        if problems:
            raise ReadmeError("\n".join(problems))


def run_readme(path: Path, workdir: Path) -> list[dict[str, object]]:
    """Run every block of the Markdown file ``path`` from ``workdir``.

    Returns:
        What was done with each block: ``ran``, ``background`` or
        ``skipped``, and the ``seconds`` it took.

    Raises:
        ReadmeError: a command failed or its output was not as described;
            every background command has been stopped.
    """
    blocks = parse(path.read_text())
    runner = _Runner(workdir)
    try:
        section = None
        for block in blocks:
            if block.section != section:
                runner.stop_background()
                section = block.section
            runner.run_block(block)
    finally:
        with contextlib.suppress(ReadmeError):
            runner.stop_background()
    return runner.report


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="shoal-readme-") as folder:
        yield Path(folder)


def main(argv: list[str]) -> int:
    """``python -m shoal.testing.readme README.md [WORKDIR]``: the report as JSON, or the error."""
    path = Path(argv[0])
    try:
        if len(argv) > 1:
            report = run_readme(path, Path(argv[1]))
        else:
            with _scratch() as folder:
                report = run_readme(path, folder)
    except ReadmeError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
