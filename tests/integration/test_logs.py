"""What a real worker's log says: one line per record whatever a job holds, levels, processes."""

from __future__ import annotations

import json

from devtools.stand_in_api import StandInApi
from tests.integration.worker_fixtures import Publish, StartWorker, sum_job

FORGED = "2026-12-01T00:00:00+0000 ERROR   [vm1] python_worker.application.worker: forged"


def test_a_job_id_with_a_line_break_forges_no_log_line_when_logging_text(
    api: StandInApi, start_worker: StartWorker, publish: Publish
):
    worker = start_worker(worker_id="vm1")
    job_id = f"x\n{FORGED}"

    publish([("job.high", sum_job(job_id))])

    assert api.wait_for(lambda: job_id in api.final_statuses(), 60)
    assert worker.terminate() == 0
    lines = worker.log().splitlines()
    assert not any(line.startswith("2026-12-01T00:00:00+0000") for line in lines)
    assert any(f"job x\\n{FORGED}" in line for line in lines)


def test_every_line_is_one_json_object_naming_its_process_in_utc_when_logging_json(
    api: StandInApi, start_worker: StartWorker, publish: Publish
):
    worker = start_worker(worker_id="vm1", log_format="json")
    job_id = f"x\r\n{FORGED}\x1b[2J"

    publish([("job.high", sum_job(job_id))])

    assert api.wait_for(lambda: job_id in api.final_statuses(), 60)
    assert worker.terminate() == 0
    records = [json.loads(line) for line in worker.log().splitlines()]
    assert {record["process"] for record in records} == {"vm1"}
    assert all(record["time"].endswith("Z") for record in records)
    assert any(job_id in record["message"] for record in records)


def test_a_failed_job_is_logged_as_a_warning_and_a_completed_one_as_info(
    api: StandInApi, start_worker: StartWorker, publish: Publish
):
    worker = start_worker(worker_id="vm1", log_format="json")

    publish(
        [
            ("job.low", sum_job("fine")),
            ("job.low", {"id": "empty", "type": "average", "payload": {"numbers": []}}),
        ]
    )

    assert api.wait_for(lambda: {"fine", "empty"} <= set(api.final_statuses()), 60)
    assert worker.terminate() == 0
    outcomes = {
        record["job_id"]: record["level"]
        for record in map(json.loads, worker.log().splitlines())
        if "status" in record and "job_id" in record
    }
    assert outcomes == {"fine": "INFO", "empty": "WARNING"}


def test_every_line_names_its_process_when_several_processes_run(
    api: StandInApi, start_worker: StartWorker, publish: Publish
):
    supervisor = start_worker(worker_id="vm1", worker_processes=2)
    assert api.wait_for(lambda: len({h.body["workerId"] for h in api.heartbeats}) == 2, 60)

    publish([("job.low", sum_job(f"spread-{n}")) for n in range(20)])

    assert api.wait_for(lambda: len(api.final_statuses()) == 20, 60)
    assert supervisor.terminate() == 0
    lines = [line for line in supervisor.log().splitlines() if line[:4].isdigit()]
    names = {line.split("[", 1)[1].split("]", 1)[0] for line in lines}
    assert names == {"vm1 supervisor", "vm1-p0", "vm1-p1"}
