"""Opening the worker's local SQLite databases: the status outbox and the job memory."""

import sqlite3
from pathlib import Path


class LocalStateUnavailable(Exception):
    """Raised when a local state directory cannot be created, opened or written."""


def open_database(directory: Path, filename: str, synchronous: str) -> sqlite3.Connection:
    """A WAL-mode connection shared across threads (callers serialise it with their own lock)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        database = sqlite3.connect(
            directory / filename, check_same_thread=False, isolation_level=None, timeout=10.0
        )
        # WAL makes a commit one sequential append. FULL also fsyncs each commit (survives a
        # power cut); NORMAL survives a killed process, which is what redelivery is about.
        database.execute("PRAGMA journal_mode=WAL")
        database.execute(f"PRAGMA synchronous={synchronous}")
        # Writes are appends and single-row lookups; SQLite's default 2 MiB page cache per
        # connection bought nothing measurable here but resident memory (bench/: -1.8 MiB).
        database.execute("PRAGMA cache_size=-512")
    except (OSError, sqlite3.Error) as exc:
        raise LocalStateUnavailable(f"directory {directory} is not writable: {exc}") from exc
    return database
