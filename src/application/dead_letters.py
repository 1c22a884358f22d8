"""What every broker's dead-letter queue adapter does alike: name a message, merge its copies,
decide what a requeue does with each."""

import enum
import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from python_worker.application.messages import MAX_JOB_TYPE_LENGTH, MAX_MESSAGE_BYTES, job_id_of
from python_worker.application.ports import (
    DeadLetteredMessage,
    DeadLetterSelection,
    RequeueReport,
)


def body_handle(body: bytes) -> str:
    """`sha256:` and 16 hex digits: a name for any body, the same in every listing."""
    return "sha256:" + hashlib.sha256(body).hexdigest()[:16]


def dead_lettered_message(
    body: bytes,
    *,
    queue: str | None,
    reason: str,
    dead_lettered_at: str | None,
    worker_id: str | None,
    times: int = 1,
    headers: Mapping[str, Any] | None = None,
) -> DeadLetteredMessage:
    """One copy of a dead-lettered message, named by its job id where the body has one."""
    handle = body_handle(body)
    job_id = job_id_of(body)
    # An id with control characters would break a one-line listing and cannot be typed
    # back; the handle names that message instead.
    key = job_id if job_id is not None and job_id.isprintable() else handle
    return DeadLetteredMessage(
        key=key,
        handle=handle,
        job_id=job_id,
        job_type=_job_type_of(body),
        queue=queue,
        reason=reason,
        dead_lettered_at=dead_lettered_at,
        worker_id=worker_id,
        times=max(1, times),
        body=body,
        headers=dict(headers or {}),
    )


def merge_copies(copies: Iterable[DeadLetteredMessage]) -> list[DeadLetteredMessage]:
    """Copies of one body as one message, in the order first seen; their `times` add up."""
    merged: dict[str, DeadLetteredMessage] = {}
    for copy in copies:
        first = merged.get(copy.handle)
        merged[copy.handle] = (
            copy if first is None else replace(first, times=first.times + copy.times)
        )
    return list(merged.values())


class Step(enum.Enum):
    """What a requeue does with one copy on the dead-letter queue."""

    LEAVE = "leave"
    """Not selected, or nowhere to go back to: it stays where it is."""
    DROP_COPY = "drop copy"
    """Another copy of its body is back on its queue already: remove this one."""
    PUT_BACK = "put back"
    """Publish it to `message.queue` and, once the broker confirms, remove it."""


class RequeuePlan:
    """One requeue's decisions and its report, the same policy on every broker.

    The adapter reads the dead-letter queue oldest first, asks `step()` about each copy and
    does what it says; of a copy it tried to put back, it tells `moved()` or `refused()`.
    `finish()` gives the report, with the selected keys that named no message.
    """

    def __init__(
        self, selection: DeadLetterSelection, job_queues: Collection[str], dead_letter_queue: str
    ) -> None:
        self.report = RequeueReport()
        self._selection = selection
        self._job_queues = job_queues
        self._dead_letter_queue = dead_letter_queue
        self._unmatched = set(selection.keys)
        self._put_back: set[str] = set()

    def step(self, message: DeadLetteredMessage) -> Step:
        if not self._selection.matches(message):
            self.report.left += 1
            return Step.LEAVE
        self._unmatched -= {key for key in self._unmatched if message.answers_to(key)}
        if message.handle in self._put_back:
            self.report.merged += 1
            return Step.DROP_COPY
        if message.queue not in self._job_queues:
            self.refused(message, "no job queue recorded where it came from")
            return Step.LEAVE
        return Step.PUT_BACK

    def moved(self, message: DeadLetteredMessage) -> None:
        """`message` is back on its queue, confirmed, and gone from the dead-letter queue."""
        self._put_back.add(message.handle)
        self.report.moved += 1

    def refused(self, message: DeadLetteredMessage, problem: str) -> None:
        """`message` could not go back, and stays on the dead-letter queue."""
        self.report.left += 1
        self.report.problems.append(f"{message.key}: {problem}; left on {self._dead_letter_queue}")

    def finish(self) -> RequeueReport:
        self.report.missing = sorted(self._unmatched)
        return self.report


def plain(value: Any) -> Any:
    """A header value as JSON-ready plain data: timestamps as ISO 8601 text, bytes as text."""
    if isinstance(value, Mapping):
        return {str(name): plain(item) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, Decimal):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def iso_utc(when: datetime) -> str:
    """`2026-11-29T03:14:22.120Z`, the form the worker's own timestamps take."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _job_type_of(body: bytes) -> str | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = _lenient_loads(body)
    value = data.get("type") if isinstance(data, dict) else None
    if isinstance(value, str) and 0 < len(value) <= MAX_JOB_TYPE_LENGTH:
        return value
    return None


def _lenient_loads(body: bytes) -> Any:
    """What a body strict JSON refused holds, read as the worker reads its id (NaN, a BOM)."""
    if len(body) > MAX_MESSAGE_BYTES:
        return None
    try:
        text = body.decode("utf-8").removeprefix("\ufeff")
        return json.loads(text, parse_constant=lambda _name: None)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
