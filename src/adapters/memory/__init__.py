"""In-memory adapters: the embedded demo broker, the `process` command's I/O, the test harness."""

from adapters.memory.heartbeat_sink import InMemoryHeartbeatSink
from adapters.memory.job_memory import InMemoryJobMemory
from adapters.memory.source import DeadLetter, InMemorySource
from adapters.memory.status_reporter import InMemoryStatusReporter, JsonLinesStatusReporter

__all__ = [
    "DeadLetter",
    "InMemoryHeartbeatSink",
    "InMemoryJobMemory",
    "InMemorySource",
    "InMemoryStatusReporter",
    "JsonLinesStatusReporter",
]
