"""`publish` and `run` as an operator sees them on a real broker: the ids, the banner."""

import contextlib
import json
import subprocess

from tests.integration.worker_fixtures import StartWorker
from tests.support.rabbitmq_node import Broker
from tests.support.waiting import wait_until
from tests.support.worker_process import CLI, clean_environment

BANNER = "python-worker "


def publish(broker: Broker, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    environment = clean_environment(RABBITMQ_HOST=broker.host, RABBITMQ_PORT=str(broker.port))
    return subprocess.run(
        [*CLI, "publish", *args],
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def taken(broker: Broker, queue: str) -> list[dict]:
    """The jobs on `queue`, taken off it."""
    jobs = []
    with contextlib.closing(broker.connect()) as connection:
        channel = connection.channel()
        while True:
            method, _properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return jobs
            jobs.append(json.loads(body))


def test_publish_prints_each_confirmed_id_and_gives_an_id_to_a_line_without_one(
    broker: Broker, tmp_path
):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        '{"id": "first", "type": "sum", "payload": {"numbers": [1]}, "priority": "high"}\n'
        "\n"
        '{"type": "sum", "payload": {"numbers": [2]}, "priority": "low"}\n'
    )

    result = publish(broker, str(jobs))

    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()
    assert printed[0] == "first"
    assert printed[1].startswith("job-")
    assert "published 2 job(s), confirmed by the broker" in result.stderr
    assert [job["id"] for job in taken(broker, "job.high")] == ["first"]
    [low] = taken(broker, "job.low")
    assert low["id"] == printed[1]
    assert low["payload"] == {"numbers": [2]}


def test_publish_prints_the_generated_id_of_one_job_given_by_flags(broker: Broker):
    result = publish(broker, "--queue", "high", "--type", "sum", "--payload", '{"numbers": [3]}')

    assert result.returncode == 0, result.stderr
    [printed] = result.stdout.splitlines()
    assert [job["id"] for job in taken(broker, "job.high")] == [printed]


def test_publish_sends_nothing_when_a_later_line_has_a_bad_priority(broker: Broker):
    lines = '{"id": "ok", "type": "sum"}\n{"id": "typo", "type": "sum", "priority": "hihg"}\n'

    result = publish(broker, "-", stdin=lines)

    assert result.returncode == 2
    assert "stdin line 2: priority 'hihg' is not one of high, medium, low" in result.stderr
    counts = broker.queue_counts("job.medium")  # None: not even declared
    assert counts is None or counts.messages_ready == 0


def test_run_logs_one_banner_with_version_nodes_queues_urls_and_capacity_but_no_password(
    broker: Broker, start_worker: StartWorker
):
    url = f"amqp://guest:guest@{broker.host}:{broker.port}/%2F"
    worker = start_worker(rabbitmq_url=url, worker_capacity=3, worker_processes=2)
    # Both processes up (a SIGTERM before a process set its handlers would kill it outright).
    assert wait_until(lambda: worker.log().count("consuming job.high") == 2, 60), worker.log()

    banners = [line for line in worker.log().splitlines() if " starting: RabbitMQ " in line]
    assert worker.terminate() == 0
    [banner] = banners  # the supervisor's; its two processes say nothing of the kind
    assert BANNER in banner
    assert f"amqp://guest@{broker.host}:{broker.port}/ (classic queues)" in banner
    assert ":guest@" not in banner
    assert "queues job.high, job.medium, job.low" in banner
    assert "capacity 3 per process, 2 process(es)" in banner
    assert "statuses to http://127.0.0.1:" in banner
    assert "heartbeats to http://127.0.0.1:" in banner
