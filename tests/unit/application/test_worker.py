"""The worker loop on the embedded broker: priority, capacity, heartbeats, stopping."""

import threading
import time
from collections.abc import Mapping
from typing import Any

from python_worker.adapters.memory import InMemorySource
from python_worker.adapters.wire import heartbeat_body
from python_worker.application.worker import Worker
from python_worker.domain.jobs import JobStatus
from tests.conftest import MemoryWorker, make_memory_worker
from tests.fakes import FailingHeartbeatSink, FullOutboxStatusReporter


def sum_job(job_id: str) -> dict[str, Any]:
    return {"id": job_id, "type": "sum", "payload": {"numbers": [1, 2]}}


def test_starts_high_before_medium_before_low_when_all_are_waiting():
    harness = make_memory_worker(worker_capacity=3)
    for n in range(5):
        harness.publish("job.low", sum_job(f"low-{n}"))
        harness.publish("job.medium", sum_job(f"medium-{n}"))
        harness.publish("job.high", sum_job(f"high-{n}"))

    harness.run_until_idle()

    started = [queue for queue, _ in harness.source.started]
    assert started == ["job.high"] * 5 + ["job.medium"] * 5 + ["job.low"] * 5


def test_never_runs_more_jobs_than_capacity_at_once():
    harness = make_memory_worker(worker_capacity=3)
    lock = threading.Lock()
    running = 0
    peak = 0

    def slow_runner(job_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return {"ok": True}

    harness.container.processor.add_kwargs(runner=slow_runner)
    for n in range(30):
        harness.publish("job.medium", sum_job(f"j{n}"))

    harness.run_until_idle()

    assert peak == 3
    assert len(harness.source.acked) == 30


def test_every_job_gets_running_before_exactly_one_final_status(memory_worker: MemoryWorker):
    for n in range(40):
        memory_worker.publish("job.low", sum_job(f"j{n}"))

    memory_worker.run_until_idle()

    for n in range(40):
        statuses = [u.status for u in memory_worker.reporter.updates_for(f"j{n}")]
        assert statuses == [JobStatus.RUNNING, JobStatus.COMPLETED]


def test_dead_letters_bad_messages_and_keeps_working(memory_worker: MemoryWorker):
    memory_worker.publish("job.high", b"{not json")
    memory_worker.publish("job.high", {"id": "bad", "type": "nope"})
    memory_worker.publish("job.low", sum_job("good"))

    memory_worker.run_until_idle()

    assert len(memory_worker.source.dead_lettered) == 2
    assert all(d.reason for d in memory_worker.source.dead_lettered)
    assert memory_worker.reporter.updates_for("good")[-1].status is JobStatus.COMPLETED


def test_heartbeat_carries_spec_fields_and_counters():
    harness = make_memory_worker(worker_capacity=4, worker_type="py-test")
    harness.publish("job.low", sum_job("ok"))
    harness.publish("job.low", {"id": "bad", "type": "average", "payload": {"numbers": []}})

    harness.run_until_idle()

    last = heartbeat_body(harness.heartbeats.heartbeats[-1])
    assert last["workerId"] == "test-worker"
    assert last["workerType"] == "py-test"
    assert last["status"] == "draining"
    assert last["capacity"] == 4
    assert last["currentLoad"] == 0
    assert last["processedCount"] == 2
    assert last["failedCount"] == 1
    assert last["successRate"] == 0.5
    assert last["averageJobTimeMs"] >= 0
    assert last["hostname"]
    assert last["version"]
    assert last["timestamp"].endswith("Z")


def test_sends_heartbeats_periodically_while_idle():
    harness = make_memory_worker(heartbeat_interval=0.02)
    stopper = threading.Timer(0.5, harness.worker.stop)
    stopper.start()

    harness.worker.run()

    statuses = [h.status for h in harness.heartbeats.heartbeats]
    assert statuses.count("idle") >= 3
    assert statuses[-1] == "draining"


def test_keeps_processing_when_heartbeats_fail():
    harness = make_memory_worker()
    harness.container.heartbeat_sink.override(FailingHeartbeatSink())
    for n in range(10):
        harness.publish("job.low", sum_job(f"j{n}"))

    harness.run_until_idle()

    assert len(harness.source.acked) == 10


def test_takes_no_job_while_status_outbox_is_full():
    harness = make_memory_worker()
    reporter = FullOutboxStatusReporter()
    harness.container.status_reporter.override(reporter)
    harness.publish("job.low", sum_job("waiting"))
    worker: Worker = harness.worker
    thread = threading.Thread(target=worker.run)
    thread.start()

    time.sleep(0.5)
    started_while_full = list(harness.source.started)
    reporter.make_room()
    deadline = time.monotonic() + 10
    while harness.source.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    thread.join(10)

    assert started_while_full == []
    assert harness.source.acked == [
        b'{"id": "waiting", "type": "sum", "payload": {"numbers": [1, 2]}}'
    ]
    assert worker.heartbeat().accepting_jobs


def test_finishes_running_jobs_and_hands_back_the_rest_when_stopped():
    harness = make_memory_worker(worker_capacity=2)
    started = threading.Semaphore(0)
    release = threading.Event()

    def blocking_runner(job_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        started.release()
        release.wait(10)
        return {"ok": True}

    harness.container.processor.add_kwargs(runner=blocking_runner)
    for n in range(6):
        harness.publish("job.low", sum_job(f"j{n}"))
    worker = harness.worker
    thread = threading.Thread(target=worker.run)
    thread.start()
    assert started.acquire(timeout=5) and started.acquire(timeout=5)

    worker.stop()
    time.sleep(0.2)
    release.set()
    thread.join(10)

    source: InMemorySource = harness.source
    assert len(source.acked) == 2
    assert source.pending() == 4
    assert not thread.is_alive()
