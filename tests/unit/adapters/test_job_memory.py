"""The memory of recent jobs: in memory and on disk, bounded, keyed by job id."""

import threading
from datetime import UTC, datetime

import pytest

from python_worker.adapters.memory import InMemoryJobMemory
from python_worker.adapters.sqlite.job_memory import SqliteJobMemory
from python_worker.application.ports import JobMemory, StatusUpdate
from python_worker.domain.jobs import JobStatus


def final(job_id: str, value: int = 1) -> StatusUpdate:
    return StatusUpdate(
        job_id=job_id,
        status=JobStatus.COMPLETED,
        worker_id="w1",
        timestamp=datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC),
        job_type="sum",
        queue="job.low",
        attempt=2,
        result={"operation": "sum", "value": value, "count": 1},
        progress=100,
        duration_ms=0.5,
    )


def remember(store: JobMemory, update: StatusUpdate) -> None:
    """Remember and wait until it is kept, as the use case does before an ack."""
    kept = threading.Event()
    store.remember(update, kept.set)
    assert kept.wait(10)


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request, tmp_path):
    def make(capacity: int = 1000) -> JobMemory:
        if request.param == "memory":
            return InMemoryJobMemory(capacity)
        return SqliteJobMemory(tmp_path / "state", capacity)

    return make


def test_recalls_the_final_status_it_was_given(make_store):
    store = make_store()

    remember(store, final("a", 7))

    assert store.recall("a") == final("a", 7)
    assert store.recall("b") is None


def test_keeps_the_latest_status_when_a_job_is_remembered_twice(make_store):
    store = make_store()

    remember(store, final("a", 1))
    remember(store, final("a", 2))

    recalled = store.recall("a")
    assert recalled is not None and recalled.result == {"operation": "sum", "value": 2, "count": 1}


def test_forgets_the_oldest_jobs_beyond_its_capacity(make_store):
    store = make_store(capacity=100)

    for n in range(500):
        remember(store, final(f"job-{n}"))

    assert store.recall("job-0") is None
    assert store.recall("job-499") is not None
    remembered = sum(store.recall(f"job-{n}") is not None for n in range(500))
    assert 100 <= remembered <= 110  # pruned in batches of a tenth of the capacity


def test_sqlite_memory_outlives_the_process(tmp_path):
    first = SqliteJobMemory(tmp_path / "state")
    remember(first, final("survivor"))
    first.close()

    second = SqliteJobMemory(tmp_path / "state")

    assert second.recall("survivor") == final("survivor")


def test_counts_starts_until_the_job_has_an_outcome(make_store):
    store = make_store()

    counts = [store.record_start("a") for _ in range(3)]
    remember(store, final("a"))
    again = store.record_start("a")

    assert counts == [1, 2, 3]
    assert again == 1
    assert store.recall("a") is None  # started again: the old outcome no longer stands


def test_sqlite_start_counts_outlive_the_process(tmp_path):
    first = SqliteJobMemory(tmp_path / "state")
    first.record_start("crasher")
    first.close()

    second = SqliteJobMemory(tmp_path / "state")

    assert second.record_start("crasher") == 2


def test_sqlite_close_keeps_everything_queued_and_calls_each_continuation(tmp_path):
    store = SqliteJobMemory(tmp_path / "state")
    kept: list[str] = []

    for n in range(300):
        store.remember(final(f"job-{n}"), lambda n=n: kept.append(f"job-{n}"))
    store.close()

    assert sorted(kept) == sorted(f"job-{n}" for n in range(300))
    reopened = SqliteJobMemory(tmp_path / "state")
    assert all(reopened.recall(f"job-{n}") is not None for n in range(300))
