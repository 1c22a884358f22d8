"""`python-worker run` with WORKER_BROKER=redis, end to end and under faults; the ledger must hold.

Real worker processes against a private Redis and the stand-in API. The fixture's claim idle
time is 3 s, so a killed worker's entries move on quickly; timeouts are generous on purpose:
other suites share this 2-core machine.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.stand_in_api import StandInApi
from python_worker.adapters.redis.connection import (
    GROUP,
    JOB_STREAMS,
    ORIGINAL_QUEUE_FIELD,
    REASON_FIELD,
    WORKER_FIELD,
)
from tests.integration.redis_fixtures import (
    StartWorker,
    durable_redis,
    publisher_for,
    redis_instance,
    redis_server,
    start_redis_worker,
)
from tests.integration.test_hostile_input import BAD
from tests.integration.worker_fixtures import sum_job
from tests.support.ledger import publish_bad_messages, settle_and_check, wait_for_finals
from tests.support.rabbitmq_node import free_port
from tests.support.redis_ledger import RedisLedger
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from tests.support.worker_process import WorkerProcess

__all__ = ["durable_redis", "redis_instance", "redis_server", "start_redis_worker"]

CRASH_EXIT_CODE = 70
CANARY_PASSWORD = "canary-redis-pw-77c1"


@pytest.fixture
def ledger(redis_server: RedisServer, api: StandInApi) -> Iterator[RedisLedger]:
    book = RedisLedger(redis_server, api, prefix="job")
    yield book
    book.close()


@pytest.fixture
def durable_ledger(durable_redis: RedisServer, api: StandInApi) -> Iterator[RedisLedger]:
    book = RedisLedger(durable_redis, api, prefix="job")
    yield book
    book.close()


def test_runs_every_job_type_to_its_result_when_the_broker_is_redis(
    redis_server: RedisServer, ledger: RedisLedger, start_redis_worker: StartWorker
) -> None:
    ledger.publish_jobs(48)  # the mix three times over: every job type, every priority

    start_redis_worker(redis_server)

    settle_and_check(ledger)


def test_dead_letters_bad_messages_with_their_reasons_when_the_broker_is_redis(
    redis_server: RedisServer, ledger: RedisLedger, start_redis_worker: StartWorker
) -> None:
    publish_bad_messages(ledger)

    start_redis_worker(redis_server, worker_id="vm1-worker")

    settle_and_check(ledger)
    fields = redis_server.dead_letters()
    assert {f[WORKER_FIELD.encode()] for f in fields} == {b"vm1-worker"}
    by_body = {f[b"body"]: f for f in fields}
    assert by_body[b"{not json"][ORIGINAL_QUEUE_FIELD.encode()] == b"job.high"
    assert (
        b"unknown job type"
        in by_body[b'{"id": "bad-type", "type": "teleport"}'][REASON_FIELD.encode()]
    )


def test_dead_letters_every_hostile_message_with_its_reason_and_runs_on_when_on_redis(
    redis_server: RedisServer, ledger: RedisLedger, start_redis_worker: StartWorker
) -> None:
    for queue, body, reason, job_id in BAD.values():  # the RabbitMQ suite's hostile messages
        assert ledger.publish_bad(queue, body, reason, job_id=job_id)
    ledger.publish_jobs(16)

    worker = start_redis_worker(redis_server, worker_id="hostile")

    settle_and_check(ledger)
    assert worker.running()
    assert len(redis_server.dead_letters()) == len(BAD)


def kill_while_it_holds_entries(
    worker: WorkerProcess, server: RedisServer, api: StandInApi, consumer: str
) -> None:
    """kill -9 `worker` at a moment entries are pending at it: a slow API keeps each one
    there for a while (until its statuses are through), so there always are some."""
    api.delay(0.3)

    def holds() -> bool:
        return sum(server.pending_by_consumer(s).get(consumer, 0) for s in JOB_STREAMS) > 0

    try:
        assert wait_until(holds, timeout=60), f"{consumer} never held an entry"
        worker.kill()
    finally:
        api.delay(0)


def test_kill_9_mid_load_and_a_restart_under_the_same_id_loses_no_job(
    redis_server: RedisServer, ledger: RedisLedger, api: StandInApi, start_redis_worker: StartWorker
) -> None:
    ledger.publish_jobs(100)
    publish_bad_messages(ledger)
    worker = start_redis_worker(redis_server, worker_id="vm1-worker")
    ledger.start_background(300, per_second=30)
    wait_for_finals(ledger, 30)

    kill_while_it_holds_entries(worker, redis_server, api, "vm1-worker")
    restarted = start_redis_worker(redis_server, worker_id="vm1-worker")

    settle_and_check(ledger)
    assert restarted.wait_for_log("pending at vm1-worker", 5), "its own entries were not taken up"


def test_the_survivor_claims_the_entries_of_a_killed_worker_when_two_share_the_group(
    redis_server: RedisServer, ledger: RedisLedger, api: StandInApi, start_redis_worker: StartWorker
) -> None:
    ledger.publish_jobs(100)
    publish_bad_messages(ledger)
    doomed = start_redis_worker(redis_server, worker_id="doomed")
    survivor = start_redis_worker(redis_server, worker_id="survivor")
    ledger.start_background(300, per_second=30)
    wait_for_finals(ledger, 50)

    kill_while_it_holds_entries(doomed, redis_server, api, "doomed")

    settle_and_check(ledger)
    assert survivor.wait_for_log("claimed", 5), "the survivor never claimed an idle entry"
    for stream in ("job.high", "job.medium", "job.low"):
        assert redis_server.pending_by_consumer(stream).get("doomed", 0) == 0


@pytest.mark.parametrize("outage", ["killed", "stopped"])
def test_the_same_worker_loses_no_job_when_redis_restarts_mid_load(
    outage: str,
    durable_redis: RedisServer,
    durable_ledger: RedisLedger,
    start_redis_worker: StartWorker,
) -> None:
    durable_ledger.publish_jobs(100)
    publish_bad_messages(durable_ledger)
    worker = start_redis_worker(durable_redis)
    durable_ledger.start_background(300, per_second=30)
    wait_for_finals(durable_ledger, 50)

    durable_redis.restart(kill=outage == "killed")

    settle_and_check(durable_ledger)
    assert worker.running(), "the worker process must heal itself, not exit"
    assert worker.wait_for_log("Redis connection to", 5), "the lost connection was not logged"


def test_sigterm_hands_back_unstarted_entries_and_the_next_worker_finishes_them(
    redis_server: RedisServer,
    ledger: RedisLedger,
    api: StandInApi,
    start_redis_worker: StartWorker,
) -> None:
    # A slow API and few requests at once: the first worker is still far from done, its
    # window full of entries it has not started.
    api.delay(0.3)
    ledger.publish_jobs(300)
    first = start_redis_worker(redis_server, worker_id="first", status_max_in_flight=4)
    wait_for_finals(ledger, 4)

    assert first.terminate(timeout=60) == 0
    api.delay(0)
    start_redis_worker(redis_server, worker_id="second")

    settle_and_check(ledger)
    assert "unstarted job(s) back" in first.log()
    client = redis_server.client()
    names = {c["name"] for c in client.xinfo_consumers("job.low", GROUP)}
    assert b"first" not in names, "a drained worker leaves the group"


def test_heartbeats_and_readyz_say_the_broker_is_gone_while_redis_is_down(
    api: StandInApi, start_redis_worker: StartWorker
) -> None:
    server = RedisServer().start()
    port = free_port()
    readyz = f"http://127.0.0.1:{port}/readyz"
    try:
        start_redis_worker(server, metrics_port=port, metrics_host="127.0.0.1")
        assert api.wait_for(lambda: _last_broker_connected(api) is True, 30)
        assert wait_until(lambda: get(readyz) == (200, {"ready": True, "problems": []}), 30)

        server.stop()

        assert api.wait_for(lambda: _last_broker_connected(api) is False, 30)
        assert wait_until(lambda: get(readyz)[0] == 503, 30)
        assert get(readyz)[1] == {"ready": False, "problems": ["not connected to the broker"]}
        assert "not connected to the broker" in api.heartbeats[-1].body["problems"]
        server.start()
        assert api.wait_for(lambda: _last_broker_connected(api) is True, 60)
        assert wait_until(lambda: get(readyz)[0] == 200, 60)
    finally:
        server.close()


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, None  # not listening yet


def _last_broker_connected(api: StandInApi) -> bool | None:
    beats = api.heartbeats
    return beats[-1].body.get("brokerConnected") if beats else None


def test_runs_a_job_published_before_any_worker_created_the_group(
    redis_server: RedisServer, api: StandInApi, start_redis_worker: StartWorker
) -> None:
    client = redis_server.client()
    client.xadd(
        "job.medium", {"body": b'{"id": "early", "type": "sum", "payload": {"numbers": [2]}}'}
    )

    start_redis_worker(redis_server)

    assert api.wait_for(lambda: "early" in api.final_statuses(), 60)
    assert api.final_statuses()["early"].status == "completed"
    assert redis_server.remaining() == 0 or api.wait_for(lambda: redis_server.remaining() == 0, 20)


def test_a_job_that_crashes_the_worker_is_dead_lettered_after_the_attempt_limit_on_redis(
    redis_server: RedisServer, api: StandInApi, start_redis_worker: StartWorker
) -> None:
    settings = {"worker_test_handlers": "true", "max_delivery_attempts": 3, "worker_capacity": 1}
    publish = publisher_for(redis_server)
    publish([("job.high", {"id": "poison", "type": "test.crash"})])
    publish(("job.low", sum_job(f"good-{n}")) for n in range(20))

    crashes = 0
    for _ in range(10):
        # The same WORKER_ID each time: its next life takes up the entries left pending at it,
        # XCLAIM counting one more delivery, as a broker's redelivery does.
        worker = start_redis_worker(redis_server, worker_id="vm1-worker", **settings)
        deadline = time.monotonic() + 60
        while worker.running() and "poison" not in api.final_statuses():
            assert time.monotonic() < deadline, "the poison job neither crashed nor finished"
            time.sleep(0.05)
        if worker.running():
            break
        assert worker.wait(10) == CRASH_EXIT_CODE
        crashes += 1

    assert crashes == 3
    poison = api.final_statuses()["poison"].body
    assert (poison["status"], poison["attempt"]) == ("failed", 4)
    assert "gave up after 3 starts without an outcome" in poison["errorMessage"]
    assert api.wait_for(lambda: {f"good-{n}" for n in range(20)} <= set(api.final_statuses()), 60)
    assert wait_until(lambda: redis_server.remaining() == 0, 30)
    [dead] = redis_server.dead_letters()
    assert b"gave up after 3 starts" in dead[REASON_FIELD.encode()]


def test_a_job_running_longer_than_the_claim_idle_time_is_not_claimed_by_another_worker(
    redis_server: RedisServer, api: StandInApi, start_redis_worker: StartWorker
) -> None:
    # The fixture's claim idle time is 3 s; the job runs for 8 while a second worker polls.
    settings = {"worker_test_handlers": "true", "redis_claim_idle_seconds": 3}
    first = start_redis_worker(redis_server, worker_id="first", **settings)
    assert first.wait_for_log("connected to", 60)
    publisher_for(redis_server)(
        [("job.medium", {"id": "long", "type": "test.sleep", "payload": {"seconds": 8}})]
    )
    assert api.wait_for(lambda: len(api.statuses_for("long")) == 1, 60)
    second = start_redis_worker(redis_server, worker_id="second", **settings)
    assert second.wait_for_log("connected to", 60)

    assert api.wait_for(lambda: "long" in api.final_statuses(), 60)

    statuses = [(s.status, s.body["workerId"], s.body["attempt"]) for s in api.statuses_for("long")]
    assert statuses == [("running", "first", 1), ("completed", "first", 1)]
    assert "claimed" not in second.log()
    assert wait_until(lambda: redis_server.remaining() == 0, 30)


def test_the_password_never_reaches_the_log_even_at_debug_through_a_reconnect(
    api: StandInApi, start_redis_worker: StartWorker
) -> None:
    server = RedisServer(password=CANARY_PASSWORD).start()
    try:
        url = f"redis://:{CANARY_PASSWORD}@127.0.0.1:{server.port}/0"
        worker = start_redis_worker(server, redis_url=url, redis_password=None, log_level="DEBUG")
        publisher_for(server)([("job.low", sum_job("before"))])
        assert api.wait_for(lambda: "before" in api.final_statuses(), 60)

        server.restart()
        assert worker.wait_for_log("reconnecting to", 30)
        publisher_for(server)([("job.low", sum_job("after"))])
        assert api.wait_for(lambda: "after" in api.final_statuses(), 60)
    finally:
        server.close()

    log = worker.log()
    assert "DEBUG" in log
    assert CANARY_PASSWORD not in log
