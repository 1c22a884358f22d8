"""Shared fixtures: the in-memory worker, wired exactly as `bootstrap` wires it."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from python_worker.adapters.memory import (
    InMemoryHeartbeatSink,
    InMemorySource,
    InMemoryStatusReporter,
)
from python_worker.application.worker import Worker
from python_worker.bootstrap import Container, build_container, load_settings


@dataclass
class MemoryWorker:
    """The worker on the embedded broker, with everything a test wants to look at."""

    container: Container
    source: InMemorySource
    reporter: InMemoryStatusReporter
    heartbeats: InMemoryHeartbeatSink

    @property
    def worker(self) -> Worker:
        worker: Worker = self.container.worker()
        return worker

    def publish(self, queue: str, job: dict[str, Any] | bytes) -> None:
        body = job if isinstance(job, bytes) else json.dumps(job).encode()
        self.source.publish(queue, body)

    def run_until_idle(self) -> None:
        self.worker.run(until=self.source.is_drained)


def make_memory_worker(**settings: Any) -> MemoryWorker:
    defaults: dict[str, Any] = {
        "worker_broker": "memory",
        "worker_id": "test-worker",
        "heartbeat_interval": 0.05,
        "shutdown_grace_seconds": 5,
    }
    container = build_container(
        load_settings(**(defaults | settings)),
        reporter="memory",
        heartbeats="memory",
        job_memory="memory",
    )
    return MemoryWorker(
        container=container,
        source=container.message_source(),
        reporter=container.status_reporter(),
        heartbeats=container.heartbeat_sink(),
    )


@pytest.fixture
def memory_worker() -> Iterator[MemoryWorker]:
    yield make_memory_worker()
