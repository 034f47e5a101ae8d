"""Every command of README.md runs, and prints what the README says it prints.

How to write README commands so this test can run them (the full rules are
in `shoal.testing.readme`):

- Every fenced block is run, command by command, and must exit 0.
- An HTML comment right before a fence says how, e.g.
  ``<!-- readme: background until "HTTP: listening on" -->`` for a server,
  ``<!-- readme: replace "--duration 1h" "--duration 2m" -->`` for a
  shorter variant of a long command (then say in the README how long the
  real one takes), ``<!-- readme: retry 30s; expect "alive" -->`` for
  output that depends on a cluster converging, and ``<!-- readme: skip
  (REASON) -->`` for a block that cannot run here; the reason is required,
  and every block that is not ``sh`` needs one.
- Background commands are stopped (Ctrl-C) at the end of their ``##``
  section, so each section starts from a quiet machine.

The README uses fixed ports (4150, 5150, 6150...). Where unprivileged
network namespaces work (``unshare -rn``), the whole README runs in one of
its own, with nothing but a loopback, so it cannot collide with anything
else on the machine; elsewhere it runs on the machine's loopback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.testing.readme import ReadmeError, parse, run_readme

README = Path(__file__).resolve().parent.parent / "README.md"

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(600)]


def private_network_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True, check=False
    )
    return probe.returncode == 0


def test_every_readme_command_runs_as_described(tmp_path: Path) -> None:
    if private_network_works():
        script = 'ip link set lo up && exec "$0" -m shoal.testing.readme "$1" "$2"'
        result = subprocess.run(
            ["unshare", "-rn", "sh", "-c", script, sys.executable, str(README), str(tmp_path)],
            capture_output=True, timeout=580, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        report = json.loads(result.stdout)
    else:
        report = run_readme(README, tmp_path)
    ran = [entry for entry in report if "ran" in entry or "background" in entry]
    skipped = [entry for entry in report if "skipped" in entry]
    # Nearly everything runs; what does not says why.
    assert len(ran) >= 8, report
    assert all(str(entry["skipped"]).strip() for entry in skipped)
    assert len(skipped) < len(ran), skipped


def test_the_convention_is_enforced() -> None:
    with pytest.raises(ReadmeError, match="python block must be skipped"):
        parse("## s\n```python\nprint(1)\n```\n")
    with pytest.raises(ReadmeError, match="unknown directive"):
        parse('<!-- readme: expect-nothing "x" -->\n```sh\ntrue\n```\n')
    [block] = parse(
        '## s\n<!-- readme: replace "1h" "2m"; retry 30s; expect "a;b" -->\n'
        "```sh\nshoal x --duration 1h \\\n  --y /tmp/z  # note\n```\n"
    )
    assert block.retry == 30.0
    assert block.expect == [("a;b", 1)]
    assert block.commands(Path("/w")) == ["shoal x --duration 2m    --y /w/z  # note"]
    [skipped] = parse("<!-- readme: skip (the reader's own host; needs root) -->\n```sh\nx\n```\n")
    assert skipped.skip == "the reader's own host; needs root"
    with pytest.raises(ReadmeError, match="skip needs a reason"):
        parse("<!-- readme: skip -->\n```sh\nx\n```\n")
    # A directive binds to the fence right after it only.
    [plain] = parse("<!-- readme: skip (x) -->\n\ntext\n\n```sh\ntrue\n```\n")
    assert plain.skip is None
