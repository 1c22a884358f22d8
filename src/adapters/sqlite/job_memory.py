"""The memory of recent jobs (the JobMemory port) in a SQLite file that outlives the process."""

import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from python_worker.adapters.sqlite.database import LocalStateUnavailable, open_database
from python_worker.adapters.wire import decode_status, encode_status
from python_worker.application.ports import JobMemory, JobMemoryUnavailable, StatusUpdate

log = logging.getLogger(__name__)

JOB_MEMORY_FILENAME = "job-memory.sqlite3"
MAX_BATCH = 500
"""Most final statuses written in one transaction."""
RETRY_SECONDS = 1.0
"""How often writes that failed (a full disk) are tried again."""
MAX_UNWRITTEN = 100_000
"""Most final statuses kept in memory while the disk refuses them; older ones are let go."""
CLOSE_SECONDS = 5.0
"""Longest `close` waits for the writer: a shutdown must end within its grace period."""


class SqliteJobMemory(JobMemory):
    """The last `capacity` jobs on disk, so what it knows outlives a crashed process.

    One row per job: the starts without an outcome, then (once finished) the final status.
    Rows beyond `capacity` are dropped oldest first, in batches of a tenth of it. Final
    statuses are written by one thread, as many per transaction as have queued up meanwhile:
    a commit per job would cost more than the job itself.

    A write the disk refuses (full, failing) is not lost: its statuses stay queued and are
    written once it can, every `RETRY_SECONDS`, and `pause_reason` says why meanwhile, so the
    worker starts nothing it could not count. Their messages are acknowledged all the same:
    their statuses are safe at the API or in the outbox, and the memory only matters for a
    redelivery, which an acknowledged message never gets.
    """

    def __init__(self, directory: str | Path, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._prune_batch = max(1, capacity // 10)
        self._lock = threading.Lock()
        self._path = Path(directory) / JOB_MEMORY_FILENAME
        self._db = open_database(Path(directory), JOB_MEMORY_FILENAME, "NORMAL")
        try:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS jobs ("
                " seq INTEGER PRIMARY KEY,"
                " job_id TEXT NOT NULL UNIQUE,"
                " starts INTEGER NOT NULL DEFAULT 0,"
                " final BLOB)"
            )
            self._count: int = self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        except sqlite3.Error as exc:
            raise LocalStateUnavailable(f"{JOB_MEMORY_FILENAME} in {directory}: {exc}") from exc
        self._problem: str | None = None
        self._queue: queue.SimpleQueue[tuple[StatusUpdate, Callable[[], None]] | None] = (
            queue.SimpleQueue()
        )
        self._writer = threading.Thread(target=self._write_loop, name="job-memory", daemon=True)
        self._writer.start()

    def record_start(self, job_id: str) -> int:
        with self._lock:
            try:
                row = self._db.execute(
                    "INSERT INTO jobs (job_id, starts) VALUES (?, 1)"
                    " ON CONFLICT (job_id) DO UPDATE"
                    " SET starts = CASE WHEN final IS NULL THEN starts + 1 ELSE 1 END,"
                    " final = NULL"
                    " RETURNING starts",
                    (job_id,),
                ).fetchone()
                starts: int = row[0]
                if starts == 1:
                    self._added()
            except sqlite3.Error as exc:
                raise JobMemoryUnavailable(self._failed(exc)) from exc
        self._recovered()
        return starts

    def remember(self, update: StatusUpdate, then: Callable[[], None]) -> None:
        self._queue.put((update, then))

    def pause_reason(self) -> str | None:
        return self._problem

    def _write_loop(self) -> None:
        unwritten: list[tuple[str, bytes]] = []
        while True:
            try:
                first = self._queue.get(timeout=RETRY_SECONDS if self._problem else None)
            except queue.Empty:
                if self._write(unwritten):
                    unwritten = []
                continue
            batch = [] if first is None else [first]
            while first is not None and len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    first = None  # finish this batch, then stop
                    break
                batch.append(item)
            unwritten += [(update.job_id, encode_status(update)) for update, _ in batch]
            if self._write(unwritten):
                unwritten = []
            elif len(unwritten) > MAX_UNWRITTEN:
                log.warning(
                    "job memory forgets %d finished job(s) it could not write",
                    len(unwritten) - MAX_UNWRITTEN,
                )
                del unwritten[:-MAX_UNWRITTEN]
            for _, then in batch:
                try:
                    then()
                except Exception:
                    log.exception("continuation after remembering a job failed")
            if first is None:
                return

    def _write(self, rows: list[tuple[str, bytes]]) -> bool:
        """Write `rows` in one transaction (none: a probe); True when the disk took it."""
        with self._lock:
            try:
                self._db.execute("BEGIN")
                if rows:
                    self._db.executemany(
                        "INSERT INTO jobs (job_id, final) VALUES (?, ?)"
                        " ON CONFLICT (job_id) DO UPDATE SET final = excluded.final, starts = 0",
                        rows,
                    )
                    for _ in rows:
                        self._added()
                else:
                    # Nothing waits to be written: touch the header to learn if writes work.
                    self._db.execute("PRAGMA user_version = 0")
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                self._failed(exc)
                return False
        self._recovered()
        return True

    def _failed(self, exc: sqlite3.Error) -> str:
        problem = f"job memory {self._path} cannot be written: {exc}"
        if self._problem is None:
            log.error(
                "%s; taking no new jobs until it can (retrying every %.0f s)",
                problem,
                RETRY_SECONDS,
            )
        self._problem = problem
        return problem

    def _recovered(self) -> None:
        if self._problem is not None:
            self._problem = None
            log.info("job memory %s is writable again", self._path)

    def recall(self, job_id: str) -> StatusUpdate | None:
        with self._lock:
            row = self._db.execute("SELECT final FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None or row[0] is None:
            return None
        return decode_status(bytes(row[0]))

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join(timeout=CLOSE_SECONDS)
        if self._writer.is_alive():
            log.warning("job memory writer did not finish within %.0f s", CLOSE_SECONDS)
            return
        with self._lock:
            self._db.close()

    def _added(self) -> None:
        # Approximate: a redelivered job counts twice; pruning only needs the right magnitude.
        self._count += 1
        if self._count > self._capacity + self._prune_batch:
            excess = self._count - self._capacity
            self._db.execute(
                "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs ORDER BY seq LIMIT ?)",
                (excess,),
            )
            self._count -= excess
