"""The real worker process while the status API or the orchestrator misbehave."""

import time
from collections import Counter

from devtools.stand_in_api import StandInApi
from tests.integration.worker_fixtures import Publish, StartWorker, settled, sum_job
from tests.support.rabbitmq_node import Broker


def assert_every_job_reported_in_order_once(
    api: StandInApi, job_ids: list[str], *, timed_out_requests: bool = False
) -> None:
    for job_id in job_ids:
        statuses = [s.status for s in api.statuses_for(job_id)]
        assert statuses[0] == "running", (job_id, statuses)
        assert statuses[-1] == "completed", (job_id, statuses)
    if not timed_out_requests:
        keys = Counter(s.idempotency_key for s in api.statuses)
        assert [key for key, seen in keys.items() if seen > 1] == []
        return
    # A request that timed out may still have reached the API (a held one is answered on
    # release), and the outbox sends it again: the same key must then carry the same body.
    bodies: dict[str | None, bytes] = {}
    for status in api.statuses:
        assert bodies.setdefault(status.idempotency_key, status.raw) == status.raw


def test_jobs_keep_completing_while_the_api_is_down_and_every_status_arrives_later(
    broker: Broker, api: StandInApi, start_worker: StartWorker, publish: Publish
):
    start_worker()
    job_ids = [f"job-{n}" for n in range(300)]
    api.refuse()

    publish(("job.medium", sum_job(job_id)) for job_id in job_ids[:150])
    deadline = time.monotonic() + 60
    while not settled(broker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert settled(broker), "jobs stopped being acknowledged while the API was down"
    publish(("job.medium", sum_job(job_id)) for job_id in job_ids[150:])
    time.sleep(10)
    assert api.statuses == []
    api.resume()

    assert api.wait_for(lambda: set(job_ids) <= set(api.final_statuses()), 120)
    assert_every_job_reported_in_order_once(api, job_ids)
    assert api.wait_for(lambda: settled(broker), 30)


def test_outbox_left_by_a_killed_worker_is_replayed_by_the_next_one(
    broker: Broker, api: StandInApi, start_worker: StartWorker, publish: Publish
):
    first = start_worker()
    api.refuse()
    job_ids = [f"job-{n}" for n in range(100)]
    publish(("job.low", sum_job(job_id)) for job_id in job_ids)
    deadline = time.monotonic() + 60
    while not settled(broker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert settled(broker)

    first.kill()
    api.resume()
    start_worker()

    assert api.wait_for(lambda: set(job_ids) <= set(api.final_statuses()), 120)
    assert_every_job_reported_in_order_once(api, job_ids)


def test_a_hanging_api_does_not_stall_job_processing(
    broker: Broker, api: StandInApi, start_worker: StartWorker, publish: Publish
):
    start_worker()
    api.hang(seconds=None)
    job_ids = [f"job-{n}" for n in range(200)]

    publish(("job.low", sum_job(job_id)) for job_id in job_ids)

    assert api.wait_for(lambda: settled(broker), 90), "a hanging API stalled the acks"
    api.release()
    assert api.wait_for(lambda: set(job_ids) <= set(api.final_statuses()), 120)
    assert_every_job_reported_in_order_once(api, job_ids, timed_out_requests=True)


def test_api_answering_500_then_200_gets_every_status(
    broker: Broker, api: StandInApi, start_worker: StartWorker, publish: Publish
):
    start_worker()
    api.answer(500, times=6)
    job_ids = [f"job-{n}" for n in range(50)]

    publish(("job.high", sum_job(job_id)) for job_id in job_ids)

    assert api.wait_for(lambda: set(job_ids) <= set(api.final_statuses()), 120)
    assert_every_job_reported_in_order_once(api, job_ids)
    assert sum(1 for r in api.requests_to("status") if r.answered == 500) == 6


def test_jobs_are_unaffected_while_the_orchestrator_is_down_and_heartbeats_resume(
    broker: Broker, api: StandInApi, start_worker: StartWorker, publish: Publish
):
    with StandInApi() as orchestrator:
        worker = start_worker(orchestrator_url=orchestrator.url, heartbeat_interval=0.3)
        assert orchestrator.wait_for(lambda: len(orchestrator.heartbeats) >= 1, 30)
        orchestrator.refuse()
        job_ids = [f"job-{n}" for n in range(100)]

        publish(("job.low", sum_job(job_id)) for job_id in job_ids)

        assert api.wait_for(lambda: set(job_ids) <= set(api.final_statuses()), 60)
        assert worker.wait_for_log("heartbeat failed", 30)
        time.sleep(2)  # several more ticks fail while it is down
        before = len(orchestrator.heartbeats)
        orchestrator.resume()
        assert orchestrator.wait_for(lambda: len(orchestrator.heartbeats) > before, 30)
        last = orchestrator.heartbeats[-1].body
        assert api.wait_for(lambda: orchestrator.heartbeats[-1].body["processedCount"] == 100, 30)
        assert last["workerId"] == "worker-0"
        failures_logged = worker.log().count("python_worker.application.worker: heartbeat failed")
        assert failures_logged == 1, "logged once per outage, not once per tick"
        assert worker.wait_for_log("heartbeats are getting through again", 10)
