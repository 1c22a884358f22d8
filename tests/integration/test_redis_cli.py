"""`publish` and `dead-letters` as an operator runs them, with WORKER_BROKER=redis."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from python_worker.adapters.redis.connection import REASON_FIELD
from python_worker.adapters.redis.dead_letters import EARLIER_DEATHS_FIELD
from python_worker.adapters.redis.source import RedisSource
from python_worker.application.ports import Settlement
from tests.integration.redis_fixtures import publisher_for, redis_instance, redis_server
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from tests.support.worker_process import CLI, clean_environment

__all__ = ["redis_instance", "redis_server"]


def run_cli(server: RedisServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_environment(WORKER_BROKER="redis", REDIS_URL=server.url)
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def dead_lettered(redis_server: RedisServer) -> Iterator[RedisServer]:
    """One job (`dl-1`, from job.medium) refused by a worker: on job.dead-letter with why."""
    publisher_for(redis_server)([("job.medium", {"id": "dl-1", "type": "teleport"})])
    source = RedisSource(redis_server.config(), prefetch=10, worker_id="vm1-worker")
    try:
        delivery = source.receive(timeout=10)
        assert delivery is not None
        source.settle(delivery, Settlement.DEAD_LETTER, "unknown job type 'teleport'")
        assert wait_until(lambda: len(redis_server.dead_letters()) == 1, timeout=20)
    finally:
        source.close()
    yield redis_server


def test_publish_adds_each_job_to_its_stream_and_says_redis_confirmed_them(
    redis_server: RedisServer,
) -> None:
    job = json.dumps({"numbers": [1, 2]})

    done = run_cli(
        redis_server, "publish", "--queue", "high", "--type", "sum", "--id", "p-1", "--payload", job
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["p-1"]  # the id of each job Redis confirmed
    assert "confirmed" in done.stderr
    assert redis_server.stream_counts()["job.high"] == (1, 0)
    [(_id, fields)] = redis_server.client().xrange("job.high")
    assert json.loads(fields[b"body"])["id"] == "p-1"


def test_dead_letters_list_shows_the_reason_and_the_worker_when_the_broker_is_redis(
    dead_lettered: RedisServer,
) -> None:
    done = run_cli(dead_lettered, "dead-letters", "list", "--json")

    assert done.returncode == 0, done.stdout + done.stderr
    [listed] = [json.loads(line) for line in done.stdout.splitlines()]
    assert listed["reason"] == "unknown job type 'teleport'"
    assert (listed["queue"], listed["workerId"]) == ("job.medium", "vm1-worker")


def test_dead_letters_requeue_moves_an_entry_back_to_its_stream_as_a_fresh_one(
    dead_lettered: RedisServer,
) -> None:
    done = run_cli(dead_lettered, "dead-letters", "requeue", "--id", "dl-1")

    assert done.returncode == 0, done.stdout + done.stderr
    assert dead_lettered.dead_letters() == []
    client = dead_lettered.client()
    [(_id, fields)] = client.xrange("job.medium", "-", "+")[-1:]
    assert json.loads(fields[b"body"])["id"] == "dl-1"
    assert fields[EARLIER_DEATHS_FIELD.encode()] == b"1"
    assert REASON_FIELD.encode() not in fields
    # A fresh first delivery whose statuses count on from the refusal's attempt 1, so their
    # Idempotency-Keys (`dl-1:running:2`, …) are none the API has seen.
    source = RedisSource(dead_lettered.config(), prefetch=10, worker_id="vm2-worker")
    try:
        replay = source.receive(timeout=10)
        assert replay is not None
        assert (replay.attempt, replay.is_redelivery, replay.job_attempt) == (1, False, 2)
        source.settle(replay, Settlement.ACK)
    finally:
        source.close()


def test_dead_letters_purge_empties_the_dead_letter_stream_when_told_yes(
    dead_lettered: RedisServer,
) -> None:
    done = run_cli(dead_lettered, "dead-letters", "purge", "--yes")

    assert done.returncode == 0, done.stdout + done.stderr
    assert dead_lettered.dead_letters() == []
