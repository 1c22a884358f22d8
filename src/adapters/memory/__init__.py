"""In-memory adapters: the embedded demo broker, the `process` command's I/O, the test harness."""

from python_worker.adapters.memory.heartbeat_sink import InMemoryHeartbeatSink
from python_worker.adapters.memory.job_memory import InMemoryJobMemory
from python_worker.adapters.memory.source import DeadLetter, InMemorySource
from python_worker.adapters.memory.status_reporter import (
    InMemoryStatusReporter,
    JsonLinesStatusReporter,
)

__all__ = [
    "DeadLetter",
    "InMemoryHeartbeatSink",
    "InMemoryJobMemory",
    "InMemorySource",
    "InMemoryStatusReporter",
    "JsonLinesStatusReporter",
]
