"""Log lines stay lines: control characters from messages are escaped, in text and in JSON."""

import io
import json
import logging

from hypothesis import given
from hypothesis import strategies as st

from python_worker.adapters.observability.logging import configure_logging, escape_controls


@given(st.text())
def test_escaped_text_holds_no_line_break_or_control_character_whatever_it_was(text):
    escaped = escape_controls(text)

    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in escaped)


def test_leaves_ordinary_text_as_it_is():
    assert escape_controls("job order-42 type=sum ünïcode €") == "job order-42 type=sum ünïcode €"


def test_writes_line_breaks_and_escape_sequences_as_visible_escapes():
    assert escape_controls("a\nb\r\tc\x1b[31md\u2028") == r"a\nb\r\tc\x1b[31md\u2028"


def log_one(log_format: str, message: str, *args: object) -> str:
    stream = io.StringIO()
    configure_logging(log_format, "INFO", "vm1-p0", stream)
    try:
        logging.getLogger("python_worker.test").warning(message, *args)
    finally:
        configure_logging("text", "WARNING")
    return stream.getvalue()


def test_a_job_id_with_a_line_break_cannot_forge_a_text_log_line():
    forged = "x\n2026-12-01T00:00:00+0000 ERROR   python_worker: forged"

    output = log_one("text", "job %s type=%s", forged, "sum")

    assert output.count("\n") == 1
    assert "x\\n2026-12-01T00:00:00+0000 ERROR" in output
    assert "[vm1-p0] python_worker.test: job x\\n" in output


def test_a_json_line_keeps_the_value_names_its_process_and_says_utc():
    output = log_one("json", "job %s", "x\n2026 ERROR forged")

    (line,) = output.splitlines()
    record = json.loads(line)
    assert record["message"] == "job x\n2026 ERROR forged"
    assert record["process"] == "vm1-p0"
    assert record["level"] == "WARNING"
    assert record["time"].endswith("Z")
    assert len(record["time"]) == len("2026-12-01T00:00:00.000Z")
