"""Helpers shared by the HTTP adapter tests: updates to report and callback counting."""

import threading
from datetime import UTC, datetime

from python_worker.application.ports import StatusUpdate
from python_worker.domain.jobs import JobStatus
from tests.support.waiting import wait_until

CANARY_TOKEN = "canary-7f3a9c1e-do-not-log"


def update(job_id: str, status: JobStatus = JobStatus.RUNNING, **fields: object) -> StatusUpdate:
    """A status update for `job_id` with plausible defaults; `fields` override them."""
    values: dict[str, object] = {
        "job_id": job_id,
        "status": status,
        "worker_id": "worker-test-1",
        "timestamp": datetime(2024, 5, 1, 12, 30, 45, 123000, tzinfo=UTC),
    }
    values.update(fields)
    return StatusUpdate(**values)  # type: ignore[arg-type]


class Handled:
    """Counts `on_handled` calls, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def __call__(self) -> None:
        with self._lock:
            self.count += 1

    def reached(self, expected: int, timeout: float = 30.0) -> bool:
        return wait_until(lambda: self.count >= expected, timeout)
