"""Faults around jobs: a memory that cannot write pauses the worker; what escapes is handed back."""

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from python_worker.adapters.memory import InMemoryJobMemory, InMemorySource, InMemoryStatusReporter
from python_worker.application.job_types import run_job
from python_worker.application.ports import Delivery, JobObserver, Settlement, StatusReporter
from python_worker.application.process_job import JobProcessor, WorkerIdentity
from python_worker.application.stats import WorkerStats
from python_worker.domain.jobs import JobStatus
from tests.conftest import make_memory_worker
from tests.fakes import (
    FakeClock,
    PauseFromTheSecondLookReporter,
    RaisingObserver,
    RaisingStatusReporter,
    UnwritableJobMemory,
)
from tests.support.waiting import wait_until


class EscapingFault(BaseException):
    """Raised by the test runner below: a fault none of the processor's own handlers expects."""


def sum_job(job_id: str, **payload: Any) -> dict[str, Any]:
    return {"id": job_id, "type": "sum", "payload": {"numbers": [1, 2], **payload}}


def escaping_runner(job_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The built-in handlers, except that a payload with `"escape": true` escapes processing."""
    if payload.get("escape"):
        raise EscapingFault("escapes on purpose")
    return run_job(job_type, payload)


def make_processor(
    source: InMemorySource,
    reporter: StatusReporter,
    *,
    memory: InMemoryJobMemory | None = None,
    runner: Any = None,
    observers: Sequence[JobObserver] = (),
) -> JobProcessor:
    return JobProcessor(
        source=source,
        reporter=reporter,
        identity=WorkerIdentity("worker-1", "python"),
        clock=FakeClock(),
        stats=WorkerStats(),
        memory=memory if memory is not None else InMemoryJobMemory(),
        runner=runner,
        observers=observers,
    )


def deliver(source: InMemorySource, job: dict[str, Any]) -> Delivery:
    source.publish("job.low", json.dumps(job).encode())
    delivery = source.receive(timeout=0)
    assert delivery is not None
    return delivery


def redeliver(source: InMemorySource, job: dict[str, Any]) -> Delivery:
    """`job` as the broker hands it out a second time."""
    source.settle(deliver(source, job), Settlement.REQUEUE)
    delivery = source.receive(timeout=0)
    assert delivery is not None and delivery.is_redelivery
    return delivery


@pytest.fixture
def source() -> InMemorySource:
    return InMemorySource()


# -- the job processor -------------------------------------------------------------------------


def test_hands_the_delivery_back_once_and_returns_when_the_reporter_raises(source, caplog):
    reporter = RaisingStatusReporter(fail_on=1)
    delivery = deliver(source, sum_job("j1"))

    make_processor(source, reporter).process(delivery)

    assert source.requeued == [delivery.body]
    assert source.acked == []
    assert source.dead_lettered == []
    assert (
        "job j1 from job.low: RuntimeError escaped its processing; handed it back to the broker"
        in caplog.text
    )


def test_hands_the_delivery_back_when_a_base_exception_escapes_the_handler(source, caplog):
    reporter = InMemoryStatusReporter()
    delivery = deliver(source, sum_job("j2", escape=True))

    make_processor(source, reporter, runner=escaping_runner).process(delivery)

    assert source.requeued == [delivery.body]
    assert [u.status for u in reporter.updates_for("j2")] == [JobStatus.RUNNING]
    assert "job j2 from job.low: EscapingFault escaped its processing" in caplog.text


def test_settles_only_once_when_something_escapes_after_the_ack_is_on_its_way(source, caplog):
    # The final status is handled (so the ack goes out), then the reporter raises: handing the
    # delivery back as well would settle it twice, which the in-memory broker refuses.
    reporter = RaisingStatusReporter(fail_on=2, handle_first=True)
    delivery = deliver(source, sum_job("j3"))

    make_processor(source, reporter).process(delivery)

    assert source.acked == [delivery.body]
    assert source.requeued == []
    assert (
        "job j3 from job.low: RuntimeError escaped its processing; its settlement was on its way"
        in (caplog.text)
    )


def test_hands_the_delivery_back_and_says_so_when_something_escapes_for_a_body_without_an_id(
    source, caplog
):
    reporter = InMemoryStatusReporter()
    source.publish("job.high", b'{"type": "sum", "id": 5}')
    delivery = source.receive(timeout=0)
    assert delivery is not None
    processor = make_processor(source, reporter, observers=[RaisingObserver()])

    processor.process(delivery)

    assert source.requeued == [delivery.body]
    assert source.dead_lettered == []
    assert (
        "job (no readable id) from job.high: RuntimeError escaped its processing; handed it "
        "back to the broker" in caplog.text
    )


def test_hands_a_redelivered_job_back_unstarted_when_its_start_cannot_be_counted(source):
    reporter = InMemoryStatusReporter()
    memory = UnwritableJobMemory()
    delivery = redeliver(source, sum_job("j4"))
    requeued_before = len(source.requeued)

    make_processor(source, reporter, memory=memory).process(delivery)

    assert source.requeued[requeued_before:] == [delivery.body]
    assert reporter.updates == []
    assert memory.start_attempts == 1


def test_runs_a_first_delivery_without_counting_it_when_the_memory_cannot_write(source):
    reporter = InMemoryStatusReporter()
    memory = UnwritableJobMemory()
    delivery = deliver(source, sum_job("j5"))

    make_processor(source, reporter, memory=memory).process(delivery)

    assert source.acked == [delivery.body]
    assert memory.start_attempts == 0


# -- the worker --------------------------------------------------------------------------------


def test_takes_no_job_and_says_why_when_the_job_memory_cannot_be_written(caplog):
    caplog.set_level(logging.INFO)
    harness = make_memory_worker(worker_capacity=3)
    memory = UnwritableJobMemory()
    harness.container.job_memory.override(memory)
    harness.publish("job.low", sum_job("waiting"))
    worker = harness.worker
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert wait_until(
            lambda: any(not beat.accepting_jobs for beat in harness.heartbeats.heartbeats), 10
        )
        assert wait_until(lambda: "not taking new jobs" in caplog.text, 10)
        paused_heartbeat = worker.heartbeat()
        paused_readiness = worker.readiness()
        started_while_paused = list(harness.source.started)
        pause_lines = caplog.text.count("not taking new jobs")

        memory.recover()

        assert wait_until(lambda: len(harness.source.acked) == 1, 10)
    finally:
        worker.stop()
        thread.join(10)

    assert started_while_paused == []
    assert worker.pause_reason() is None
    assert paused_heartbeat.accepting_jobs is False
    assert paused_heartbeat.problems == (memory.reason,)
    assert paused_readiness == [memory.reason]
    assert pause_lines == 1, "logged once, not once per job thread or per poll"
    assert f"not taking new jobs: {memory.reason}" in caplog.text
    assert "taking jobs again" in caplog.text
    assert worker.readiness() == ["not consuming"]  # stopped now; the memory is no problem
    assert worker.heartbeat().accepting_jobs


def test_keeps_its_job_thread_and_gives_up_on_the_job_when_its_processing_escapes_every_time():
    harness = make_memory_worker(worker_capacity=1, max_delivery_attempts=3)
    harness.container.processor.add_kwargs(runner=escaping_runner)
    harness.publish("job.high", sum_job("escapes", escape=True))
    for n in range(5):
        harness.publish("job.low", sum_job(f"good-{n}"))

    harness.run_until_idle()

    final = harness.reporter.updates_for("escapes")[-1]
    assert final.status is JobStatus.FAILED
    assert "gave up after 3 starts without an outcome" in (final.error_message or "")
    assert [d.body for d in harness.source.dead_lettered] == [
        json.dumps(sum_job("escapes", escape=True)).encode()
    ]
    for n in range(5):
        statuses = [u.status for u in harness.reporter.updates_for(f"good-{n}")]
        assert statuses == [JobStatus.RUNNING, JobStatus.COMPLETED]
    assert harness.worker.stats.snapshot().processed == 6


def test_logs_the_pause_once_and_no_resume_when_a_job_thread_looked_just_before_it_began(caplog):
    caplog.set_level(logging.INFO)
    harness = make_memory_worker(worker_capacity=2)
    reporter = PauseFromTheSecondLookReporter()
    harness.container.status_reporter.override(reporter)

    class PausedSignal(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("not taking new jobs"):
                reporter.someone_paused.set()

    signal = PausedSignal()
    logging.getLogger("python_worker.application.worker").addHandler(signal)
    worker = harness.worker
    thread = threading.Thread(target=worker.run)
    try:
        thread.start()
        assert reporter.someone_paused.wait(10)
        wait_until(lambda: "taking jobs again" in caplog.text, 2)  # time for a wrong resume
    finally:
        worker.stop()
        thread.join(10)
        logging.getLogger("python_worker.application.worker").removeHandler(signal)

    assert caplog.text.count("not taking new jobs") == 1, caplog.text
    assert "taking jobs again" not in caplog.text, caplog.text
