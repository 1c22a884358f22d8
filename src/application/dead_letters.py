"""What every broker's dead-letter queue adapter does alike: name a message, merge its copies."""

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from python_worker.application.messages import MAX_JOB_TYPE_LENGTH, MAX_MESSAGE_BYTES, job_id_of
from python_worker.application.ports import DeadLetteredMessage


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
