"""Test-only doubles: each subclasses a port and keeps its state on the instance."""

import threading
from datetime import UTC, datetime, timedelta

from python_worker.adapters.memory import InMemoryJobMemory, InMemorySource, InMemoryStatusReporter
from python_worker.application.ports import (
    Clock,
    Delivery,
    Heartbeat,
    HeartbeatFailed,
    HeartbeatSink,
    JobMemoryUnavailable,
    JobObserver,
    OnHandled,
    Settlement,
    StatusReporter,
    StatusUpdate,
)


class AckLosingSource(InMemorySource):
    """An in-memory broker that never hears settlements while `losing_acks` is set.

    Stands in for a worker that dies between reporting a final status and acknowledging.
    """

    def __init__(self) -> None:
        super().__init__()
        self.losing_acks = False

    def settle(self, delivery: Delivery, outcome: Settlement, reason: str | None = None) -> None:
        if not self.losing_acks:
            super().settle(delivery, outcome, reason)


class DeferredStatusReporter(StatusReporter):
    """Records updates but calls `on_handled` only when the test says `release()`.

    Stands in for a status API that has not answered yet, to show that nothing is acknowledged
    before its final status is handled.
    """

    def __init__(self) -> None:
        self.updates: list[StatusUpdate] = []
        self._pending: list[OnHandled] = []

    def report(self, update: StatusUpdate, on_handled: OnHandled | None = None) -> None:
        self.updates.append(update)
        if on_handled is not None:
            self._pending.append(on_handled)

    def release(self) -> None:
        pending, self._pending = self._pending, []
        for callback in pending:
            callback()


class FullOutboxStatusReporter(StatusReporter):
    """A reporter whose outbox is full until `make_room()`; handles updates at once."""

    def __init__(self) -> None:
        self._room = threading.Event()
        self.updates: list[StatusUpdate] = []

    def report(self, update: StatusUpdate, on_handled: OnHandled | None = None) -> None:
        self.updates.append(update)
        if on_handled is not None:
            on_handled()

    def pause_reason(self) -> str | None:
        return None if self._room.is_set() else "status outbox is full (100000 updates)"

    def backlog(self) -> int:
        return 0 if self._room.is_set() else 100_000

    def make_room(self) -> None:
        self._room.set()


class UnwritableJobMemory(InMemoryJobMemory):
    """A job memory on a full disk until `recover()`: it cannot count a start, and says why.

    While it is unwritable `pause_reason` gives `reason` and `record_start` raises
    `JobMemoryUnavailable`, as `SqliteJobMemory` does when SQLite answers "database or disk is
    full"; `start_attempts` counts the starts asked for meanwhile.
    """

    def __init__(
        self, reason: str = "job memory cannot be written: database or disk is full"
    ) -> None:
        super().__init__()
        self.reason = reason
        self.start_attempts = 0
        self._writable = threading.Event()

    def record_start(self, job_id: str) -> int:
        if not self._writable.is_set():
            self.start_attempts += 1
            raise JobMemoryUnavailable(self.reason)
        return super().record_start(job_id)

    def pause_reason(self) -> str | None:
        return None if self._writable.is_set() else self.reason

    def recover(self) -> None:
        self._writable.set()


class RaisingStatusReporter(StatusReporter):
    """A reporter that breaks on the `fail_on`-th update (1-based), once, with `error`.

    When `handle_first` is set it calls that update's `on_handled` before raising, standing in
    for a fault after the settlement is already on its way. Every update it was given,
    including the one it broke on, is in `updates`; the others are handled at once.
    """

    def __init__(
        self, fail_on: int = 1, error: BaseException | None = None, *, handle_first: bool = False
    ) -> None:
        self.fail_on = fail_on
        self.error = error if error is not None else RuntimeError("status reporter broke")
        self.handle_first = handle_first
        self.updates: list[StatusUpdate] = []

    def report(self, update: StatusUpdate, on_handled: OnHandled | None = None) -> None:
        self.updates.append(update)
        breaking = len(self.updates) == self.fail_on
        if on_handled is not None and (not breaking or self.handle_first):
            on_handled()
        if breaking:
            raise self.error


class PauseFromTheSecondLookReporter(InMemoryStatusReporter):
    """A reporter whose outbox fills up just as the first job thread has looked and found room.

    That first look is held until another job thread has paused the worker, the interleaving
    a busy machine produces now and then: one thread checked a moment before the pause began,
    the next one a moment after. The outbox never gets room again.
    """

    reason = "status outbox is full (test)"

    def __init__(self) -> None:
        super().__init__()
        self._look_lock = threading.Lock()
        self._looked = False
        self.someone_paused = threading.Event()
        """The test sets it once another job thread has paused (logged "not taking new jobs")."""

    def pause_reason(self) -> str | None:
        if not threading.current_thread().name.startswith("job-"):
            return self.reason if self._looked else None
        with self._look_lock:
            first, self._looked = not self._looked, True
        if first:
            self.someone_paused.wait(5)
            return None
        return self.reason


class RaisingObserver(JobObserver):
    """A metrics observer with a bug: it raises whenever a job ends, breaking its own contract."""

    def job_started(self, queue: str, waited_s: float) -> None:
        pass

    def job_finished(self, job_type: str, outcome: str, duration_s: float, queue: str) -> None:
        raise RuntimeError(f"observer broke on a {outcome} job")


class FailingHeartbeatSink(HeartbeatSink):
    """An orchestrator that is down: every heartbeat fails, and each attempt is counted."""

    def __init__(self) -> None:
        self.attempts = 0

    def send(self, heartbeat: Heartbeat) -> None:
        self.attempts += 1
        raise HeartbeatFailed("orchestrator refused the connection")


class FakeClock(Clock):
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self._now = datetime(2026, 1, 1, tzinfo=UTC)
        self._monotonic = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds
