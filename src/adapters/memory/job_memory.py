"""An in-memory, bounded memory of recent jobs."""

import collections
import threading
from collections.abc import Callable

from python_worker.application.ports import JobMemory, StatusUpdate


class InMemoryJobMemory(JobMemory):
    """The last `capacity` jobs, oldest forgotten first; gone with the process."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._jobs: collections.OrderedDict[str, int | StatusUpdate] = collections.OrderedDict()

    def record_start(self, job_id: str) -> int:
        with self._lock:
            previous = self._jobs.get(job_id)
            starts = previous + 1 if isinstance(previous, int) else 1
            self._keep(job_id, starts)
            return starts

    def remember(self, update: StatusUpdate, then: Callable[[], None]) -> None:
        with self._lock:
            self._keep(update.job_id, update)
        then()

    def recall(self, job_id: str) -> StatusUpdate | None:
        with self._lock:
            entry = self._jobs.get(job_id)
        return entry if isinstance(entry, StatusUpdate) else None

    def _keep(self, job_id: str, entry: int | StatusUpdate) -> None:
        self._jobs.pop(job_id, None)
        self._jobs[job_id] = entry
        while len(self._jobs) > self._capacity:
            self._jobs.popitem(last=False)
