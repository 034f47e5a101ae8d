"""The benchmarks' status line: on a terminal only, rewritten in place, cleared before figures."""

from __future__ import annotations

import contextlib
import io
import threading
import time

from shoal.testing.progress import INTERVAL, StatusLine


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


def test_a_ticking_line_is_redrawn_while_the_script_blocks_and_figures_come_clean() -> None:
    stream = Terminal()
    status = StatusLine("bench/x.py", stream)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), status.ticking():
        status.show("filling")
        redraws = stream.getvalue().count("\r")
        # The thread redraws the phase while this one blocks; poll, bounded.
        for _ in range(200):
            if stream.getvalue().count("bench/x.py: filling") > 1:
                break
            time.sleep(INTERVAL / 4)
        assert stream.getvalue().count("\r") > redraws
        status.say("42 msgs/s")
    assert printed.getvalue() == "42 msgs/s\n"
    assert stream.getvalue().endswith("\r")  # erased at the end of the block


def test_a_ticking_line_off_a_terminal_starts_no_thread() -> None:
    stream = io.StringIO()
    status = StatusLine("bench/x.py", stream)
    before = threading.active_count()
    with status.ticking():
        status.show("filling")
        assert threading.active_count() == before
    assert stream.getvalue() == ""
