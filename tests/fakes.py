"""Test-only doubles: each subclasses a port and keeps its state on the instance."""

import threading
from datetime import UTC, datetime, timedelta

from adapters.memory import InMemorySource
from application.ports import (
    Delivery,
    Heartbeat,
    HeartbeatFailed,
    HeartbeatSink,
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

    def accepting(self) -> bool:
        return self._room.is_set()

    def backlog(self) -> int:
        return 0 if self._room.is_set() else 100_000

    def make_room(self) -> None:
        self._room.set()


class FailingHeartbeatSink(HeartbeatSink):
    """An orchestrator that is down: every heartbeat fails, and each attempt is counted."""

    def __init__(self) -> None:
        self.attempts = 0

    def send(self, heartbeat: Heartbeat) -> None:
        self.attempts += 1
        raise HeartbeatFailed("orchestrator refused the connection")


class FakeClock:
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
