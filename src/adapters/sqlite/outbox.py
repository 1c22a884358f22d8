"""A durable, ordered local outbox (SQLite) for status updates the API could not take yet."""

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from python_worker.adapters.sqlite.database import LocalStateUnavailable, open_database

OUTBOX_FILENAME = "status-outbox.sqlite3"
LOCK_FILENAME = "status-outbox.lock"
CLAIM_PATIENCE_SECONDS = 1.0


class OutboxUnavailable(Exception):
    """Raised when the outbox directory cannot be created, opened or written."""


class OutboxInUse(OutboxUnavailable):
    """Raised when another running process has the outbox in this directory open."""

    def __init__(self, directory: Path, holder: str) -> None:
        super().__init__(
            f"status outbox {directory} is in use by another running worker ({holder})"
        )
        self.holder = holder


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
        self._claim = _claim(self.directory)
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
            self._claim.close()
            raise OutboxUnavailable(f"status outbox {exc}") from exc
        except sqlite3.Error as exc:
            self._claim.close()
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

    @staticmethod
    def holder_in(directory: Path) -> str | None:
        """Which running process has the outbox in `directory` open ("pid 1234"), if any."""
        try:
            fd = os.open(directory / LOCK_FILENAME, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd)
        except OSError:
            return None
        finally:
            os.close(fd)
        return None

    def close(self) -> None:
        """Close the database; rows stay on disk for the next `Outbox` on this directory."""
        with self._lock:
            self._db.close()
            self._claim.close()

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


def _claim(directory: Path) -> BinaryIO:
    """Lock the outbox in `directory` for this process, for as long as the file returned is open.

    The outbox must be its directory's only writer: it keeps the row count in memory, and the
    per-job order of statuses rests on one process replaying them. Two workers pointed at one
    directory (a copied environment file) would quietly break both, so the second is refused.
    The kernel drops a flock when its file is closed or its holder dies, so a worker killed
    with -9 leaves nothing stale for its restart, and an `Outbox` dropped unclosed releases it.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_FILENAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise OutboxUnavailable(
            f"status outbox directory {directory} is not writable: {exc}"
        ) from exc
    claim = os.fdopen(fd, "r+b", buffering=0)
    # `check` (holder_in) takes the lock shared for an instant: a start meeting that waits.
    deadline = time.monotonic() + CLAIM_PATIENCE_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            holder = _holder(fd)
            claim.close()
            raise OutboxInUse(directory, holder) from None
        except OSError as exc:
            claim.close()
            raise OutboxUnavailable(f"status outbox {directory} cannot be locked: {exc}") from exc
    # The pid only names the holder in the line above; a full disk may refuse it, harmlessly.
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)
    return claim


def _holder(fd: int) -> str:
    """The lock's holder as it wrote itself ("pid N"), or "pid unknown" if it has not yet."""
    try:
        return f"pid {int(os.pread(fd, 32, 0).decode('ascii'))}"
    except (OSError, ValueError, UnicodeDecodeError):
        return "pid unknown"
