"""Bodies that are not strict JSON but name their job: a `failed` status says why; dead-lettered.

Python's `json.dumps` writes NaN and ±Infinity by default, and some editors start a file with
a UTF-8 byte-order mark. Neither is JSON, so the job cannot run; but its id can be read, so the
sender hears about it through the status API instead of only in the worker's log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.stand_in_api import StandInApi
from tests.integration.worker_fixtures import StartWorker
from tests.support.ledger import Ledger
from tests.support.rabbitmq_node import Broker

BOM = "\ufeff".encode()
NO_PLACE = "which JSON has no place for (send a number or null)"


def sum_job(job_id: str, numbers: list[float]) -> dict[str, Any]:
    return {"id": job_id, "type": "sum", "payload": {"numbers": numbers}}


# (queue, body, what errorMessage must say)
LENIENT: dict[str, tuple[str, bytes, str]] = {
    "NaN": (
        "job.high",
        json.dumps(sum_job("x1", [float("nan")])).encode(),
        f"message body is not valid JSON: it holds NaN, {NO_PLACE}",
    ),
    "Infinity": (
        "job.medium",
        json.dumps(sum_job("x2", [1, float("inf")])).encode(),
        f"message body is not valid JSON: it holds Infinity, {NO_PLACE}",
    ),
    "-Infinity": (
        "job.low",
        json.dumps(sum_job("x3", [float("-inf"), 2])).encode(),
        f"message body is not valid JSON: it holds -Infinity, {NO_PLACE}",
    ),
    "a byte-order mark": (
        "job.high",
        BOM + json.dumps(sum_job("x4", [1, 2, 3])).encode(),
        "message body is not valid JSON: it starts with a UTF-8 byte-order mark",
    ),
    "a byte-order mark and NaN": (
        "job.medium",
        BOM + json.dumps(sum_job("x5", [float("nan")])).encode(),
        f"it starts with a UTF-8 byte-order mark; it holds NaN, {NO_PLACE}",
    ),
}


@pytest.fixture
def ledger(broker: Broker, api: StandInApi) -> Iterator[Ledger]:
    book = Ledger(broker, api, prefix="lenient", strict_keys=True)
    yield book
    book.close()


def test_reports_one_failed_status_naming_the_problem_and_dead_letters_when_a_body_is_lenient_json(
    ledger: Ledger, api: StandInApi, start_worker: StartWorker
) -> None:
    worker = start_worker()
    assert worker.wait_for_log("consuming job.high", 60), worker.log()[-3000:]
    for queue, body, reason in LENIENT.values():
        job_id = json.loads(body.removeprefix(BOM))["id"]
        assert ledger.publish_bad(queue, body, reason, job_id=job_id)
    assert ledger.publish_job(
        "job.low", {"id": "after", "type": "sum", "payload": {"numbers": [1]}}
    )

    settled = ledger.wait_until_settled(120)

    assert settled, ledger.report()
    ledger.assert_holds()
    for _, body, reason in LENIENT.values():
        job_id = json.loads(body.removeprefix(BOM))["id"]
        statuses = api.statuses_for(job_id)
        assert [s.status for s in statuses] == ["failed"], job_id
        assert reason in statuses[0].body["errorMessage"]
        assert statuses[0].idempotency_key == f"{job_id}:failed:1"
    dead = sorted(body for body, _ in ledger.read_dead_letters())
    assert dead == sorted(body for _, body, _ in LENIENT.values())
    assert worker.running()
