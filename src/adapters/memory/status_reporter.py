"""Status reporters that keep updates in memory or print them as JSON lines."""

import threading
from typing import TextIO

import orjson

from python_worker.adapters.wire import status_body
from python_worker.application.ports import OnHandled, StatusReporter, StatusUpdate


class InMemoryStatusReporter(StatusReporter):
    """Records every update in order; each is handled the moment it is reported."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.updates: list[StatusUpdate] = []

    def report(self, update: StatusUpdate, on_handled: OnHandled | None = None) -> None:
        with self._lock:
            self.updates.append(update)
        if on_handled is not None:
            on_handled()

    def updates_for(self, job_id: str) -> list[StatusUpdate]:
        with self._lock:
            return [update for update in self.updates if update.job_id == job_id]

    def final_updates(self) -> list[StatusUpdate]:
        with self._lock:
            return [update for update in self.updates if update.status.is_final]


class JsonLinesStatusReporter(StatusReporter):
    """Writes each update as one JSON line, exactly the body that would be posted."""

    def __init__(self, stream: TextIO) -> None:
        self._lock = threading.Lock()
        self._stream = stream

    def report(self, update: StatusUpdate, on_handled: OnHandled | None = None) -> None:
        line = orjson.dumps(status_body(update)).decode()
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()
        if on_handled is not None:
            on_handled()
