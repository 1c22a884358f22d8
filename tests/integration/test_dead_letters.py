"""`python-worker dead-letters` as an operator runs it, on messages real workers refused."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pika
import pika.exceptions
import pytest

from devtools.stand_in_api import StandInApi
from python_worker.adapters.rabbitmq.connection import (
    DEAD_LETTER_QUEUE,
    EXCHANGE,
    BrokerConfig,
    connect,
    dead_letter_headers,
    declare_topology,
)
from tests.integration.worker_fixtures import Publish, StartWorker
from tests.support.rabbitmq_node import Broker, free_port
from tests.support.waiting import wait_until
from tests.support.worker_process import CLI, clean_environment

SLEEP_JOB = {"id": "sleepy-1", "type": "test.sleep", "payload": {"seconds": 0.1}}
BAD_PAYLOAD_JOB = {"id": "bad-sum", "type": "sum", "payload": {"numbers": "three"}}
NOT_JSON = b"this is not json"


def dead_letters(broker: Broker, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "dead-letters", *args],
        check=False,
        capture_output=True,
        text=True,
        env=_environment(broker, env),
        timeout=120,
    )


def start_dead_letters(broker: Broker, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "dead-letters", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(broker, {}),
    )


def _environment(broker: Broker, env: dict[str, str]) -> dict[str, str]:
    return clean_environment(RABBITMQ_HOST=broker.host, RABBITMQ_PORT=str(broker.port), **env)


def ready(broker: Broker, queue: str) -> int:
    """Ready messages on `queue` by a passive declare: cheap enough to poll."""
    with contextlib.closing(broker.connect()) as connection:
        try:
            return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker:
            return 0


def drain_ids(broker: Broker, queue: str) -> list[str]:
    """Take every message off `queue` (acked) and return the job ids they name."""
    ids: list[str] = []
    with contextlib.closing(broker.connect()) as connection:
        channel = connection.channel()
        while True:
            method, _properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return ids
            ids.append(json.loads(body)["id"])


def listed(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return {line["id"]: line for line in map(json.loads, result.stdout.splitlines())}


@contextlib.contextmanager
def topology(broker: Broker, queue_type: str = "classic") -> Iterator[Any]:
    """The worker's exchange and queues, and a confirming channel on them."""
    config = BrokerConfig(hosts=[broker.host], port=broker.port, queue_type=queue_type)
    connection = connect(config)
    try:
        declare_topology(connection, config)
        channel = connection.channel()
        channel.confirm_delivery()
        yield channel
    finally:
        connection.close()


@pytest.fixture
def refused(broker: Broker, api: StandInApi, start_worker: StartWorker, publish: Publish) -> None:
    """Three messages a worker without the test job types dead-lettered, with their reasons."""
    worker = start_worker(worker_id="refusing-worker")
    publish([("job.low", SLEEP_JOB), ("job.high", BAD_PAYLOAD_JOB), ("job.medium", NOT_JSON)])
    assert wait_until(lambda: ready(broker, DEAD_LETTER_QUEUE) == 3, 60), worker.log()
    assert worker.terminate() == 0


def test_lists_each_message_with_its_reason_when_a_worker_dead_lettered_them(
    broker: Broker, refused: None
):
    result = dead_letters(broker, "list")

    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["ID", "TYPE", "QUEUE"]
    assert len(rows) == 3
    sleepy = next(row for row in rows if row.startswith("sleepy-1 "))
    assert sleepy.split()[1:3] == ["test.sleep", "job.low"]
    assert "refusing-worker" in sleepy
    assert "unknown job type 'test.sleep'" in sleepy
    bad_sum = next(row for row in rows if row.startswith("bad-sum "))
    assert "job.high" in bad_sum
    assert "payload.numbers" in bad_sum
    not_json = next(row for row in rows if row.startswith("sha256:"))
    assert "not valid UTF-8 JSON" in not_json


def test_lists_one_json_object_per_message_when_asked_for_json(broker: Broker, refused: None):
    result = dead_letters(broker, "list", "--json")

    messages = listed(result)
    assert messages["sleepy-1"] == messages["sleepy-1"] | {
        "jobId": "sleepy-1",
        "jobType": "test.sleep",
        "queue": "job.low",
        "workerId": "refusing-worker",
        "times": 1,
    }
    assert messages["sleepy-1"]["reason"].startswith("unknown job type 'test.sleep'")
    assert messages["sleepy-1"]["deadLetteredAt"].endswith("Z")
    assert {message["jobId"] for message in messages.values()} == {"sleepy-1", "bad-sum", None}


def test_shows_the_whole_body_and_headers_when_given_a_job_id(broker: Broker, refused: None):
    result = dead_letters(broker, "show", "bad-sum")

    assert result.returncode == 0, result.stderr
    assert "reason:           payload.numbers" in result.stdout
    assert 'x-original-queue: "job.high"' in result.stdout
    assert 'x-worker-id: "refusing-worker"' in result.stdout
    assert json.dumps(BAD_PAYLOAD_JOB) in result.stdout


def test_reading_the_queue_keeps_every_message_in_its_order_when_listed_again(
    broker: Broker, refused: None
):
    first = dead_letters(broker, "list", "--json")

    second = dead_letters(broker, "list", "--json")

    assert list(listed(second)) == list(listed(first))
    assert ready(broker, DEAD_LETTER_QUEUE) == 3


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_runs_a_job_again_with_new_idempotency_keys_when_it_is_requeued_to_a_worker_that_can(
    queue_type: str, broker: Broker, api: StandInApi, start_worker: StartWorker, publish: Publish
):
    refusing = start_worker(queue_type=queue_type)
    publish([("job.low", SLEEP_JOB)])
    assert api.wait_for(lambda: "sleepy-1" in api.final_statuses(), 60)
    assert wait_until(lambda: ready(broker, DEAD_LETTER_QUEUE) == 1, 30)
    refusing.terminate()
    dead_letters(broker, "list")  # a read returns the message: on quorum, one more delivery
    start_worker(queue_type=queue_type, worker_test_handlers="true")

    result = dead_letters(broker, "requeue", "--id", "sleepy-1")

    assert result.returncode == 0, result.stderr
    assert "requeued 1 message(s)" in result.stdout
    assert api.wait_for(lambda: api.final_statuses()["sleepy-1"].status == "completed", 60)
    assert ready(broker, DEAD_LETTER_QUEUE) == 0
    # The replay counts on from the first run's attempt: an API that drops a repeated
    # Idempotency-Key (`sleepy-1:failed:1` from the refusal) takes every status of the replay.
    statuses = api.statuses_for("sleepy-1")
    assert [(s.status, s.body["attempt"]) for s in statuses] == [
        ("failed", 1),
        ("running", 2),
        ("completed", 2),
    ]
    keys = [s.idempotency_key for s in statuses]
    assert len(set(keys)) == len(keys), keys


def test_moves_only_messages_whose_reason_holds_the_text_when_selected_by_reason(
    broker: Broker, refused: None
):
    result = dead_letters(broker, "requeue", "--reason-contains", "PAYLOAD.NUMBERS")

    assert result.returncode == 0, result.stderr
    assert "requeued 1 message(s)" in result.stdout
    assert drain_ids(broker, "job.high") == ["bad-sum"]
    remaining = listed(dead_letters(broker, "list", "--json"))
    assert {message["jobId"] for message in remaining.values()} == {"sleepy-1", None}


def test_exits_1_naming_the_id_when_no_message_answers_to_it(broker: Broker, refused: None):
    result = dead_letters(broker, "requeue", "--id", "no-such-job")

    assert result.returncode == 1
    assert "not found: no dead-lettered message answers to no-such-job" in result.stderr
    assert ready(broker, DEAD_LETTER_QUEUE) == 3


def test_lists_a_message_with_the_broker_s_reason_when_it_carries_only_x_death(broker: Broker):
    with topology(broker) as channel:
        channel.basic_publish(EXCHANGE, "job.low", json.dumps(SLEEP_JOB).encode())
        method, _properties, _body = channel.basic_get("job.low")
        # What an older worker did: a reject, and the broker dead-letters it with x-death.
        channel.basic_reject(method.delivery_tag, requeue=False)
    assert wait_until(lambda: ready(broker, DEAD_LETTER_QUEUE) == 1, 30)

    result = dead_letters(broker, "list", "--json")

    message = listed(result)["sleepy-1"]
    assert message["reason"] == "rejected (x-death; no reason recorded)"
    assert message["queue"] == "job.low"
    assert message["workerId"] is None
    assert message["times"] == 1
    assert message["deadLetteredAt"].endswith("Z")


def test_counts_every_time_when_a_requeued_message_is_refused_again(
    broker: Broker, start_worker: StartWorker, refused: None
):
    start_worker()
    dead_letters(broker, "requeue", "--id", "bad-sum")
    assert wait_until(lambda: ready(broker, DEAD_LETTER_QUEUE) == 3, 30)

    result = dead_letters(broker, "list", "--json")

    assert listed(result)["bad-sum"]["times"] == 2


def test_loses_no_message_when_the_requeue_is_killed_midway(broker: Broker):
    ids = [f"replay-{number}" for number in range(2000)]
    with topology(broker) as channel:
        for job_id in ids:
            headers = dead_letter_headers(
                "refused for the test", "w1", "job.low", datetime.now(UTC)
            )
            channel.basic_publish(
                EXCHANGE,
                DEAD_LETTER_QUEUE,
                json.dumps({"id": job_id, "type": "sum"}).encode(),
                properties=pika.BasicProperties(delivery_mode=2, headers=headers),
            )
    requeue = start_dead_letters(broker, "requeue", "--all")
    assert wait_until(lambda: ready(broker, "job.low") >= 50, 60)

    requeue.send_signal(signal.SIGKILL)
    requeue.communicate(timeout=30)

    assert wait_until(lambda: ready(broker, DEAD_LETTER_QUEUE) + ready(broker, "job.low") >= 2000)
    back, still_dead = drain_ids(broker, "job.low"), drain_ids(broker, DEAD_LETTER_QUEUE)
    assert back, "nothing had moved when the command was killed"
    assert still_dead, "the command had finished before it was killed"
    assert set(back) | set(still_dead) == set(ids)


def test_deletes_every_message_when_purge_is_confirmed(broker: Broker, refused: None):
    result = dead_letters(broker, "purge", "--yes")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "purged 3 message(s) from the dead-letter queue"
    assert ready(broker, DEAD_LETTER_QUEUE) == 0


def test_keeps_every_message_when_purge_is_not_confirmed(broker: Broker, refused: None):
    result = dead_letters(broker, "purge")

    assert result.returncode == 2
    assert "--yes" in result.stderr
    assert ready(broker, DEAD_LETTER_QUEUE) == 3


def test_says_in_one_line_without_the_password_when_the_broker_is_unreachable():
    unreachable = Broker(f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")

    result = dead_letters(unreachable, "list", RABBITMQ_PASSWORD="canary-dead-letters-pw")

    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("python-worker dead-letters: broker at amqp://guest@127.0.0.1:")
    assert "connection refused" in line
    assert "canary-dead-letters-pw" not in result.stderr
