"""Fixtures for running `python-worker run` against the private broker and the stand-in API."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.stand_in_api import StandInApi
from python_worker.adapters.rabbitmq.connection import BrokerConfig
from python_worker.adapters.rabbitmq.publisher import RabbitMQPublisher
from python_worker.domain.jobs import Priority
from tests.support.rabbitmq_node import Broker
from tests.support.worker_process import WorkerProcess

StartWorker = Callable[..., WorkerProcess]
Publish = Callable[[Iterable[tuple[str, dict[str, Any] | bytes]]], int]


@pytest.fixture
def api() -> Iterator[StandInApi]:
    with StandInApi() as stand_in:
        yield stand_in


@pytest.fixture
def start_worker(broker: Broker, api: StandInApi, tmp_path: Path) -> Iterator[StartWorker]:
    workers: list[WorkerProcess] = []

    def start(cwd: Path | None = None, **env: Any) -> WorkerProcess:
        settings: dict[str, Any] = {
            "rabbitmq_host": broker.host,
            "rabbitmq_port": broker.port,
            "rabbitmq_heartbeat": 5,
            "status_update_url": api.status_url,
            "orchestrator_url": api.url,
            "heartbeat_interval": 0.5,
            "status_outbox_dir": tmp_path / "outbox",
            "worker_id": f"worker-{len(workers)}",
            "worker_capacity": 4,
            "shutdown_grace_seconds": 20,
        }
        if "rabbitmq_url" in env:
            # The URL says where the broker is; RABBITMQ_HOST/PORT as well would be refused.
            del settings["rabbitmq_host"], settings["rabbitmq_port"]
        settings.update(env)
        log = tmp_path / f"worker-{len(workers)}.log"
        worker = WorkerProcess(log, cwd=cwd, **settings).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
        print(f"----- log of {worker.log_path.name}\n{worker.log()[-6000:]}")


@pytest.fixture
def publish(broker: Broker) -> Publish:
    config = BrokerConfig(hosts=[broker.host], port=broker.port)

    def send(jobs: Iterable[tuple[str, dict[str, Any] | bytes]]) -> int:
        messages = [
            (
                Priority.from_queue(queue),
                body if isinstance(body, bytes) else json.dumps(body).encode(),
            )
            for queue, body in jobs
        ]
        report = RabbitMQPublisher(config).publish(messages)
        assert report.failures == []
        return report.confirmed

    return send


def settled(broker: Broker) -> bool:
    """Nothing ready and nothing unacknowledged in the three job queues."""
    for queue in ("job.high", "job.medium", "job.low"):
        counts = broker.queue_counts(queue)
        if counts is not None and (counts.messages_ready or counts.messages_unacknowledged):
            return False
    return True


def sum_job(job_id: str) -> dict[str, Any]:
    return {"id": job_id, "type": "sum", "payload": {"numbers": [1, 2, 3]}}
