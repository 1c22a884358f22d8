"""`python-worker run` as a real process: real broker, real HTTP stand-in for the API."""

import json
import signal
import time
from pathlib import Path

import pytest

from devtools.stand_in_api import StandInApi
from tests.integration.worker_fixtures import Publish, StartWorker, settled, sum_job
from tests.support.rabbitmq_node import Broker, RabbitMQNode

DEMO_JOBS = Path(__file__).resolve().parents[2] / "examples" / "jobs.jsonl"


def wait_for_finals(api: StandInApi, job_ids: set[str], timeout: float = 120) -> None:
    ok = api.wait_for(lambda: job_ids <= set(api.final_statuses()), timeout)
    missing = job_ids - set(api.final_statuses())
    assert ok, f"{len(missing)} job(s) never got a final status, e.g. {sorted(missing)[:5]}"


def test_runs_jobs_of_every_type_from_all_three_queues(
    broker: Broker, api: StandInApi, start_worker: StartWorker, publish: Publish
):
    jobs = [json.loads(line) for line in DEMO_JOBS.read_text().splitlines() if line.strip()]
    publish((f"job.{job['priority']}", job) for job in jobs)

    start_worker()

    wait_for_finals(api, {job["id"] for job in jobs})
    finals = {job_id: status.body for job_id, status in api.final_statuses().items()}
    assert finals["high-max-1"]["result"] == {"operation": "max", "value": 17, "count": 3}
    assert finals["medium-sum-1"]["result"] == {"operation": "sum", "value": 0.6, "count": 3}
    assert finals["medium-email-1"]["result"]["normalized"] == "Ada.Lovelace@example.com"
    assert finals["low-sort-1"]["result"]["value"] == [9, 5, 3, 1]
    assert finals["low-range-1"]["result"]["valid"] is False
    assert finals["medium-unknown-1"]["status"] == "failed"
    assert finals["low-bad-1"]["status"] == "failed"
    for job in jobs:
        statuses = [s.status for s in api.statuses_for(job["id"])]
        assert statuses[-1] in ("completed", "failed")
        if job["id"] != "medium-unknown-1":
            assert statuses[0] == "running"
    assert api.wait_for(lambda: settled(broker), 30)
    assert broker.queue_counts("job.dead-letter").messages_ready == 2


def test_high_jobs_overtake_a_low_backlog(
    broker: Broker, api: StandInApi, start_worker: StartWorker, publish: Publish
):
    slow = {"operation": "statistics", "count": 4000, "seed": 7}
    low_ids = [f"low-{n}" for n in range(2000)]
    publish(("job.low", {"id": job_id, "type": "calculate", "payload": slow}) for job_id in low_ids)
    start_worker(worker_capacity=4)
    assert api.wait_for(lambda: len(api.final_statuses()) >= 50, 60)

    high_ids = [f"high-{n}" for n in range(20)]
    publish(("job.high", sum_job(job_id)) for job_id in high_ids)

    wait_for_finals(api, set(high_ids) | set(low_ids), timeout=300)
    finals = [s.job_id for s in api.statuses if s.status in ("completed", "failed")]
    last_high = max(finals.index(job_id) for job_id in high_ids)
    low_after_last_high = [job_id for job_id in finals[last_high:] if job_id.startswith("low-")]
    assert len(low_after_last_high) > 1000, "the low backlog drained before the high jobs ran"


def test_finishes_every_job_after_a_kill_9_and_a_restart(
    broker: Broker, api: StandInApi, start_worker: StartWorker, publish: Publish
):
    job_ids = [f"job-{n}" for n in range(400)]
    publish(("job.medium", sum_job(job_id)) for job_id in job_ids)
    first = start_worker()
    assert api.wait_for(lambda: len(api.final_statuses()) >= 50, 60)

    first.kill()
    start_worker()

    wait_for_finals(api, set(job_ids))
    assert api.wait_for(lambda: settled(broker), 30)


@pytest.mark.parametrize("outage", ["stop_app", "kill"])
def test_same_process_reconnects_and_finishes_after_the_broker_goes_away(
    outage: str,
    controllable_node: RabbitMQNode,
    api: StandInApi,
    start_worker: StartWorker,
    publish: Publish,
):
    job_ids = [f"job-{n}" for n in range(300)]
    slow = {"operation": "statistics", "count": 2000, "seed": 1}
    publish(("job.low", {"id": job_id, "type": "calculate", "payload": slow}) for job_id in job_ids)
    worker = start_worker()
    assert api.wait_for(lambda: len(api.final_statuses()) >= 20, 60)

    if outage == "stop_app":
        controllable_node.stop_app()
        time.sleep(3)
        controllable_node.start_app()
    else:
        controllable_node.kill()
        time.sleep(2)
        controllable_node.start()

    wait_for_finals(api, set(job_ids), timeout=180)
    assert worker.running()
    assert "broker connection to" in worker.log() and "lost" in worker.log()
    assert api.wait_for(lambda: settled(controllable_node), 60)


def test_dead_letters_bad_messages_and_still_runs_the_next_good_job(
    broker: Broker, api: StandInApi, start_worker: StartWorker, publish: Publish
):
    bad = [b"not json at all", b"[1, 2, 3]", b'{"type": "sum"}', b'{"id": "u1", "type": "fly"}']
    publish(("job.high", body) for body in bad)
    start_worker()
    publish([("job.low", sum_job("good-after-bad"))])

    wait_for_finals(api, {"good-after-bad", "u1"})
    assert api.final_statuses()["good-after-bad"].status == "completed"
    assert api.final_statuses()["u1"].status == "failed"
    assert api.wait_for(lambda: broker.queue_counts("job.dead-letter").messages_ready == 4, 30)
    assert api.wait_for(lambda: settled(broker), 30)


def test_sigterm_drains_and_exits_0_without_losing_a_job(
    broker: Broker, api: StandInApi, start_worker: StartWorker, publish: Publish
):
    slow = {"operation": "statistics", "count": 3000, "seed": 3}
    job_ids = [f"job-{n}" for n in range(500)]
    publish(("job.low", {"id": job_id, "type": "calculate", "payload": slow}) for job_id in job_ids)
    worker = start_worker(worker_capacity=4)
    assert api.wait_for(lambda: len(api.final_statuses()) >= 20, 60)

    exit_code = worker.terminate(timeout=60)

    assert exit_code == 0
    assert "handed" in worker.log() or "stopped" in worker.log()
    done = set(api.final_statuses())
    counts = broker.queue_counts("job.low")
    assert counts.messages_unacknowledged == 0
    assert counts.messages_ready + len(done) == len(job_ids)
    assert api.heartbeats[-1].body["status"] == "draining"


def test_second_signal_stops_at_once_and_the_broker_keeps_the_jobs(
    broker: Broker, api: StandInApi, start_worker: StartWorker, publish: Publish
):
    slow = {"operation": "statistics", "count": 100_000, "seed": 3}
    job_ids = [f"job-{n}" for n in range(40)]
    publish(("job.low", {"id": job_id, "type": "calculate", "payload": slow}) for job_id in job_ids)
    worker = start_worker(worker_capacity=2, shutdown_grace_seconds=600)
    assert api.wait_for(lambda: len(api.statuses) >= 1, 60)

    worker.signal(signal.SIGTERM)
    assert worker.wait_for_log("draining (send it again to stop at once)")
    worker.signal(signal.SIGTERM)

    assert worker.wait(30) == 128 + signal.SIGTERM
    done = set(api.final_statuses())
    assert api.wait_for(
        lambda: (broker.queue_counts("job.low").messages_ready + len(done)) == len(job_ids), 30
    )


def test_names_its_broker_connection_after_the_worker(
    controllable_node: RabbitMQNode, start_worker: StartWorker
):
    worker = start_worker(worker_id="vm1-worker")
    assert worker.wait_for_log("consuming job.high", 60), worker.log()

    names = controllable_node.client_connections()

    assert "python-worker vm1-worker" in names, names
