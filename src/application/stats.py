"""Running counters of one worker: load, outcomes and job time, read by heartbeats and metrics."""

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class StatsSnapshot:
    """The counters at one instant."""

    in_flight: int
    processed: int
    failed: int
    total_job_time_ms: float

    @property
    def success_rate(self) -> float:
        """Share of processed jobs that completed, 0..1; 1.0 before the first job."""
        if self.processed == 0:
            return 1.0
        return round((self.processed - self.failed) / self.processed, 4)

    @property
    def average_job_time_ms(self) -> float:
        if self.processed == 0:
            return 0.0
        return round(self.total_job_time_ms / self.processed, 3)


class WorkerStats:
    """Thread-safe counters: `processed` counts every handled delivery, `failed` the failures."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._processed = 0
        self._failed = 0
        self._total_ms = 0.0

    def started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def finished(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def record(self, *, failed: bool, duration_ms: float) -> None:
        with self._lock:
            self._processed += 1
            self._failed += failed
            self._total_ms += duration_ms

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(self._in_flight, self._processed, self._failed, self._total_ms)
