"""How the worker's log lines look: text for a terminal or the journal, or one JSON object each."""

import logging
import re
import sys
import time
from typing import TextIO

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: anything a terminal,
# the journal or a log shipper may take for the end of a line or an escape sequence.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """`text` on one line: line breaks and other control characters written as escapes.

    Log messages carry values from messages (a job id, a type, a reason): whoever can publish a
    job must not be able to start a forged log line with a `\\n` in its id.
    """
    if not _CONTROLS.search(text):
        return text
    return _CONTROLS.sub(lambda match: _NAMED.get(match[0]) or _code(match[0]), text)


def _code(character: str) -> str:
    code = ord(character)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


class _ProcessName(logging.Filter):
    """Puts the process's name (its worker id) on every record, for `%(process_name)s`."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    def filter(self, record: logging.LogRecord) -> bool:
        record.process_name = self._name
        return True


class _TextFormatter(logging.Formatter):
    """`time level [process] logger: message`, the message on one line."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)-7s [%(process_name)s] %(name)s: %(message)s",
            "%Y-%m-%dT%H:%M:%S%z",
        )

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        # Only the message: a traceback appended after it is ours and keeps its lines.
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


def _json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    class UtcJsonFormatter(JsonFormatter):
        """One JSON object per line (JSON escapes control characters itself), time in UTC."""

        def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            return f"{stamp}.{int(record.msecs):03d}Z"

    return UtcJsonFormatter(
        "{asctime}{levelname}{process_name}{name}{message}",
        style="{",
        rename_fields={
            "levelname": "level",
            "name": "logger",
            "asctime": "time",
            "process_name": "process",
        },
        json_default=str,
    )


def configure_logging(
    log_format: str, level: str, process_name: str = "python-worker", stream: TextIO | None = None
) -> None:
    """One handler on the root logger, in `log_format` (text or json), from `level` up; every
    line names `process_name` (the worker id, or the supervisor's)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_ProcessName(process_name))
    handler.setFormatter(_json_formatter() if log_format == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if level != "DEBUG":
        # pika logs every connection step, and each failure again with a traceback; our
        # adapter reports each one once, with the context an operator needs (which node,
        # which queue, what happens next).
        logging.getLogger("pika").setLevel(logging.CRITICAL)
