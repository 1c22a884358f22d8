"""Fixtures for the Redis tests: a private Redis, and `python-worker run` on Redis Streams."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.stand_in_api import StandInApi
from python_worker.adapters.redis.publisher import RedisPublisher
from python_worker.domain.jobs import Priority
from tests.support.redis_server import RedisNotInstalledError, RedisServer
from tests.support.worker_process import WorkerProcess

StartWorker = Callable[..., WorkerProcess]
Publish = Callable[[Iterable[tuple[str, dict[str, Any] | bytes]]], int]


def _started(server_factory: Callable[[], RedisServer]) -> Iterator[RedisServer]:
    try:
        server = server_factory()
    except RedisNotInstalledError as exc:
        # Fail, never skip: a silently skipped suite looks green on CI.
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_instance() -> Iterator[RedisServer]:
    """The session's private Redis, without persistence (fast; nothing here restarts it)."""
    yield from _started(RedisServer)


@pytest.fixture
def redis_server(redis_instance: RedisServer) -> RedisServer:
    """The session's Redis, running and empty."""
    redis_instance.start()
    redis_instance.flush()
    return redis_instance


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own with AOF and `appendfsync always`: free to kill and restart."""
    yield from _started(lambda: RedisServer(appendfsync_always=True))


@pytest.fixture
def start_redis_worker(api: StandInApi, tmp_path: Path) -> Iterator[StartWorker]:
    """Start `python-worker run` with WORKER_BROKER=redis against `server` (the first argument);
    keyword arguments are settings, as `start_worker`'s (None: leave the fixture's out)."""
    workers: list[WorkerProcess] = []

    def start(server: RedisServer, **env: Any) -> WorkerProcess:
        settings: dict[str, Any] = {
            "worker_broker": "redis",
            "redis_url": server.url,
            "redis_claim_idle_seconds": 3,
            "status_update_url": api.status_url,
            "orchestrator_url": api.url,
            "heartbeat_interval": 0.5,
            "worker_id": f"worker-{len(workers)}",
            "worker_capacity": 4,
            "shutdown_grace_seconds": 20,
        }
        if server.password is not None:
            settings["redis_password"] = server.password
        settings.update(env)
        settings = {name: value for name, value in settings.items() if value is not None}
        # One directory per WORKER_ID, as on one host: a worker restarted under its id finds
        # its outbox and its job memory (the starts of a job that crashed it) again.
        settings.setdefault("status_outbox_dir", tmp_path / f"outbox-{settings['worker_id']}")
        log = tmp_path / f"worker-{len(workers)}.log"
        worker = WorkerProcess(log, **settings).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
        print(f"----- log of {worker.log_path.name}\n{worker.log()[-6000:]}")


def publisher_for(server: RedisServer) -> Publish:
    """Publish (queue, job or raw body) pairs through the worker's own Redis publisher."""

    def send(jobs: Iterable[tuple[str, dict[str, Any] | bytes]]) -> int:
        messages = [
            (
                Priority.from_queue(queue),
                body if isinstance(body, bytes) else json.dumps(body).encode(),
            )
            for queue, body in jobs
        ]
        report = RedisPublisher(server.config()).publish(messages)
        assert report.failures == []
        return report.confirmed

    return send


def redis_settled(server: RedisServer) -> bool:
    """Nothing waiting and nothing pending in the three job streams."""
    return server.remaining() == 0
