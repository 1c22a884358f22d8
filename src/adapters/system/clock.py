"""The real clock."""

import time
from datetime import UTC, datetime

from python_worker.application.ports import Clock


class SystemClock(Clock):
    """The system's wall clock (UTC) and its monotonic clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()
