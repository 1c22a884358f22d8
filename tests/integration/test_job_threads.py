"""A job whose processing raises what no handler expects: the worker keeps every job thread.

`test.escape` (WORKER_TEST_HANDLERS=true) raises a BaseException subclass from inside the
handler. The processor hands the delivery back, the broker redelivers it, and after
MAX_DELIVERY_ATTEMPTS starts the job is failed and dead-lettered; the jobs around it complete,
and the worker still runs as many jobs at once as before.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.stand_in_api import StandInApi
from tests.integration.worker_fixtures import StartWorker, sum_job
from tests.support.ledger import Ledger
from tests.support.rabbitmq_node import Broker

CAPACITY = 2
MAX_ATTEMPTS = 3
ORDINARY_JOBS = 40


@pytest.fixture
def ledger(broker: Broker, api: StandInApi) -> Iterator[Ledger]:
    book = Ledger(broker, api, prefix="thread")
    yield book
    book.close()


def test_fails_the_escaping_job_and_keeps_every_job_thread_when_a_job_escapes_its_processing(
    ledger: Ledger, api: StandInApi, start_worker: StartWorker
) -> None:
    worker = start_worker(
        worker_test_handlers="true",
        worker_capacity=CAPACITY,
        max_delivery_attempts=MAX_ATTEMPTS,
        heartbeat_interval=0.5,
    )
    assert worker.wait_for_log("consuming job.high", 60), worker.log()[-3000:]
    escaping = {"id": "escape-1", "type": "test.escape"}
    assert ledger.publish_failing("job.high", escaping, f"gave up after {MAX_ATTEMPTS} starts")
    for n in range(ORDINARY_JOBS):
        assert ledger.publish_job("job.medium", sum_job(f"ordinary-{n}"), result={"value": 6})

    settled = ledger.wait_until_settled(180)

    assert settled, ledger.report()
    ledger.assert_holds()
    log = worker.log()
    handed_back = (
        "job escape-1 from job.high: EscapingJobError escaped its processing; "
        "handed it back to the broker"
    )
    assert log.count(handed_back) == MAX_ATTEMPTS, log[-4000:]
    final = api.final_statuses()["escape-1"].body
    assert final["status"] == "failed"
    assert f"gave up after {MAX_ATTEMPTS} starts without an outcome" in final["errorMessage"]
    assert [s.status for s in api.statuses_for("escape-1")] == ["running"] * MAX_ATTEMPTS + [
        "failed"
    ]
    assert [body for body, _ in ledger.read_dead_letters()] == [ledger.entries[0].body]

    # when: as many long jobs as the worker had threads at the start
    sleepers = [f"sleeper-{n}" for n in range(CAPACITY)]
    beats_before = len(api.heartbeats)
    for job_id in sleepers:
        sleeper = {"id": job_id, "type": "test.sleep", "payload": {"seconds": 3}}
        assert ledger.publish_job("job.high", sleeper, result={"slept": 3})

    # then: they run side by side, so no job thread was lost
    assert api.wait_for(
        lambda: any(b.body["currentLoad"] == CAPACITY for b in api.heartbeats[beats_before:]), 60
    ), [beat.body["currentLoad"] for beat in api.heartbeats[beats_before:]]
    assert ledger.wait_until_settled(120), ledger.report()
    ledger.assert_holds()
    assert worker.running()
    assert worker.terminate() == 0
