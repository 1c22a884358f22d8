"""How the worker's log lines look: text for a terminal or the journal, or one JSON object each."""

import logging
import sys
from typing import TextIO


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S%z")


def configure_logging(log_format: str, level: str, stream: TextIO | None = None) -> None:
    """One handler on the root logger, in `log_format` (text or json), from `level` up."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"levelname": "level", "name": "logger", "asctime": "time"},
                json_default=str,
            )
        )
    else:
        handler.setFormatter(_TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if level != "DEBUG":
        # pika logs every connection step, and each failure again with a traceback; our
        # adapter reports each one once, with the context an operator needs (which node,
        # which queue, what happens next).
        logging.getLogger("pika").setLevel(logging.CRITICAL)
