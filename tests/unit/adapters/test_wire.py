"""The wire codec's idempotency key: stable, unique per id, and always sendable as a header."""

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from python_worker.adapters.wire import idempotency_key
from python_worker.application.ports import StatusUpdate
from python_worker.domain.jobs import JobStatus


def update(job_id: str, status: JobStatus = JobStatus.RUNNING, attempt: int = 1) -> StatusUpdate:
    return StatusUpdate(
        job_id=job_id,
        status=status,
        worker_id="w",
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        attempt=attempt,
    )


def test_key_of_a_plain_ascii_id_is_id_status_and_attempt_as_they_are():
    key = idempotency_key(update("order-42_A.b", JobStatus.COMPLETED, 3))

    assert key == "order-42_A.b:completed:3"


def test_key_percent_encodes_non_ascii_characters_spaces_line_breaks_and_percent_signs():
    assert idempotency_key(update("é €\r\n%")) == "%C3%A9%20%E2%82%AC%0D%0A%25:running:1"


@given(st.text(min_size=1, max_size=50))
def test_every_key_is_printable_ascii_without_spaces(job_id: str):
    key = idempotency_key(update(job_id))

    assert key.isascii() and key.isprintable() and " " not in key


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_distinct_ids_give_distinct_keys(first: str, second: str):
    if first != second:
        assert idempotency_key(update(first)) != idempotency_key(update(second))
