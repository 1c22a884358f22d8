"""Jobs from the command line: a file or stdin of JSON lines, or one job from flags."""

import contextlib
import secrets
import sys
from collections.abc import Iterator
from typing import Any

import orjson

from python_worker.domain.jobs import Priority


def read_lines(path: str) -> Iterator[str]:
    """The lines of `path`, or of stdin for `-`; bytes that are not UTF-8 kept as they were."""
    if path == "-":
        yield from sys.stdin
        return
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        yield from handle


def encode_line(line: str) -> bytes:
    """One line as a message body."""
    # surrogateescape keeps bytes that are not UTF-8 as they were, so they reach the decoder
    # (and get dead-lettered) just as they would coming from the broker.
    return line.strip().encode("utf-8", errors="surrogateescape")


def one_job(job_type: str, job_id: str | None, payload: str | None) -> bytes:
    """The body of one job from `publish --type/--id/--payload`; raises on a payload not JSON."""
    job: dict[str, Any] = {"id": job_id or f"job-{secrets.token_hex(6)}", "type": job_type}
    job["payload"] = orjson.loads(payload) if payload else {}
    return orjson.dumps(job)


def jobs_to_publish(path: str, queue: Priority | None) -> Iterator[tuple[Priority, bytes]]:
    """(tier, body) for each line of `path`: `queue` for all, or each line's own `priority`."""
    for line in read_lines(path):
        body = encode_line(line)
        if not body:
            continue
        priority = queue or Priority.MEDIUM
        if queue is None:
            # A line may carry its own tier (as the demo jobs do); the worker ignores the field.
            # A line that is not a job is published as it is: the worker dead-letters it.
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError, ValueError):
                priority = Priority(orjson.loads(body).get("priority", "medium"))
        yield priority, body
