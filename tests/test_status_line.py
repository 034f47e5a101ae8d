"""The benchmarks' status line: on a terminal only, rewritten in place, cleared before figures."""

from __future__ import annotations

import io

from shoal.testing.progress import StatusLine


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_nothing_is_written_when_stderr_is_not_a_terminal() -> None:
    stream = io.StringIO()
    status = StatusLine("bench/x.py", stream)
    status.update("step 1", force=True)
    status.clear()
    assert stream.getvalue() == ""


def test_the_line_is_rewritten_in_place_and_cleared() -> None:
    stream = Terminal()
    status = StatusLine("bench/x.py", stream)
    status.update("a much longer first step", force=True)
    status.update("step 2")  # within the redraw interval: skipped
    status.update("step 3", force=True)
    status.clear()
    writes = stream.getvalue().split("\r")
    assert writes[1].startswith("bench/x.py: a much longer first step (")
    # The shorter line is padded over the longer one, then everything erased.
    assert writes[2].startswith("bench/x.py: step 3 (")
    assert len(writes[2]) == len(writes[1])
    assert writes[3].strip() == ""
    assert "step 2" not in stream.getvalue()
