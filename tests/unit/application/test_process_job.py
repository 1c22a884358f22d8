"""The job-processing use case, driven through the in-memory source and reporter."""

import json
from collections.abc import Mapping
from typing import Any

import pytest

from python_worker.adapters.memory import InMemoryJobMemory, InMemorySource, InMemoryStatusReporter
from python_worker.adapters.wire import idempotency_key, status_body
from python_worker.application.ports import Delivery, StatusReporter
from python_worker.application.process_job import JobProcessor, WorkerIdentity
from python_worker.application.stats import WorkerStats
from python_worker.domain.jobs import JobStatus
from tests.fakes import AckLosingSource, DeferredStatusReporter, FakeClock


def make_processor(
    source: InMemorySource, reporter: StatusReporter, runner: Any = None
) -> JobProcessor:
    return JobProcessor(
        source=source,
        reporter=reporter,
        identity=WorkerIdentity("worker-1", "python"),
        clock=FakeClock(),
        stats=WorkerStats(),
        memory=InMemoryJobMemory(),
        runner=runner,
    )


def deliver(
    source: InMemorySource, body: bytes | dict[str, Any], queue: str = "job.low"
) -> Delivery:
    source.publish(queue, body if isinstance(body, bytes) else json.dumps(body).encode())
    delivery = source.receive(timeout=0)
    assert delivery is not None
    return delivery


@pytest.fixture
def source() -> InMemorySource:
    return InMemorySource()


@pytest.fixture
def reporter() -> InMemoryStatusReporter:
    return InMemoryStatusReporter()


def test_reports_running_then_completed_and_acks_when_job_succeeds(source, reporter):
    delivery = deliver(source, {"id": "j1", "type": "sum", "payload": {"numbers": [1, 2, 3]}})

    make_processor(source, reporter).process(delivery)

    updates = reporter.updates_for("j1")
    assert [u.status for u in updates] == [JobStatus.RUNNING, JobStatus.COMPLETED]
    assert updates[1].result == {"operation": "sum", "value": 6, "count": 3}
    assert updates[1].worker_id == "worker-1"
    assert updates[1].queue == "job.low"
    assert source.acked == [delivery.body]
    assert source.dead_lettered == []


def test_dead_letters_without_status_when_body_is_not_json(source, reporter):
    delivery = deliver(source, b"not json")

    make_processor(source, reporter).process(delivery)

    assert reporter.updates == []
    assert [d.body for d in source.dead_lettered] == [b"not json"]
    assert "not valid UTF-8 JSON" in (source.dead_lettered[0].reason or "")


@pytest.mark.parametrize(
    ("body", "reason_part"),
    [
        (b"\xff\xfe", "not valid UTF-8 JSON"),
        (b"[1, 2]", "a list, not a JSON object"),
        (b'"job"', "a string, not a JSON object"),
        (b'{"type": "sum"}', "id: is required"),
        (b'{"id": 7, "type": "sum"}', "id: Input should be a valid string"),
        (b'{"id": "x"}', "type: is required"),
    ],
)
def test_dead_letters_with_reason_when_envelope_is_bad(source, reporter, body, reason_part):
    delivery = deliver(source, body)

    make_processor(source, reporter).process(delivery)

    assert source.acked == []
    assert len(source.dead_lettered) == 1
    assert reason_part in (source.dead_lettered[0].reason or "")


def test_reports_failed_and_dead_letters_when_id_is_readable_but_type_missing(source, reporter):
    delivery = deliver(source, {"id": "no-type"})

    make_processor(source, reporter).process(delivery)

    updates = reporter.updates_for("no-type")
    assert [u.status for u in updates] == [JobStatus.FAILED]
    assert updates[0].error_message == "type: is required"
    assert [d.body for d in source.dead_lettered] == [delivery.body]


def test_reports_failed_and_dead_letters_when_type_is_unknown(source, reporter):
    delivery = deliver(source, {"id": "u1", "type": "teleport"})

    make_processor(source, reporter).process(delivery)

    final = reporter.updates_for("u1")[-1]
    assert final.status is JobStatus.FAILED
    assert "teleport" in (final.error_message or "")
    assert source.dead_lettered[0].reason == final.error_message


def test_reports_running_then_failed_when_payload_is_invalid(source, reporter):
    delivery = deliver(source, {"id": "p1", "type": "average", "payload": {"numbers": []}})

    make_processor(source, reporter).process(delivery)

    updates = reporter.updates_for("p1")
    assert [u.status for u in updates] == [JobStatus.RUNNING, JobStatus.FAILED]
    assert updates[1].error_message
    assert [d.body for d in source.dead_lettered] == [delivery.body]


def test_fails_job_without_raising_when_handler_crashes(source, reporter):
    def crashing_runner(job_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        raise RuntimeError("boom")

    delivery = deliver(source, {"id": "c1", "type": "sum", "payload": {"numbers": [1]}})

    make_processor(source, reporter, crashing_runner).process(delivery)

    final = reporter.updates_for("c1")[-1]
    assert final.status is JobStatus.FAILED
    assert final.error_message == "internal error: RuntimeError"
    assert len(source.dead_lettered) == 1


def test_does_not_acknowledge_until_final_status_is_handled(source):
    reporter = DeferredStatusReporter()
    delivery = deliver(source, {"id": "d1", "type": "sum", "payload": {"numbers": [1]}})
    processor = make_processor(source, reporter)

    processor.process(delivery)

    assert [u.status for u in reporter.updates] == [JobStatus.RUNNING, JobStatus.COMPLETED]
    assert source.acked == []
    assert source.pending() == 1

    reporter.release()

    assert source.acked == [delivery.body]
    assert source.pending() == 0


def test_reports_delivery_attempt_when_message_was_redelivered(source, reporter):
    first = deliver(source, {"id": "r1", "type": "sum", "payload": {"numbers": [1]}})
    source.close()  # connection lost before settling: the broker makes it ready again
    second = source.receive(timeout=0)
    assert second is not None

    make_processor(source, reporter).process(second)

    assert first.attempt == 1
    assert {u.attempt for u in reporter.updates_for("r1")} == {2}


def test_status_update_body_has_spec_fields_in_camel_case(source, reporter):
    delivery = deliver(source, {"id": "s1", "type": "max", "payload": {"numbers": [3, 9]}})

    make_processor(source, reporter).process(delivery)

    body = status_body(reporter.updates_for("s1")[-1])
    assert body["jobId"] == "s1"
    assert body["status"] == "completed"
    assert body["workerId"] == "worker-1"
    assert body["timestamp"] == "2026-01-01T00:00:00.000Z"
    assert body["result"] == {"operation": "max", "value": 9, "count": 2}
    assert body["progress"] == 100
    assert "errorMessage" not in body


def redeliver(source: InMemorySource, delivery: Delivery) -> Delivery:
    """What the broker does when the worker dies before settling: the message comes back."""
    source.close()
    again = source.receive(timeout=0)
    assert again is not None and again.body == delivery.body
    return again


def counting_processor(
    source: InMemorySource, reporter: StatusReporter, memory: InMemoryJobMemory, calls: list[str]
) -> JobProcessor:
    def counting_runner(job_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        calls.append(job_type)
        return {"operation": "sum", "value": 1, "count": 1}

    return JobProcessor(
        source=source,
        reporter=reporter,
        identity=WorkerIdentity("worker-1"),
        clock=FakeClock(),
        stats=WorkerStats(),
        memory=memory,
        runner=counting_runner,
        max_attempts=2,
    )


def test_gives_up_without_running_when_a_job_was_started_too_often_without_an_outcome(
    source, reporter
):
    memory = InMemoryJobMemory()
    calls: list[str] = []
    delivery = deliver(source, {"id": "poison", "type": "sum", "payload": {"numbers": [1]}})
    delivery = redeliver(source, delivery)  # the first delivery crashed its worker
    memory.record_start("poison")  # and so did the second
    delivery = redeliver(source, delivery)

    counting_processor(source, reporter, memory, calls).process(delivery)

    assert calls == []
    updates = reporter.updates_for("poison")
    assert [u.status for u in updates] == [JobStatus.FAILED]
    assert "gave up after 2 starts without an outcome" in (updates[0].error_message or "")
    assert updates[0].attempt == 3
    assert [d.body for d in source.dead_lettered] == [delivery.body]


def test_runs_a_job_redelivered_several_times_when_it_never_started_here(source, reporter):
    calls: list[str] = []
    delivery = deliver(source, {"id": "innocent", "type": "sum", "payload": {"numbers": [1]}})
    for _ in range(3):  # prefetched by workers that crashed on another job
        delivery = redeliver(source, delivery)

    counting_processor(source, reporter, InMemoryJobMemory(), calls).process(delivery)

    assert calls == ["sum"]
    assert reporter.updates_for("innocent")[-1].status is JobStatus.COMPLETED
    assert source.acked == [delivery.body]


def test_gives_up_when_the_broker_delivered_a_job_more_than_twice_the_limit(source, reporter):
    calls: list[str] = []
    delivery = deliver(source, {"id": "wanderer", "type": "sum", "payload": {"numbers": [1]}})
    for _ in range(4):
        delivery = redeliver(source, delivery)

    counting_processor(source, reporter, InMemoryJobMemory(), calls).process(delivery)

    assert calls == []
    final = reporter.updates_for("wanderer")[-1]
    assert final.status is JobStatus.FAILED
    assert "gave up after 4 deliveries without an outcome" in (final.error_message or "")


def test_re_reports_and_acks_without_running_when_a_finished_job_is_redelivered():
    source = AckLosingSource()
    reporter = DeferredStatusReporter()
    calls: list[str] = []
    processor = counting_processor(source, reporter, InMemoryJobMemory(), calls)
    first = deliver(source, {"id": "done-once", "type": "sum", "payload": {"numbers": [1]}})
    processor.process(first)
    source.losing_acks = True
    reporter.release()
    source.losing_acks = False
    again = redeliver(source, first)

    processor.process(again)
    reporter.release()

    assert calls == ["sum"]
    finals = [u for u in reporter.updates if u.status.is_final]
    assert len(finals) == 2
    assert idempotency_key(finals[0]) == idempotency_key(finals[1])
    assert source.acked == [first.body]


def test_runs_a_redelivered_job_again_when_it_never_finished_here(source, reporter):
    processor = make_processor(source, reporter)
    first = deliver(source, {"id": "half-done", "type": "sum", "payload": {"numbers": [4]}})
    again = redeliver(source, first)

    processor.process(again)

    statuses = [(u.status, u.attempt) for u in reporter.updates_for("half-done")]
    assert statuses == [(JobStatus.RUNNING, 2), (JobStatus.COMPLETED, 2)]
    assert source.acked == [first.body]
