"""Jobs that kill the worker, and jobs redelivered after they already finished."""

import time
from pathlib import Path

import pytest

from devtools.stand_in_api import StandInApi
from tests.integration.worker_fixtures import Publish, StartWorker, settled, sum_job
from tests.support.rabbitmq_node import Broker
from tests.support.tcp_proxy import TcpProxy

CRASH_EXIT_CODE = 70


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_job_that_crashes_the_worker_is_dead_lettered_after_the_attempt_limit(
    queue_type: str, broker: Broker, api: StandInApi, start_worker: StartWorker, publish: Publish
):
    settings = {
        "worker_test_handlers": "true",
        "max_delivery_attempts": 3,
        "queue_type": queue_type,
        "worker_capacity": 1,
    }
    declaring = start_worker(**settings)  # declares the queues with this queue type
    assert declaring.wait_for_log("connected to", 60)
    declaring.terminate()
    publish([("job.high", {"id": "poison", "type": "test.crash"})])
    publish(("job.low", sum_job(f"good-{n}")) for n in range(20))

    crashes = 0
    for _ in range(10):
        worker = start_worker(**settings)
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
    assert poison["status"] == "failed"
    assert poison["attempt"] == 4
    assert "gave up after 3 starts without an outcome" in poison["errorMessage"]
    assert api.wait_for(lambda: {f"good-{n}" for n in range(20)} <= set(api.final_statuses()), 60)
    assert api.wait_for(lambda: settled(broker), 30)
    assert api.wait_for(lambda: broker.queue_counts("job.dead-letter").messages_ready == 1, 30)


def test_a_job_redelivered_after_it_finished_is_re_reported_not_run_again(
    broker: Broker, api: StandInApi, start_worker: StartWorker, publish: Publish, tmp_path: Path
):
    with TcpProxy.for_broker(broker) as proxy:
        first = start_worker(
            rabbitmq_port=proxy.port, worker_capacity=2, worker_test_handlers="true"
        )
        job_ids = ["slow-1", "slow-2"]
        publish(
            ("job.medium", {"id": job_id, "type": "test.sleep", "payload": {"seconds": 3}})
            for job_id in job_ids
        )
        assert api.wait_for(lambda: len(api.statuses) == 2, 60)  # both running
        # Acks from now on never reach the broker, as if the worker died right after the
        # final status; then it really dies.
        proxy.black_hole()
        assert api.wait_for(lambda: set(job_ids) <= set(api.final_statuses()), 60)
        time.sleep(1)  # the worker dies a while after the statuses, its acks still unsent
        first.kill()
        proxy.reset()

    second = start_worker(worker_test_handlers="true")

    assert second.wait_for_log("re-reporting that, not running it again", 60)
    assert api.wait_for(lambda: settled(broker), 60)
    for job_id in job_ids:
        statuses = [(s.status, s.idempotency_key) for s in api.statuses_for(job_id)]
        assert statuses == [
            ("running", f"{job_id}:running:1"),
            ("completed", f"{job_id}:completed:1"),
            ("completed", f"{job_id}:completed:1"),
        ]
