"""A log line with an exception stays one line and says what failed."""

import json
import logging

from shoal.cli.logs import JsonFormatter, NsqFormatter


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _raise() -> None:
    raise ValueError("no such\nmember")


#: Where `_raise` raises, as the line should name it.
WHERE = f"(test_logs.py:{_raise.__code__.co_firstlineno + 1} in _raise)"


def _logged(failing: bool) -> logging.LogRecord:
    """One record, as a caught bug (``log.exception``) or a plain line logs it."""
    keep = _Keep()
    log = logging.getLogger("shoal.test_logs")
    log.addHandler(keep)
    log.setLevel(logging.INFO)
    try:
        if not failing:
            log.info("TCP: listening on %s", "x")
        else:
            try:
                _raise()
            except ValueError:
                log.exception("HTTP: %s failed", "GET /x")
    finally:
        log.removeHandler(keep)
        log.setLevel(logging.NOTSET)
    (record,) = keep.records
    return record


def test_nsq_line_names_the_exception_and_where_it_was_raised() -> None:
    line = NsqFormatter().format(_logged(failing=True))
    assert "\n" not in line
    assert line.endswith(f"ERROR: HTTP: GET /x failed: ValueError: no such member {WHERE}")


def test_json_line_carries_the_exception_as_error() -> None:
    data = json.loads(JsonFormatter().format(_logged(failing=True)))
    assert data["msg"] == "HTTP: GET /x failed"
    assert data["error"] == f"ValueError: no such member {WHERE}"


def test_a_line_without_an_exception_is_unchanged() -> None:
    record = _logged(failing=False)
    assert NsqFormatter().format(record).endswith("INFO: TCP: listening on x")
    assert "error" not in json.loads(JsonFormatter().format(record))
