"""A durable, ordered local outbox (SQLite) for status updates the API could not take yet."""

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from python_worker.adapters.sqlite.database import LocalStateUnavailable, open_database

OUTBOX_FILENAME = "status-outbox.sqlite3"


class OutboxUnavailable(Exception):
    """Raised when the outbox directory cannot be created, opened or written."""


@dataclass(frozen=True)
class OutboxRow:
    """One stored update: `seq` orders all rows globally, oldest first."""

    seq: int
    job_id: str
    idempotency_key: str
    body: bytes


class Outbox:
    """Status updates kept on disk until delivered, in the order they were appended.

    Rows survive the process: a new `Outbox` on the same directory sees the rows an earlier one
    left. `max_items` is a signal, not a limit: appends beyond it are still stored (a status is
    never dropped) and `is_full()` tells the worker to stop taking jobs. All methods are
    thread-safe; one connection is shared behind a lock, which SQLite handles better than many
    writers contending for the database lock.
    """

    def __init__(
        self,
        directory: str | Path,
        max_items: int = 100_000,
        *,
        synchronous: str = "FULL",
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        self.directory = Path(directory)
        self.path = self.directory / OUTBOX_FILENAME
        self.max_items = max_items
        self._lock = threading.Lock()
        try:
            # FULL fsyncs each commit, so a stored status survives a power cut too (the job's
            # message is acked right after).
            self._db = open_database(self.directory, OUTBOX_FILENAME, synchronous)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox ("
                " seq INTEGER PRIMARY KEY,"
                " job_id TEXT NOT NULL,"
                " idempotency_key TEXT NOT NULL,"
                " body BLOB NOT NULL)"
            )
            # Counting rows is a full scan in SQLite; the count is asked for on every update,
            # so keep it in memory (this connection is the only writer).
            self._count: int = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        except LocalStateUnavailable as exc:
            raise OutboxUnavailable(f"status outbox {exc}") from exc
        except sqlite3.Error as exc:
            raise OutboxUnavailable(
                f"status outbox directory {self.directory} is not writable: {exc}"
            ) from exc

    def append(self, job_id: str, idempotency_key: str, body: bytes) -> int:
        """Store one update durably; returns its sequence number."""
        with self._lock, self._writing("write"):
            cursor = self._db.execute(
                "INSERT INTO outbox (job_id, idempotency_key, body) VALUES (?, ?, ?)",
                (job_id, idempotency_key, body),
            )
            self._count += 1
            seq = cursor.lastrowid
        assert seq is not None
        return seq

    def append_many(self, rows: Sequence[tuple[str, str, bytes]]) -> None:
        """Store updates durably, in this order, in one transaction: all of them or none."""
        with self._lock, self._writing("write"):
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO outbox (job_id, idempotency_key, body) VALUES (?, ?, ?)", rows
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self._count += len(rows)

    def peek(self, limit: int) -> list[OutboxRow]:
        """The oldest `limit` rows, oldest first, left in place."""
        with self._lock, self._writing("read"):
            rows = self._db.execute(
                "SELECT seq, job_id, idempotency_key, body FROM outbox ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [OutboxRow(seq, job_id, key, bytes(body)) for seq, job_id, key, body in rows]

    def delete(self, *seqs: int) -> None:
        """Forget the given rows (delivered, or refused for good) in one transaction."""
        if not seqs:
            return
        with self._lock, self._writing("delete from"):
            self._db.execute("BEGIN")
            try:
                deleted = self._db.executemany(
                    "DELETE FROM outbox WHERE seq = ?", [(seq,) for seq in seqs]
                ).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self._count -= deleted

    def count(self) -> int:
        """Rows stored right now."""
        with self._lock:
            return self._count

    def is_full(self) -> bool:
        """True once `max_items` rows or more are stored."""
        return self.count() >= self.max_items

    @staticmethod
    def depth_in(directory: Path) -> int:
        """Updates an outbox in `directory` holds, read without opening it for writing (0 if
        there is none or it cannot be read): for the preflight, while a worker may run."""
        path = directory / OUTBOX_FILENAME
        if not path.exists():
            return 0
        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
            ) as database:
                row = database.execute("SELECT COUNT(*) FROM outbox").fetchone()
        except sqlite3.Error:
            return 0
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Close the database; rows stay on disk for the next `Outbox` on this directory."""
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _writing(self, action: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            # A full disk (SQLITE_FULL), an I/O error, a file taken away: the caller keeps the
            # update and tries again later; the message reads "…: database or disk is full".
            raise OutboxUnavailable(f"status outbox {self.path} cannot {action}: {exc}") from exc

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    def __repr__(self) -> str:
        return f"Outbox({str(self.directory)!r}, max_items={self.max_items})"
