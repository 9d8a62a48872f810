"""The operator's structured log lines: one line per event, with the traceback of a logged exception."""

from __future__ import annotations

import logging
import sys

from controllers.manager import KeyValueFormatter


def test_an_exception_is_logged_with_its_traceback_on_the_same_line() -> None:
    try:
        raise ValueError("duplicate entries for key")
    except ValueError:
        record = logging.getLogger("tokenworks.test").makeRecord(
            "tokenworks.test", logging.ERROR, __file__, 1, "autoscaling failed object=%s", ("ns/md",),
            exc_info=sys.exc_info())
    line = KeyValueFormatter().format(record)
    assert "\n" not in line
    assert line.split(" ", 1)[1].startswith('E logger=tokenworks.test msg="autoscaling failed object=ns/md"')
    assert "ValueError: duplicate entries for key" in line and "Traceback" in line
