"""The JSON the worker writes: status updates (contract §6), heartbeats (§7), idempotency keys.

One module for every adapter that writes them — the HTTP reporter and heartbeat sink, the
`process` command's JSON lines, the SQLite job memory — so a field is named in one place.
"""

import logging
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import orjson

from python_worker.application.ports import Heartbeat, StatusUpdate
from python_worker.domain.jobs import JobStatus

log = logging.getLogger(__name__)

_KEY_SAFE = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) != "%")
"""What a job id keeps as-is in an idempotency key: printable ASCII but space and `%`."""


def idempotency_key(update: StatusUpdate) -> str:
    """`<jobId>:<status>:<attempt>`; the id percent-encoded (UTF-8) beyond printable ASCII.

    It travels in an HTTP header, which holds Latin-1 text without line breaks, while a job id
    may hold any character: encoded, every id gives a sendable key, and distinct ids distinct
    keys. An id of printable ASCII without `%` (the usual kind) stays as it is.
    """
    return f"{quote(update.job_id, safe=_KEY_SAFE)}:{update.status.value}:{update.attempt}"


def status_body(update: StatusUpdate) -> dict[str, Any]:
    """The contract §6 body: camelCase, optional fields only where they apply."""
    body: dict[str, Any] = {
        "jobId": update.job_id,
        "status": update.status.value,
        "workerId": update.worker_id,
        "workerType": update.worker_type,
        "timestamp": iso(update.timestamp),
        "attempt": update.attempt,
    }
    optional = {
        "jobType": update.job_type,
        "queue": update.queue,
        "result": update.result,
        "errorMessage": update.error_message,
        "progress": update.progress,
        "durationMs": update.duration_ms,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


def encode_status(update: StatusUpdate) -> bytes:
    """The body as bytes, encoded once: they travel as they are to the API, an outbox, a disk."""
    # orjson writes NaN and ±Infinity as null, silently; say so rather than refuse the update
    # (losing a status would be worse than a null in a result).
    if _has_non_finite([update.result, update.duration_ms]):
        log.warning(
            "status update for job %s has non-finite numbers (NaN, Infinity); sent as null",
            update.job_id,
        )
    try:
        encoded = orjson.dumps(status_body(update))
    except TypeError as exc:
        raise ValueError(f"status update for job {update.job_id} is not JSON: {exc}") from exc
    # orjson's bytes keep the buffer it wrote into, 4 KiB however short the JSON (measured
    # with tracemalloc: 513 bodies in flight held 2 MiB). A body waits for the API or a disk,
    # so keep an exact-size copy instead: about 100 ns.
    return bytes(memoryview(encoded))


def decode_status(encoded: bytes) -> StatusUpdate:
    """The update back from `encode_status`'s bytes (as kept in local state)."""
    body = orjson.loads(encoded)
    return StatusUpdate(
        job_id=body["jobId"],
        status=JobStatus(body["status"]),
        worker_id=body["workerId"],
        worker_type=body.get("workerType", "python"),
        timestamp=datetime.fromisoformat(body["timestamp"]),
        job_type=body.get("jobType"),
        queue=body.get("queue"),
        attempt=body.get("attempt", 1),
        result=body.get("result"),
        error_message=body.get("errorMessage"),
        progress=body.get("progress"),
        duration_ms=body.get("durationMs"),
    )


def heartbeat_body(heartbeat: Heartbeat) -> dict[str, Any]:
    """The contract §7 body."""
    return {
        "workerId": heartbeat.worker_id,
        "workerType": heartbeat.worker_type,
        "status": heartbeat.status,
        "capacity": heartbeat.capacity,
        "currentLoad": heartbeat.current_load,
        "processedCount": heartbeat.processed_count,
        "failedCount": heartbeat.failed_count,
        "successRate": heartbeat.success_rate,
        "averageJobTimeMs": heartbeat.average_job_time_ms,
        "timestamp": iso(heartbeat.timestamp),
        "hostname": heartbeat.hostname,
        "version": heartbeat.version,
        "brokerConnected": heartbeat.broker_connected,
        "outboxDepth": heartbeat.outbox_depth,
        "acceptingJobs": heartbeat.accepting_jobs,
        "problems": list(heartbeat.problems),
    }


def iso(moment: datetime) -> str:
    """ISO 8601 with milliseconds, `Z` for UTC."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _has_non_finite(value: Any) -> bool:
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False
