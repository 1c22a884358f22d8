"""HttpStatusReporter against the real stand-in API: fields, order, retries, outages, secrets."""

import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.stand_in_api import StandInApi
from python_worker.adapters.http.status_reporter import HttpStatusReporter
from python_worker.adapters.sqlite.outbox import Outbox
from python_worker.domain.jobs import JobStatus
from tests.integration.http_fixtures import CANARY_TOKEN, Handled, update
from tests.support.waiting import wait_until

RUNNING, COMPLETED, FAILED = JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.FAILED


@pytest.fixture
def api() -> Iterator[StandInApi]:
    with StandInApi() as server:
        yield server


@pytest.fixture
def make_reporter(api: StandInApi, tmp_path: Path) -> Iterator[Callable[..., HttpStatusReporter]]:
    """Reporters with quick backoff and probing, all closed at the end of the test."""
    made: list[HttpStatusReporter] = []

    def make(**overrides: Any) -> HttpStatusReporter:
        options: dict[str, Any] = {
            "url": api.status_url,
            "outbox_dir": tmp_path / "outbox",
            "max_in_flight": 4,
            "connect_timeout": 1.0,
            "read_timeout": 2.0,
            "backoff_base": 0.05,
            "backoff_cap": 0.5,
            "probe_cap": 0.5,
        }
        options.update(overrides)
        reporter = HttpStatusReporter(**options)
        made.append(reporter)
        return reporter

    yield make
    for reporter in made:
        reporter.close()


def delivered_in_order(api: StandInApi, job_ids: list[str]) -> bool:
    statuses = api.statuses
    return all(
        [s.status for s in statuses if s.job_id == job_id] == ["running", "completed"]
        for job_id in job_ids
    )


def keys_are_unique(api: StandInApi) -> bool:
    keys = [status.idempotency_key for status in api.statuses]
    return len(keys) == len(set(keys))


def test_posts_every_spec_field_and_header_when_api_is_up(make_reporter, api):
    reporter = make_reporter(token=CANARY_TOKEN)
    handled = Handled()

    reporter.report(
        update(
            "job-1",
            COMPLETED,
            job_type="calculation",
            queue="job.high",
            attempt=2,
            result={"sum": 6, "values": [1.5, 2.5]},
            progress=100,
            duration_ms=12.5,
        ),
        handled,
    )
    reporter.report(update("job-2", FAILED, error_message="numbers must not be empty"))

    assert api.wait_for(lambda: len(api.statuses) == 2)
    assert handled.reached(1)
    completed = api.statuses_for("job-1")[0]
    assert completed.body == {
        "jobId": "job-1",
        "status": "completed",
        "workerId": "worker-test-1",
        "workerType": "python",
        "timestamp": "2024-05-01T12:30:45.123Z",
        "attempt": 2,
        "jobType": "calculation",
        "queue": "job.high",
        "result": {"sum": 6, "values": [1.5, 2.5]},
        "progress": 100,
        "durationMs": 12.5,
    }
    assert completed.headers["idempotency-key"] == "job-1:completed:2"
    assert completed.headers["authorization"] == f"Bearer {CANARY_TOKEN}"
    assert completed.headers["content-type"] == "application/json"
    assert api.statuses_for("job-2")[0].body["errorMessage"] == "numbers must not be empty"


def test_sends_no_authorization_header_when_no_token_is_configured(make_reporter, api):
    reporter = make_reporter()

    reporter.report(update("job-1"))

    assert api.wait_for(lambda: len(api.statuses) == 1)
    assert "authorization" not in api.statuses[0].headers


def test_delivers_running_before_final_for_every_job_when_many_jobs_share_connections(
    make_reporter, api
):
    reporter = make_reporter(max_in_flight=4)
    job_ids = [f"job-{n}" for n in range(200)]
    handled = Handled()

    for job_id in job_ids:
        reporter.report(update(job_id, RUNNING), handled)
    for job_id in job_ids:
        reporter.report(update(job_id, COMPLETED), handled)

    assert reporter.flush(timeout=30)
    assert handled.count == 400
    assert delivered_in_order(api, job_ids)
    assert reporter.backlog() == 0


def test_keeps_order_and_loses_nothing_when_api_refuses_connections_for_a_while(
    make_reporter, api, caplog
):
    caplog.set_level(logging.INFO, logger="python_worker.adapters.http.status_reporter")
    reporter = make_reporter()
    job_ids = [f"job-{n}" for n in range(30)]
    handled = Handled()
    api.refuse()

    started = time.monotonic()
    for job_id in job_ids:
        reporter.report(update(job_id, RUNNING), handled)
    assert handled.reached(30)  # stored durably, so the worker may ack
    for job_id in job_ids:
        time.sleep(0.05)  # the outage lasts a few seconds while jobs keep finishing
        reporter.report(update(job_id, COMPLETED), handled)
    reporting_took = time.monotonic() - started - 0.05 * len(job_ids)
    assert handled.reached(60)
    outage_backlog = reporter.backlog()
    api.resume()

    assert wait_until(lambda: len(api.statuses) == 60)
    assert reporting_took < 10  # report() only enqueues; generous for a shared machine
    assert outage_backlog > 0
    assert delivered_in_order(api, job_ids)
    assert keys_are_unique(api)
    assert wait_until(lambda: reporter.backlog() == 0)

    def outage_logs() -> list[str]:
        return [r.getMessage() for r in caplog.records if "status API" in r.getMessage()]

    # The replayer logs the recovery once it finds the outbox empty, just after the last
    # delete that brought backlog() to 0, and on its own thread: wait for the line.
    assert wait_until(lambda: any("reachable again" in line for line in outage_logs()))
    lines = outage_logs()
    assert len(lines) == 2, lines  # one line when it went away, one when it came back
    assert "unavailable" in lines[0]
    assert "reachable again" in lines[1]


def test_new_reporter_replays_updates_when_previous_one_closed_during_outage(make_reporter, api):
    first = make_reporter()
    handled = Handled()
    api.refuse()
    for n in range(10):
        first.report(update(f"job-{n}", RUNNING), handled)
        first.report(update(f"job-{n}", COMPLETED), handled)
    assert handled.reached(20)  # everything is in the outbox
    first.close()  # as if the process were killed after acking
    api.resume()

    second = make_reporter()

    assert wait_until(lambda: len(api.statuses) == 20)
    assert delivered_in_order(api, [f"job-{n}" for n in range(10)])
    assert keys_are_unique(api)
    assert wait_until(lambda: second.backlog() == 0)


def test_replays_rows_left_on_disk_when_started_on_an_old_outbox(make_reporter, api, tmp_path):
    left_behind = Outbox(tmp_path / "outbox")
    left_behind.append("job-old", "job-old:running:1", b'{"jobId":"job-old","status":"running"}')
    left_behind.append("job-old", "job-old:failed:1", b'{"jobId":"job-old","status":"failed"}')
    left_behind.close()

    reporter = make_reporter()
    reporter.report(update("job-old", COMPLETED, attempt=2))

    assert wait_until(lambda: len(api.statuses) == 3)
    assert [s.status for s in api.statuses] == ["running", "failed", "completed"]


def test_writes_everything_not_yet_delivered_to_outbox_when_closed(make_reporter, api, tmp_path):
    api.hang()
    reporter = make_reporter(read_timeout=0.3, max_in_flight=1)
    for n in range(5):
        reporter.report(update(f"job-{n}"))

    reporter.close()

    assert Outbox(tmp_path / "outbox").count() == 5
    api.release()


def test_delivers_update_when_api_answers_500_then_200(make_reporter, api):
    api.answer(500, times=2)
    reporter = make_reporter(max_attempts=5)
    handled = Handled()

    reporter.report(update("job-1"), handled)

    assert handled.reached(1)
    assert api.wait_for(lambda: len(api.statuses) == 1)
    assert [r.answered for r in api.requests_to("status")] == [500, 500, 200]


def test_logs_api_body_and_does_not_retry_when_api_answers_400(make_reporter, api, caplog):
    caplog.set_level(logging.WARNING, logger="python_worker.adapters.http.status_reporter")
    api.answer(400, body='{"error": "progress must be between 0 and 100"}')
    reporter = make_reporter()
    handled = Handled()

    reporter.report(update("job-1", progress=150), handled)

    assert handled.reached(1)
    assert reporter.flush(timeout=10)
    time.sleep(0.3)  # room for a (wrong) retry to show up
    assert len(api.requests_to("status")) == 1
    assert api.statuses == []
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1
    assert refused[0].levelno == logging.WARNING
    assert "400" in refused[0].getMessage()
    assert "progress must be between 0 and 100" in refused[0].getMessage()


def test_waits_retry_after_before_retrying_when_api_answers_429(make_reporter, api):
    api.answer(429, times=1, retry_after=1)
    reporter = make_reporter(backoff_cap=2.0)

    reporter.report(update("job-1"))

    assert api.wait_for(lambda: len(api.statuses) == 1)
    first, second = api.requests_to("status")
    assert first.answered == 429
    assert second.at - first.at >= 0.9


def test_stores_update_for_replayer_when_retry_after_is_longer_than_lane_waits(make_reporter, api):
    api.answer(503, times=1, retry_after=1)
    reporter = make_reporter(backoff_cap=0.2, probe_cap=5.0)
    handled = Handled()

    reporter.report(update("job-1"), handled)

    assert handled.reached(1)
    assert api.wait_for(lambda: len(api.statuses) == 1)
    first, second = api.requests_to("status")
    assert second.at - first.at >= 0.9


def test_report_returns_and_on_handled_comes_when_api_hangs(make_reporter, api):
    api.hang()
    reporter = make_reporter(read_timeout=1.0, max_attempts=2)
    handled = Handled()

    started = time.monotonic()
    reporter.report(update("job-1", RUNNING), handled)
    reporter.report(update("job-1", COMPLETED), handled)
    reporting_took = time.monotonic() - started

    assert reporting_took < 0.5  # well under one read timeout: report() does not wait
    assert handled.reached(2)
    assert reporter.backlog() == 2
    api.release()
    assert wait_until(lambda: delivered_in_order(api, ["job-1"]))
    assert wait_until(lambda: reporter.backlog() == 0)


def test_stops_accepting_and_drops_nothing_when_outbox_is_full(make_reporter, api):
    api.refuse()
    reporter = make_reporter(outbox_max_items=5)
    handled = Handled()

    for n in range(10):
        reporter.report(update(f"job-{n}"), handled)

    assert handled.reached(10)
    assert reporter.pause_reason() is not None
    assert reporter.backlog() == 10
    api.resume()
    assert wait_until(lambda: len(api.statuses) == 10)
    assert wait_until(lambda: reporter.pause_reason() is None)


def test_returns_false_from_flush_when_requests_are_still_in_flight(make_reporter, api):
    api.hang()
    reporter = make_reporter(read_timeout=5.0, max_in_flight=1)
    reporter.report(update("job-1"))

    flushed = reporter.flush(timeout=0.2)

    assert not flushed
    api.release()
    assert reporter.flush(timeout=30)


def test_never_logs_token_when_logging_at_debug(make_reporter, api, caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("urllib3").setLevel(logging.DEBUG)
    reporter = make_reporter(token=CANARY_TOKEN, read_timeout=0.3, max_attempts=2)

    reporter.report(update("job-ok"))
    assert api.wait_for(lambda: len(api.statuses) == 1)
    api.answer(401, times=1)
    reporter.report(update("job-refused"))
    api.answer(500, times=10)
    reporter.report(update("job-retried"))
    assert reporter.flush(timeout=30)
    api.reset()
    api.refuse()
    handled = Handled()
    reporter.report(update("job-offline"), handled)
    assert handled.reached(1)
    api.resume()
    assert wait_until(lambda: len(api.statuses) == 3)

    assert any("POST 127.0.0.1" in r.getMessage() for r in caplog.records)  # the transport
    assert caplog.records, "expected DEBUG logs to inspect"
    assert CANARY_TOKEN not in caplog.text
    assert all(CANARY_TOKEN not in str(r.args) for r in caplog.records)
    assert CANARY_TOKEN not in repr(reporter)


def test_sends_null_and_warns_when_result_holds_non_finite_numbers(make_reporter, api, caplog):
    caplog.set_level(logging.WARNING, logger="python_worker.adapters.http.status_reporter")
    reporter = make_reporter()

    reporter.report(update("job-1", COMPLETED, result={"mean": math.nan, "max": math.inf}))

    assert api.wait_for(lambda: len(api.statuses) == 1)
    assert api.statuses[0].body["result"] == {"mean": None, "max": None}
    assert any("non-finite" in r.getMessage() for r in caplog.records)


def test_raises_when_reporting_after_close(make_reporter):
    reporter = make_reporter()
    reporter.close()

    with pytest.raises(RuntimeError):
        reporter.report(update("job-1"))
